//! A schema registry's answer to `GET /schemas/ids/{id}`: the JSON, then the writer schema it
//! holds registered against each family's reader schema. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use umkm_core::avro::Decoder;
use umkm_runtime::family::Family;
use umkm_runtime::registry::schema_of_answer;

fuzz_target!(|data: &[u8]| {
    if let Ok(schema) = schema_of_answer(7, data) {
        for reader in [
            qris_consumer::Qris::READER_SCHEMA,
            noncash_consumer::Noncash::READER_SCHEMA,
            merchant_consumer::Merchants::READER_SCHEMA,
        ] {
            let mut d = Decoder::new(reader).expect("reader schemas parse");
            let _ = d.register(7, &schema);
        }
    }
});
