//! End-to-end tests of the non-cash and merchant consumers, and of the canonical model that
//! joins all three families, against the real broker and ClickHouse that `scripts/test` starts.
//! Each consumer runs as its own process (its own binary), as in production.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use umkm_e2e::{
    ConsumerProc, ConsumerSetup, DlqRecord, Ends, Env, MERCHANTS, NONCASH, ch, ch_u64,
    offsets_at_end, publish_tracked, read_dlq_exactly, wait_committed,
};
use umkm_traffic::qris::Plan;
use umkm_traffic::{merchants, noncash};

const PARTITIONS: i32 = 3;

fn tsv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Every DLQ record has a known rule, a reason and distinct source coordinates; the counts per
/// rule are exactly the expected ones.
fn check_dlq(dlq: &[DlqRecord], bad: &BTreeMap<&'static str, usize>, topic: &str) -> Result<()> {
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut coords = BTreeSet::new();
    for r in dlq {
        let h = |k: &str| r.headers.get(k).cloned().unwrap_or_default();
        ensure!(!h("dlq.reason").is_empty(), "DLQ record without a reason");
        ensure!(
            h("dlq.source.topic") == topic,
            "source topic {}",
            h("dlq.source.topic")
        );
        ensure!(
            coords.insert((h("dlq.source.partition"), h("dlq.source.offset"))),
            "two DLQ records for one source record"
        );
        *by_rule.entry(h("dlq.rule")).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = bad.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    ensure!(
        by_rule == want,
        "DLQ by rule {by_rule:?}, expected {want:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noncash_consumer_lands_every_payment_once_and_dead_letters_bad_ones() -> Result<()> {
    let env = Env::from_env();
    let s = ConsumerSetup::new_for(&env, NONCASH, "e2e_noncash", PARTITIONS).await?;
    let plan: Plan = noncash::generate(&noncash::Spec {
        payments: 5_000,
        // 40 of each kind; garbage alternates two rules (short buffer, bad magic): 20 each.
        bad_each: 40,
        ..Default::default()
    });
    ensure!(plan.messages.len() >= 5_000 && plan.redeliveries > 0);
    ensure!(plan.bad.values().all(|n| *n >= 20));
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;

    let started = Instant::now();
    let mut c = ConsumerProc::start(&env, &s, "n1")?;
    wait_committed(&env, &s, PARTITIONS, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    let elapsed = started.elapsed();

    let n = ch_u64(
        &env,
        &format!("SELECT count() FROM {}.noncash_payments", s.database),
    )
    .await?;
    ensure!(
        n == plan.unique.len() as u64,
        "count() {n}, expected {}",
        plan.unique.len()
    );
    let text = ch(
        &env,
        &format!(
            "SELECT concat(acquirer_id, ':', merchant_id), reference_number, status FROM {}.noncash_payments FORMAT TabSeparated",
            s.database
        ),
    )
    .await?;
    let landed: BTreeSet<(String, String, String)> = tsv_rows(&text)
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    ensure!(
        landed == plan.unique,
        "landed payments differ from the unique payments published"
    );
    offsets_at_end(&env, &s, PARTITIONS, &ends)?;
    let dlq = read_dlq_exactly(&env, &s.dlq_topic, plan.bad_total())?;
    check_dlq(&dlq, &plan.bad, &s.topic)?;

    // Every instrument landed; the acquirer's report won where several parties reported; no
    // masked card number is stored, only its keyed hash.
    let instruments = ch_u64(
        &env,
        &format!(
            "SELECT uniqExact(instrument) FROM {}.noncash_payments",
            s.database
        ),
    )
    .await?;
    ensure!(instruments == 6, "{instruments} instruments landed");
    let not_acquirer = ch_u64(
        &env,
        &format!(
            "SELECT count() FROM {}.noncash_payments WHERE provider_role != 'acquirer'",
            s.database
        ),
    )
    .await?;
    let bad_hash = ch_u64(
        &env,
        &format!(
            "SELECT count() FROM {}.noncash_payments WHERE length(payer_hash) != 64 OR position(payer_hash, '*') > 0",
            s.database
        ),
    )
    .await?;
    ensure!(bad_hash == 0, "{bad_hash} rows without a proper payer hash");
    let inserted = c.metric("umkm_events_total{outcome=\"inserted\"").await;
    let dups = c.metric("umkm_events_total{outcome=\"duplicate\"").await;
    let dlq_m = c.metric("umkm_events_total{outcome=\"dlq\"").await;
    ensure!(
        inserted as usize == plan.unique.len(),
        "inserted metric {inserted}"
    );
    ensure!(
        dups as usize == plan.double_reports + plan.redeliveries,
        "duplicate metric {dups}, expected {}",
        plan.double_reports + plan.redeliveries
    );
    ensure!(dlq_m as usize == plan.bad_total(), "dlq metric {dlq_m}");
    let (_, m) = c.get("/metrics").await?;
    ensure!(
        m.contains("service=\"noncash-consumer\""),
        "metrics lack the service label"
    );
    umkm_e2e::promtool_check_metrics(&m)?;
    println!(
        "noncash: {} messages ({} unique payments, {} extra party reports, {} redeliveries, {} bad {:?}); \
         {n} rows, {not_acquirer} landed from a non-acquirer report (no acquirer report in that batch); {:.2} s to the last commit",
        plan.messages.len(),
        plan.unique.len(),
        plan.double_reports,
        plan.redeliveries,
        plan.bad_total(),
        plan.bad,
        elapsed.as_secs_f64()
    );
    ensure!(c.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_consumer_keeps_history_and_the_latest_version_wins() -> Result<()> {
    let env = Env::from_env();
    let s = ConsumerSetup::new_for(&env, MERCHANTS, "e2e_merchants", PARTITIONS).await?;
    let plan = merchants::generate(&merchants::Spec {
        bad_each: 40,
        ..Default::default()
    });
    ensure!(
        plan.messages.len() >= 5_000,
        "{} messages",
        plan.messages.len()
    );
    ensure!(
        plan.out_of_order_merchants > 100,
        "{} out of order",
        plan.out_of_order_merchants
    );
    ensure!(plan.bad.values().all(|n| *n >= 20));
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;

    let started = Instant::now();
    let mut c = ConsumerProc::start(&env, &s, "m1")?;
    wait_committed(&env, &s, PARTITIONS, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    let elapsed = started.elapsed();

    // History: every (merchant, version) exactly once.
    let text = ch(
        &env,
        &format!(
            "SELECT merchant_id, version FROM {}.merchant_events FORMAT TabSeparated",
            s.database
        ),
    )
    .await?;
    let rows = tsv_rows(&text);
    let history: BTreeSet<(String, i64)> = rows
        .iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap_or(-1)))
        .collect();
    ensure!(rows.len() == history.len(), "a version landed twice");
    ensure!(
        history == plan.unique,
        "history differs from the versions published"
    );

    // Current state: exactly the highest version of every merchant, whatever the arrival order.
    let text = ch(
        &env,
        &format!(
            "SELECT merchant_id, version, region_code, sector, status FROM {}.v_merchants_current FORMAT TabSeparated",
            s.database
        ),
    )
    .await?;
    let current: BTreeMap<String, (i64, String, String, String)> = tsv_rows(&text)
        .into_iter()
        .map(|r| {
            (
                r[0].clone(),
                (
                    r[1].parse().unwrap_or(-1),
                    r[2].clone(),
                    r[3].clone(),
                    r[4].clone(),
                ),
            )
        })
        .collect();
    ensure!(
        current.len() == plan.expected.current.len(),
        "{} current merchants, expected {}",
        current.len(),
        plan.expected.current.len()
    );
    for (id, want) in &plan.expected.current {
        ensure!(
            current.get(id) == Some(want),
            "{id}: current {:?}, expected {want:?}",
            current.get(id)
        );
    }
    offsets_at_end(&env, &s, PARTITIONS, &ends)?;
    let dlq = read_dlq_exactly(&env, &s.dlq_topic, plan.bad_total())?;
    check_dlq(&dlq, &plan.bad, &s.topic)?;
    let closed = current.values().filter(|v| v.3 == "closed").count();
    let (_, m) = c.get("/metrics").await?;
    ensure!(
        m.contains("service=\"merchant-consumer\""),
        "metrics lack the service label"
    );
    umkm_e2e::promtool_check_metrics(&m)?;
    println!(
        "merchants: {} messages ({} versions of {} merchants, {} merchants published out of order, {} redeliveries, {} bad {:?}); \
         {} history rows, {} current ({closed} closed); {:.2} s to the last commit",
        plan.messages.len(),
        plan.unique.len(),
        plan.expected.current.len(),
        plan.out_of_order_merchants,
        plan.redeliveries,
        plan.bad_total(),
        plan.bad,
        rows.len(),
        current.len(),
        elapsed.as_secs_f64()
    );
    ensure!(c.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}

/// Publishes `msgs` to `s.topic` and waits until the consumer committed all of it.
async fn deliver(
    env: &Env,
    s: &ConsumerSetup,
    c: &ConsumerProc,
    msgs: &[(Option<Vec<u8>>, Vec<u8>)],
    ends: &mut Ends,
) -> Result<()> {
    publish_tracked(env, &s.topic, msgs, ends).await?;
    wait_committed(env, s, PARTITIONS, ends, Duration::from_secs(60))
        .await
        .map_err(|e| e.context(c.log_tail()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qris_and_card_payments_resolve_to_one_merchant_even_when_it_registers_later() -> Result<()>
{
    use apache_avro::Schema;
    use merchant_consumer::MerchantEventType::{Registered, Updated};
    use umkm_core::avro::encode;

    let env = Env::from_env();
    let d = umkm_e2e::Deployment::start(&env, "e2e_canonical", PARTITIONS).await?;
    let db = d.database.clone();
    let (qs, ns, ms) = (d.qris.clone(), d.noncash.clone(), d.merchants.clone());
    let (qc, nc, mc) = (d.qris_proc, d.noncash_proc, d.merchants_proc);

    // Merchant 777 of the registry: NMID ID10000024000777, card MID 93600008:MID00050777.
    let i = 777;
    let nmid = format!("ID10{:011}", 24_000_000 + i);
    let now = umkm_traffic::qris::now_ms();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let qm = umkm_traffic::qris::Merchant {
        nmid: nmid.clone(),
        pan: "9360000812345678".into(),
        mcc: "5411", // retail_food
        region: "36.74.01",
        criteria: qris_consumer::MerchantCriteria::UMI,
        name: "WARUNG TAS".into(),
    };
    let mut qp = umkm_traffic::qris::payment(&qm, "777000000001".into(), &mut rng, now);
    qp.status = qris_consumer::PaymentStatus::Success;
    let mut stranger = umkm_traffic::qris::payment(&qm, "777000000002".into(), &mut rng, now);
    stranger.nmid = "ID1099999999999".into();
    let cm = noncash::CardMerchant {
        acquirer_id: "93600008".into(),
        merchant_id: format!("MID{:08}", 50_000 + i),
        nmid: None,
        mcc: "5311", // retail_general
        region: "36.03.01",
        name: "TAS PETIR (card)".into(),
    };
    let mut cp = noncash::payment(&cm, "777000000003".into(), &mut rng, now);
    cp.instrument = noncash_consumer::Instrument::DebitCard;
    cp.status = noncash_consumer::PaymentStatus::Success;

    let qv1 = Schema::parse_str(umkm_traffic::qris::V1)?;
    let nv1 = Schema::parse_str(noncash::SCHEMA)?;
    let mv1 = Schema::parse_str(merchants::SCHEMA)?;
    let (mut qe, mut ne, mut me) = (Ends::new(), Ends::new(), Ends::new());
    // 1. The payments arrive before the merchant is registered.
    let qmsgs: Vec<_> = [&qp, &stranger]
        .iter()
        .map(|p| Ok((Some(p.nmid.clone().into_bytes()), encode(&qv1, 1, *p)?)))
        .collect::<Result<_>>()?;
    deliver(&env, &qs, &qc, &qmsgs, &mut qe).await?;
    let nmsgs = vec![(Some(cm.key().into_bytes()), encode(&nv1, 2, &cp)?)];
    deliver(&env, &ns, &nc, &nmsgs, &mut ne).await?;
    let view = |db: String| {
        let env = env.clone();
        async move {
            ch(
                &env,
                &format!(
                    "SELECT channel, instrument, merchant_ref, merchant_key, merchant_registered, region_code, kab_kota_code, \
                     kecamatan_code, sector, reported_region_code FROM {db}.v_payments ORDER BY channel, merchant_ref FORMAT TabSeparated"
                ),
            )
            .await
            .map(|t| tsv_rows(&t))
        }
    };
    let before = view(db.clone()).await?;
    let card_ref = format!("MID:93600008:MID{:08}", 50_000 + i);
    let qris_ref = format!("NMID:{nmid}");
    let strange_ref = "NMID:ID1099999999999".to_string();
    ensure!(
        before
            == vec![
                vec![
                    "card",
                    "debit_card",
                    &card_ref,
                    &card_ref,
                    "0",
                    "36.03.01",
                    "36.03",
                    "36.03.01",
                    "retail_general",
                    "36.03.01"
                ],
                vec![
                    "qris",
                    qp_instrument(&qp),
                    &qris_ref,
                    &qris_ref,
                    "0",
                    "36.74.01",
                    "36.74",
                    "36.74.01",
                    "retail_food",
                    "36.74.01"
                ],
                vec![
                    "qris",
                    qp_instrument(&stranger),
                    &strange_ref,
                    &strange_ref,
                    "0",
                    "36.74.01",
                    "36.74",
                    "36.74.01",
                    "retail_food",
                    "36.74.01"
                ],
            ]
            .into_iter()
            .map(|r| r.into_iter().map(String::from).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        "before registration: {before:?}"
    );

    // 2. The merchant's versions arrive out of order: 3, then 1, then 2.
    let v3 = merchants::event(i, 3, Updated, "36.04.19", "15121", now - 3_000); // fashion
    let v1 = merchants::event(i, 1, Registered, "36.01.01", "56102", now - 9_000);
    let v2 = merchants::event(i, 2, Updated, "36.02.01", "10722", now - 6_000);
    let mmsgs: Vec<_> = [&v3, &v1, &v2]
        .iter()
        .map(|e| {
            Ok((
                Some(e.merchant_id.clone().into_bytes()),
                encode(&mv1, 3, *e)?,
            ))
        })
        .collect::<Result<_>>()?;
    deliver(&env, &ms, &mc, &mmsgs, &mut me).await?;
    let cur = ch(
        &env,
        &format!(
            "SELECT merchant_id, version, region_code, sector, business_name FROM {db}.v_merchants_current FORMAT TabSeparated"
        ),
    )
    .await?;
    let mid = merchants::merchant_id(i);
    let want_current = format!("{mid}\t3\t36.04.19\tfashion\tUMKM {i} v3");
    ensure!(cur.trim() == want_current, "current state {cur:?}");
    let hist = ch_u64(&env, &format!("SELECT count() FROM {db}.merchant_events")).await?;
    ensure!(hist == 3, "{hist} history rows");

    // An acquirer reports version 3 too, dated two days earlier and with another region, to a
    // restarted consumer (nothing in its memory): the same (merchant_id, version) is found in
    // ClickHouse at another event_date and dropped as a duplicate.
    let mut mc = mc;
    ensure!(mc.terminate(Duration::from_secs(30))? == 0);
    let mc = ConsumerProc::start(&env, &ms, "m2")?;
    let mut acq_v3 = merchants::event(i, 3, Updated, "36.01.01", "56102", now - 2 * 86_400_000);
    acq_v3.source_type = merchant_consumer::SourceType::Acquirer;
    acq_v3.source_id = "93600008".into();
    let dup = vec![(
        Some(acq_v3.merchant_id.clone().into_bytes()),
        encode(&mv1, 3, &acq_v3)?,
    )];
    deliver(&env, &ms, &mc, &dup, &mut me).await?;
    let hist = ch_u64(&env, &format!("SELECT count() FROM {db}.merchant_events")).await?;
    ensure!(
        hist == 3,
        "{hist} history rows after the acquirer's copy of version 3"
    );
    let found = mc
        .metric("umkm_duplicates_total{stage=\"clickhouse\"")
        .await;
    ensure!(found == 1.0, "duplicates found in ClickHouse: {found}");

    let cur = ch(
        &env,
        &format!(
            "SELECT merchant_id, version, region_code, sector, business_name FROM {db}.v_merchants_current FORMAT TabSeparated"
        ),
    )
    .await?;
    ensure!(
        cur.trim() == want_current,
        "current state after the duplicate {cur:?}"
    );

    // 3. Both payments now carry the registered merchant's key, region and sector; the payment
    //    of the unregistered merchant keeps its own.
    let after = view(db.clone()).await?;
    ensure!(
        after
            == vec![
                vec![
                    "card",
                    "debit_card",
                    &card_ref,
                    &mid,
                    "1",
                    "36.04.19",
                    "36.04",
                    "36.04.19",
                    "fashion",
                    "36.03.01"
                ],
                vec![
                    "qris",
                    qp_instrument(&qp),
                    &qris_ref,
                    &mid,
                    "1",
                    "36.04.19",
                    "36.04",
                    "36.04.19",
                    "fashion",
                    "36.74.01"
                ],
                vec![
                    "qris",
                    qp_instrument(&stranger),
                    &strange_ref,
                    &strange_ref,
                    "0",
                    "36.74.01",
                    "36.74",
                    "36.74.01",
                    "retail_food",
                    "36.74.01"
                ],
            ]
            .into_iter()
            .map(|r| r.into_iter().map(String::from).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        "after registration: {after:?}"
    );
    println!("canonical: before registration {before:?}; after {after:?}");
    for mut c in [qc, nc, mc] {
        ensure!(c.terminate(Duration::from_secs(30))? == 0);
    }
    Ok(())
}

fn qp_instrument(p: &qris_consumer::QrisPayment) -> &'static str {
    match p.qr_mode {
        qris_consumer::QrMode::MpmStatic => "qris_mpm_static",
        qris_consumer::QrMode::MpmDynamic => "qris_mpm_dynamic",
        qris_consumer::QrMode::Cpm => "qris_cpm",
        qris_consumer::QrMode::Ttm => "qris_ttm",
    }
}
