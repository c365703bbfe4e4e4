//! The group's lag from the broker and the stall it can reveal (README "Metrics and health"),
//! against the real broker and ClickHouse that `scripts/test` starts.
//!
//! A member that holds the only partition and never commits keeps the group's lag above zero.
//! A qris-consumer that joins the same group holds nothing, yet it reports the lag and, after
//! `progress.stall_after_s`, a stall (`/health/ready` and `/health/progress` 503,
//! `umkm_stalled` 1). When that member leaves, the consumer takes the partition, catches up,
//! and a healthy group with zero lag reports no stall for longer than the threshold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use umkm_e2e::{
    ConsumerProc, ConsumerSetup, Ends, Env, publish_tracked, wait_committed, wait_until,
};
use umkm_traffic::qris::{Spec, generate};

const STALL_AFTER_S: u64 = 3;

/// A group member that takes partitions and never commits. Its client id sorts before the
/// consumer's, so librdkafka's range assignor gives it the topic's only partition.
struct Holder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Holder {
    fn join(env: &Env, group: &str, topic: &str) -> Result<Holder> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &env.brokers)
            .set("group.id", group)
            .set("client.id", "a-holder")
            .set("partition.assignment.strategy", "range")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()?;
        c.subscribe(&[topic])?;
        let stop = Arc::new(AtomicBool::new(false));
        let (s, (tx, rx)) = (stop.clone(), std::sync::mpsc::channel());
        let thread = std::thread::spawn(move || {
            let mut told = false;
            while !s.load(Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(100));
                if !told && c.assignment().map(|a| a.count() > 0).unwrap_or(false) {
                    told = tx.send(()).is_ok();
                }
            }
            c.unsubscribe();
            // Dropping the consumer closes it: it leaves the group.
        });
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow::anyhow!("the holder got no partition within 30 s"))?;
        Ok(Holder {
            stop,
            thread: Some(thread),
        })
    }

    fn leave(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of the `/metrics` sample of `name` whose labels include every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_member_reports_the_groups_lag_and_a_stall_and_a_healthy_group_does_not()
-> Result<()> {
    let env = Env::from_env();
    let s = ConsumerSetup::new(&env, "progress", 1)
        .await?
        .with_env("UMKM__PROGRESS__STALL_AFTER_S", &STALL_AFTER_S.to_string());
    let plan = generate(&Spec {
        payments: 300,
        ..Spec::default()
    });
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;
    let end = ends[&0];

    let holder = Holder::join(&env, &s.group, &s.topic)?;
    let mut c = ConsumerProc::start(&env, &s, "c")?;
    let p0 = [("topic", s.topic.as_str()), ("partition", "0")];
    let lag_of = |m: &str| sample(m, "umkm_group_lag_messages", &p0);

    // 1. Held elsewhere, never committed: the lag is reported, then the stall.
    let c1 = &c;
    wait_until(
        Duration::from_secs(60),
        "the group's lag on the idle member",
        || async move {
            let (_, m) = c1.get("/metrics").await?;
            Ok(lag_of(&m).is_some_and(|v| v > 0.0))
        },
    )
    .await
    .map_err(|e| e.context(c.log_tail()))?;
    let (_, m) = c.get("/metrics").await?;
    let lag = lag_of(&m).unwrap_or_default();
    ensure!(
        lag > 0.0 && lag <= end as f64,
        "lag {lag} with {end} messages published and none committed"
    );
    ensure!(
        sample(&m, "umkm_assigned_partitions", &[]).unwrap_or(-1.0) == 0.0,
        "the consumer holds partitions:\n{}",
        c.log_tail()
    );
    wait_until(
        Duration::from_secs(30),
        "a stall on the idle member",
        || async move { Ok(c1.get("/health/progress").await?.0 == 503) },
    )
    .await
    .map_err(|e| e.context(c.log_tail()))?;
    let (ready, why) = c.get("/health/ready").await?;
    ensure!(ready == 503, "ready answered {ready} during the stall");
    ensure!(why.contains("stalled"), "readiness says {why:?}");
    let (_, why) = c.get("/health/progress").await?;
    ensure!(why.contains("holds no partitions"), "progress says {why:?}");
    let (_, m) = c.get("/metrics").await?;
    ensure!(
        sample(&m, "umkm_stalled", &[]).unwrap_or_default() == 1.0,
        "umkm_stalled is not 1"
    );
    ensure!(
        sample(&m, "umkm_ready", &[]).unwrap_or(1.0) == 0.0,
        "umkm_ready is not 0"
    );
    println!("idle member: lag {lag} of {end}, then {}", why.trim());

    // 2. The holder leaves: the consumer takes the partition, catches up, and stays healthy
    //    with zero lag for longer than the threshold.
    holder.leave();
    wait_committed(&env, &s, 1, &ends, Duration::from_secs(90))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    wait_until(
        Duration::from_secs(30),
        "zero lag and progress",
        || async move {
            let (_, m) = c1.get("/metrics").await?;
            Ok(lag_of(&m) == Some(0.0) && c1.get("/health/progress").await?.0 == 200)
        },
    )
    .await
    .map_err(|e| e.context(c.log_tail()))?;
    tokio::time::sleep(Duration::from_secs(STALL_AFTER_S * 2)).await;
    let (code, why) = c.get("/health/progress").await?;
    ensure!(code == 200, "a caught-up group reports {why:?}");
    let (code, why) = c.get("/health/ready").await?;
    ensure!(code == 200, "ready answered {code}: {why}");
    let (_, m) = c.get("/metrics").await?;
    ensure!(
        sample(&m, "umkm_stalled", &[]) == Some(0.0),
        "umkm_stalled is not 0"
    );
    ensure!(
        sample(&m, "umkm_assigned_partitions", &[]) == Some(1.0),
        "the consumer does not hold the partition"
    );
    ensure!(
        sample(&m, "umkm_group_committed_offset", &p0) == Some(end as f64),
        "committed offset metric is not {end}"
    );
    let code = c.terminate(Duration::from_secs(30))?;
    ensure!(code == 0, "exit code {code}");
    Ok(())
}
