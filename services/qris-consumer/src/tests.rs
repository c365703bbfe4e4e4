use super::*;
use umkm_core::avro::{self, DecodeError, Decoder};
use umkm_core::wire::WireError;

const NOW_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

pub fn sample() -> QrisPayment {
    QrisPayment {
        event_id: "evt-1".into(),
        provider_id: "93609999".into(),
        provider_role: ProviderRole::Acquirer,
        rrn: "000005301527".into(),
        issuer_reference: Some("ISS-1".into()),
        acquirer_reference: None,
        partner_reference: Some("INV20250601000123".into()),
        issuer_id: Some("93600915".into()),
        acquirer_id: Some("93609999".into()),
        nmid: "ID1024000012345".into(),
        merchant_pan: Some("9360999930000012344".into()),
        mcc: "5948".into(),
        merchant_criteria: MerchantCriteria::UMI,
        merchant_name: "TAS PETIR JAYA".into(),
        merchant_city: Some("KAB. SERANG".into()),
        merchant_postal_code: Some("42100".into()),
        region_code: "36.04.19".into(),
        qr_mode: QrMode::MpmDynamic,
        amount: "150000.00".into(),
        currency: "IDR".into(),
        status: PaymentStatus::Success,
        event_time: 1_748_797_199_999, // 2025-06-01 23:59:59.999 WIB
        payer_id: Some("081234567890".into()),
        original_rrn: None,
        original_reference_no: None,
        original_partner_reference_no: None,
        original_event_time: None,
        refund_reference: None,
        refund_amount: None,
    }
}

fn meta(key: Option<&[u8]>) -> MessageMeta<'_> {
    static TOPIC: std::sync::LazyLock<umkm_core::fields::Shared> =
        std::sync::LazyLock::new(|| "payments.qris.v1".into());
    MessageMeta {
        topic: &TOPIC,
        partition: 3,
        offset: 42,
        key,
        schema_id: 1,
        now_ms: NOW_MS,
        now_secs: (NOW_MS / 1000) as u32,
    }
}

fn qris() -> Qris {
    Qris::new(PiiHasher::new(b"test-key-0123456789").unwrap(), 300_000)
}

fn rules(e: QrisPayment) -> Vec<&'static str> {
    let key = e.nmid.clone();
    qris()
        .validate(&e, &meta(Some(key.as_bytes())))
        .into_iter()
        .map(|i| i.rule)
        .collect()
}

#[test]
fn valid_event_normalises() {
    let p = qris()
        .normalise(sample(), &meta(Some(b"ID1024000012345")))
        .unwrap();
    let r = &p.row;
    assert_eq!(p.priority, 2);
    assert_eq!(r.amount_idr, 150_000);
    assert_eq!(r.amount_minor, 0);
    assert_eq!(r.event_time, 1_748_797_199);
    assert_eq!(umkm_core::time::date_string(r.event_date), "2025-06-01");
    assert_eq!(
        (
            r.province_code.as_str(),
            r.kab_kota_code.as_str(),
            r.kecamatan_code.as_str()
        ),
        ("36", "36.04", "36.04.19")
    );
    assert_eq!(r.sector, "fashion");
    assert_eq!(r.merchant_criteria, "UMI");
    assert_eq!(r.qr_mode, "mpm_dynamic");
    assert_eq!(r.status, "success");
    assert_eq!(r.dedup_key, p.key.hex());
    assert_eq!(r.payer_hash.len(), 64);
    assert!(
        !format!("{r:?}").contains("081234567890"),
        "payer id leaked"
    );
    assert_eq!((r.source_partition, r.source_offset), (3, 42));
}

#[test]
fn issuer_and_acquirer_reports_share_the_key() {
    let q = qris();
    let m = meta(Some(b"ID1024000012345"));
    let acq = q.normalise(sample(), &m).unwrap();
    let mut iss = sample();
    iss.event_id = "evt-from-issuer".into();
    iss.provider_id = "93600915".into();
    iss.provider_role = ProviderRole::Issuer;
    iss.amount = "150000".into();
    iss.region_code = "3604".into(); // the issuer only knows the kab/kota
    iss.payer_id = None;
    let iss = q.normalise(iss, &m).unwrap();
    assert_eq!(acq.key, iss.key);
    assert!(acq.priority > iss.priority);
    // Another status of the same payment is another fact; another RRN another payment.
    let mut refund = sample();
    refund.status = PaymentStatus::Refunded;
    let refund = q.normalise(refund, &m).unwrap();
    assert_ne!(refund.key, acq.key);
    assert_eq!(refund.row.payment_key, acq.row.payment_key);
    let mut other = sample();
    other.rrn = "000005301528".into();
    assert_ne!(q.normalise(other, &m).unwrap().key, acq.key);
}

#[test]
fn wib_date_is_part_of_the_key() {
    let q = qris();
    let m = meta(Some(b"ID1024000012345"));
    let mut next_day = sample();
    next_day.event_time += 1; // 00:00:00.000 WIB on 2 June
    let a = q.normalise(sample(), &m).unwrap();
    let b = q.normalise(next_day, &m).unwrap();
    assert_ne!(a.key, b.key);
    assert_eq!(b.row.event_date, a.row.event_date + 1);
}

