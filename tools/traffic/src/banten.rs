//! A believable Banten for the traffic publisher (`umkm-traffic`) and the demo: UMKM spread over
//! the 8 kab/kota in proportion to population (Dukcapil 2024, docs/domain.md) and uniformly over
//! each one's kecamatan, the production centres of docs/domain.md (bags in Petir, emping melinjo in
//! Menes, gula aren in Sobang, batik in Tangerang Selatan; food stalls everywhere), mikro / kecil
//! / menengah sizes, onboarding dates spread so that adoption grows; payments by QRIS and the
//! non-cash instruments with WIB business-hour and weekday patterns, log-normal tickets (most QRIS
//! under Rp100.000), issuers and acquirers, statuses; refunds the way they happen (mostly days
//! after the payment, some partial, some twice, some crossing a month end, a few of unknown
//! payments) and same-day cancellations of paid payments; and, at configurable rates,
//! issuer/gateway double reports (sometimes 1.5 s apart across 00:00 WIB), redeliveries, late
//! events and bad records of each kind.
//!
//! Deterministic from the seed: the same [`Spec`] gives the same messages, byte for byte (event
//! ids come from the seeded generator, times from the spec's range, never from the clock). The
//! stream is produced one WIB day at a time ([`Stream::next_day`]) so a year needs no more memory
//! than a few days of it; [`Truth`] is the ground truth of everything produced so far.

use std::collections::BTreeMap;

use apache_avro::Schema;
use merchant_consumer::{
    AcquirerMerchantId, MerchantEvent, MerchantEventType, OnboardingChannel, QrisCriteria, Scale,
    SourceType,
};
use noncash_consumer::{Instrument, NoncashPayment, ProviderRole as NoncashRole};
use qris_consumer::{MerchantCriteria, PaymentStatus, ProviderRole, QrMode, QrisPayment};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use umkm_core::avro::encode;

const DAY_MS: i64 = 86_400_000;
const WIB_MS: i64 = 7 * 3_600_000;

pub use crate::contracts::{
    MERCHANT_ID, MERCHANT_SCHEMA, NONCASH_ID, NONCASH_SCHEMA, QRIS_ID, QRIS_SCHEMA, UNKNOWN_ID,
    garbage, merchant_id, registry_event,
};

/// Kab/kota and population (Dukcapil, Semester II 2024; docs/domain.md "Regions").
pub const KAB_KOTA: &[(&str, &str, u64)] = &[
    ("36.01", "Kab. Pandeglang", 1_437_046),
    ("36.02", "Kab. Lebak", 1_531_564),
    ("36.03", "Kab. Tangerang", 3_459_706),
    ("36.04", "Kab. Serang", 1_791_795),
    ("36.71", "Kota Tangerang", 1_957_349),
    ("36.72", "Kota Cilegon", 480_378),
    ("36.73", "Kota Serang", 759_929),
    ("36.74", "Kota Tangerang Selatan", 1_463_607),
];

/// Issuers (payer side) and acquirers (merchant side) by their national switching ids.
const ISSUERS: &[&str] = &["93600915", "93600914", "93600912", "93600008", "93600009"];
const ACQUIRERS: &[&str] = &["93600008", "93600009", "93600014", "93600002", "93600110"];

#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub seed: u64,
    pub merchants: usize,
    /// Payments over the whole range (each may have several reports).
    pub payments: usize,
    /// First and last WIB day of the range, as days since 1970-01-01.
    pub first_day: i64,
    pub last_day: i64,
    /// Share of payments also reported by the issuer (QRIS) or the issuer or gateway (non-cash).
    pub double_report: f64,
    /// Share of messages sent a second time, later.
    pub redeliver: f64,
    /// Share of payments published 1-5 days after the day they happened.
    pub late: f64,
    /// Bad records of each kind for each topic.
    pub bad_each: usize,
    /// Share of successful payments refunded later (mostly 1-20 days later).
    pub refund: f64,
    /// Share of refunds that are partial (half of those are followed by a second partial refund
    /// of the rest).
    pub partial_refund: f64,
    /// Share of successful payments cancelled (voided) the same day.
    pub cancel_after: f64,
    /// Refunds of payments that are not in the data, per payment.
    pub unknown_refund: f64,
    /// Share of double-reported payments made at 00:00 WIB, the two parties' clocks 1.5 s apart
    /// across midnight (one payment, two WIB dates).
    pub midnight: f64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            seed: 1,
            merchants: 2_000,
            payments: 50_000,
            first_day: 20_454, // 2026-01-01
            last_day: 20_543,  // 2026-03-31
            double_report: 0.15,
            redeliver: 0.02,
            late: 0.01,
            bad_each: 5,
            refund: 0.012,
            partial_refund: 0.3,
            cancel_after: 0.003,
            unknown_refund: 0.0005,
            midnight: 0.01,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    Qris,
    Noncash,
    Merchants,
}

