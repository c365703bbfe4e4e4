//! A message consumed from the noncash topic: Confluent frame, Avro decode with every writer
//! schema of schemas/avro registered, and the family's rules. Never a panic; every dead
//! letter has a reason.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use umkm_runtime::untrusted::Examiner;

static EXAMINER: LazyLock<Examiner<noncash_consumer::Noncash>> =
    LazyLock::new(|| Examiner::new(&umkm_fuzz::registry_dir()).expect("the repo's schemas"));

fuzz_target!(|data: &[u8]| EXAMINER.examine_fuzzed(data));
