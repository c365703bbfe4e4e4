//! Synthetic QRIS traffic for Banten with known expectations: every unique payment, how many
//! reports were sent for it (issuer and acquirer, redeliveries) and every bad record.

use std::collections::{BTreeMap, BTreeSet};

use apache_avro::Schema;
use qris_consumer::{MerchantCriteria, PaymentStatus, ProviderRole, QrMode, QrisPayment};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use umkm_core::avro::encode;

/// Revision 1 of the QRIS contract (registry id 1): what the tests' revision-1 writers use.
pub const V1: &str = include_str!("../../../schemas/avro/qris_payment.rev1.avsc");
/// The current revision (2) of the QRIS contract, registry id [`CURRENT_ID`].
pub const CURRENT: &str = crate::contracts::QRIS_SCHEMA;
pub const CURRENT_ID: u32 = crate::contracts::QRIS_ID;
pub const V2: &str = include_str!("../../../tests/fixtures/qris_payment_v2.avsc");
/// Registry id of the v2 fixture in the tests' file registry.
pub const V2_ID: u32 = 12;

#[derive(Debug, Clone)]
pub struct Spec {
    pub payments: usize,
    pub merchants: usize,
    /// Share of payments reported by the issuer as well as the acquirer.
    pub double_report: f64,
    /// Share of reports sent twice (the same bytes again, later).
    pub redeliver: f64,
    /// Bad records of each kind: garbage bytes, unknown schema id, invalid region, negative amount.
    pub bad_each: usize,
    /// Share of good reports written with the v2 writer schema (id `V2_ID`).
    pub v2_share: f64,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            payments: 9_000,
            merchants: 400,
            double_report: 0.2,
            redeliver: 0.1,
            bad_each: 15,
            v2_share: 0.0,
            seed: 7,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub messages: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    /// (nmid, rrn, status) of every unique payment: exactly the rows expected.
    pub unique: BTreeSet<(String, String, String)>,
    pub good_reports: usize,
    pub double_reports: usize,
    pub redeliveries: usize,
    pub v2_reports: usize,
    /// DLQ rule → expected count.
    pub bad: BTreeMap<&'static str, usize>,
}

impl Plan {
    pub fn bad_total(&self) -> usize {
        self.bad.values().sum()
    }
}

#[derive(Serialize)]
struct V2Event<'a> {
    #[serde(flatten)]
    base: &'a QrisPayment,
    tip_amount: Option<String>,
}

const MCCS: &[&str] = &[
    "5812", "5812", "5814", "5499", "5499", "5411", "5948", "5699", "7230", "7299", "5999", "4121",
    "7523", "5912", "0000",
];

pub fn kecamatan_codes() -> Vec<&'static str> {
    let mut v: Vec<&str> = umkm_core::reference::banten_codes()
        .filter(|c| c.len() == 8)
        .collect();
    v.sort();
    v
}

pub struct Merchant {
    pub nmid: String,
    pub pan: String,
    pub mcc: &'static str,
    pub region: &'static str,
    pub criteria: MerchantCriteria,
    pub name: String,
}

