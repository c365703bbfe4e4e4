//! Grafana panel tests: every ClickHouse panel query of `grafana/dashboards/*.json` is expanded
//! the way the ClickHouse data source plugin does (`$__fromTime`, `$__toTime`, `$__timeFilter`,
//! multi-value variables with "All"), run against the test ClickHouse (18.16) and against chDB
//! (ClickHouse 26), both loaded with the same known rows, and compared with values computed
//! here from those rows. The Prometheus panels' metrics are checked against a running
//! consumer's `/metrics` in tests/tests/alerts.rs.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use umkm_core::migrations::{self, RenderContext};
use umkm_core::time::{date_of_days, days_of_date};
use umkm_e2e::grafana::{FROM_MS, TO_MS, clickhouse_targets, dashboards, expand};
use umkm_e2e::{Env, unique};

struct Merchant {
    id: &'static str,
    version: i64,
    status: &'static str,
    date: &'static str,
    kab: &'static str,
    kec: &'static str,
    sector: &'static str,
    refs: &'static [&'static str],
}

struct Payment {
    key: &'static str,
    /// `NMID:<nmid>` for QRIS, `MID:…` for card.
    merchant_ref: &'static str,
    instrument: &'static str,
    kab: &'static str,
    kec: &'static str,
    sector: &'static str,
    amount: i64,
    status: &'static str,
    date: &'static str,
}

const MERCHANTS: &[Merchant] = &[
    Merchant {
        id: "NIB-A",
        version: 1,
        status: "active",
        date: "2026-08-01",
        kab: "36.04",
        kec: "36.04.19",
        sector: "fashion",
        refs: &["NMID:ID1000000000001", "MID:93600008:MA"],
    },
    // A moves to Kota Tangerang and food: its whole history follows.
    Merchant {
        id: "NIB-A",
        version: 2,
        status: "active",
        date: "2026-09-20",
        kab: "36.71",
        kec: "36.71.01",
        sector: "food_beverage",
        refs: &["NMID:ID1000000000001", "MID:93600008:MA"],
    },
    Merchant {
        id: "NIB-B",
        version: 1,
        status: "active",
        date: "2026-08-01",
        kab: "36.01",
        kec: "36.01.01",
        sector: "food_processing",
        refs: &["NMID:ID1000000000002"],
    },
    Merchant {
        id: "NIB-C",
        version: 1,
        status: "active",
        date: "2026-08-01",
        kab: "36.01",
        kec: "36.01.02",
        sector: "crafts",
        refs: &["NMID:ID1000000000003"],
    },
    // D closes before the period end; E registers after it; F never pays.
    Merchant {
        id: "NIB-D",
        version: 1,
        status: "active",
        date: "2026-08-01",
        kab: "36.01",
        kec: "36.01.03",
        sector: "crafts",
        refs: &["NMID:ID1000000000004"],
    },
    Merchant {
        id: "NIB-D",
        version: 2,
        status: "closed",
        date: "2026-10-20",
        kab: "36.01",
        kec: "36.01.03",
        sector: "crafts",
        refs: &["NMID:ID1000000000004"],
    },
    Merchant {
        id: "NIB-E",
        version: 1,
        status: "active",
        date: "2026-11-15",
        kab: "36.01",
        kec: "36.01.01",
        sector: "crafts",
        refs: &["NMID:ID1000000000005"],
    },
    Merchant {
        id: "NIB-F",
        version: 1,
        status: "active",
        date: "2026-09-02",
        kab: "36.01",
        kec: "36.01.01",
        sector: "food_processing",
        refs: &["NMID:ID1000000000006"],
    },
];

