//! The adoption-metric rollups through the real pipeline: a known set of QRIS, card and merchant
//! events (duplicates, issuer + acquirer double reports, a refund, a late event, a merchant that
//! moves region and sector, a merchant that registers after its payments, an unregistered one)
//! goes through the three consumers; the per-merchant rollups must equal the facts, and
//! `v_merchant_activity_monthly` must give exactly the values computed here from the same events,
//! and so must both snapshots after `refresh-metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, ensure};
use apache_avro::Schema;
use merchant_consumer::MerchantEventType::{Registered, Updated};
use noncash_consumer::{Instrument, NoncashPayment};
use qris_consumer::{PaymentStatus, ProviderRole, QrisPayment};
use umkm_core::avro::encode;
use umkm_e2e::{Ends, Env, ch, publish_tracked, wait_committed};
use umkm_traffic::{merchants, noncash, qris};

const PARTITIONS: i32 = 2;
type Msg = (Option<Vec<u8>>, Vec<u8>);
/// (month, kab/kota, sector, channel)
type Cell = (String, String, String, String);
/// (active merchant keys, success count, success value, refund count)
type Tally = (BTreeSet<String>, u64, i64, u64);

/// 2026-09-15 and 2026-10-15, 10:00 WIB, in epoch ms.
const SEP: i64 = 1_789_441_200_000;
const OCT: i64 = 1_792_033_200_000;

struct Pay {
    merchant_ref: String,
    channel: &'static str,
    month: &'static str,
    amount: i64,
    status: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monthly_activity_is_exact_under_duplicates_refunds_late_events_and_moves() -> Result<()> {
    let env = Env::from_env();
    let d = umkm_e2e::Deployment::start(&env, "e2e_metrics", PARTITIONS).await?;
    let db = d.database.clone();
    let (qs, ns, ms) = (d.qris.clone(), d.noncash.clone(), d.merchants.clone());
    let (qc, nc, mc) = (d.qris_proc, d.noncash_proc, d.merchants_proc);

    let qv1 = Schema::parse_str(qris::V1)?;
    let nv1 = Schema::parse_str(noncash::SCHEMA)?;
    let mv1 = Schema::parse_str(merchants::SCHEMA)?;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9);
    let mut rng_card = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(10);
    let now = qris::now_ms();
    // Merchants 1 and 2 of the registry (merchants::event ids): NMIDs ID1000024000001/2,
    // card ids 93600008:MID00050001/2. Merchant 3 (NMID ID1000024000003) never registers.
    let nmid = |i: usize| format!("ID10{:011}", 24_000_000 + i);
    let qm = |i: usize, region: &'static str, mcc: &'static str| qris::Merchant {
        nmid: nmid(i),
        pan: "9360000812345678".into(),
        mcc,
        region,
        criteria: qris_consumer::MerchantCriteria::UMI,
        name: format!("M{i}"),
    };
    let mut truth: Vec<Pay> = Vec::new();
    let mut rrn = 500_000_000_000u64;
    let mut qris = |i: usize, t: i64, amount: i64, status: PaymentStatus, truth: &mut Vec<Pay>| {
        rrn += 1;
        let mut p = qris::payment(&qm(i, "36.03.01", "5812"), rrn.to_string(), &mut rng, now);
        p.event_time = t;
        p.amount = amount.to_string();
        p.status = status;
        truth.push(Pay {
            merchant_ref: format!("NMID:{}", nmid(i)),
            channel: "qris",
            month: if t == SEP { "2026-09-01" } else { "2026-10-01" },
            amount,
            status: status.as_str(),
        });
        p
    };
    let q_msg = |p: &QrisPayment| -> Result<Msg> {
        Ok((Some(p.nmid.clone().into_bytes()), encode(&qv1, 1, p)?))
    };
    // Wave 1 (October, and September for merchant 2): redeliveries and an issuer report.
    let a = qris(1, OCT, 25_000, PaymentStatus::Success, &mut truth);
    let b = qris(1, OCT, 40_000, PaymentStatus::Success, &mut truth);
    let c = qris(2, SEP, 15_000, PaymentStatus::Success, &mut truth);
    let d = qris(2, OCT, 60_000, PaymentStatus::Refunded, &mut truth);
    let e = qris(3, OCT, 10_000, PaymentStatus::Success, &mut truth);
    let mut b_issuer = b.clone();
    b_issuer.provider_role = ProviderRole::Issuer;
    b_issuer.event_id = "issuer-copy".into();
    b_issuer.region_code = "36.03".into();
    let wave1: Vec<Msg> = [&a, &b, &c, &d, &e, &a, &b_issuer, &c]
        .into_iter()
        .map(q_msg)
        .collect::<Result<_>>()?;
    let mut card = |i: usize, t: i64, amount: i64, truth: &mut Vec<Pay>| -> NoncashPayment {
        let cm = noncash::CardMerchant {
            acquirer_id: "93600008".into(),
            merchant_id: format!("MID{:08}", 50_000 + i),
            nmid: None,
            mcc: "5311",
            region: "36.02.01",
            name: format!("M{i}"),
        };
        let mut p = noncash::payment(&cm, format!("C{t}{amount}"), &mut rng_card, now);
        p.instrument = Instrument::DebitCard;
        p.status = PaymentStatus::Success;
        p.event_time = t;
        p.amount = amount.to_string();
        truth.push(Pay {
            merchant_ref: format!("MID:93600008:MID{:08}", 50_000 + i),
            channel: "card",
            month: if t == SEP { "2026-09-01" } else { "2026-10-01" },
            amount,
            status: "success",
        });
        p
    };
    let f = card(1, OCT, 450_000, &mut truth);
    let n_msg = |p: &NoncashPayment| -> Result<Msg> {
        let key = noncash_consumer::message_key(&p.acquirer_id, &p.merchant_id);
        Ok((Some(key.into_bytes()), encode(&nv1, 2, p)?))
    };
    let (mut qe, mut ne, mut me) = (Ends::new(), Ends::new(), Ends::new());
    publish_tracked(&env, &qs.topic, &wave1, &mut qe).await?;
    publish_tracked(&env, &ns.topic, &[n_msg(&f)?, n_msg(&f)?], &mut ne).await?;
    wait_committed(&env, &qs, PARTITIONS, &qe, Duration::from_secs(60)).await?;
    wait_committed(&env, &ns, PARTITIONS, &ne, Duration::from_secs(60)).await?;

