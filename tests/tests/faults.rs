//! Fault injection with librdkafka's mock cluster, in addition to the real-broker tests: the
//! DLQ topic refuses writes for a while. The consumer must neither insert nor commit past a bad
//! record until the DLQ acknowledged it, then land everything exactly once.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
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
