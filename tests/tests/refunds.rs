//! Refunds and cancellations tied to the payment they undo, and one payment across a WIB
//! midnight, through the real pipeline (README "Refunds and cancellations", docs/metrics.md).
//! Known QRIS events go through the consumers: refunds the same day, the next day and in the
//! next month, a partial refund, two partial refunds that add up to the payment, a refund
//! published before its payment, a cancellation, a refund of an unknown payment, a revision-1
//! refund without original references, redelivered refunds, and issuer + acquirer reports 1.5 s
//! apart around 00:00 WIB. Gross, undone, net, refund and unlinked figures and the net-active
//! merchants per month x kab/kota x sector must equal what is computed here from the same events,
//! in the view and in the snapshot after `refresh-metrics`, and so must new adopters and
//! retention on the same (net) basis.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, ensure};
use apache_avro::Schema;
use qris_consumer::{PaymentStatus, ProviderRole, QrisPayment};
use umkm_core::avro::encode;
use umkm_e2e::{Ends, Env, ch, publish_tracked, wait_committed};
use umkm_traffic::qris;

const PARTITIONS: i32 = 2;
type Msg = (Option<Vec<u8>>, Vec<u8>);
/// Per month: net-active merchants, gross count, gross value, undone count, undone value, net
/// count, net value.
type MonthFigures = (BTreeSet<usize>, i64, i64, i64, i64, i64, i64);

/// 2026-09-28, 10:00 WIB, in epoch ms; days are added to it.
const SEP28: i64 = 1_790_564_400_000;
const DAY: i64 = 86_400_000;
/// 2026-10-21 00:00:00 WIB.
const OCT21_MIDNIGHT: i64 = SEP28 + 23 * DAY - 10 * 3_600_000;

/// One payment as this test models it: its month, amount, what was refunded of it and whether
/// it was cancelled (the expected figures are computed from these, not from ClickHouse).
struct Modelled {
    merchant: usize,
    month: &'static str,
    amount: i64,
    refunds: Vec<i64>,
    cancelled: bool,
}

