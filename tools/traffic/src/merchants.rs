//! Synthetic UMKM registry traffic: merchants with several versions each, published in shuffled
//! order (so many arrive out of order), redeliveries and bad records; with the expected history
//! and current state.

use std::collections::{BTreeMap, BTreeSet};

use apache_avro::Schema;
use merchant_consumer::{MerchantEvent, MerchantEventType};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use umkm_core::avro::encode;

use crate::qris::{garbage, kecamatan_codes, now_ms};

type Message = (Option<Vec<u8>>, Vec<u8>);

pub const SCHEMA: &str = crate::contracts::MERCHANT_SCHEMA;
/// Registry id of the merchant v1 contract (schemas/avro/registry.json).
pub const SCHEMA_ID: u32 = crate::contracts::MERCHANT_ID;

#[derive(Debug, Clone)]
pub struct Spec {
    pub merchants: usize,
    /// Each merchant gets 1..=max_versions versions.
    pub max_versions: i64,
    pub redeliver: f64,
    /// Bad records of each kind: garbage bytes, unknown schema id, invalid region, bad KBLI.
    pub bad_each: usize,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            merchants: 2_000,
            max_versions: 4,
            redeliver: 0.1,
            bad_each: 20,
            seed: 17,
        }
    }
}

/// What the registry must hold after consuming.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// (merchant_id, version, region_code, sector, status) of the highest version.
    pub current: BTreeMap<String, (i64, String, String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct MerchantPlan {
    pub messages: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    /// (merchant_id, version): exactly the history rows expected.
    pub unique: BTreeSet<(String, i64)>,
    pub expected: Expected,
    pub redeliveries: usize,
    /// Merchants at least one of whose versions is published after a higher one.
    pub out_of_order_merchants: usize,
    pub bad: BTreeMap<&'static str, usize>,
}

impl MerchantPlan {
    pub fn bad_total(&self) -> usize {
        self.bad.values().sum()
    }
}

/// (KBLI code, sector per kbli_sector_v1.csv): Banten's production centres and everyday UMKM.
pub const KBLIS: &[(&str, &str)] = &[
    ("56102", "food_beverage"),
    ("56103", "food_beverage"),
    ("47111", "retail_food"),
    ("15121", "fashion"),
    ("10794", "food_processing"),
    ("10722", "food_processing"),
    ("13134", "crafts"),
    ("96111", "personal_services"),
    ("45407", "repair_services"),
    ("82190", "business_services"),
];

pub use crate::contracts::{merchant_id, registry_event as event};

pub fn generate(spec: &Spec) -> MerchantPlan {
    let schema = Schema::parse_str(SCHEMA).expect("merchant schema");
    let enc = |e: &MerchantEvent, id: u32| encode(&schema, id, e).expect("sample events encode");
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let kec = kecamatan_codes();
    let now = now_ms();
    let mut plan = MerchantPlan::default();
    // (merchant index, version, bytes)
    let mut first: Vec<(usize, i64, Message)> = Vec::new();
    let mut later = Vec::new();
    for i in 0..spec.merchants {
        let n = rng.random_range(1..=spec.max_versions.max(1));
        let t0 = now - 300 * 86_400_000 + rng.random_range(0..100 * 86_400_000i64);
        for v in 1..=n {
            let event_type = if v == 1 {
                MerchantEventType::Registered
            } else if v == n && rng.random_bool(0.1) {
                MerchantEventType::Closed
            } else {
                MerchantEventType::Updated
            };
            let region = kec[rng.random_range(0..kec.len())];
            let (kbli, sector) = KBLIS[rng.random_range(0..KBLIS.len())];
            let e = event(i, v, event_type, region, kbli, t0 + v * 86_400_000);
            plan.unique.insert((e.merchant_id.clone(), v));
            if v == n {
                let status = if event_type == MerchantEventType::Closed {
                    "closed"
                } else {
                    "active"
                };
                plan.expected.current.insert(
                    e.merchant_id.clone(),
                    (
                        v,
                        region.to_string(),
                        sector.to_string(),
                        status.to_string(),
                    ),
                );
            }
            let msg = (Some(e.merchant_id.clone().into_bytes()), enc(&e, SCHEMA_ID));
            if rng.random_bool(spec.redeliver) {
                later.push(msg.clone());
                plan.redeliveries += 1;
            }
            first.push((i, v, msg));
        }
    }
    for i in 0..spec.bad_each {
        let m = spec.merchants + i;
        let key = Some(merchant_id(m).into_bytes());
        let (bytes, rule) = garbage(i);
        first.push((m, 0, (key.clone(), bytes)));
        *plan.bad.entry(rule).or_default() += 1;
        let e = event(
            m,
            1,
            MerchantEventType::Registered,
            "36.04.19",
            "56102",
            now - 1000,
        );
        first.push((m, 0, (key.clone(), enc(&e, 999))));
        *plan.bad.entry("unknown_schema_id").or_default() += 1;
        let e = event(
            m,
            2,
            MerchantEventType::Updated,
            "36.99.01",
            "56102",
            now - 1000,
        );
        first.push((m, 0, (key.clone(), enc(&e, SCHEMA_ID))));
        *plan.bad.entry("region_unknown").or_default() += 1;
        let e = event(
            m,
            3,
            MerchantEventType::Updated,
            "36.04.19",
            "5610",
            now - 1000,
        );
        first.push((m, 0, (key, enc(&e, SCHEMA_ID))));
        *plan.bad.entry("kbli_format").or_default() += 1;
    }
    first.shuffle(&mut rng);
    let mut highest: BTreeMap<usize, i64> = BTreeMap::new();
    let mut disordered = BTreeSet::new();
    for (i, v, _) in &first {
        if *v == 0 {
            continue;
        }
        let h = highest.entry(*i).or_default();
        if *v < *h {
            disordered.insert(*i);
        }
        *h = (*h).max(*v);
    }
    plan.out_of_order_merchants = disordered.len();
    later.shuffle(&mut rng);
    plan.messages = first.into_iter().map(|(_, _, m)| m).collect();
    plan.messages.extend(later);
    plan
}