    // Wave 2: merchant 1 registers in Serang (fashion), then moves to Kota Tangerang (food);
    // merchant 2 registers in Pandeglang (food processing). A late September payment of
    // merchant 1 (sent twice) and a September card payment of merchant 2 arrive afterwards.
    let m1v1 = merchants::event(1, 1, Registered, "36.04.19", "15121", now - 90_000);
    let m1v2 = merchants::event(1, 2, Updated, "36.71.01", "56102", now - 60_000);
    let m2v1 = merchants::event(2, 1, Registered, "36.01.01", "10722", now - 60_000);
    let m_msgs: Vec<Msg> = [&m1v2, &m2v1, &m1v1, &m1v2]
        .into_iter()
        .map(|e| {
            Ok((
                Some(e.merchant_id.clone().into_bytes()),
                encode(&mv1, 3, e)?,
            ))
        })
        .collect::<Result<_>>()?;
    publish_tracked(&env, &ms.topic, &m_msgs, &mut me).await?;
    let late = qris(1, SEP, 5_000, PaymentStatus::Success, &mut truth);
    let g = card(2, SEP, 120_000, &mut truth);
    publish_tracked(&env, &qs.topic, &[q_msg(&late)?, q_msg(&late)?], &mut qe).await?;
    publish_tracked(&env, &ns.topic, &[n_msg(&g)?], &mut ne).await?;
    wait_committed(&env, &ms, PARTITIONS, &me, Duration::from_secs(60)).await?;
    wait_committed(&env, &qs, PARTITIONS, &qe, Duration::from_secs(60)).await?;
    wait_committed(&env, &ns, PARTITIONS, &ne, Duration::from_secs(60)).await?;