/// One message for one family's topic.
#[derive(Debug, Clone)]
pub struct Msg {
    pub family: Feed,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// The ground truth of what was produced: what must land, and what must not.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Truth {
    pub messages: BTreeMap<Feed, u64>,
    /// Rows each table must end with.
    pub qris_payments: u64,
    pub noncash_payments: u64,
    pub merchant_versions: u64,
    pub merchants_registered: u64,
    /// Extra reports of a payment by another party (dropped as duplicates).
    pub double_reports: BTreeMap<Feed, u64>,
    /// Messages sent twice (dropped as duplicates).
    pub redeliveries: BTreeMap<Feed, u64>,
    /// Payments published days after they happened (they land in their own day).
    pub late_payments: u64,
    /// Bad records per family and DLQ rule.
    pub bad: BTreeMap<Feed, BTreeMap<&'static str, u64>>,
    /// Successful payments and their value by channel (qris, card, emoney, transfer).
    pub success_by_channel: BTreeMap<&'static str, (u64, i64)>,
    /// Registered merchants per kab/kota at the end of the range.
    pub registered_by_kab_kota: BTreeMap<&'static str, u64>,
    /// Successful payments and their value net of refunds and cancellations (docs/metrics.md:
    /// a payment refunded or cancelled in full drops out, a partial refund lowers the value), by
    /// channel, in the period of the payment.
    pub net_by_channel: BTreeMap<&'static str, (u64, i64)>,
    /// Successful payments and value, gross and net, by the merchant's kab/kota:
    /// (gross count, gross value, net count, net value).
    pub by_kab_kota: BTreeMap<&'static str, (u64, i64, u64, i64)>,
    /// Refund rows that land (each partial refund is one), of them refunds of payments that are
    /// not in the data, and cancellations of paid payments.
    pub refunds: u64,
    pub unlinked_refunds: u64,
    pub voided: u64,
    /// Payments reported by two parties 1.5 s apart across 00:00 WIB (each lands once).
    pub midnight_doubles: u64,
    /// Rows that land with an event time within 2 s of 00:00 WIB (the midnight doubles among
    /// them), for the demo's check that each double landed once.
    pub rows_near_midnight: u64,
}