/// Where merchant `i` reports itself (kecamatan, its kab/kota, MCC, the MCC's sector): none of
/// them is registered, so the metrics attribute them there.
fn cell(i: usize) -> (&'static str, &'static str, &'static str, &'static str) {
    match i {
        1 => ("36.03.01", "36.03", "5812", "food_beverage"),
        2 => ("36.71.01", "36.71", "5812", "food_beverage"),
        _ => ("36.04.19", "36.04", "5948", "fashion"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_reach_their_payment_and_midnight_doubles_are_one_payment() -> Result<()> {
    let env = Env::from_env();
    let d = umkm_e2e::Deployment::start(&env, "e2e_refunds", PARTITIONS).await?;
    let db = d.database.clone();
    let qs = d.qris.clone();
    let (qc, nc, mc) = (d.qris_proc, d.noncash_proc, d.merchants_proc);
    let rev1 = Schema::parse_str(qris::V1)?;
    let rev2 = Schema::parse_str(include_str!("../../schemas/avro/qris_payment.avsc"))?;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(41);
    let now = qris::now_ms();
    let merchant = |i: usize| qris::Merchant {
        nmid: format!("ID10{:011}", 41_000_000 + i),
        pan: "9360000812345678".into(),
        mcc: cell(i).2,
        region: cell(i).0,
        criteria: qris_consumer::MerchantCriteria::UMI,
        name: format!("R{i}"),
    };
    let mut rrn = 410_000_000_000u64;
    let mut pay = |i: usize, t: i64, amount: i64| {
        rrn += 1;
        let mut p = qris::payment(&merchant(i), rrn.to_string(), &mut rng, now);
        p.event_time = t;
        p.amount = amount.to_string();
        p.status = PaymentStatus::Success;
        p.provider_role = ProviderRole::Acquirer;
        p
    };
    // A revision-2 refund: its own RRN and reference, naming the payment.
    let mut refund_no = 0;
    let mut refund = |p: &QrisPayment, t: i64, amount: Option<i64>| {
        refund_no += 1;
        let mut r = p.clone();
        r.event_id = format!("refund-{refund_no}");
        r.status = PaymentStatus::Refunded;
        r.event_time = t;
        r.rrn = format!("{:012}", 990_000_000_000u64 + refund_no);
        r.original_rrn = Some(p.rrn.clone());
        r.original_event_time = Some(p.event_time);
        r.original_reference_no = Some(format!("REF-{}", p.rrn));
        r.refund_reference = Some(format!("RF-{refund_no}"));
        r.refund_amount = amount.map(|a| a.to_string());
        r
    };
    let q2 = |p: &QrisPayment| -> Result<Msg> {
        Ok((Some(p.nmid.clone().into_bytes()), encode(&rev2, 4, p)?))
    };
    let q1 = |p: &QrisPayment| -> Result<Msg> {
        Ok((Some(p.nmid.clone().into_bytes()), encode(&rev1, 1, p)?))
    };
    let mut model: Vec<Modelled> = Vec::new();
    let mut first: Vec<Msg> = Vec::new();
    let mut second: Vec<Msg> = Vec::new();
    let oct = |day: i64| SEP28 + (day + 3) * DAY; // 10:00 WIB on 1 + day October

    // Same day, revision 1 (no original fields: the rrn and amount are the payment's).
    let p = pay(1, oct(1), 20_000);
    let mut r = p.clone();
    r.event_id = "v1-refund".into();
    r.status = PaymentStatus::Refunded;
    r.event_time = p.event_time + 3_600_000;
    first.extend([q1(&p)?, q1(&r)?]);
    model.push(Modelled {
        merchant: 1,
        month: "2026-10-01",
        amount: 20_000,
        refunds: vec![20_000],
        cancelled: false,
    });
    // Next day, redelivered.
    let p = pay(1, oct(2), 30_000);
    let r = refund(&p, oct(3), None);
    first.extend([q2(&p)?, q2(&r)?, q2(&r)?]);
    model.push(Modelled {
        merchant: 1,
        month: "2026-10-01",
        amount: 30_000,
        refunds: vec![30_000],
        cancelled: false,
    });
    // Paid in September, refunded in October.
    let p = pay(1, SEP28, 50_000);
    let r = refund(&p, oct(2), None);
    first.extend([q2(&p)?, q2(&r)?]);
    model.push(Modelled {
        merchant: 1,
        month: "2026-09-01",
        amount: 50_000,
        refunds: vec![50_000],
        cancelled: false,
    });
    // A partial refund: the payment stays a transaction, its value shrinks.
    let p = pay(1, oct(4), 100_000);
    let r = refund(&p, oct(9), Some(30_000));
    first.extend([q2(&p)?, q2(&r)?]);
    model.push(Modelled {
        merchant: 1,
        month: "2026-10-01",
        amount: 100_000,
        refunds: vec![30_000],
        cancelled: false,
    });
    // Two partial refunds adding up to the payment (each redelivered once).
    let p = pay(1, oct(5), 100_000);
    let (ra, rb) = (
        refund(&p, oct(6), Some(40_000)),
        refund(&p, oct(12), Some(60_000)),
    );
    first.extend([q2(&p)?, q2(&ra)?, q2(&rb)?, q2(&ra)?]);
    second.push(q2(&rb)?);
    model.push(Modelled {
        merchant: 1,
        month: "2026-10-01",
        amount: 100_000,
        refunds: vec![40_000, 60_000],
        cancelled: false,
    });
    // A refund published before its payment (the payment arrives in the second wave).
    let p = pay(1, oct(7), 45_000);
    let r = refund(&p, oct(8), None);
    first.push(q2(&r)?);
    second.push(q2(&p)?);
    model.push(Modelled {
        merchant: 1,
        month: "2026-10-01",
        amount: 45_000,
        refunds: vec![45_000],
        cancelled: false,
    });
    // A cancellation of a successful payment.
    let p = pay(1, oct(10), 70_000);
    let mut c = p.clone();
    c.event_id = "cancel".into();
    c.status = PaymentStatus::Cancelled;
    c.event_time = p.event_time + 60_000;
    first.extend([q2(&p)?, q2(&c)?]);
    model.push(Modelled {
        merchant: 1,
        month: "2026-10-01",
        amount: 70_000,
        refunds: vec![],
        cancelled: true,
    });
    // A refund of a payment that is not in the data.
    let ghost = pay(1, oct(11), 12_000);
    first.push(q2(&refund(&ghost, oct(13), None))?);
    // Merchant 1 keeps one plain payment in October and one in September.
    let p = pay(1, oct(14), 15_000);
    let s = pay(1, SEP28 + DAY, 8_000);
    first.extend([q2(&p)?, q2(&s)?]);
    model.push(Modelled {
        merchant: 1,
        month: "2026-10-01",
        amount: 15_000,
        refunds: vec![],
        cancelled: false,
    });
    model.push(Modelled {
        merchant: 1,
        month: "2026-09-01",
        amount: 8_000,
        refunds: vec![],
        cancelled: false,
    });
    // Merchant 2: its only September payment is refunded in full (gross active, not net).
    let p = pay(2, SEP28, 60_000);
    first.extend([q2(&p)?, q2(&refund(&p, oct(1), None))?]);
    model.push(Modelled {
        merchant: 2,
        month: "2026-09-01",
        amount: 60_000,
        refunds: vec![60_000],
        cancelled: false,
    });
    // Merchant 3: issuer at 23:59:59.3 WIB on 20 October, acquirer at 00:00:00.8 on the 21st.
    let acq = pay(3, OCT21_MIDNIGHT + 800, 25_000);
    let mut iss = acq.clone();
    iss.event_id = "issuer-before-midnight".into();
    iss.provider_role = ProviderRole::Issuer;
    iss.event_time = OCT21_MIDNIGHT - 700;
    first.push(q2(&iss)?);
    second.push(q2(&acq)?);
    model.push(Modelled {
        merchant: 3,
        month: "2026-10-01",
        amount: 25_000,
        refunds: vec![],
        cancelled: false,
    });

    let mut ends = Ends::new();
    publish_tracked(&env, &qs.topic, &first, &mut ends).await?;
    wait_committed(&env, &qs, PARTITIONS, &ends, Duration::from_secs(60)).await?;
    publish_tracked(&env, &qs.topic, &second, &mut ends).await?;
    wait_committed(&env, &qs, PARTITIONS, &ends, Duration::from_secs(60)).await?;

    let midnight_rows = ch(
        &env,
        &format!(
            "SELECT count() FROM {db}.qris_payments WHERE nmid = '{}' FORMAT TabSeparated",
            acq.nmid
        ),
    )
    .await?;
    ensure!(
        midnight_rows.trim() == "1",
        "issuer + acquirer reports around midnight landed as {midnight_rows} rows"
    );
    let linked = ch(
        &env,
        &format!("SELECT countIf(linked = 1), countIf(linked = 0) FROM {db}.v_payment_undos FORMAT TabSeparated"),
    )
    .await?;
    ensure!(linked.trim() == "8\t1", "linked / unlinked undos: {linked}");

    // Expected per month x kab/kota x sector, from the model.
    let mut want: BTreeMap<(&str, &str, &str), MonthFigures> = BTreeMap::new();
    for m in &model {
        let refunded: i64 = m.refunds.iter().sum::<i64>().min(m.amount);
        let undone_value = if m.cancelled { m.amount } else { refunded };
        let fully = m.cancelled || refunded >= m.amount;
        let (_, kab, _, sector) = cell(m.merchant);
        let e = want.entry((m.month, kab, sector)).or_default();
        e.1 += 1;
        e.2 += m.amount;
        e.3 += i64::from(fully);
        e.4 += undone_value;
        e.5 += i64::from(!fully);
        e.6 += m.amount - undone_value;
        if !fully {
            e.0.insert(m.merchant);
        }
    }
    // Refund activity in the period it happened, every refund row (unlinked ones included):
    // merchant 1 made eight refunds in October (one of an unknown payment), merchant 2 one.
    let refunds_in = |month: &str, kab: &str| match (month, kab) {
        ("2026-10-01", "36.03") => (8, 1),
        ("2026-10-01", "36.71") => (1, 0),
        _ => (0, 0),
    };
    // A cell with refunds only (merchant 2 in October) is a row of its own.
    want.entry(("2026-10-01", "36.71", "food_beverage"))
        .or_default();
    let expected: Vec<String> = want
        .iter()
        .map(|((month, kab, sector), (active, n, v, un, uv, nn, nv))| {
            let (refunds, unlinked) = refunds_in(month, kab);
            format!(
                "{month}\t{kab}\t{sector}\t{}\t{n}\t{v}\t{un}\t{uv}\t{nn}\t{nv}\t{refunds}\t{unlinked}",
                active.len()
            )
        })
        .collect();
    let query = |table: &str| {
        format!(
            "SELECT toString(month) AS m, kab_kota_code, sector, uniqExactIf(merchant_key, net_count > 0), \
             sum(success_count), sum(success_value_idr), sum(undone_count), sum(undone_value_idr), \
             sum(net_count), sum(net_value_idr), sum(refund_count), sum(unlinked_refund_count) \
             FROM {db}.{table} GROUP BY m, kab_kota_code, sector ORDER BY m, kab_kota_code, sector \
             FORMAT TabSeparated"
        )
    };
    let got = ch(&env, &query("v_merchant_activity_monthly")).await?;
    let got: Vec<String> = got.lines().map(String::from).collect();
    ensure!(
        got == expected,
        "net activity by month, kab/kota and sector:\n{got:#?}\nexpected\n{expected:#?}"
    );
    umkm_e2e::refresh_metrics(&env, "qris-consumer", &db)?;
    let snap = ch(&env, &query("adoption_merchant_monthly")).await?;
    let snap: Vec<String> = snap.lines().map(String::from).collect();
    ensure!(
        snap == expected,
        "snapshot by month, kab/kota and sector:\n{snap:#?}\nexpected\n{expected:#?}"
    );
    // New adopters (first month with a payment that still counts) and retention, on the same
    // basis: merchant 2's only payment was refunded in full, so it never adopted.
    let mut active_months: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    for m in &model {
        let refunded: i64 = m.refunds.iter().sum();
        if !m.cancelled && refunded < m.amount {
            active_months.entry(m.merchant).or_default().insert(m.month);
        }
    }
    let mut adopters: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for (merchant, months) in &active_months {
        let (_, kab, _, sector) = cell(*merchant);
        let first = months.iter().next().copied().unwrap_or_default();
        *adopters.entry((first, kab, sector)).or_default() += 1;
    }
    let want_adopters: Vec<String> = adopters
        .iter()
        .map(|((m, k, s), n)| format!("{m}\t{k}\t{s}\t{n}"))
        .collect();
    let got_adopters: Vec<String> = ch(
        &env,
        &format!(
            "SELECT toString(first), kab, sec, count() FROM (SELECT merchant_key, min(month) AS first, \
             any(kab_kota_code) AS kab, any(sector) AS sec FROM {db}.adoption_merchant_monthly \
             WHERE net_count > 0 GROUP BY merchant_key) GROUP BY first, kab, sec ORDER BY first, kab, sec \
             FORMAT TabSeparated"
        ),
    )
    .await?
    .lines()
    .map(String::from)
    .collect();
    ensure!(
        got_adopters == want_adopters,
        "new adopters {got_adopters:?}, expected {want_adopters:?}"
    );
    let was = active_months
        .values()
        .filter(|m| m.contains("2026-09-01"))
        .count();
    let kept = active_months
        .values()
        .filter(|m| m.contains("2026-09-01") && m.contains("2026-10-01"))
        .count();
    let retention = ch(
        &env,
        &format!(
            "SELECT countIf(has(ms, toDate('2026-09-01'))), \
             countIf(has(ms, toDate('2026-09-01')) AND has(ms, toDate('2026-10-01'))) \
             FROM (SELECT merchant_key, groupUniqArray(month) AS ms FROM {db}.adoption_merchant_monthly \
             WHERE net_count > 0 GROUP BY merchant_key) FORMAT TabSeparated"
        ),
    )
    .await?;
    ensure!(
        retention.trim() == format!("{was}\t{kept}"),
        "retention into October (active in September, and also in October): {retention}, expected {was} {kept}"
    );
    println!(
        "refunds: per month, kab/kota and sector\n{}\nnew adopters {got_adopters:?}; retention into October {kept}/{was}",
        got.join("\n")
    );
    for mut c in [qc, nc, mc] {
        ensure!(c.terminate(Duration::from_secs(30))? == 0);
    }
    Ok(())
}