pub fn merchants(n: usize, rng: &mut StdRng) -> Vec<Merchant> {
    let kec = kecamatan_codes();
    (0..n)
        .map(|i| {
            let criteria = match rng.random_range(0..100) {
                0..60 => MerchantCriteria::UMI,
                60..85 => MerchantCriteria::UKE,
                85..95 => MerchantCriteria::UME,
                95..98 => MerchantCriteria::UBE,
                _ => MerchantCriteria::URE,
            };
            Merchant {
                nmid: format!("ID10{:011}", 24_000_000 + i),
                pan: format!("936099993{:010}", i),
                mcc: MCCS[rng.random_range(0..MCCS.len())],
                region: kec[rng.random_range(0..kec.len())],
                criteria,
                name: format!("UMKM BANTEN {i}"),
            }
        })
        .collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub fn payment(m: &Merchant, rrn: String, rng: &mut StdRng, now: i64) -> QrisPayment {
    let status = match rng.random_range(0..100) {
        0..90 => PaymentStatus::Success,
        90..94 => PaymentStatus::Refunded,
        94..97 => PaymentStatus::Cancelled,
        _ => PaymentStatus::Failed,
    };
    // Log-normal ticket size, median Rp30k (docs/domain.md "Ticket sizes": Rp20-35k for UMI warung/food),
    // rounded to Rp500 and capped at the Rp10 juta QRIS limit.
    let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let amount = ((30_000.0 * (1.1 * z).exp()) as i64 / 500 * 500).clamp(1_000, 10_000_000);
    QrisPayment {
        event_id: uuid::Uuid::new_v4().to_string(),
        provider_id: "93609999".into(),
        provider_role: ProviderRole::Acquirer,
        rrn,
        issuer_reference: Some(format!("ISS{}", rng.random_range(1_000_000..9_999_999))),
        acquirer_reference: Some(format!("ACQ{}", rng.random_range(1_000_000..9_999_999))),
        partner_reference: None,
        issuer_id: Some(
            ["93600915", "93600914", "93600912", "93600008"][rng.random_range(0..4)].into(),
        ),
        acquirer_id: Some("93609999".into()),
        nmid: m.nmid.clone(),
        merchant_pan: Some(m.pan.clone()),
        mcc: m.mcc.into(),
        merchant_criteria: m.criteria,
        merchant_name: m.name.clone(),
        merchant_city: Some("BANTEN".into()),
        merchant_postal_code: Some("42100".into()),
        region_code: m.region.into(),
        qr_mode: if rng.random_bool(0.7) {
            QrMode::MpmStatic
        } else {
            QrMode::MpmDynamic
        },
        amount: format!("{amount}.00"),
        currency: "IDR".into(),
        status,
        event_time: now - rng.random_range(60_000..30 * 86_400_000),
        payer_id: Some(format!("08{:010}", rng.random_range(0..10_000_000_000u64))),
        original_rrn: None,
        original_reference_no: None,
        original_partner_reference_no: None,
        original_event_time: None,
        refund_reference: None,
        refund_amount: None,
    }
}

fn enc(schema: &Schema, id: u32, e: &QrisPayment) -> Vec<u8> {
    encode(schema, id, e).expect("sample events encode")
}

pub use crate::contracts::garbage;

/// Log-normal amount in whole rupiah with the given median, rounded to Rp500.
pub fn log_normal_amount(rng: &mut StdRng, median: f64, sigma: f64, max: i64) -> i64 {
    let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    ((median * (sigma * z).exp()) as i64 / 500 * 500).clamp(1_000, max)
}

pub fn generate(spec: &Spec) -> Plan {
    let v1 = Schema::parse_str(V1).expect("v1 schema");
    let v2 = Schema::parse_str(V2).expect("v2 schema");
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let ms = merchants(spec.merchants.max(1), &mut rng);
    let now = now_ms();
    let rrn_base: u64 = rng.random_range(100_000_000_000..800_000_000_000);
    let mut plan = Plan::default();
    let mut first = Vec::new();
    let mut later = Vec::new();
    let encode_report = |e: &QrisPayment, rng: &mut StdRng, plan: &mut Plan| {
        if rng.random_bool(spec.v2_share) {
            plan.v2_reports += 1;
            let ev = V2Event {
                base: e,
                tip_amount: Some("1000".into()),
            };
            encode(&v2, V2_ID, &ev).expect("v2 encodes")
        } else {
            enc(&v1, 1, e)
        }
    };
    for i in 0..spec.payments {
        let m = &ms[rng.random_range(0..ms.len())];
        let acq = payment(m, format!("{:012}", rrn_base + i as u64), &mut rng, now);
        plan.unique.insert((
            acq.nmid.clone(),
            acq.rrn.clone(),
            format!("{:?}", acq.status).to_lowercase(),
        ));
        let mut reports = vec![acq.clone()];
        if rng.random_bool(spec.double_report) {
            let mut iss = acq.clone();
            iss.event_id = uuid::Uuid::new_v4().to_string();
            iss.provider_role = ProviderRole::Issuer;
            iss.provider_id = iss.issuer_id.clone().unwrap_or_default();
            iss.acquirer_reference = None;
            iss.region_code = m.region[..5].to_string(); // the issuer knows less
            iss.amount = iss.amount.trim_end_matches(".00").to_string();
            reports.push(iss);
            plan.double_reports += 1;
        }
        for r in reports {
            let bytes = encode_report(&r, &mut rng, &mut plan);
            let key = Some(r.nmid.clone().into_bytes());
            plan.good_reports += 1;
            if rng.random_bool(spec.redeliver) {
                later.push((key.clone(), bytes.clone()));
                plan.redeliveries += 1;
            }
            first.push((key, bytes));
        }
    }
    // Bad records.
    for i in 0..spec.bad_each {
        let m = &ms[i % ms.len()];
        let key = Some(m.nmid.clone().into_bytes());
        let (bytes, rule) = garbage(i);
        first.push((key.clone(), bytes));
        *plan.bad.entry(rule).or_default() += 1;

        let e = payment(
            m,
            format!("{:012}", 900_000_000_000u64 + i as u64),
            &mut rng,
            now,
        );
        first.push((key.clone(), enc(&v1, 999, &e)));
        *plan.bad.entry("unknown_schema_id").or_default() += 1;

        let mut e = payment(
            m,
            format!("{:012}", 910_000_000_000u64 + i as u64),
            &mut rng,
            now,
        );
        e.region_code = "36.99.01".into();
        first.push((key.clone(), enc(&v1, 1, &e)));
        *plan.bad.entry("region_unknown").or_default() += 1;

        let mut e = payment(
            m,
            format!("{:012}", 920_000_000_000u64 + i as u64),
            &mut rng,
            now,
        );
        e.amount = "-25000".into();
        first.push((key, enc(&v1, 1, &e)));
        *plan.bad.entry("amount_not_positive").or_default() += 1;
    }
    first.shuffle(&mut rng);
    later.shuffle(&mut rng);
    plan.messages = first;
    plan.messages.extend(later);
    plan
}
