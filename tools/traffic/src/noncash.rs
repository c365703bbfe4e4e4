//! Synthetic non-cash traffic (card, e-money, e-wallet, transfer, VA) for Banten with known
//! expectations: every unique payment, multi-party reports, redeliveries and bad records.

use apache_avro::Schema;
use noncash_consumer::{Instrument, NoncashPayment, PaymentStatus, ProviderRole, message_key};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use umkm_core::avro::encode;

use crate::qris::{Plan, garbage, kecamatan_codes, log_normal_amount, now_ms};

pub const SCHEMA: &str = include_str!("../../../schemas/avro/noncash_payment.rev1.avsc");
/// The current revision (2) of the non-cash contract, registry id [`CURRENT_ID`].
pub const CURRENT: &str = crate::contracts::NONCASH_SCHEMA;
pub const CURRENT_ID: u32 = crate::contracts::NONCASH_ID;
/// Registry id of the non-cash v1 contract (schemas/avro/registry.json).
pub const SCHEMA_ID: u32 = 2;

#[derive(Debug, Clone)]
pub struct Spec {
    pub payments: usize,
    pub merchants: usize,
    /// Share of payments reported by the issuer as well as the acquirer.
    pub issuer_report: f64,
    /// Share of payments reported by a gateway as well.
    pub gateway_report: f64,
    /// Share of reports sent twice.
    pub redeliver: f64,
    /// Bad records of each kind: garbage bytes, unknown schema id, invalid region, amount ≤ 0.
    pub bad_each: usize,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            payments: 5_000,
            merchants: 300,
            issuer_report: 0.25,
            gateway_report: 0.1,
            redeliver: 0.1,
            bad_each: 20,
            seed: 11,
        }
    }
}

pub const ACQUIRERS: &[&str] = &["93600008", "93600009", "93600014", "93600002", "93600110"];
const MCCS: &[&str] = &[
    "5812", "5411", "5948", "5699", "5912", "5311", "7230", "4121", "5999",
];

#[derive(Debug, Clone)]
pub struct CardMerchant {
    pub acquirer_id: String,
    pub merchant_id: String,
    pub nmid: Option<String>,
    pub mcc: &'static str,
    pub region: &'static str,
    pub name: String,
}

impl CardMerchant {
    pub fn key(&self) -> String {
        message_key(&self.acquirer_id, &self.merchant_id)
    }
}

pub fn merchants(n: usize, rng: &mut StdRng) -> Vec<CardMerchant> {
    let kec = kecamatan_codes();
    (0..n)
        .map(|i| CardMerchant {
            acquirer_id: ACQUIRERS[i % ACQUIRERS.len()].into(),
            merchant_id: format!("MID{:08}", 50_000 + i),
            nmid: rng
                .random_bool(0.3)
                .then(|| format!("ID20{:011}", 31_000_000 + i)),
            mcc: MCCS[rng.random_range(0..MCCS.len())],
            region: kec[rng.random_range(0..kec.len())],
            name: format!("TOKO BANTEN {i}"),
        })
        .collect()
}

/// One acquirer report of a payment to `m` with reference `reference`.
pub fn payment(m: &CardMerchant, reference: String, rng: &mut StdRng, now: i64) -> NoncashPayment {
    let instrument = match rng.random_range(0..100) {
        0..40 => Instrument::DebitCard,
        40..50 => Instrument::CreditCard,
        50..65 => Instrument::Emoney,
        65..80 => Instrument::Ewallet,
        80..90 => Instrument::BankTransfer,
        _ => Instrument::VirtualAccount,
    };
    let status = match rng.random_range(0..100) {
        0..91 => PaymentStatus::Success,
        91..95 => PaymentStatus::Refunded,
        95..98 => PaymentStatus::Cancelled,
        _ => PaymentStatus::Failed,
    };
    let card = matches!(instrument, Instrument::DebitCard | Instrument::CreditCard);
    let amount = log_normal_amount(rng, 120_000.0, 1.0, 50_000_000);
    NoncashPayment {
        event_id: uuid::Uuid::new_v4().to_string(),
        provider_id: m.acquirer_id.clone(),
        provider_role: ProviderRole::Acquirer,
        instrument,
        reference_number: reference,
        approval_code: card.then(|| format!("{:06}", rng.random_range(0..1_000_000))),
        provider_reference: Some(format!("JRN{}", rng.random_range(1_000_000..9_999_999))),
        partner_reference: None,
        issuer_id: Some(
            ["93600009", "93600014", "93600008", "93600011"][rng.random_range(0..4)].into(),
        ),
        acquirer_id: m.acquirer_id.clone(),
        merchant_id: m.merchant_id.clone(),
        terminal_id: card.then(|| format!("T{:07}", rng.random_range(0..10_000_000))),
        nmid: m.nmid.clone(),
        mcc: m.mcc.into(),
        merchant_name: m.name.clone(),
        region_code: m.region.into(),
        amount: format!("{amount}.00"),
        currency: "IDR".into(),
        status,
        event_time: now - rng.random_range(60_000..30 * 86_400_000),
        masked_account: Some(format!(
            "{}******{:04}",
            rng.random_range(400_000..560_000),
            rng.random_range(0..10_000)
        )),
        original_reference_number: None,
        original_reference_no: None,
        original_partner_reference_no: None,
        original_event_time: None,
        refund_reference: None,
        refund_amount: None,
    }
}

