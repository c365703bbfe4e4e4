//! The configuration loader and its checks over an arbitrary TOML file. Never a panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use umkm_runtime::config::{self, ServiceDefaults};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let defaults = ServiceDefaults {
        topic: "payments.qris.v1",
        group_id: "umkm-qris-consumer",
        dlq_topic: "payments.dlq",
    };
    if let Ok(s) = config::load_toml(&defaults, Some(text), &BTreeMap::new()) {
        let _ = config::validate(s);
    }
});