#[test]
fn every_rule_has_a_reason() {
    type Mutation = Box<dyn Fn(&mut QrisPayment)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("event_id", Box::new(|e| e.event_id = " ".into())),
        ("provider_id", Box::new(|e| e.provider_id = "".into())),
        ("rrn_format", Box::new(|e| e.rrn = "123".into())),
        (
            "nmid_format",
            Box::new(|e| e.nmid = "XX1024000012345".into()),
        ),
        (
            "merchant_pan_format",
            Box::new(|e| e.merchant_pan = Some("1234".into())),
        ),
        (
            "nns_format",
            Box::new(|e| e.issuer_id = Some("DANA".into())),
        ),
        ("mcc_format", Box::new(|e| e.mcc = "59a8".into())),
        ("merchant_name", Box::new(|e| e.merchant_name = "  ".into())),
        (
            "postal_code_format",
            Box::new(|e| e.merchant_postal_code = Some("4210".into())),
        ),
        (
            "region_unknown",
            Box::new(|e| e.region_code = "36.09".into()),
        ),
        (
            "region_format",
            Box::new(|e| e.region_code = "Serang".into()),
        ),
        (
            "amount_not_positive",
            Box::new(|e| e.amount = "-15000".into()),
        ),
        (
            "amount_format",
            Box::new(|e| e.amount = "150.000,00".into()),
        ),
        ("currency", Box::new(|e| e.currency = "USD".into())),
        ("event_time_range", Box::new(|e| e.event_time = 1_000)),
    ];
    for (rule, mutate) in cases {
        let mut e = sample();
        mutate(&mut e);
        let got = rules(e);
        assert_eq!(got, vec![rule], "rule {rule}");
    }
    assert!(rules(sample()).is_empty());
}

#[test]
fn key_must_be_the_nmid() {
    let q = qris();
    let got: Vec<_> = q
        .validate(&sample(), &meta(Some(b"ID9999999999999")))
        .into_iter()
        .map(|i| i.rule)
        .collect();
    assert_eq!(got, vec!["key_mismatch"]);
    let got: Vec<_> = q
        .validate(&sample(), &meta(None))
        .into_iter()
        .map(|i| i.rule)
        .collect();
    assert_eq!(got, vec!["key_missing"]);
}

#[test]
fn several_failures_are_all_reported() {
    let mut e = sample();
    e.amount = "-1".into();
    e.region_code = "99.99".into();
    e.mcc = "x".into();
    let mut got = rules(e);
    got.sort();
    assert_eq!(
        got,
        vec!["amount_not_positive", "mcc_format", "region_unknown"]
    );
}

const V2: &str = include_str!("../../../tests/fixtures/qris_payment_v2.avsc");

#[derive(Serialize)]
struct V2Event {
    #[serde(flatten)]
    base: QrisPayment,
    tip_amount: Option<String>,
}

#[test]
fn decodes_v1_and_v2_writers_with_the_v1_reader() {
    let v1 = apache_avro::Schema::parse_str(READER_SCHEMA).unwrap();
    let v2 = apache_avro::Schema::parse_str(V2).unwrap();
    let mut d = Decoder::new(READER_SCHEMA).unwrap();
    d.register(1, READER_SCHEMA).unwrap();
    d.register(2, V2).unwrap();
    let bytes = avro::encode(&v1, 1, &sample()).unwrap();
    assert_eq!(d.decode::<QrisPayment>(&bytes).unwrap(), sample());
    let ev2 = V2Event {
        base: sample(),
        tip_amount: Some("2000".into()),
    };
    let bytes = avro::encode(&v2, 2, &ev2).unwrap();
    assert_eq!(d.decode::<QrisPayment>(&bytes).unwrap(), sample());
}

#[test]
fn decode_errors() {
    let v1 = apache_avro::Schema::parse_str(READER_SCHEMA).unwrap();
    let mut d = Decoder::new(READER_SCHEMA).unwrap();
    d.register(1, READER_SCHEMA).unwrap();
    let good = avro::encode(&v1, 1, &sample()).unwrap();
    let mut unknown = good.clone();
    unknown[4] = 77;
    assert!(matches!(
        d.decode::<QrisPayment>(&unknown),
        Err(DecodeError::UnknownSchemaId(77))
    ));
    assert!(matches!(
        d.decode::<QrisPayment>(&good[..3]),
        Err(DecodeError::Wire(WireError::ShortBuffer(3)))
    ));
    let mut magic = good.clone();
    magic[0] = 1;
    assert!(matches!(
        d.decode::<QrisPayment>(&magic),
        Err(DecodeError::Wire(WireError::BadMagic(1)))
    ));
    assert_eq!(
        d.decode::<QrisPayment>(&good[..20]).unwrap_err().rule(),
        "avro_datum"
    );
    let mut garbage = vec![0, 0, 0, 0, 1];
    garbage.extend_from_slice(&[0xff; 40]);
    assert!(d.decode::<QrisPayment>(&garbage).is_err());
}

#[test]
fn incompatible_writer_is_refused_at_registration() {
    let mut d = Decoder::new(READER_SCHEMA).unwrap();
    let err = d
        .register(9, r#"{"type":"record","name":"QrisPayment","namespace":"id.umkm_pulse.payments.v1","fields":[{"name":"x","type":"int"}]}"#)
        .err();
    // Either refused now, or every datum fails to resolve later: both are DLQ'd with a reason.
    if err.is_none() {
        let w = apache_avro::Schema::parse_str(r#"{"type":"record","name":"QrisPayment","namespace":"id.umkm_pulse.payments.v1","fields":[{"name":"x","type":"int"}]}"#).unwrap();
        #[derive(Serialize)]
        struct X {
            x: i32,
        }
        let b = avro::encode(&w, 9, &X { x: 1 }).unwrap();
        assert!(d.decode::<QrisPayment>(&b).is_err());
    }
}
