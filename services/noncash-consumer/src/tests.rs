use super::*;
use umkm_core::avro::{self, Decoder};

const NOW_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const KEY: &[u8] = b"93600008:BJB000123";

pub fn sample() -> NoncashPayment {
    NoncashPayment {
        event_id: "evt-1".into(),
        provider_id: "93600008".into(),
        provider_role: ProviderRole::Acquirer,
        instrument: Instrument::DebitCard,
        reference_number: "512345678901".into(),
        approval_code: Some("A1B2C3".into()),
        provider_reference: Some("JRN-778".into()),
        partner_reference: None,
        issuer_id: Some("93600009".into()),
        acquirer_id: "93600008".into(),
        merchant_id: "BJB000123".into(),
        terminal_id: Some("T0001234".into()),
        nmid: None,
        mcc: "5948".into(),
        merchant_name: "TAS PETIR JAYA".into(),
        region_code: "36.04.19".into(),
        amount: "450000.00".into(),
        currency: "IDR".into(),
        status: PaymentStatus::Success,
        event_time: 1_748_797_199_999, // 2025-06-01 23:59:59.999 WIB
        masked_account: Some("522184******4321".into()),
        original_reference_number: None,
        original_reference_no: None,
        original_partner_reference_no: None,
        original_event_time: None,
        refund_reference: None,
        refund_amount: None,
    }
}

fn meta(key: Option<&[u8]>) -> MessageMeta<'_> {
    static TOPIC: std::sync::LazyLock<umkm_core::fields::Shared> =
        std::sync::LazyLock::new(|| "payments.noncash.v1".into());
    MessageMeta {
        topic: &TOPIC,
        partition: 1,
        offset: 7,
        key,
        schema_id: 2,
        now_ms: NOW_MS,
        now_secs: (NOW_MS / 1000) as u32,
    }
}

fn noncash() -> Noncash {
    Noncash::new(PiiHasher::new(b"test-key-0123456789").unwrap(), 300_000)
}

fn rules(e: NoncashPayment) -> Vec<&'static str> {
    let key = message_key(&e.acquirer_id, &e.merchant_id);
    noncash()
        .validate(&e, &meta(Some(key.as_bytes())))
        .into_iter()
        .map(|i| i.rule)
        .collect()
}

#[test]
fn valid_event_normalises() {
    let p = noncash().normalise(sample(), &meta(Some(KEY))).unwrap();
    let r = &p.row;
    assert_eq!(p.priority, 3);
    assert_eq!((r.amount_idr, r.amount_minor), (450_000, 0));
    assert_eq!(umkm_core::time::date_string(r.event_date), "2025-06-01");
    assert_eq!(r.instrument, "debit_card");
    assert_eq!(r.provider_role, "acquirer");
    assert_eq!(r.merchant_ref, "MID:93600008:BJB000123");
    assert_eq!(r.sector, "fashion");
    assert_eq!(
        (r.kab_kota_code.as_str(), r.kecamatan_code.as_str()),
        ("36.04", "36.04.19")
    );
    assert_eq!(r.dedup_key, p.key.hex());
    assert_eq!(r.payer_hash.len(), 64);
    assert!(!format!("{r:?}").contains("4321"), "masked account leaked");
    // A reported NMID makes the payment join the merchant's QRIS identity.
    let mut e = sample();
    e.nmid = Some("ID1024000012345".into());
    let p = noncash().normalise(e, &meta(Some(KEY))).unwrap();
    assert_eq!(p.row.merchant_ref, "NMID:ID1024000012345");
}