/// FNV-1a (64-bit) over every message produced, in order: equal digests mean the same stream.
#[derive(Debug, Clone, Copy)]
pub struct Digest(pub u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn add(&mut self, m: &Msg) {
        self.bytes(&[m.family as u8]);
        self.bytes(&(m.key.len() as u64).to_le_bytes());
        self.bytes(&m.key);
        self.bytes(&(m.payload.len() as u64).to_le_bytes());
        self.bytes(&m.payload);
    }
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

impl Truth {
    pub fn duplicates(&self, f: Feed) -> u64 {
        self.double_reports.get(&f).copied().unwrap_or(0)
            + self.redeliveries.get(&f).copied().unwrap_or(0)
    }
    pub fn bad_total(&self, f: Feed) -> u64 {
        self.bad.get(&f).map(|m| m.values().sum()).unwrap_or(0)
    }
}

struct Merchant {
    id: String,
    kab: &'static str,
    kec: &'static str,
    kbli: &'static str,
    mcc: &'static str,
    scale: Scale,
    nmid: Option<String>,
    /// (acquirer id, merchant id) for card / e-money / transfer acceptance.
    mid: Option<(&'static str, String)>,
    onboarding_day: i64,
    /// Relative payment volume: 0 for merchants registered for QRIS or cards who do not use
    /// them (about a third), log-normal otherwise, so a few merchants take many payments.
    activity: f64,
    /// Day of an UPDATED version (moves to another kecamatan of its kab/kota), if any.
    update_day: Option<i64>,
    update_kec: &'static str,
    /// Day the merchant closes (no payments after it), if any.
    close_day: Option<i64>,
}

/// One refund of a payment, as the model plans it.
struct Refund {
    event_id: String,
    at: i64,
    /// Its number, for its own reference (and RRN).
    no: u64,
    /// The refunded part; `None` for the whole payment.
    amount: Option<i64>,
}

/// A payment report that can be cancelled or refunded (the two payment contracts).
trait Undoable: Serialize + Clone {
    const FAMILY: Feed;
    /// Index into `Stream::schemas`, and the registry id.
    const SCHEMA: usize;
    const SCHEMA_ID: u32;
    fn event_time(&self) -> i64;
    fn message_key(&self) -> Vec<u8>;
    fn cancelled(&self, event_id: String, at: i64) -> Self;
    /// The refund report; `named`: with its own reference, naming the payment (revision 2),
    /// else repeating the payment's reference (revision 1).
    fn refund(&self, r: Refund, named: bool) -> Self;
}

impl Undoable for QrisPayment {
    const FAMILY: Feed = Feed::Qris;
    const SCHEMA: usize = 0;
    const SCHEMA_ID: u32 = QRIS_ID;
    fn event_time(&self) -> i64 {
        self.event_time
    }
    fn message_key(&self) -> Vec<u8> {
        self.nmid.clone().into_bytes()
    }
    fn cancelled(&self, event_id: String, at: i64) -> Self {
        QrisPayment {
            event_id,
            status: PaymentStatus::Cancelled,
            event_time: at,
            ..self.clone()
        }
    }
    fn refund(&self, r: Refund, named: bool) -> Self {
        let mut p = QrisPayment {
            event_id: r.event_id,
            status: PaymentStatus::Refunded,
            event_time: r.at,
            ..self.clone()
        };
        if named {
            p.rrn = format!("{:012}", 700_000_000_000 + r.no);
            p.original_rrn = Some(self.rrn.clone());
            p.original_reference_no = self.acquirer_reference.clone();
            p.original_event_time = Some(self.event_time);
            p.refund_reference = Some(format!("RF{:010}", r.no));
            p.refund_amount = r.amount.map(|a| format!("{a}.00"));
        }
        p
    }
}

impl Undoable for NoncashPayment {
    const FAMILY: Feed = Feed::Noncash;
    const SCHEMA: usize = 1;
    const SCHEMA_ID: u32 = NONCASH_ID;
    fn event_time(&self) -> i64 {
        self.event_time
    }
    fn message_key(&self) -> Vec<u8> {
        format!("{}:{}", self.acquirer_id, self.merchant_id).into_bytes()
    }
    fn cancelled(&self, event_id: String, at: i64) -> Self {
        NoncashPayment {
            event_id,
            status: PaymentStatus::Cancelled,
            event_time: at,
            ..self.clone()
        }
    }
    fn refund(&self, r: Refund, named: bool) -> Self {
        let mut p = NoncashPayment {
            event_id: r.event_id,
            status: PaymentStatus::Refunded,
            event_time: r.at,
            ..self.clone()
        };
        if named {
            p.reference_number = format!("RFD{:011}", r.no);
            p.original_reference_number = Some(self.reference_number.clone());
            p.original_reference_no = self.provider_reference.clone();
            p.original_event_time = Some(self.event_time);
            p.refund_reference = Some(format!("RF{:010}", r.no));
            p.refund_amount = r.amount.map(|a| format!("{a}.00"));
        }
        p
    }
}

pub struct Stream {
    spec: Spec,
    rng: StdRng,
    schemas: [Schema; 3],
    merchants: Vec<Merchant>,
    /// Merchant indexes by onboarding day (ascending).
    by_onboarding: Vec<usize>,
    day: i64,
    /// Messages held back to a later day: (day, message).
    held: Vec<(i64, Msg)>,
    /// Payments per day weight sum, for the per-day share.
    weight_sum: f64,
    payments_done: usize,
    rrn: u64,
    /// Refund references and RRNs handed out so far.
    refund_no: u64,
    /// What the last planned refunds or cancellation took off their payment's value.
    last_undone: i64,
    bad_plan: Vec<(i64, Feed, usize)>,
    pub truth: Truth,
}

fn weekday(day: i64) -> i64 {
    // 1970-01-01 was a Thursday; 0 = Monday.
    (day + 3).rem_euclid(7)
}

fn day_weight(day: i64) -> f64 {
    match weekday(day) {
        5 => 1.2,  // Saturday: markets and food stalls busiest
        6 => 1.05, // Sunday
        4 => 1.1,  // Friday
        _ => 1.0,
    }
}

/// WIB hour-of-day weights: breakfast, lunch and evening peaks, quiet nights.
const HOURS: [f64; 24] = [
    0.2, 0.1, 0.1, 0.1, 0.3, 0.8, 2.0, 3.5, 4.0, 3.5, 3.5, 5.0, 6.0, 5.0, 3.5, 3.5, 4.5, 5.5, 6.5,
    7.0, 6.0, 4.0, 2.0, 0.8,
];

fn pick<T: Copy>(rng: &mut StdRng, items: &[(T, f64)]) -> T {
    let total: f64 = items.iter().map(|i| i.1).sum();
    let mut x = rng.random_range(0.0..total);
    for (v, w) in items {
        if x < *w {
            return *v;
        }
        x -= w;
    }
    items[items.len() - 1].0
}

fn uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

fn log_normal(rng: &mut StdRng, median: f64, sigma: f64, max: i64) -> i64 {
    let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    ((median * (sigma * z).exp()) as i64 / 500 * 500).clamp(1_000, max)
}

fn kecamatan_of(kab: &str) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = umkm_core::reference::banten_codes()
        .filter(|c| c.len() == 8 && c.starts_with(kab))
        .collect();
    // Sorted: the reference set's iteration order differs between processes.
    v.sort_unstable();
    v
}

/// (KBLI, MCC) of a merchant in kecamatan `kec`: the production centres first, food stalls
/// everywhere.
fn business(rng: &mut StdRng, kab: &str, kec: &str) -> (&'static str, &'static str) {
    let centre = match kec {
        "36.04.19" => Some(("15121", "5948")),          // bags, Petir
        "36.01.13" => Some(("10794", "5499")),          // emping melinjo, Menes
        "36.02.22" => Some(("10722", "5499")),          // gula aren, Sobang
        _ if kab == "36.74" => Some(("13134", "5970")), // batik, Tangerang Selatan
        _ => None,
    };
    if let Some(c) = centre
        && rng.random_bool(if kab == "36.74" { 0.2 } else { 0.6 })
    {
        return c;
    }
    pick(
        rng,
        &[
            (("56102", "5812"), 30.0), // warung makan
            (("56103", "5814"), 14.0), // kedai / stall
            (("47111", "5499"), 20.0), // toko kelontong
            (("15121", "5948"), 4.0),
            (("13134", "5970"), 3.0),
            (("10794", "5499"), 3.0),
            (("96111", "7230"), 10.0), // barber and beauty
            (("45407", "7538"), 8.0),  // motorcycle repair
            (("82190", "7399"), 8.0),  // fotokopi and office services
        ],
    )
}

impl Stream {
    pub fn new(spec: Spec) -> Stream {
        assert!(spec.last_day >= spec.first_day, "empty range");
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let kabs: Vec<(&'static str, f64)> =
            KAB_KOTA.iter().map(|(c, _, p)| (*c, *p as f64)).collect();
        let kecs: BTreeMap<&str, Vec<&'static str>> = KAB_KOTA
            .iter()
            .map(|(c, _, _)| (*c, kecamatan_of(c)))
            .collect();
        let days = spec.last_day - spec.first_day + 1;
        let mut merchants = Vec::with_capacity(spec.merchants);
        for i in 0..spec.merchants {
            let kab = pick(&mut rng, &kabs);
            let ks = &kecs[kab];
            let kec = ks[rng.random_range(0..ks.len())];
            let (kbli, mcc) = business(&mut rng, kab, kec);
            let scale = pick(
                &mut rng,
                &[
                    (Scale::Mikro, 88.0),
                    (Scale::Kecil, 10.0),
                    (Scale::Menengah, 2.0),
                ],
            );
            // A third were onboarded before the range; the rest through it, so adoption grows.
            let onboarding_day = if rng.random_bool(0.35) {
                spec.first_day - rng.random_range(1..720)
            } else {
                spec.first_day + rng.random_range(0..days)
            };
            let qris = rng.random_bool(0.85);
            let card = !qris || rng.random_bool(0.35);
            let nmid = qris.then(|| format!("ID10{:011}", 25_000_000 + i));
            let mid = card.then(|| {
                (
                    ACQUIRERS[rng.random_range(0..ACQUIRERS.len())],
                    format!("MB{:08}", 70_000 + i),
                )
            });
            let update_day = rng
                .random_bool(0.08)
                .then(|| onboarding_day.max(spec.first_day) + rng.random_range(0..days));
            let update_kec = ks[rng.random_range(0..ks.len())];
            let close_day = rng
                .random_bool(0.02)
                .then(|| onboarding_day.max(spec.first_day) + rng.random_range(0..days))
                .map(|d| d.max(update_day.unwrap_or(d) + 1));
            let activity = if rng.random_bool(0.32) {
                0.0
            } else {
                let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()).exp()
            };
            merchants.push(Merchant {
                id: format!("NIB-{:013}", 9_130_000_000_000u64 + i as u64),
                kab,
                kec,
                kbli,
                mcc,
                scale,
                nmid,
                mid,
                onboarding_day,
                activity,
                update_day,
                update_kec,
                close_day,
            });
        }
        let mut by_onboarding: Vec<usize> = (0..merchants.len()).collect();
        by_onboarding.sort_by_key(|&i| (merchants[i].onboarding_day, i));
        let weight_sum = (spec.first_day..=spec.last_day).map(day_weight).sum();
        // Bad records: every kind on a day spread over the range, per family.
        let mut bad_plan = Vec::new();
        for f in [Feed::Qris, Feed::Noncash, Feed::Merchants] {
            for i in 0..spec.bad_each * 4 {
                bad_plan.push((spec.first_day + rng.random_range(0..days), f, i));
            }
        }
        let schemas = [
            Schema::parse_str(QRIS_SCHEMA).expect("qris schema"),
            Schema::parse_str(NONCASH_SCHEMA).expect("noncash schema"),
            Schema::parse_str(MERCHANT_SCHEMA).expect("merchant schema"),
        ];
        Stream {
            day: spec.first_day,
            spec,
            rng,
            schemas,
            merchants,
            by_onboarding,
            held: Vec::new(),
            weight_sum,
            payments_done: 0,
            rrn: 0,
            refund_no: 0,
            last_undone: 0,
            bad_plan,
            truth: Truth::default(),
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Days left to produce (including the current one).
    pub fn days_left(&self) -> i64 {
        (self.spec.last_day - self.day + 1).max(0)
    }

    /// The next WIB day's messages, in publishing order; `None` after the last day (held
    /// messages are all released on the last day).
    /// Every day at once, with the truth of the whole range: for streams that fit in memory.
    pub fn all_days(mut self) -> (Vec<Msg>, Truth) {
        let mut v = Vec::new();
        while let Some(d) = self.next_day() {
            v.extend(d);
        }
        (v, self.truth)
    }

    pub fn next_day(&mut self) -> Option<Vec<Msg>> {
        if self.day > self.spec.last_day {
            return None;
        }
        let day = self.day;
        let mut out = Vec::new();
        // Registry first: merchants onboarded up to today (those before the range on day one).
        for idx in 0..self.by_onboarding.len() {
            let i = self.by_onboarding[idx];
            let m = &self.merchants[i];
            let (on, update, close) = (
                m.onboarding_day.max(self.spec.first_day),
                m.update_day,
                m.close_day,
            );
            if on == day {
                self.registry(i, 1, MerchantEventType::Registered, &mut out);
            }
            if update == Some(day) {
                self.registry(i, 2, MerchantEventType::Updated, &mut out);
            }
            if close == Some(day) {
                let v = if update.is_some_and(|u| u < day) {
                    3
                } else {
                    2
                };
                self.registry(i, v, MerchantEventType::Closed, &mut out);
            }
        }
        // Payments: this day's share of the total, the last day takes the remainder.
        let share = if day == self.spec.last_day {
            self.spec.payments - self.payments_done
        } else {
            let cum = (self.spec.first_day..=day).map(day_weight).sum::<f64>() / self.weight_sum;
            ((cum * self.spec.payments as f64).round() as usize)
                .saturating_sub(self.payments_done)
                .min(self.spec.payments - self.payments_done)
        };
        // Who may pay today: onboarded, not closed, and using digital payments at all; picked
        // in proportion to their activity.
        let mut active: Vec<usize> = Vec::new();
        let mut cumulative: Vec<f64> = Vec::new();
        let mut total = 0.0;
        for &i in self.by_onboarding.iter() {
            let m = &self.merchants[i];
            if m.onboarding_day > day {
                break;
            }
            if m.activity > 0.0 && m.close_day.is_none_or(|c| c > day) {
                total += m.activity;
                active.push(i);
                cumulative.push(total);
            }
        }
        if !active.is_empty() {
            for _ in 0..share {
                let x = self.rng.random_range(0.0..total);
                let k = cumulative
                    .partition_point(|c| *c <= x)
                    .min(active.len() - 1);
                self.payment(active[k], day, &mut out);
            }
            self.payments_done += share;
        }
        // Bad records planned for today.
        let bad: Vec<(Feed, usize)> = self
            .bad_plan
            .iter()
            .filter(|b| b.0 == day)
            .map(|b| (b.1, b.2))
            .collect();
        for (f, i) in bad {
            self.bad_record(f, i, day, &mut out);
        }
        // Held messages due today (all of them on the last day).
        let last = day == self.spec.last_day;
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(d, _)| *d <= day || last);
        self.held = keep;
        out.extend(due.into_iter().map(|(_, m)| m));
        for m in &out {
            *self.truth.messages.entry(m.family).or_default() += 1;
        }
        self.day += 1;
        if last {
            for m in &self.merchants {
                let closed = m.close_day.is_some_and(|c| c <= self.spec.last_day);
                if m.onboarding_day <= self.spec.last_day && !closed {
                    *self.truth.registered_by_kab_kota.entry(m.kab).or_default() += 1;
                }
            }
        }
        Some(out)
    }

    /// Sends `msg` now, and again later with the redelivery probability.
    fn send(&mut self, day: i64, msg: Msg, out: &mut Vec<Msg>) {
        if self.rng.random_bool(self.spec.redeliver) {
            *self.truth.redeliveries.entry(msg.family).or_default() += 1;
            let later = day + self.rng.random_range(0..2);
            self.held.push((later, msg.clone()));
        }
        out.push(msg);
    }

    fn registry(&mut self, i: usize, version: i64, t: MerchantEventType, out: &mut Vec<Msg>) {
        let m = &self.merchants[i];
        let day = match t {
            MerchantEventType::Registered => m.onboarding_day.max(self.spec.first_day),
            MerchantEventType::Updated => m.update_day.unwrap_or(m.onboarding_day),
            MerchantEventType::Closed => m.close_day.unwrap_or(m.onboarding_day),
        };
        let kec = if version >= 2 && m.update_day.is_some() {
            m.update_kec
        } else {
            m.kec
        };
        let event_id = uuid(&mut self.rng);
        let m = &self.merchants[i];
        let e = MerchantEvent {
            event_id,
            source_id: "DINKOPUKM-BANTEN".into(),
            source_type: SourceType::Registry,
            event_type: t,
            merchant_id: m.id.clone(),
            version,
            event_time: day * DAY_MS - WIB_MS + 9 * 3_600_000,
            business_name: format!("UMKM {} {}", m.kec, i),
            nmid: m.nmid.clone(),
            acquirer_merchant_ids: m
                .mid
                .iter()
                .map(|(a, mid)| AcquirerMerchantId {
                    acquirer_id: (*a).into(),
                    merchant_id: mid.clone(),
                })
                .collect(),
            kbli_codes: vec![m.kbli.into()],
            mcc: Some(m.mcc.into()),
            scale: Some(m.scale),
            qris_criteria: m.nmid.as_ref().map(|_| match m.scale {
                Scale::Mikro => QrisCriteria::UMI,
                Scale::Kecil => QrisCriteria::UKE,
                _ => QrisCriteria::UME,
            }),
            region_code: kec.into(),
            onboarding_channel: OnboardingChannel::GovernmentProgram,
            onboarding_date: Some(m.onboarding_day as i32),
        };
        let key = m.id.clone().into_bytes();
        let payload = encode(&self.schemas[2], MERCHANT_ID, &e).expect("merchant event encodes");
        self.truth.merchant_versions += 1;
        if t == MerchantEventType::Registered {
            self.truth.merchants_registered += 1;
        }
        let msg = Msg {
            family: Feed::Merchants,
            key,
            payload,
        };
        self.send(day, msg, out);
    }

    fn payment(&mut self, i: usize, day: i64, out: &mut Vec<Msg>) {
        let rng = &mut self.rng;
        let hour = pick(rng, &HOURS.iter().copied().enumerate().collect::<Vec<_>>());
        let mut t =
            day * DAY_MS - WIB_MS + hour as i64 * 3_600_000 + rng.random_range(0..3_600_000);
        let status = pick(
            rng,
            &[
                (PaymentStatus::Success, 95.0),
                (PaymentStatus::Cancelled, 2.0),
                (PaymentStatus::Failed, 3.0),
            ],
        );
        let m = &self.merchants[i];
        let qris = match (&m.nmid, &m.mid) {
            (Some(_), Some(_)) => rng.random_bool(0.7),
            (Some(_), None) => true,
            _ => false,
        };
        let late = rng.random_bool(self.spec.late);
        let publish_day = if late {
            self.truth.late_payments += 1;
            day + rng.random_range(1..=5)
        } else {
            day
        };
        let double = rng.random_bool(self.spec.double_report);
        // A double report at midnight: the acquirer's clock at 23:59:59.3 WIB, the other
        // party's 1.5 s later, on the next WIB date.
        let midnight = double && rng.random_bool(self.spec.midnight);
        if midnight {
            t = (day + 1) * DAY_MS - WIB_MS - 700;
            self.truth.midnight_doubles += 1;
        }
        let other_t = if midnight { t + 1_500 } else { t };
        self.rrn += 1;
        let mut msgs = Vec::new();
        let (channel, amount) = if qris {
            let amount = log_normal(rng, 25_000.0, 0.9, 10_000_000);
            let nmid = m.nmid.clone().unwrap_or_default();
            let issuer = ISSUERS[rng.random_range(0..ISSUERS.len())];
            let acquirer = m.mid.as_ref().map(|x| x.0).unwrap_or("93600008");
            let mut p = QrisPayment {
                event_id: uuid(rng),
                provider_id: acquirer.into(),
                provider_role: ProviderRole::Acquirer,
                rrn: format!("{:012}", 500_000_000_000 + self.rrn),
                issuer_reference: Some(format!("ISS{:09}", self.rrn)),
                acquirer_reference: Some(format!("ACQ{:09}", self.rrn)),
                partner_reference: None,
                issuer_id: Some(issuer.into()),
                acquirer_id: Some(acquirer.into()),
                nmid: nmid.clone(),
                merchant_pan: Some(format!("93600008{:011}", i)),
                mcc: m.mcc.into(),
                merchant_criteria: match m.scale {
                    Scale::Mikro => MerchantCriteria::UMI,
                    Scale::Kecil => MerchantCriteria::UKE,
                    _ => MerchantCriteria::UME,
                },
                merchant_name: format!("UMKM {i}"),
                merchant_city: Some("BANTEN".into()),
                merchant_postal_code: None,
                region_code: m.kec.into(),
                qr_mode: pick(
                    rng,
                    &[
                        (QrMode::MpmStatic, 70.0),
                        (QrMode::MpmDynamic, 25.0),
                        (QrMode::Cpm, 5.0),
                    ],
                ),
                amount: format!("{amount}.00"),
                currency: "IDR".into(),
                status,
                event_time: t,
                payer_id: Some(format!("08{:010}", rng.random_range(0..10_000_000_000u64))),
                original_rrn: None,
                original_reference_no: None,
                original_partner_reference_no: None,
                original_event_time: None,
                refund_reference: None,
                refund_amount: None,
            };
            let key = nmid.into_bytes();
            msgs.push(Msg {
                family: Feed::Qris,
                key: key.clone(),
                payload: encode(&self.schemas[0], QRIS_ID, &p).expect("qris encodes"),
            });
            let paid = p.clone();
            if double {
                p.event_id = uuid(rng);
                p.provider_id = issuer.into();
                p.provider_role = ProviderRole::Issuer;
                p.event_time = other_t;
                msgs.push(Msg {
                    family: Feed::Qris,
                    key: key.clone(),
                    payload: encode(&self.schemas[0], QRIS_ID, &p).expect("qris encodes"),
                });
                *self.truth.double_reports.entry(Feed::Qris).or_default() += 1;
            }
            self.landed_row(Feed::Qris, t);
            if status == PaymentStatus::Success {
                self.undos(&paid, amount, day, out);
            }
            if self.rng.random_bool(self.spec.unknown_refund) {
                // A refund of a payment this data never saw (older than the range, say).
                self.refund_no += 1;
                let mut r = paid.clone();
                r.event_id = uuid(&mut self.rng);
                r.status = PaymentStatus::Refunded;
                r.rrn = format!("{:012}", 800_000_000_000 + self.refund_no);
                r.original_rrn = Some(format!("{:012}", 900_000_000_000 + self.refund_no));
                r.refund_reference = Some(format!("RFX{:09}", self.refund_no));
                let msg = Msg {
                    family: Feed::Qris,
                    key,
                    payload: encode(&self.schemas[0], QRIS_ID, &r).expect("qris encodes"),
                };
                self.landed_row(Feed::Qris, r.event_time);
                self.truth.refunds += 1;
                self.truth.unlinked_refunds += 1;
                self.send_on(day, publish_day, msg, out);
            }
            ("qris", amount)
        } else {
            let (acquirer, mid) = m.mid.clone().unwrap_or(("93600008", String::new()));
            let instrument = pick(
                rng,
                &[
                    (Instrument::DebitCard, 35.0),
                    (Instrument::CreditCard, 8.0),
                    (Instrument::Emoney, 12.0),
                    (Instrument::Ewallet, 20.0),
                    (Instrument::BankTransfer, 15.0),
                    (Instrument::VirtualAccount, 10.0),
                ],
            );
            let card = matches!(instrument, Instrument::DebitCard | Instrument::CreditCard);
            let amount = log_normal(rng, 120_000.0, 1.0, 50_000_000);
            let issuer = ISSUERS[rng.random_range(0..ISSUERS.len())];
            let mut p = NoncashPayment {
                event_id: uuid(rng),
                provider_id: acquirer.into(),
                provider_role: NoncashRole::Acquirer,
                instrument,
                reference_number: format!("RF{:012}", self.rrn),
                approval_code: card.then(|| format!("{:06}", rng.random_range(0..1_000_000))),
                provider_reference: Some(format!("JRN{:09}", self.rrn)),
                partner_reference: None,
                issuer_id: Some(issuer.into()),
                acquirer_id: acquirer.into(),
                merchant_id: mid.clone(),
                terminal_id: card.then(|| format!("T{:07}", i)),
                nmid: m.nmid.clone(),
                mcc: m.mcc.into(),
                merchant_name: format!("UMKM {i}"),
                region_code: m.kec.into(),
                amount: format!("{amount}.00"),
                currency: "IDR".into(),
                status,
                event_time: t,
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
            };
            let key = format!("{acquirer}:{mid}").into_bytes();
            msgs.push(Msg {
                family: Feed::Noncash,
                key: key.clone(),
                payload: encode(&self.schemas[1], NONCASH_ID, &p).expect("noncash encodes"),
            });
            let paid = p.clone();
            if double {
                p.event_id = uuid(rng);
                let gateway = rng.random_bool(0.5);
                p.provider_role = if gateway {
                    NoncashRole::Gateway
                } else {
                    NoncashRole::Issuer
                };
                p.provider_id = if gateway {
                    "PG-XENDIT".into()
                } else {
                    issuer.into()
                };
                p.event_time = other_t;
                msgs.push(Msg {
                    family: Feed::Noncash,
                    key,
                    payload: encode(&self.schemas[1], NONCASH_ID, &p).expect("noncash encodes"),
                });
                *self.truth.double_reports.entry(Feed::Noncash).or_default() += 1;
            }
            self.landed_row(Feed::Noncash, t);
            if status == PaymentStatus::Success {
                self.undos(&paid, amount, day, out);
            }
            let ch = match instrument {
                Instrument::DebitCard | Instrument::CreditCard => "card",
                Instrument::Emoney | Instrument::Ewallet => "emoney",
                _ => "transfer",
            };
            (ch, amount)
        };
        if status == PaymentStatus::Success {
            let c = self.truth.success_by_channel.entry(channel).or_default();
            c.0 += 1;
            c.1 += amount;
            let undone = self.last_undone;
            let counts = undone < amount;
            let n = self.truth.net_by_channel.entry(channel).or_default();
            n.0 += u64::from(counts);
            n.1 += amount - undone;
            let k = self
                .truth
                .by_kab_kota
                .entry(self.merchants[i].kab)
                .or_default();
            k.0 += 1;
            k.1 += amount;
            k.2 += u64::from(counts);
            k.3 += amount - undone;
        }
        for msg in msgs {
            if late {
                self.held.push((publish_day, msg));
            } else {
                self.send(day, msg, out);
            }
        }
    }

    /// Counts a row that must land (and whether it lies within 2 s of 00:00 WIB).
    fn landed_row(&mut self, f: Feed, t: i64) {
        match f {
            Feed::Qris => self.truth.qris_payments += 1,
            Feed::Noncash => self.truth.noncash_payments += 1,
            Feed::Merchants => self.truth.merchant_versions += 1,
        }
        let s = (t.div_euclid(1000) + WIB_MS / 1000).rem_euclid(86_400);
        if s <= 2 || s >= 86_398 {
            self.truth.rows_near_midnight += 1;
        }
    }

    /// What happens to a successful payment made at `t` afterwards: a same-day cancellation,
    /// or refunds (time, refunded amount, whether partial). Refunds after the range are not
    /// produced. Sets `last_undone` to what they take off the payment's value.
    fn plan_undos(&mut self, t: i64, amount: i64) -> (Option<i64>, Vec<(i64, i64, bool)>) {
        let end = (self.spec.last_day + 1) * DAY_MS - WIB_MS;
        let rng = &mut self.rng;
        self.last_undone = 0;
        if rng.random_bool(self.spec.cancel_after) {
            let at = (t + rng.random_range(60_000..600_000)).min(end - 1);
            self.last_undone = amount;
            return (Some(at), Vec::new());
        }
        if !rng.random_bool(self.spec.refund) {
            return (None, Vec::new());
        }
        // Mostly days later, a fifth the same day.
        let delay = if rng.random_bool(0.2) {
            rng.random_range(600_000..6 * 3_600_000)
        } else {
            rng.random_range(1..=20) * DAY_MS + rng.random_range(-3 * 3_600_000..3 * 3_600_000)
        };
        let first = t + delay;
        let mut refunds = Vec::new();
        if rng.random_bool(self.spec.partial_refund) && amount >= 2_000 {
            let part =
                (amount * rng.random_range(10..90) / 100 / 500 * 500).clamp(500, amount - 500);
            refunds.push((first, part, true));
            if rng.random_bool(0.5) {
                let second = first + rng.random_range(1..=5) * DAY_MS;
                refunds.push((second, amount - part, true));
            }
        } else {
            refunds.push((first, amount, false));
        }
        refunds.retain(|r| r.0 < end);
        self.last_undone = refunds.iter().map(|r| r.1).sum::<i64>().min(amount);
        (None, refunds)
    }

    /// Publishes `msg` today, or holds it for `publish_day`, with the usual chance of a
    /// redelivery.
    fn send_on(&mut self, today: i64, publish_day: i64, msg: Msg, out: &mut Vec<Msg>) {
        if publish_day <= today {
            self.send(today, msg, out);
        } else {
            if self.rng.random_bool(self.spec.redeliver) {
                *self.truth.redeliveries.entry(msg.family).or_default() += 1;
                let later = publish_day + self.rng.random_range(0..2);
                self.held.push((later, msg.clone()));
            }
            self.held.push((publish_day, msg));
        }
    }

    fn day_of(t: i64) -> i64 {
        (t + WIB_MS).div_euclid(DAY_MS)
    }

    /// The cancellation or refunds of a successful payment, each published on its own day. A
    /// full refund is sometimes reported the revision-1 way (the payment's own reference, no
    /// original fields); the others name the payment and carry their own reference
    /// ([`Undoable::refund`]).
    fn undos<P: Undoable>(&mut self, paid: &P, amount: i64, day: i64, out: &mut Vec<Msg>) {
        let (void, refunds) = self.plan_undos(paid.event_time(), amount);
        let mut undos = Vec::new();
        if let Some(at) = void {
            undos.push(paid.cancelled(uuid(&mut self.rng), at));
            self.truth.voided += 1;
        }
        let single = refunds.len() == 1;
        for (at, part, partial) in refunds {
            self.refund_no += 1;
            let named = !(single && !partial && self.rng.random_bool(0.3));
            let refund = Refund {
                event_id: uuid(&mut self.rng),
                at,
                no: self.refund_no,
                amount: partial.then_some(part),
            };
            undos.push(paid.refund(refund, named));
            self.truth.refunds += 1;
        }
        for u in undos {
            self.landed_row(P::FAMILY, u.event_time());
            let msg = Msg {
                family: P::FAMILY,
                key: u.message_key(),
                payload: encode(&self.schemas[P::SCHEMA], P::SCHEMA_ID, &u).expect("encodes"),
            };
            // On its own day: a refund of a payment published late can come first.
            self.send_on(day, Self::day_of(u.event_time()), msg, out);
        }
    }

    /// Bad record number `i` of family `f`: kinds in turn (garbage, unknown schema id, unknown
    /// region, and a negative amount or a 4-digit KBLI), each with the DLQ rule it must get.
    fn bad_record(&mut self, f: Feed, i: usize, day: i64, out: &mut Vec<Msg>) {
        let kind = i % 4;
        let n = i / 4;
        let t = day * DAY_MS - WIB_MS + 10 * 3_600_000;
        let (key, payload, rule): (Vec<u8>, Vec<u8>, &'static str) = match (f, kind) {
            (_, 0) => {
                let (g, rule) = garbage(n);
                (b"garbage".to_vec(), g, rule)
            }
            (Feed::Merchants, _) => {
                let id = format!("NIB-BAD-{i:05}");
                let mut e =
                    registry_event(0, 1, MerchantEventType::Registered, "36.04.19", "56102", t);
                e.event_id = uuid(&mut self.rng);
                e.merchant_id = id.clone();
                let (sid, rule) = match kind {
                    1 => (UNKNOWN_ID, "unknown_schema_id"),
                    2 => {
                        e.region_code = "36.99.01".into();
                        (MERCHANT_ID, "region_unknown")
                    }
                    _ => {
                        e.kbli_codes = vec!["5610".into()];
                        (MERCHANT_ID, "kbli_format")
                    }
                };
                let p = encode(&self.schemas[2], sid, &e).expect("encodes");
                (id.into_bytes(), p, rule)
            }
            (Feed::Qris, _) => {
                let mut rng = StdRng::seed_from_u64(self.spec.seed ^ (i as u64) << 8);
                let m = crate::qris::Merchant {
                    nmid: format!("ID10{:011}", 26_000_000 + i),
                    pan: "9360000812345678".into(),
                    mcc: "5812",
                    region: "36.04.19",
                    criteria: MerchantCriteria::UMI,
                    name: "UMKM BAD".into(),
                };
                let mut p =
                    crate::qris::payment(&m, format!("{:012}", 600_000_000_000 + i), &mut rng, t);
                p.event_id = uuid(&mut self.rng);
                p.event_time = t;
                let (sid, rule) = match kind {
                    1 => (UNKNOWN_ID, "unknown_schema_id"),
                    2 => {
                        p.region_code = "36.99.01".into();
                        (QRIS_ID, "region_unknown")
                    }
                    _ => {
                        p.amount = "-5000.00".into();
                        (QRIS_ID, "amount_not_positive")
                    }
                };
                let payload = encode(&self.schemas[0], sid, &p).expect("encodes");
                (m.nmid.into_bytes(), payload, rule)
            }
            (Feed::Noncash, _) => {
                let mut rng = StdRng::seed_from_u64(self.spec.seed ^ (i as u64) << 16);
                let m = crate::noncash::CardMerchant {
                    acquirer_id: "93600008".into(),
                    merchant_id: format!("MBAD{i:05}"),
                    nmid: None,
                    mcc: "5812",
                    region: "36.04.19",
                    name: "UMKM BAD".into(),
                };
                let mut p = crate::noncash::payment(&m, format!("RFBAD{i:07}"), &mut rng, t);
                p.event_id = uuid(&mut self.rng);
                p.event_time = t;
                let (sid, rule) = match kind {
                    1 => (UNKNOWN_ID, "unknown_schema_id"),
                    2 => {
                        p.region_code = "36.99.01".into();
                        (NONCASH_ID, "region_unknown")
                    }
                    _ => {
                        p.amount = "-5000.00".into();
                        (NONCASH_ID, "amount_not_positive")
                    }
                };
                let payload = encode(&self.schemas[1], sid, &p).expect("encodes");
                (m.key().into_bytes(), payload, rule)
            }
        };
        *self
            .truth
            .bad
            .entry(f)
            .or_default()
            .entry(rule)
            .or_default() += 1;
        out.push(Msg {
            family: f,
            key,
            payload,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Spec {
        Spec {
            merchants: 300,
            payments: 3_000,
            first_day: 20_454,
            last_day: 20_463,
            bad_each: 2,
            ..Spec::default()
        }
    }

    fn all(spec: Spec) -> (Vec<Msg>, Truth) {
        Stream::new(spec).all_days()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, ta) = all(small());
        let (b, tb) = all(small());
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.key == y.key && x.payload == y.payload)
        );
        assert_eq!(
            serde_json::to_string(&ta).ok(),
            serde_json::to_string(&tb).ok()
        );
        let (c, _) = all(Spec { seed: 2, ..small() });
        assert!(a.iter().zip(&c).any(|(x, y)| x.payload != y.payload));
    }

    /// The decoder's fast path (writer schema = reader schema: serde straight from the bytes)
    /// gives exactly the event the resolving `Value` path gives, for every family's messages.
    #[test]
    fn fast_and_resolving_decode_agree() {
        use umkm_core::avro::Decoder;
        fn check<T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
            schema: &str,
            id: u32,
            msgs: &[&Msg],
        ) {
            let mut d = Decoder::new(schema).expect("schema");
            d.register(id, schema).expect("register");
            assert!(!msgs.is_empty());
            for m in msgs {
                let fast: T = d.decode(&m.payload).expect("fast decode");
                let (_, v) = d.decode_value(&m.payload).expect("value decode");
                let slow: T = apache_avro::from_value(&v).expect("from_value");
                assert_eq!(fast, slow);
            }
        }
        let (msgs, _) = all(Spec {
            bad_each: 0,
            ..small()
        });
        let of = |f: Feed| msgs.iter().filter(|m| m.family == f).collect::<Vec<_>>();
        check::<QrisPayment>(crate::qris::CURRENT, QRIS_ID, &of(Feed::Qris));
        check::<NoncashPayment>(crate::noncash::CURRENT, NONCASH_ID, &of(Feed::Noncash));
        check::<MerchantEvent>(crate::merchants::SCHEMA, MERCHANT_ID, &of(Feed::Merchants));
    }

    #[test]
    fn truth_adds_up() {
        let (msgs, t) = all(small());
        // Every payment is a row, and so is every refund and cancellation of a paid payment.
        assert_eq!(
            t.qris_payments + t.noncash_payments,
            3_000 + t.refunds + t.voided
        );
        assert!(t.refunds > 0 && t.unlinked_refunds <= t.refunds && t.midnight_doubles > 0);
        let (gross, net): (u64, u64) = t
            .success_by_channel
            .keys()
            .map(|c| (t.success_by_channel[c].0, t.net_by_channel[c].0))
            .fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
        assert!(net < gross);
        let by_kab: u64 = t.by_kab_kota.values().map(|k| k.0).sum();
        assert_eq!(by_kab, gross);
        for f in [Feed::Qris, Feed::Noncash, Feed::Merchants] {
            let rows = match f {
                Feed::Qris => t.qris_payments,
                Feed::Noncash => t.noncash_payments,
                Feed::Merchants => t.merchant_versions,
            };
            let n = msgs.iter().filter(|m| m.family == f).count() as u64;
            assert_eq!(n, rows + t.duplicates(f) + t.bad_total(f), "{f:?}");
            assert_eq!(t.bad_total(f), 8, "{f:?}");
        }
        assert!(t.late_payments > 0 && t.redeliveries.values().sum::<u64>() > 0);
        // Roughly in proportion to population: Kab. Tangerang has the most merchants.
        let most = t
            .registered_by_kab_kota
            .iter()
            .max_by_key(|e| e.1)
            .map(|e| *e.0);
        assert_eq!(most, Some("36.03"));
    }
}
