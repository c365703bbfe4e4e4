//! End-to-end tests against the real broker (tansu, or Kafka) and the real ClickHouse server that
//! `scripts/test` starts. Every test uses its own topics, consumer group and database, and runs
//! the `qris-consumer` binary as a separate process.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use umkm_e2e::{
    ConsumerProc, ConsumerSetup, Ends, Env, ch, ch_u64, committed, offsets_at_end, publish_tracked,
    read_dlq_exactly, wait_committed, wait_until,
};
use umkm_traffic::qris::{Plan, Spec, generate};

const PARTITIONS: i32 = 3;

async fn count(env: &Env, s: &ConsumerSetup) -> Result<u64> {
    // A plain count(): no FINAL, no OPTIMIZE.
    ch_u64(
        env,
        &format!("SELECT count() FROM {}.qris_payments", s.database),
    )
    .await
}

/// The exact-content checks every test ends with.
async fn assert_exact(env: &Env, s: &ConsumerSetup, plan: &Plan) -> Result<()> {
    let n = count(env, s).await?;
    ensure!(
        n == plan.unique.len() as u64,
        "plain count() is {n}, expected {} unique payments",
        plan.unique.len()
    );
    let rows = ch(
        env,
        &format!(
            "SELECT nmid, rrn, status FROM {}.qris_payments FORMAT TabSeparated",
            s.database
        ),
    )
    .await?;
    let mut landed = BTreeSet::new();
    for line in rows.lines() {
        let mut it = line.split('\t');
        let t = (
            it.next().unwrap_or_default().to_string(),
            it.next().unwrap_or_default().to_string(),
            it.next().unwrap_or_default().to_string(),
        );
        ensure!(landed.insert(t.clone()), "payment {t:?} landed twice");
    }
    ensure!(
        landed == plan.unique,
        "landed payments differ from the unique payments published"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_land_exactly_once_and_bad_ones_go_to_the_dlq() -> Result<()> {
    let env = Env::from_env();
    let s = ConsumerSetup::new(&env, "e2e_main", PARTITIONS).await?;
    let plan = generate(&Spec {
        payments: 9_000,
        // 40 of each kind; garbage alternates two rules (short buffer, bad magic): 20 each.
        bad_each: 40,
        ..Spec::default()
    });
    ensure!(plan.messages.len() >= 10_000 && plan.bad.values().all(|n| *n >= 20));
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;

    let started = Instant::now();
    let mut c = ConsumerProc::start(&env, &s, "c1")?;
    wait_committed(&env, &s, PARTITIONS, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    let elapsed = started.elapsed();

    assert_exact(&env, &s, &plan).await?;
    offsets_at_end(&env, &s, PARTITIONS, &ends)?;

    // DLQ: exactly the bad records, each with its reason and source coordinates.
    let dlq = read_dlq_exactly(&env, &s.dlq_topic, plan.bad_total())?;
    let mut by_rule: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut coords = BTreeSet::new();
    for r in &dlq {
        let rule = r.headers.get("dlq.rule").map(String::as_str).unwrap_or("");
        let known = plan.bad.keys().find(|k| **k == rule).copied();
        ensure!(
            known.is_some(),
            "unexpected DLQ rule {rule:?}: {:?}",
            r.headers
        );
        *by_rule.entry(known.unwrap_or_default()).or_default() += 1;
        ensure!(
            !r.headers
                .get("dlq.reason")
                .map(String::is_empty)
                .unwrap_or(true),
            "no reason: {:?}",
            r.headers
        );
        ensure!(
            r.headers.get("dlq.source.topic") == Some(&s.topic),
            "{:?}",
            r.headers
        );
        ensure!(r.headers.get("dlq.service").map(String::as_str) == Some("qris-consumer"));
        let coord = (
            r.headers
                .get("dlq.source.partition")
                .cloned()
                .unwrap_or_default(),
            r.headers
                .get("dlq.source.offset")
                .cloned()
                .unwrap_or_default(),
        );
        ensure!(
            !coord.0.is_empty() && !coord.1.is_empty() && coords.insert(coord.clone()),
            "coordinates {coord:?}"
        );
        ensure!(
            !r.payload.is_empty(),
            "DLQ record without the original payload"
        );
    }
    ensure!(
        by_rule == plan.bad,
        "DLQ by rule {by_rule:?}, expected {:?}",
        plan.bad
    );

    // No payer identifier in clear; every row has its hash.
    let leaked = ch_u64(
        &env,
        &format!(
            "SELECT count() FROM {}.qris_payments WHERE NOT match(payer_hash, '^[0-9a-f]{{64}}$') \
             OR match(concat(merchant_name, issuer_reference, acquirer_reference, partner_reference, merchant_city), '08[0-9]{{10}}')",
            s.database
        ),
    )
    .await?;
    ensure!(leaked == 0, "{leaked} rows without a proper payer hash");

    // Metrics and health.
    let inserted = c.metric("umkm_events_total{outcome=\"inserted\"").await;
    let dups = c.metric("umkm_events_total{outcome=\"duplicate\"").await;
    let dlq_m = c.metric("umkm_events_total{outcome=\"dlq\"").await;
    ensure!(
        inserted as usize == plan.unique.len(),
        "inserted metric {inserted}"
    );
    ensure!(
        dups as usize == plan.double_reports + plan.redeliveries,
        "duplicate metric {dups}"
    );
    ensure!(dlq_m as usize == plan.bad_total(), "dlq metric {dlq_m}");
    let (code, _) = c.get("/health/ready").await?;
    ensure!(code == 200, "ready answered {code}");
    // The group's lag, read from the broker every second in the tests' settings: zero on
    // every partition once everything is committed.
    let c2 = &c;
    let topic = &s.topic;
    wait_until(
        Duration::from_secs(30),
        "the group's lag at zero on every partition",
        || async move {
            let (_, m) = c2.get("/metrics").await?;
            let lags: Vec<f64> = m
                .lines()
                .filter(|l| l.starts_with("umkm_group_lag_messages{"))
                .filter(|l| l.contains(&format!("topic=\"{topic}\"")))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            Ok(lags.len() == PARTITIONS as usize && lags.iter().all(|l| *l == 0.0))
        },
    )
    .await?;
    let (_, m) = c.get("/metrics").await?;
    ensure!(
        m.contains("umkm_insert_duration_seconds_bucket"),
        "no insert latency histogram"
    );
    // Every batch of this run was looked up in ClickHouse before its insert.
    let lookups = c.metric("umkm_lookup_duration_seconds_count").await;
    let inserts = c.metric("umkm_insert_duration_seconds_count").await;
    ensure!(
        lookups >= inserts && inserts > 0.0,
        "the lookup histogram does not count every inserted batch ({lookups} lookups, {inserts} inserts):\n{m}"
    );

    // The exposition format passes Prometheus's own checker.
    umkm_e2e::promtool_check_metrics(&m)?;

    let cpu = c.cpu_seconds().unwrap_or(f64::NAN);
    let code = c.terminate(Duration::from_secs(30))?;
    ensure!(code == 0, "exit code {code} after SIGTERM");
    println!(
        "e2e: consumer CPU {cpu:.2}s = {:.1} us per message",
        cpu * 1e6 / plan.messages.len() as f64
    );
    println!(
        "e2e: published {} messages ({} unique payments, {} double reports, {} redeliveries, {} bad); landed {} rows, DLQ {} records; consumed in {:.2?} = {:.0} events/s (consumer start to last commit, incl. start-up)",
        plan.messages.len(),
        plan.unique.len(),
        plan.double_reports,
        plan.redeliveries,
        plan.bad_total(),
        count(&env, &s).await?,
        dlq.len(),
        elapsed,
        plan.messages.len() as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_and_between_insert_and_commit_still_exact() -> Result<()> {
    let env = Env::from_env();
    let s = ConsumerSetup::new(&env, "e2e_restart", PARTITIONS)
        .await?
        .with_env("UMKM__BATCH__MAX_ROWS", "250");
    let plan = generate(&Spec {
        payments: 8_000,
        seed: 11,
        ..Spec::default()
    });
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;

    // 1. Dies (abort, like kill -9) right after its 3rd insert, before committing it.
    let crash = s.clone().with_env("UMKM_FAULT", "after-insert@3");
    let mut c = ConsumerProc::start(&env, &crash, "crash")?;
    wait_until(
        Duration::from_secs(60),
        "the consumer to abort after its 3rd insert",
        || {
            let done = c.exited().is_some();
            async move { Ok(done) }
        },
    )
    .await?;
    let after_crash = count(&env, &s).await?;
    ensure!(after_crash > 0, "nothing landed before the abort");
    let got = committed(&env, &s.group, &s.topic, PARTITIONS)?;
    let uncommitted: i64 = ends
        .iter()
        .map(|(p, e)| e - got.get(p).copied().unwrap_or(0).max(0))
        .sum();
    ensure!(uncommitted > 0, "everything was committed before the abort");

    // 2. kill -9 twice more, mid-stream.
    for (i, threshold) in [(1, after_crash + 1_500), (2, after_crash + 4_000)] {
        let mut c = ConsumerProc::start(&env, &s, &format!("run{i}"))?;
        let (env2, s2) = (env.clone(), s.clone());
        wait_until(
            Duration::from_secs(60),
            "progress before kill -9",
            move || {
                let (env, s) = (env2.clone(), s2.clone());
                async move { Ok(count(&env, &s).await? >= threshold) }
            },
        )
        .await?;
        c.kill9();
    }
    let before_last = count(&env, &s).await?;
    ensure!(
        before_last < plan.unique.len() as u64,
        "the stream was already fully consumed before the last restart"
    );

    // 3. A clean run to the end.
    let mut c = ConsumerProc::start(&env, &s, "final")?;
    wait_committed(&env, &s, PARTITIONS, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    assert_exact(&env, &s, &plan).await?;
    let found_in_ch = c.metric("umkm_duplicates_total{stage=\"clickhouse\"").await;
    println!(
        "restart: abort after 3rd insert at {after_crash} rows, 2 x kill -9, {before_last} rows before the last start; final {} rows = unique payments; {found_in_ch} redelivered keys recognised in ClickHouse by the last run",
        count(&env, &s).await?
    );
    ensure!(c.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_pauses_retries_and_stays_exact() -> Result<()> {
    let env = Env::from_env();
    ensure!(
        std::env::var("UMKM_STACK_CLICKHOUSE").as_deref() == Ok("local"),
        "this test stops and starts ClickHouse: run it through scripts/test, which manages a local ClickHouse"
    );
    let stack = umkm_e2e::repo_root().join("scripts/stack");
    let s = ConsumerSetup::new(&env, "e2e_outage", PARTITIONS).await?;
    let plan = generate(&Spec {
        payments: 6_000,
        seed: 23,
        ..Spec::default()
    });
    let half = plan.messages.len() / 2;
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages[..half], &mut ends).await?;
    let mut c = ConsumerProc::start(&env, &s, "c1")?;
    let (env2, s2) = (env.clone(), s.clone());
    wait_until(Duration::from_secs(60), "first rows", move || {
        let (env, s) = (env2.clone(), s2.clone());
        async move { Ok(count(&env, &s).await? > 0) }
    })
    .await?;

    let st = std::process::Command::new(&stack)
        .arg("clickhouse-stop")
        .status()?;
    ensure!(st.success(), "stopping ClickHouse failed");
    let stopped_at = Instant::now();
    let published = publish_tracked(&env, &s.topic, &plan.messages[half..], &mut ends).await;
    let mut saw_not_ready = false;
    while stopped_at.elapsed() < Duration::from_secs(12) {
        if let Ok((code, _)) = c.get("/health/ready").await {
            saw_not_ready |= code == 503;
        }
        ensure!(
            c.exited().is_none(),
            "consumer exited during the outage:\n{}",
            c.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let retries_during = c.metric("umkm_retries_total{").await;
    let paused = c.metric("umkm_partitions_paused").await;
    let st = std::process::Command::new(&stack)
        .arg("clickhouse-start")
        .status()?;
    ensure!(st.success(), "starting ClickHouse failed");
    published?;
    ensure!(
        saw_not_ready,
        "/health/ready never reported not-ready during the outage"
    );
    ensure!(retries_during > 0.0, "no retries counted during the outage");
    ensure!(
        paused == 1.0,
        "partitions were not paused during the outage"
    );

    wait_committed(&env, &s, PARTITIONS, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    assert_exact(&env, &s, &plan).await?;
    // Readiness follows the probes (one a second, each waiting up to its own timeout), which
    // may still hold the outage's answer when the last commit lands: ready within 15 s.
    let ready_by = std::time::Instant::now() + Duration::from_secs(15);
    let (code, body) = loop {
        let (code, body) = c.get("/health/ready").await?;
        if code == 200 || std::time::Instant::now() >= ready_by {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(code == 200, "not ready after recovery: {code} {body}");
    println!(
        "outage: ClickHouse down {:.1?}; {retries_during} retries; {} rows exact",
        Duration::from_secs(12),
        count(&env, &s).await?
    );
    ensure!(c.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_share_partitions_one_stops_mid_stream() -> Result<()> {
    let env = Env::from_env();
    let partitions = 4;
    let s = ConsumerSetup::new(&env, "e2e_group", partitions)
        .await?
        .with_env("UMKM__BATCH__MAX_ROWS", "300");
    let plan = generate(&Spec {
        payments: 8_000,
        seed: 31,
        ..Spec::default()
    });
    // One after the other, each until it holds partitions, before data arrives: two members
    // joining tansu 0.6's group at the same moment sometimes leave one with an empty assignment
    // that never changes (README "Tests", test broker quirks).
    let mut a = ConsumerProc::start(&env, &s, "a")?;
    a.wait_assigned(Duration::from_secs(30)).await?;
    let mut b = ConsumerProc::start(&env, &s, "b")?;
    b.wait_assigned(Duration::from_secs(30)).await?;
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;
    let (env2, s2) = (env.clone(), s.clone());
    wait_until(
        Duration::from_secs(60),
        "progress before stopping b",
        move || {
            let (env, s) = (env2.clone(), s2.clone());
            async move { Ok(count(&env, &s).await? >= 1_000) }
        },
    )
    .await?;
    let code = b.terminate(Duration::from_secs(30))?;
    ensure!(code == 0, "b exited {code}");
    wait_committed(&env, &s, partitions, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(a.log_tail()))?;
    assert_exact(&env, &s, &plan)
        .await
        .map_err(|e| e.context(format!("a:\n{}\nb:\n{}", a.log_tail(), b.log_tail())))?;
    let a_rows = a.metric("umkm_events_total{outcome=\"inserted\"").await;
    let sources = ch(
        &env,
        &format!(
            "SELECT count(DISTINCT source_partition) FROM {}.qris_payments",
            s.database
        ),
    )
    .await?;
    println!(
        "group: a inserted {a_rows} rows after b stopped or alongside it; {} rows from {} partitions",
        count(&env, &s).await?,
        sources.trim()
    );
    ensure!(a.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_writer_schema_with_an_added_optional_field_decodes_and_lands() -> Result<()> {
    let env = Env::from_env();
    let s = ConsumerSetup::new(&env, "e2e_v2", PARTITIONS).await?;
    let plan = generate(&Spec {
        payments: 1_500,
        v2_share: 0.5,
        bad_each: 2,
        seed: 41,
        ..Spec::default()
    });
    ensure!(plan.v2_reports > 0);
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;
    let mut c = ConsumerProc::start(&env, &s, "c1")?;
    wait_committed(&env, &s, PARTITIONS, &ends, Duration::from_secs(60))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    assert_exact(&env, &s, &plan).await?;
    let v2_rows = ch_u64(
        &env,
        &format!(
            "SELECT count() FROM {}.qris_payments WHERE schema_id = 12",
            s.database
        ),
    )
    .await?;
    ensure!(v2_rows > 0, "no row came from a v2 writer");
    println!(
        "schema evolution: {} v2 reports published, {v2_rows} rows landed from v2 writers",
        plan.v2_reports
    );
    ensure!(c.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_registry_over_rest_with_an_outage_and_an_unknown_id() -> Result<()> {
    let env = Env::from_env();
    let schemas: BTreeMap<u32, String> = [
        (1, umkm_traffic::qris::V1.to_string()),
        (
            umkm_traffic::qris::V2_ID,
            umkm_traffic::qris::V2.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let (url, log) = umkm_e2e::serve_registry(schemas, 2).await?;
    let s = ConsumerSetup::new(&env, "e2e_registry", PARTITIONS)
        .await?
        .with_env("UMKM__REGISTRY__URL", &url)
        .with_env("UMKM__REGISTRY__DIR", "");
    let plan = generate(&Spec {
        payments: 1_000,
        v2_share: 0.3,
        bad_each: 3,
        seed: 53,
        ..Spec::default()
    });
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;
    let mut c = ConsumerProc::start(&env, &s, "c1")?;
    wait_committed(&env, &s, PARTITIONS, &ends, Duration::from_secs(90))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    assert_exact(&env, &s, &plan).await?;
    read_dlq_exactly(&env, &s.dlq_topic, plan.bad_total())?;
    let requests = log.lock().map(|l| l.clone()).unwrap_or_default();
    for id in ["/schemas/ids/1", "/schemas/ids/12", "/schemas/ids/999"] {
        ensure!(
            requests.iter().any(|p| p == id),
            "registry never asked for {id}: {requests:?}"
        );
    }
    // Schemas are cached by id: a handful of requests, not one per message.
    ensure!(requests.len() < 20, "{} registry requests", requests.len());
    println!(
        "registry: {} requests ({requests:?}) for {} messages",
        requests.len(),
        plan.messages.len()
    );
    ensure!(c.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}