#[test]
fn every_party_shares_the_key() {
    let n = noncash();
    let m = meta(Some(KEY));
    let acq = n.normalise(sample(), &m).unwrap();
    let mut iss = sample();
    iss.event_id = "evt-iss".into();
    iss.provider_role = ProviderRole::Issuer;
    iss.provider_id = "93600009".into();
    iss.amount = "450000".into();
    iss.region_code = "3604".into();
    iss.terminal_id = None;
    let iss = n.normalise(iss, &m).unwrap();
    let mut gw = sample();
    gw.provider_role = ProviderRole::Gateway;
    gw.provider_id = "MIDTRANS".into();
    let gw = n.normalise(gw, &m).unwrap();
    assert_eq!(acq.key, iss.key);
    assert_eq!(acq.key, gw.key);
    assert!(acq.priority > gw.priority && gw.priority > iss.priority);
    let mut refund = sample();
    refund.status = PaymentStatus::Refunded;
    let refund = n.normalise(refund, &m).unwrap();
    assert_ne!(refund.key, acq.key);
    assert_eq!(refund.row.payment_key, acq.row.payment_key);
    let mut other = sample();
    other.reference_number = "512345678902".into();
    assert_ne!(n.normalise(other, &m).unwrap().key, acq.key);
}

#[test]
fn every_rule_has_a_reason() {
    type Mutation = Box<dyn Fn(&mut NoncashPayment)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("event_id", Box::new(|e| e.event_id = "".into())),
        ("provider_id", Box::new(|e| e.provider_id = " ".into())),
        (
            "reference_format",
            Box::new(|e| e.reference_number = "a b".into()),
        ),
        (
            "terminal_id_format",
            Box::new(|e| e.terminal_id = Some("T 1".into())),
        ),
        ("nmid_format", Box::new(|e| e.nmid = Some("ID12".into()))),
        ("mcc_format", Box::new(|e| e.mcc = "12345".into())),
        ("merchant_name", Box::new(|e| e.merchant_name = "".into())),
        (
            "region_unknown",
            Box::new(|e| e.region_code = "36.04.99".into()),
        ),
        (
            "region_format",
            Box::new(|e| e.region_code = "Petir".into()),
        ),
        ("amount_not_positive", Box::new(|e| e.amount = "0".into())),
        ("amount_format", Box::new(|e| e.amount = "1e5".into())),
        ("currency", Box::new(|e| e.currency = "SGD".into())),
        (
            "event_time_range",
            Box::new(|e| e.event_time = NOW_MS + 86_400_000),
        ),
    ];
    for (rule, mutate) in cases {
        let mut e = sample();
        mutate(&mut e);
        assert_eq!(rules(e), vec![rule], "rule {rule}");
    }
    assert!(rules(sample()).is_empty());
    // Identifiers that make up the message key.
    let mut e = sample();
    e.acquirer_id = "9".into();
    assert_eq!(rules(e), vec!["acquirer_id_format"]);
    let mut e = sample();
    e.merchant_id = "".into();
    assert_eq!(rules(e), vec!["merchant_id_format"]);
}

#[test]
fn key_must_be_acquirer_and_merchant() {
    let n = noncash();
    let rule = |k: Option<&[u8]>| -> Vec<&str> {
        n.validate(&sample(), &meta(k))
            .into_iter()
            .map(|i| i.rule)
            .collect()
    };
    assert_eq!(rule(Some(b"BJB000123")), vec!["key_mismatch"]);
    assert_eq!(rule(None), vec!["key_missing"]);
    assert!(rule(Some(KEY)).is_empty());
}

#[test]
fn decodes_with_the_pinned_reader() {
    let schema = apache_avro::Schema::parse_str(READER_SCHEMA).unwrap();
    let mut d = Decoder::new(READER_SCHEMA).unwrap();
    d.register(2, READER_SCHEMA).unwrap();
    for instrument in [
        Instrument::DebitCard,
        Instrument::CreditCard,
        Instrument::Emoney,
        Instrument::Ewallet,
        Instrument::BankTransfer,
        Instrument::VirtualAccount,
    ] {
        let mut e = sample();
        e.instrument = instrument;
        e.nmid = Some("ID1024000012345".into());
        let bytes = avro::encode(&schema, 2, &e).unwrap();
        assert_eq!(d.decode::<NoncashPayment>(&bytes).unwrap(), e);
    }
}
