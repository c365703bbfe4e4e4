//! What every generator shares: the contracts and their registry ids, the registry's merchant
//! ids and events, and the garbage records of the bad-record kinds.

use merchant_consumer::{
    AcquirerMerchantId, MerchantEvent, MerchantEventType, OnboardingChannel, QrisCriteria, Scale,
    SourceType,
};

/// The contracts the model publishes on, and their ids in `schemas/avro/registry.json` (and
/// `deploy/register_schemas.py`).
pub const QRIS_SCHEMA: &str = include_str!("../../../schemas/avro/qris_payment.avsc");
pub const QRIS_ID: u32 = 4;
pub const NONCASH_SCHEMA: &str = include_str!("../../../schemas/avro/noncash_payment.avsc");
pub const NONCASH_ID: u32 = 5;
pub const MERCHANT_SCHEMA: &str = include_str!("../../../schemas/avro/merchant_event.avsc");
pub const MERCHANT_ID: u32 = 3;
/// An id no registry knows (bad records of kind `unknown_schema_id`).
pub const UNKNOWN_ID: u32 = 999;

/// A garbage record for bad-record number `i` and the DLQ rule it must get: alternately
/// shorter than the Confluent header, and JSON (wrong magic byte).
pub fn garbage(i: usize) -> (Vec<u8>, &'static str) {
    if i.is_multiple_of(2) {
        (vec![0u8, 0, 1], "wire_short_buffer")
    } else {
        (
            format!("{{\"not\":\"avro\",\"i\":{i}}}").into_bytes(),
            "wire_bad_magic",
        )
    }
}

/// The registry's id of merchant `i` (an NIB).
pub fn merchant_id(i: usize) -> String {
    format!("NIB-{:013}", 9_120_000_000_000u64 + i as u64)
}

/// One version of merchant `i` as the UMKM registry reports it.
pub fn registry_event(
    i: usize,
    version: i64,
    event_type: MerchantEventType,
    region: &str,
    kbli: &str,
    t: i64,
) -> MerchantEvent {
    MerchantEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        source_id: "DINKOPUKM-BANTEN".into(),
        source_type: SourceType::Registry,
        event_type,
        merchant_id: merchant_id(i),
        version,
        event_time: t,
        business_name: format!("UMKM {i} v{version}"),
        nmid: Some(format!("ID10{:011}", 24_000_000 + i)),
        acquirer_merchant_ids: vec![AcquirerMerchantId {
            acquirer_id: "93600008".into(),
            merchant_id: format!("MID{:08}", 50_000 + i),
        }],
        kbli_codes: vec![kbli.into()],
        mcc: Some("5812".into()),
        scale: Some(Scale::Mikro),
        qris_criteria: Some(QrisCriteria::UMI),
        region_code: region.into(),
        onboarding_channel: OnboardingChannel::GovernmentProgram,
        onboarding_date: Some(19_000),
    }
}