const PAYMENTS: &[Payment] = &[
    Payment {
        key: "p1",
        merchant_ref: "NMID:ID1000000000001",
        instrument: "qris_mpm_static",
        kab: "36.04",
        kec: "36.04.19",
        sector: "fashion",
        amount: 20_000,
        status: "success",
        date: "2026-09-10",
    },
    Payment {
        key: "p2",
        merchant_ref: "MID:93600008:MA",
        instrument: "debit_card",
        kab: "36.04",
        kec: "36.04.19",
        sector: "retail_general",
        amount: 400_000,
        status: "success",
        date: "2026-10-05",
    },
    Payment {
        key: "p3",
        merchant_ref: "NMID:ID1000000000001",
        instrument: "qris_mpm_static",
        kab: "36.04",
        kec: "36.04.19",
        sector: "fashion",
        amount: 5_000,
        status: "refunded",
        date: "2026-10-06",
    },
    Payment {
        key: "p4",
        merchant_ref: "NMID:ID1000000000002",
        instrument: "qris_mpm_dynamic",
        kab: "36.01",
        kec: "36.01.01",
        sector: "food_processing",
        amount: 15_000,
        status: "success",
        date: "2026-10-07",
    },
    Payment {
        key: "p5",
        merchant_ref: "NMID:ID1000000000002",
        instrument: "qris_cpm",
        kab: "36.01",
        kec: "36.01.01",
        sector: "food_processing",
        amount: 15_000,
        status: "success",
        date: "2026-10-08",
    },
    Payment {
        key: "p6",
        merchant_ref: "NMID:ID1000000000003",
        instrument: "qris_mpm_static",
        kab: "36.01",
        kec: "36.01.02",
        sector: "crafts",
        amount: 7_000,
        status: "success",
        date: "2026-09-12",
    },
    // Unregistered: counted where it reported itself.
    Payment {
        key: "p7",
        merchant_ref: "NMID:ID1000000000009",
        instrument: "qris_mpm_static",
        kab: "36.03",
        kec: "36.03.01",
        sector: "food_beverage",
        amount: 9_000,
        status: "success",
        date: "2026-10-09",
    },
    // An unregistered merchant whose only payment failed: listed, but not active.
    Payment {
        key: "p10",
        merchant_ref: "NMID:ID1000000000008",
        instrument: "qris_cpm",
        kab: "36.72",
        kec: "36.72.01",
        sector: "transport",
        amount: 3_000,
        status: "failed",
        date: "2026-10-12",
    },
    // Outside the time range.
    Payment {
        key: "p8",
        merchant_ref: "NMID:ID1000000000003",
        instrument: "qris_mpm_static",
        kab: "36.01",
        kec: "36.01.02",
        sector: "crafts",
        amount: 1_000,
        status: "success",
        date: "2026-08-15",
    },
    // p6, NIB-C's only payment of the range, refunded in full the next month: C is not active.
    Payment {
        key: "p11",
        merchant_ref: "NMID:ID1000000000003",
        instrument: "qris_mpm_static",
        kab: "36.01",
        kec: "36.01.02",
        sector: "crafts",
        amount: 7_000,
        status: "refunded",
        date: "2026-10-15",
    },
    // p5 cancelled: B stays active through p4.
    Payment {
        key: "p12",
        merchant_ref: "NMID:ID1000000000002",
        instrument: "qris_cpm",
        kab: "36.01",
        kec: "36.01.01",
        sector: "food_processing",
        amount: 15_000,
        status: "cancelled",
        date: "2026-10-08",
    },
    Payment {
        key: "p9",
        merchant_ref: "MID:93600008:MA",
        instrument: "ewallet",
        kab: "36.04",
        kec: "36.04.19",
        sector: "retail_general",
        amount: 50_000,
        status: "cancelled",
        date: "2026-10-11",
    },
];

/// Refund and cancellation rows and the payment each undoes (they share its `payment_key`):
/// p3 refunds 5,000 of p1 (partial), p11 all of p6 (a month later), p12 cancels p5. Every other
/// row is its own payment.
const UNDOES: &[(&str, &str)] = &[("p3", "p1"), ("p11", "p6"), ("p12", "p5")];

