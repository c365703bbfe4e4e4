use super::*;
use umkm_core::avro::{self, Decoder};

const NOW_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const KEY: &[u8] = b"NIB-9120001234567";

pub fn sample() -> MerchantEvent {
    MerchantEvent {
        event_id: "m-evt-1".into(),
        source_id: "DINKOPUKM-BANTEN".into(),
        source_type: SourceType::Registry,
        event_type: MerchantEventType::Registered,
        merchant_id: "NIB-9120001234567".into(),
        version: 1,
        event_time: 1_748_797_199_999, // 2025-06-01 23:59:59.999 WIB
        business_name: "TAS PETIR JAYA".into(),
        nmid: Some("ID1024000012345".into()),
        acquirer_merchant_ids: vec![AcquirerMerchantId {
            acquirer_id: "93600008".into(),
            merchant_id: "BJB000123".into(),
        }],
        kbli_codes: vec!["15121".into(), "47854".into()],
        mcc: Some("5948".into()),
        scale: Some(Scale::Mikro),
        qris_criteria: Some(QrisCriteria::UMI),
        region_code: "36.04.19".into(),
        onboarding_channel: OnboardingChannel::GovernmentProgram,
        onboarding_date: Some(20_000), // 2024-10-04
    }
}

fn meta(key: Option<&[u8]>) -> MessageMeta<'_> {
    static TOPIC: std::sync::LazyLock<umkm_core::fields::Shared> =
        std::sync::LazyLock::new(|| "merchants.registry.v1".into());
    MessageMeta {
        topic: &TOPIC,
        partition: 0,
        offset: 9,
        key,
        schema_id: 3,
        now_ms: NOW_MS,
        now_secs: (NOW_MS / 1000) as u32,
    }
}

fn rules(e: MerchantEvent) -> Vec<&'static str> {
    let key = e.merchant_id.clone();
    Merchants::default()
        .validate(&e, &meta(Some(key.as_bytes())))
        .into_iter()
        .map(|i| i.rule)
        .collect()
}

#[test]
fn valid_event_normalises() {
    let p = Merchants::default()
        .normalise(sample(), &meta(Some(KEY)))
        .unwrap();
    let r = &p.row;
    assert_eq!(r.dedup_key, dedup_key("NIB-9120001234567", 1).hex());
    assert_eq!(
        r.merchant_refs,
        vec!["NMID:ID1024000012345", "MID:93600008:BJB000123"]
    );
    assert_eq!(
        (
            r.sector.as_str(),
            r.sector_source.as_str(),
            r.kbli_section.as_str()
        ),
        ("fashion", "kbli", "C")
    );
    assert_eq!(r.kbli_primary, "15121");
    assert_eq!(
        (r.scale.as_str(), r.qris_criteria.as_str()),
        ("mikro", "UMI")
    );
    assert_eq!(
        (r.event_type.as_str(), r.status.as_str()),
        ("registered", "active")
    );
    assert_eq!(r.onboarding_channel, "government_program");
    assert_eq!(r.onboarding_date, Some(20_000));
    assert_eq!(umkm_core::time::date_string(r.event_date), "2025-06-01");
    assert_eq!(r.kecamatan_code, "36.04.19");
}

#[test]
fn closed_and_versions() {
    let mut e = sample();
    e.event_type = MerchantEventType::Closed;
    e.version = 7;
    let p = Merchants::default().normalise(e, &meta(Some(KEY))).unwrap();
    assert_eq!(p.row.status, "closed");
    assert_ne!(p.key, dedup_key("NIB-9120001234567", 1));
    // Same merchant and version from another publisher: the same fact.
    let mut other = sample();
    other.event_id = "acq-evt".into();
    other.source_type = SourceType::Acquirer;
    let q = Merchants::default()
        .normalise(other, &meta(Some(KEY)))
        .unwrap();
    assert_eq!(q.key, dedup_key("NIB-9120001234567", 1));
}

#[test]
fn sector_falls_back_from_kbli_to_mcc() {
    assert_eq!(
        sector(&["10722".into()], "5812"),
        ("food_processing", "kbli", "C")
    );
    assert_eq!(
        sector(&["19000".into()], "5812"),
        ("food_beverage", "mcc", "")
    );
    assert_eq!(sector(&[], "5812"), ("food_beverage", "mcc", ""));
    assert_eq!(sector(&[], ""), ("unknown", "", ""));
}

#[test]
fn every_rule_has_a_reason() {
    type Mutation = Box<dyn Fn(&mut MerchantEvent)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("event_id", Box::new(|e| e.event_id = "".into())),
        ("source_id", Box::new(|e| e.source_id = " ".into())),
        ("version_negative", Box::new(|e| e.version = -1)),
        ("business_name", Box::new(|e| e.business_name = " ".into())),
        ("nmid_format", Box::new(|e| e.nmid = Some("ID1".into()))),
        (
            "acquirer_merchant_id_format",
            Box::new(|e| e.acquirer_merchant_ids[0].merchant_id = "a b".into()),
        ),
        (
            "kbli_format",
            Box::new(|e| e.kbli_codes = vec!["1512".into()]),
        ),
        ("mcc_format", Box::new(|e| e.mcc = Some("59".into()))),
        (
            "region_unknown",
            Box::new(|e| e.region_code = "36.99.01".into()),
        ),
        (
            "region_format",
            Box::new(|e| e.region_code = "Serang".into()),
        ),
        ("event_time_range", Box::new(|e| e.event_time = 0)),
        (
            "onboarding_date_range",
            Box::new(|e| e.onboarding_date = Some(20_241)), // 2025-06-02: after the event
        ),
    ];
    for (rule, mutate) in cases {
        let mut e = sample();
        mutate(&mut e);
        assert_eq!(rules(e), vec![rule], "rule {rule}");
    }
    assert!(rules(sample()).is_empty());
    let got: Vec<_> = Merchants::default()
        .validate(&sample(), &meta(Some(b"other")))
        .into_iter()
        .map(|i| i.rule)
        .collect();
    assert_eq!(got, vec!["key_mismatch"]);
    let mut e = sample();
    e.merchant_id = "a b".into();
    let got: Vec<_> = Merchants::default()
        .validate(&e, &meta(Some(b"a b")))
        .into_iter()
        .map(|i| i.rule)
        .collect();
    assert_eq!(got, vec!["merchant_id_format"]);
}

#[test]
fn decodes_with_the_pinned_reader() {
    let schema = apache_avro::Schema::parse_str(READER_SCHEMA).unwrap();
    let mut d = Decoder::new(READER_SCHEMA).unwrap();
    d.register(3, READER_SCHEMA).unwrap();
    let bytes = avro::encode(&schema, 3, &sample()).unwrap();
    assert_eq!(d.decode::<MerchantEvent>(&bytes).unwrap(), sample());
    let mut bare = sample();
    bare.nmid = None;
    bare.acquirer_merchant_ids.clear();
    bare.kbli_codes.clear();
    bare.mcc = None;
    bare.scale = None;
    bare.qris_criteria = None;
    bare.onboarding_date = None;
    let bytes = avro::encode(&schema, 3, &bare).unwrap();
    assert_eq!(d.decode::<MerchantEvent>(&bytes).unwrap(), bare);
}
