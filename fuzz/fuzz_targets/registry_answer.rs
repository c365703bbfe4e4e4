//! A schema registry's answer to `GET /schemas/ids/{id}`: the JSON, then the writer schema it
//! holds parsed and resolved against each family's reader schema (`Decoder::check_writer`,
//! what `register` does before it keeps a schema). Never a panic, never a leak.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use umkm_core::avro::Decoder;
use umkm_runtime::family::Family;
use umkm_runtime::registry::schema_of_answer;

static DECODERS: LazyLock<Vec<Decoder>> = LazyLock::new(|| {
    [
        qris_consumer::Qris::READER_SCHEMA,
        noncash_consumer::Noncash::READER_SCHEMA,
        merchant_consumer::Merchants::READER_SCHEMA,
    ]
    .iter()
    .map(|r| Decoder::new(r).expect("reader schemas parse"))
    .collect()
});

fuzz_target!(|data: &[u8]| {
    if let Ok(schema) = schema_of_answer(7, data) {
        for d in DECODERS.iter() {
            let _ = d.check_writer(7, &schema);
        }
    }
});