fn payment_key(p: &Payment) -> &'static str {
    UNDOES
        .iter()
        .find(|(undo, _)| *undo == p.key)
        .map_or(p.key, |(_, paid)| *paid)
}

/// What refunds and cancellations leave of a successful payment: whether it still counts as a
/// transaction (not refunded or cancelled in full) and its net value (docs/metrics.md).
fn net(p: &Payment) -> (bool, i64) {
    let (mut refunded, mut cancelled) = (0, false);
    for u in PAYMENTS
        .iter()
        .filter(|u| u.key != p.key && payment_key(u) == p.key)
    {
        match u.status {
            "refunded" => refunded += u.amount,
            "cancelled" => cancelled = true,
            _ => {}
        }
    }
    let undone = if cancelled {
        p.amount
    } else {
        refunded.min(p.amount)
    };
    (undone < p.amount, p.amount - undone)
}

/// A successful payment that still counts after refunds and cancellations.
fn net_active(p: &Payment) -> bool {
    p.status == "success" && net(p).0
}

fn load_statements() -> Vec<String> {
    let mut v = Vec::new();
    for m in MERCHANTS {
        let refs: Vec<String> = m.refs.iter().map(|r| format!("'{r}'")).collect();
        v.push(format!(
            "INSERT INTO merchant_events (dedup_key, merchant_id, version, status, event_time, event_date, merchant_refs, sector, region_code, province_code, kab_kota_code, kecamatan_code, nmid) \
             VALUES ('{}-{}', '{}', {}, '{}', toDateTime('{} 00:00:00'), '{}', [{}], '{}', '{}', '36', '{}', '{}', '{}')",
            m.id, m.version, m.id, m.version, m.status, m.date, m.date, refs.join(","), m.sector, m.kec, m.kab, m.kec,
            m.refs.iter().find_map(|r| r.strip_prefix("NMID:")).unwrap_or("")
        ));
    }
    for p in PAYMENTS {
        if let Some(nmid) = p.merchant_ref.strip_prefix("NMID:") {
            let mode = p.instrument.trim_start_matches("qris_");
            v.push(format!(
                "INSERT INTO qris_payments (dedup_key, payment_key, nmid, qr_mode, sector, region_code, province_code, kab_kota_code, kecamatan_code, amount_idr, status, event_time, event_date) \
                 VALUES ('{k}', '{pk}', '{nmid}', '{mode}', '{s}', '{kec}', '36', '{kab}', '{kec}', {a}, '{st}', toDateTime('{d} 03:00:00'), '{d}')",
                k = p.key, pk = payment_key(p), s = p.sector, kec = p.kec, kab = p.kab, a = p.amount, st = p.status, d = p.date
            ));
        } else {
            v.push(format!(
                "INSERT INTO noncash_payments (dedup_key, payment_key, instrument, merchant_ref, sector, region_code, province_code, kab_kota_code, kecamatan_code, amount_idr, status, event_time, event_date) \
                 VALUES ('{k}', '{pk}', '{i}', '{r}', '{s}', '{kec}', '36', '{kab}', '{kec}', {a}, '{st}', toDateTime('{d} 03:00:00'), '{d}')",
                k = p.key, pk = payment_key(p), i = p.instrument, r = p.merchant_ref, s = p.sector, kec = p.kec, kab = p.kab, a = p.amount, st = p.status, d = p.date
            ));
        }
    }
    v.extend(umkm_core::adoption::rebuild_statements("DB"));
    v
}

fn channel(instrument: &str) -> &'static str {
    match instrument {
        i if i.starts_with("qris_") => "qris",
        "debit_card" | "credit_card" => "card",
        "emoney" | "ewallet" => "emoney",
        _ => "transfer",
    }
}