fn status_str(s: PaymentStatus) -> String {
    s.as_str().to_string()
}

pub fn generate(spec: &Spec) -> Plan {
    let schema = Schema::parse_str(SCHEMA).expect("non-cash schema");
    let enc = |e: &NoncashPayment, id: u32| encode(&schema, id, e).expect("sample events encode");
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let ms = merchants(spec.merchants.max(1), &mut rng);
    let now = now_ms();
    let mut plan = Plan::default();
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for i in 0..spec.payments {
        let m = &ms[rng.random_range(0..ms.len())];
        let acq = payment(
            m,
            format!("{:012}", 300_000_000_000u64 + i as u64),
            &mut rng,
            now,
        );
        plan.unique.insert((
            m.key(),
            acq.reference_number.clone(),
            status_str(acq.status),
        ));
        let mut reports = vec![acq.clone()];
        if rng.random_bool(spec.issuer_report) {
            let mut iss = acq.clone();
            iss.event_id = uuid::Uuid::new_v4().to_string();
            iss.provider_role = ProviderRole::Issuer;
            iss.provider_id = iss.issuer_id.clone().unwrap_or_default();
            iss.region_code = m.region[..5].to_string();
            iss.amount = iss.amount.trim_end_matches(".00").to_string();
            iss.terminal_id = None;
            reports.push(iss);
            plan.double_reports += 1;
        }
        if rng.random_bool(spec.gateway_report) {
            let mut gw = acq.clone();
            gw.event_id = uuid::Uuid::new_v4().to_string();
            gw.provider_role = ProviderRole::Gateway;
            gw.provider_id = "MIDTRANS".into();
            reports.push(gw);
            plan.double_reports += 1;
        }
        for r in reports {
            let bytes = enc(&r, SCHEMA_ID);
            let key = Some(m.key().into_bytes());
            plan.good_reports += 1;
            if rng.random_bool(spec.redeliver) {
                later.push((key.clone(), bytes.clone()));
                plan.redeliveries += 1;
            }
            first.push((key, bytes));
        }
    }
    for i in 0..spec.bad_each {
        let m = &ms[i % ms.len()];
        let key = Some(m.key().into_bytes());
        let (bytes, rule) = garbage(i);
        first.push((key.clone(), bytes));
        *plan.bad.entry(rule).or_default() += 1;
        let e = payment(m, format!("U{i:011}"), &mut rng, now);
        first.push((key.clone(), enc(&e, 999)));
        *plan.bad.entry("unknown_schema_id").or_default() += 1;
        let mut e = payment(m, format!("R{i:011}"), &mut rng, now);
        e.region_code = "36.99.01".into();
        first.push((key.clone(), enc(&e, SCHEMA_ID)));
        *plan.bad.entry("region_unknown").or_default() += 1;
        let mut e = payment(m, format!("A{i:011}"), &mut rng, now);
        e.amount = "-120000".into();
        first.push((key, enc(&e, SCHEMA_ID)));
        *plan.bad.entry("amount_not_positive").or_default() += 1;
    }
    first.shuffle(&mut rng);
    later.shuffle(&mut rng);
    plan.messages = first;
    plan.messages.extend(later);
    plan
}
