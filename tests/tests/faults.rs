//! Fault injection with librdkafka's mock cluster, in addition to the real-broker tests: the
//! DLQ topic refuses writes for a while. The consumer must neither insert nor commit past a bad
//! record until the DLQ acknowledged it, then land everything exactly once, and a partition
//! paused meanwhile and revoked must be consumed when it comes back.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaApiKey::{self, Produce};
use rdkafka::types::RDKafkaRespErr;
use umkm_e2e::{
    ConsumerProc, ConsumerSetup, Ends, Env, ch_u64, committed, publish_tracked, read_dlq_exactly,
};
use umkm_traffic::qris::{Spec, generate};

#[test]
fn dlq_refusing_writes_blocks_commit_and_insert_until_acknowledged() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The mock cluster is !Send: it stays on this thread; the consumer is a separate process.
    let mock = MockCluster::new(1)?;
    let s = ConsumerSetup::prepare("faults_dlq")?;
    mock.create_topic(&s.topic, 1, 1)?;
    mock.create_topic(&s.dlq_topic, 1, 1)?;
    let env = Env {
        brokers: mock.bootstrap_servers(),
        ..Env::from_env()
    };
    let plan = generate(&Spec {
        payments: 300,
        bad_each: 3,
        seed: 61,
        ..Spec::default()
    });
    let mut ends = Ends::new();
    rt.block_on(publish_tracked(&env, &s.topic, &plan.messages, &mut ends))?;
    let end = ends.get(&0).copied().unwrap_or_default();

    // From now on the first Produce requests (the consumer's DLQ writes) are refused.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 4],
    );
    let mut c = ConsumerProc::start(&env, &s, "c1")?;
    let count = |env: &Env| {
        let sql = format!("SELECT count() FROM {}.qris_payments", s.database);
        let env = env.clone();
        async move { ch_u64(&env, &sql).await.unwrap_or(0) }
    };

    // While the DLQ refuses: retries are counted, nothing is inserted or committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_failing = false;
    while Instant::now() < deadline {
        if rt.block_on(c.metric("umkm_retries_total{class=\"retryable\",what=\"dlq\"")) >= 1.0 {
            let got = committed(&env, &s.group, &s.topic, 1)?;
            let rows = rt.block_on(count(&env));
            let done = rt.block_on(c.metric("umkm_events_total{outcome=\"dlq\""));
            if done == 0.0 {
                ensure!(
                    got.get(&0).copied().unwrap_or(-1) < end,
                    "committed {got:?} before the DLQ acknowledged"
                );
                ensure!(
                    rows == 0,
                    "{rows} rows inserted before the DLQ acknowledged"
                );
                seen_failing = true;
            }
            break;
        }
        ensure!(c.exited().is_none(), "consumer exited:\n{}", c.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        seen_failing,
        "never observed the DLQ failing:\n{}",
        c.log_tail()
    );

    // Then the errors run out: everything lands, exactly.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = committed(&env, &s.group, &s.topic, 1)?;
        if got.get(&0).copied() == Some(end) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not committed to {end}: {got:?}\n{}",
            c.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows = rt.block_on(count(&env));
    ensure!(
        rows == plan.unique.len() as u64,
        "{rows} rows, expected {}",
        plan.unique.len()
    );
    let dlq = read_dlq_exactly(&env, &s.dlq_topic, plan.bad_total())?;
    let retries = rt.block_on(c.metric("umkm_retries_total{class=\"retryable\",what=\"dlq\""));
    println!(
        "faults: DLQ refused writes, {retries} DLQ retries; then {rows} rows and {} DLQ records, committed to {end}",
        dlq.len()
    );
    ensure!(c.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}

/// A partition paused by a failing write and revoked before the write recovered comes back to
/// the same consumer: it must be consumed, not stay paused (librdkafka keeps an application
/// pause through a revocation; docs/reliability.md "Runs", the partition that yielded nothing).
#[test]
fn a_partition_paused_then_revoked_is_consumed_when_it_comes_back() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mock = MockCluster::new(1)?;
    let s = ConsumerSetup::prepare("faults_pause")?;
    mock.create_topic(&s.topic, 4, 1)?;
    mock.create_topic(&s.dlq_topic, 1, 1)?;
    let env = Env {
        brokers: mock.bootstrap_servers(),
        ..Env::from_env()
    };
    let spec = |seed| Spec {
        payments: 400,
        bad_each: 3,
        seed,
        ..Spec::default()
    };
    let (first, second) = (generate(&spec(71)), generate(&spec(72)));
    let mut ends = Ends::new();
    rt.block_on(publish_tracked(&env, &s.topic, &first.messages, &mut ends))?;

    // The DLQ refuses until told otherwise: c1 pauses every partition it holds.
    mock.request_errors(
        Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 10_000],
    );
    let mut c1 = ConsumerProc::start(&env, &s, "c1")?;
    let retried = |c: &ConsumerProc| {
        rt.block_on(c.metric("umkm_retries_total{class=\"retryable\",what=\"dlq\""))
    };
    wait(
        Duration::from_secs(60),
        "c1 failing on the DLQ",
        &c1,
        || retried(&c1) >= 1.0,
    )?;
    // c2 joins: c1's partitions are revoked while its write is failing, two come back to it.
    let mut c2 = ConsumerProc::start(&env, &s, "c2")?;
    let holds = |c: &ConsumerProc| rt.block_on(c.metric("umkm_assigned_partitions"));
    wait(
        Duration::from_secs(60),
        "the partitions shared",
        &c1,
        || holds(&c1) == 2.0 && holds(&c2) == 2.0,
    )?;
    mock.clear_request_errors(Produce);
    wait_committed(&env, &s, &ends, &[&c1, &c2])?;
    // c2 leaves: c1 takes back the partitions it had paused, and new data arrives on them.
    ensure!(
        c2.terminate(Duration::from_secs(30))? == 0,
        "c2 did not stop cleanly"
    );
    wait(Duration::from_secs(60), "c1 holding all four", &c1, || {
        holds(&c1) == 4.0
    })?;
    rt.block_on(publish_tracked(&env, &s.topic, &second.messages, &mut ends))?;
    wait_committed(&env, &s, &ends, &[&c1])?;

    let rows = rt.block_on(ch_u64(
        &env,
        &format!("SELECT count() FROM {}.qris_payments", s.database),
    ))?;
    let unique = first.unique.union(&second.unique).count() as u64;
    ensure!(rows == unique, "{rows} rows, expected {unique}");
    read_dlq_exactly(&env, &s.dlq_topic, first.bad_total() + second.bad_total())?;
    ensure!(c1.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}

/// Polls `done` every 100 ms for up to `timeout`; on timeout fails with `what` and c's log.
fn wait(
    timeout: Duration,
    what: &str,
    c: &ConsumerProc,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        ensure!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n{}",
            c.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Waits up to 60 s until the group's offsets reach `ends` on every partition.
fn wait_committed(env: &Env, s: &ConsumerSetup, ends: &Ends, cs: &[&ConsumerProc]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = committed(env, &s.group, &s.topic, 4)?;
        if ends.iter().all(|(p, e)| got.get(p) == Some(e)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = cs.iter().map(|c| c.log_tail()).collect();
            anyhow::bail!("committed {got:?}, ends {ends:?}\n{}", logs.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