    // Expected, from the events: final merchant state attributes the whole history.
    let attribution: BTreeMap<String, (String, &str, &str)> = [
        (1usize, "36.71", "food_beverage"),
        (2, "36.01", "food_processing"),
    ]
    .into_iter()
    .flat_map(|(i, kab, sector)| {
        let id = merchants::merchant_id(i);
        [
            (format!("NMID:{}", nmid(i)), (id.clone(), kab, sector)),
            (
                format!("MID:93600008:MID{:08}", 50_000 + i),
                (id, kab, sector),
            ),
        ]
    })
    .collect();
    // (month, kab, sector, channel) -> (active merchants, success count, success value, refunds)
    let mut want: BTreeMap<Cell, Tally> = BTreeMap::new();
    for p in &truth {
        let (key, kab, sector) = attribution
            .get(&p.merchant_ref)
            .map(|(k, kab, s)| (k.clone(), kab.to_string(), s.to_string()))
            .unwrap_or_else(|| {
                // Unregistered: the payment's own report (QRIS sample: Balaraja, MCC 5812).
                (
                    p.merchant_ref.clone(),
                    "36.03".into(),
                    "food_beverage".into(),
                )
            });
        let e = want
            .entry((p.month.into(), kab, sector, p.channel.into()))
            .or_default();
        if p.status == "success" {
            e.0.insert(key);
            e.1 += 1;
            e.2 += p.amount;
        } else {
            e.3 += 1;
        }
    }
    let text = ch(
        &env,
        &format!(
            "SELECT toString(month), kab_kota_code, sector, channel, uniqExactIf(merchant_key, success_count > 0), \
             sum(success_count), sum(success_value_idr), sum(refund_count) FROM {db}.v_merchant_activity_monthly \
             GROUP BY month, kab_kota_code, sector, channel ORDER BY month, kab_kota_code, sector, channel FORMAT TabSeparated"
        ),
    )
    .await?;
    let got: Vec<String> = text.lines().map(String::from).collect();
    let expected: Vec<String> = want
        .iter()
        .map(|((m, k, s, c), (active, n, v, r))| {
            format!("{m}\t{k}\t{s}\t{c}\t{}\t{n}\t{v}\t{r}", active.len())
        })
        .collect();
    ensure!(
        got == expected,
        "activity by month/kab/sector/channel:\n{got:#?}\nexpected\n{expected:#?}"
    );

    // Every group of every rollup equals what its views' SELECTs give over the facts.
    for (rollup, groups) in umkm_e2e::rollup_mismatches(&env, &db).await? {
        ensure!(
            groups.is_empty(),
            "{rollup}: {} groups differ from the facts (keys, the facts' sums, the rollup's): {:?}",
            groups.len(),
            &groups[..groups.len().min(5)]
        );
    }

    // The dashboards' snapshot, rebuilt by `refresh-metrics` (twice: a rebuild replaces, never
    // adds), holds the same numbers.
    for _ in 0..2 {
        umkm_e2e::refresh_metrics(&env, "merchant-consumer", &db)?;
        // Both snapshots, per month (the daily one's 120-day window holds all these events).
        for (table, month) in [
            ("adoption_merchant_monthly", "month"),
            ("adoption_merchant_daily", "toStartOfMonth(event_date)"),
        ] {
            let snap = ch(
                &env,
                &format!(
                    "SELECT toString({month}) AS m, kab_kota_code, sector, channel, uniqExactIf(merchant_key, success_count > 0), \
                     sum(success_count), sum(success_value_idr), sum(refund_count) FROM {db}.{table} \
                     GROUP BY m, kab_kota_code, sector, channel ORDER BY m, kab_kota_code, sector, channel FORMAT TabSeparated"
                ),
            )
            .await?;
            let snap: Vec<String> = snap.lines().map(String::from).collect();
            ensure!(
                snap == expected,
                "{table} by month:\n{snap:#?}\nexpected\n{expected:#?}"
            );
        }
    }
    println!(
        "metrics: {} expected rows, all equal in the views and both snapshots:\n{}",
        expected.len(),
        got.join("\n")
    );
    for mut c in [qc, nc, mc] {
        ensure!(c.terminate(Duration::from_secs(30))? == 0);
    }
    Ok(())
}