/// (merchant_key, kab, kec, sector) of a payment: the merchant's latest version if registered.
fn attribute(p: &Payment) -> (String, String, String, String) {
    let latest = MERCHANTS
        .iter()
        .filter(|m| m.refs.contains(&p.merchant_ref))
        .max_by_key(|m| m.version);
    match latest {
        Some(m) => (m.id.into(), m.kab.into(), m.kec.into(), m.sector.into()),
        None => (
            p.merchant_ref.into(),
            p.kab.into(),
            p.kec.into(),
            p.sector.into(),
        ),
    }
}

fn in_range(p: &Payment) -> bool {
    ("2026-09-01"..="2026-10-31").contains(&p.date)
}

/// The expected CSV of each panel, by title, computed from the rows above.
fn expected(vars: &BTreeMap<String, Vec<String>>) -> BTreeMap<&'static str, String> {
    let ps: Vec<&Payment> = PAYMENTS.iter().filter(|p| in_range(p)).collect();
    let success = |p: &&&Payment| p.status == "success";
    let mut by_kab: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_sector: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_kec: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_month: BTreeMap<String, (BTreeSet<String>, u64, i64)> = BTreeMap::new();
    let mut mix: BTreeMap<&str, (u64, i64, u64, i64)> = BTreeMap::new();
    for p in &ps {
        let (key, kab, kec, sector) = attribute(p);
        let month = format!("{}-01", &p.date[..7]);
        let m = by_month.entry(month).or_default();
        let c = mix.entry(channel(p.instrument)).or_default();
        by_kab.entry(kab).or_default();
        by_sector.entry(sector.clone()).or_default();
        by_kec.entry(kec.clone()).or_default();
        if success(&p) {
            let (counts, value) = net(p);
            if counts {
                by_kab
                    .entry(attribute(p).1)
                    .or_default()
                    .insert(key.clone());
                by_sector.entry(sector).or_default().insert(key.clone());
                by_kec.entry(kec).or_default().insert(key.clone());
                m.0.insert(key);
            }
            m.1 += u64::from(counts);
            m.2 += value;
            c.0 += u64::from(counts);
            c.1 += value;
        } else if p.status == "refunded" {
            c.2 += 1;
            c.3 += p.amount;
        }
    }
    let q = |s: &str| format!("\"{s}\"");
    let mut e = BTreeMap::new();
    e.insert(
        "Active UMKM by kab/kota",
        by_kab
            .iter()
            .map(|(k, v)| format!("{},{}", q(k), v.len()))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    e.insert(
        "Active UMKM by sector",
        by_sector
            .iter()
            .map(|(k, v)| format!("{},{}", q(k), v.len()))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    e.insert(
        "Trend by month",
        by_month
            .iter()
            .map(|(m, (a, n, v))| format!("{},{},{n},{v}", q(m), a.len()))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    e.insert(
        "Channel mix (net of refunds; refunds in the month they happened)",
        mix.iter()
            .map(|(c, (n, v, r, rv))| format!("{},{n},{v},{r},{rv}", q(c)))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let (tv, tn): (i64, u64) = mix.values().fold((0, 0), |a, c| (a.0 + c.1, a.1 + c.0));
    let (qv, qn) = mix.get("qris").map(|c| (c.1, c.0)).unwrap_or_default();
    let r4 = |x: f64| format!("{}", (x * 10_000.0).round() / 10_000.0);
    e.insert(
        "QRIS share of value and transactions",
        format!(
            "{},{}",
            r4(qv as f64 / tv as f64),
            r4(qn as f64 / tn as f64)
        ),
    );
    let mut kec: Vec<(String, usize)> = by_kec
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k, v.len()))
        .collect();
    kec.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = kec
        .iter()
        .take(10)
        .map(|(k, n)| format!("{},{n}", q(k)))
        .collect();
    kec.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let bottom: Vec<String> = kec
        .iter()
        .take(10)
        .map(|(k, n)| format!("{},{n}", q(k)))
        .collect();
    e.insert("Top 10 kecamatan by active UMKM", top.join("\n"));

    // Registered at the period end (latest version dated on or before it, still active), within
    // the variables' "All" values, and which of them were active.
    let all = |v: &str, x: &str| vars.get(v).is_some_and(|l| l.iter().any(|y| y == x));
    let mut latest: BTreeMap<&str, &Merchant> = BTreeMap::new();
    for m in MERCHANTS.iter().filter(|m| m.date <= "2026-10-31") {
        if latest.get(m.id).is_none_or(|l| l.version < m.version) {
            latest.insert(m.id, m);
        }
    }
    let active_keys: BTreeSet<String> = ps
        .iter()
        .filter(|p| net_active(p))
        .map(|p| attribute(p).0)
        .collect();
    let mut adoption: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for m in latest.values() {
        if m.status == "active" && all("kab_kota", m.kab) && all("sector", m.sector) {
            let a = adoption.entry(m.kab).or_default();
            a.0 += 1;
            a.1 += u64::from(active_keys.contains(m.id));
        }
    }
    e.insert(
        "Adoption rate by kab/kota (registered UMKM at the period end that were active)",
        adoption
            .iter()
            .map(|(k, (r, a))| format!("{},{r},{a},{}", q(k), r4(*a as f64 / *r as f64)))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // Retention: active (net) months of every merchant key, all time.
    let mut months: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in PAYMENTS.iter().filter(|p| net_active(p)) {
        months
            .entry(attribute(p).0)
            .or_default()
            .insert(format!("{}-01", &p.date[..7]));
    }
    let mut retention = Vec::new();
    for (month, prev) in [("2026-09-01", "2026-08-01"), ("2026-10-01", "2026-09-01")] {
        let was = months.values().filter(|m| m.contains(prev)).count();
        let kept = months
            .values()
            .filter(|m| m.contains(prev) && m.contains(month))
            .count();
        let rate = if was == 0 {
            "0".to_string()
        } else {
            r4(kept as f64 / was as f64)
        };
        retention.push(format!("{},{was},{kept},{rate}", q(month)));
    }
    e.insert(
        "Retention by month (active last month and this month / active last month)",
        retention.join("\n"),
    );
    // Onboarding: registered (active at the period end) with an NMID, over the latest
    // population figure for Banten (800,000, Dinkop UMKM 2023).
    let with_qris = latest
        .values()
        .filter(|m| m.status == "active" && m.refs.iter().any(|r| r.starts_with("NMID:")))
        .count();
    e.insert(
        "Onboarding rate, Banten (registered UMKM with QRIS at the period end / UMKM population, %)",
        format!("{with_qris},800000,{}", r4(with_qris as f64 / 800_000.0 * 100.0)),
    );
    // Median ticket per channel over every successful payment in the range's months: the lower
    // median, the element at 1-based position ceil(n / 2) of the sorted amounts, which is what
    // quantileExactWeighted(amount, count) returns over the ticket rollup.
    let mut tickets: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for p in ps.iter().filter(|p| p.status == "success") {
        tickets
            .entry(channel(p.instrument))
            .or_default()
            .push(p.amount);
    }
    e.insert(
        "Median ticket by channel, Banten (successful payments in the months of the range)",
        tickets
            .iter_mut()
            .map(|(c, v)| {
                v.sort_unstable();
                format!("{},{},{}", q(c), v[(v.len() - 1) / 2], v.len())
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // New adopters: first ever net-active payment (all time) inside the range.
    let mut first: BTreeMap<String, (&str, String)> = BTreeMap::new();
    for p in PAYMENTS.iter().filter(|p| net_active(p)) {
        let (key, kab, _, _) = attribute(p);
        let f = first.entry(key).or_insert((p.date, kab));
        if p.date < f.0 {
            f.0 = p.date;
        }
    }
    let mut new_by_kab: BTreeMap<String, u64> = BTreeMap::new();
    for (d, kab) in first.values() {
        if ("2026-09-01"..="2026-10-31").contains(d) {
            *new_by_kab.entry(kab.clone()).or_default() += 1;
        }
    }
    e.insert(
        "New adopters by kab/kota (first ever payment that still counts after refunds, in the period)",
        new_by_kab
            .iter()
            .map(|(k, n)| format!("{},{n}", q(k)))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    e.insert("Bottom 10 kecamatan by active UMKM", bottom.join("\n"));

    // Day and week (Monday) series over the range: active merchants, transactions, value. Days
    // with only unsuccessful payments are listed with zeros.
    let mut by_day: BTreeMap<String, (BTreeSet<String>, u64, i64)> = BTreeMap::new();
    let mut by_week: BTreeMap<String, (BTreeSet<String>, u64, i64)> = BTreeMap::new();
    for p in &ps {
        for (map, period) in [
            (&mut by_day, p.date.to_string()),
            (&mut by_week, monday(p.date)),
        ] {
            let t = map.entry(period).or_default();
            if p.status == "success" {
                let (counts, value) = net(p);
                if counts {
                    t.0.insert(attribute(p).0);
                }
                t.1 += u64::from(counts);
                t.2 += value;
            }
        }
    }
    let series = |m: &BTreeMap<String, (BTreeSet<String>, u64, i64)>| {
        m.iter()
            .map(|(d, (a, n, v))| format!("{},{},{n},{v}", q(d), a.len()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    e.insert(
        "Active UMKM per day (daily snapshot: the last 120 days of data)",
        series(&by_day),
    );
    e.insert(
        "Active UMKM per week (Monday to Sunday, WIB; daily snapshot)",
        series(&by_week),
    );

    // Trailing 30 days to the range end (2026-10-02 ..= 2026-10-31): registered merchants at the
    // end that had a successful payment in those days.
    let active_30d: BTreeSet<String> = PAYMENTS
        .iter()
        .filter(|p| net_active(p) && ("2026-10-02"..="2026-10-31").contains(&p.date))
        .map(|p| attribute(p).0)
        .collect();
    let mut adoption_30d: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut by_kecamatan: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for m in latest.values() {
        if m.status == "active" && all("kab_kota", m.kab) && all("sector", m.sector) {
            let a = adoption_30d.entry(m.kab).or_default();
            a.0 += 1;
            a.1 += u64::from(active_30d.contains(m.id));
            if !m.kec.is_empty() {
                let k = by_kecamatan.entry((m.kab, m.kec)).or_default();
                k.0 += 1;
                k.1 += u64::from(active_keys.contains(m.id));
            }
        }
    }
    e.insert(
        "Adoption rate by kab/kota, trailing 30 days to the range end",
        adoption_30d
            .iter()
            .map(|(k, (r, a))| format!("{},{r},{a},{}", q(k), r4(*a as f64 / *r as f64)))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let mut kec_rates: Vec<(f64, &str, &str, u64, u64)> = by_kecamatan
        .iter()
        .map(|((kab, kec), (r, a))| (*a as f64 / *r as f64, *kab, *kec, *r, *a))
        .collect();
    kec_rates.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.2.cmp(y.2)));
    e.insert(
        "Adoption rate by kecamatan (registered UMKM at the period end that were active)",
        kec_rates
            .iter()
            .map(|(rate, kab, kec, r, a)| format!("{},{},{r},{a},{}", q(kab), q(kec), r4(*rate)))
            .collect::<Vec<_>>()
            .join("\n"),
    );

    // Median ticket per kab/kota the payment reported (history where it happened).
    let mut by_reported: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for p in ps.iter().filter(|p| p.status == "success") {
        if all("kab_kota", p.kab)
            && all("sector", p.sector)
            && all("channel", channel(p.instrument))
        {
            by_reported.entry(p.kab).or_default().push(p.amount);
        }
    }
    e.insert(
        "Median ticket by kab/kota (successful payments in the months of the range, where the payment happened)",
        by_reported
            .iter_mut()
            .map(|(k, v)| {
                v.sort_unstable();
                format!("{},{},{}", q(k), v[(v.len() - 1) / 2], v.len())
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    e
}

/// The Monday (ISO week start) of a `YYYY-MM-DD` date, as `YYYY-MM-DD`.
fn monday(date: &str) -> String {
    let days = days_of_date(date).expect("YYYY-MM-DD");
    // 1970-01-01 was a Thursday: weekday 0 = Monday.
    let weekday = (days + 3).rem_euclid(7);
    date_of_days(days - weekday)
}

#[test]
fn monday_of_a_date() {
    assert_eq!(monday("2026-09-10"), "2026-09-07");
    assert_eq!(monday("2026-09-07"), "2026-09-07");
    assert_eq!(monday("2026-10-04"), "2026-09-28");
    assert_eq!(monday("2024-03-01"), "2024-02-26");
}

async fn ch_db(env: &Env, db: &str, sql: &str) -> Result<String> {
    let resp = reqwest::Client::new()
        .post(format!("{}/?database={db}", env.clickhouse))
        .body(sql.to_string())
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("ClickHouse: {sql}: {text}");
    }
    Ok(text)
}

#[tokio::test]
async fn every_clickhouse_panel_answers_the_expected_rows_on_18_16_and_in_chdb() -> Result<()> {
    let env = Env::from_env();
    let db = unique("grafana");
    // Schema by the real migrate subcommand, then the known rows and a snapshot rebuild.
    umkm_e2e::run_subcommand(&env, "merchant-consumer", "migrate", &db)?;
    for s in load_statements() {
        ch_db(&env, &db, &s.replace("DB.", &format!("{db}."))).await?;
    }
    // The same in chDB, in its default database.
    let ctx = RenderContext {
        database: "default".into(),
        ..Default::default()
    };
    let mut chdb = Vec::new();
    for m in migrations::ALL {
        chdb.extend(migrations::render(m.sql, &ctx));
    }
    chdb.extend(
        load_statements()
            .into_iter()
            .map(|s| s.replace("DB.", "default.")),
    );

    let mut checks = Vec::new();
    let mut seen = BTreeSet::new();
    for (file, d) in dashboards()? {
        // Variables: "All" is every value their query returns.
        let mut vars = BTreeMap::new();
        for v in d
            .pointer("/templating/list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let q = v["query"].as_str().unwrap_or_default();
            let values: Vec<String> = ch_db(&env, &db, &format!("{q} FORMAT TabSeparated"))
                .await?
                .lines()
                .map(String::from)
                .collect();
            ensure!(!values.is_empty(), "{file}: variable {name} has no values");
            vars.insert(name, values);
        }
        let want = expected(&vars);
        for (title, raw) in clickhouse_targets(&d) {
            let title = title.as_str();
            {
                let sql = expand(&raw, &vars, FROM_MS, TO_MS)?;
                let got = ch_db(&env, &db, &format!("{sql} FORMAT CSV")).await?;
                let expected = want
                    .get(title)
                    .with_context(|| format!("{file}: no expectation for panel {title:?}"))?;
                ensure!(
                    got.trim() == expected.trim(),
                    "{file}: panel {title:?} on the test server:\n{got}\nexpected\n{expected}\nSQL: {sql}"
                );
                checks.push(format!("{sql}={}", expected.trim()));
                seen.insert(title.to_string());
            }
        }
    }
    let want = expected(&BTreeMap::new());
    ensure!(
        seen.len() == want.len(),
        "panels checked {seen:?}, expectations for {:?}",
        want.keys().collect::<Vec<_>>()
    );
    // chDB: the same statements and the same checks.
    umkm_e2e::run_chdb("chdb_grafana", &chdb, &checks)?;
    println!(
        "grafana: {} ClickHouse panels answered the expected rows on 18.16 and in chDB 26",
        seen.len()
    );
    Ok(())
}
