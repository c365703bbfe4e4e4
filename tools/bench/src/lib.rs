//! The parts of `umkm-bench` that need the broker and ClickHouse (docs/benchmarks.md): the
//! pre-published dataset, the broker ceiling, the ClickHouse ceiling, end to end through the
//! real qris-consumer binary, latency at a fixed live rate, and the Python baseline. Measuring
//! code, never a test: the smoke test (`tests/tests/bench.rs`) only checks that every part runs
//! and lands exactly what it should.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use umkm_runtime::config::BatchSettings;

use umkm_e2e::procfs::{cpu_seconds, peak_rss_kib};
use umkm_e2e::{
    ConsumerProc, ConsumerSetup, Ends, Env, QRIS, ch, ch_u64, committed, create_topic, poll_every,
};
use umkm_traffic::banten::{Feed, Spec, Stream};

/// QRIS messages (key, Confluent-framed Avro) from the Banten model, and how many unique
/// payment rows they must land.
pub struct Dataset {
    pub msgs: Vec<(Vec<u8>, Vec<u8>)>,
    pub unique_rows: u64,
}

/// The model's seed for every part of `umkm-bench all` (one dataset for all of them).
pub const SEED: u64 = 5;

/// At least `events` QRIS messages (20,000 merchants, Jan–Mar 2026) from the model with `seed`
/// (another seed gives other payments, though now and then one with the same key). With `duplicates`, the model's issuer double
/// reports and redeliveries are in (15% and 2%); without, every message is one unique payment
/// (for latency, where offset ↔ row is 1:1).
pub fn dataset(events: usize, duplicates: bool, seed: u64) -> Result<Dataset> {
    let mut payments = events * 10 / 8 + 1_000;
    for _ in 0..4 {
        let mut spec = Spec {
            seed,
            merchants: 20_000,
            payments,
            bad_each: 0,
            ..Spec::default()
        };
        if !duplicates {
            spec.double_report = 0.0;
            spec.redeliver = 0.0;
        }
        let mut stream = Stream::new(spec);
        let mut msgs = Vec::with_capacity(events + events / 8);
        while let Some(day) = stream.next_day() {
            msgs.extend(
                day.into_iter()
                    .filter(|m| m.family == Feed::Qris)
                    .map(|m| (m.key, m.payload)),
            );
        }
        if msgs.len() >= events {
            return Ok(Dataset {
                msgs,
                unique_rows: stream.truth.qris_payments,
            });
        }
        payments = payments * 3 / 2;
    }
    bail!("the Banten model gave fewer than {events} QRIS messages")
}

/// Publishes every message (keyed, so partitioned by NMID as publishers must) and returns the
/// partition ends from the delivery reports.
pub async fn publish_all(env: &Env, topic: &str, msgs: &[(Vec<u8>, Vec<u8>)]) -> Result<Ends> {
    let mut ends = Ends::new();
    let msgs = msgs.iter().map(|(k, v)| (Some(k.as_slice()), v.as_slice()));
    umkm_e2e::publish_via(
        &umkm_traffic::kafka::batching_producer(&env.kafka_config(), 20)?,
        topic,
        msgs,
        &mut ends,
    )
    .await?;
    Ok(ends)
}

/// The pre-published topic every part reads.
pub struct Published {
    pub topic: String,
    pub partitions: i32,
    pub ends: Ends,
    pub events: u64,
    pub unique_rows: u64,
    pub publish_secs: f64,
}

pub async fn prepublish(env: &Env, data: &Dataset, partitions: i32) -> Result<Published> {
    let topic = umkm_e2e::unique("bench") + ".payments.qris.v1";
    create_topic(env, &topic, partitions).await?;
    let t = Instant::now();
    let ends = publish_all(env, &topic, &data.msgs).await?;
    let publish_secs = t.elapsed().as_secs_f64();
    let events: i64 = ends.values().sum();
    ensure!(
        events as usize == data.msgs.len(),
        "published {} messages, the partition ends add up to {events}",
        data.msgs.len()
    );
    Ok(Published {
        topic,
        partitions,
        ends,
        events: events as u64,
        unique_rows: data.unique_rows,
        publish_secs,
    })
}

/// The broker ceiling: a bare rdkafka consumer (a fresh group, librdkafka's default prefetch,
/// no commits, no decoding) reads every message. Seconds from its first message to its last,
/// and the stack's CPU over the whole call (group join included).
pub fn broker_ceiling(env: &Env, p: &Published) -> Result<(f64, Option<StackCpu>)> {
    let stack0 = stack_cpu();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", umkm_e2e::unique("bench-broker"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    c.subscribe(&[&p.topic])?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut n, mut bytes, mut first) = (0u64, 0usize, None);
    while n < p.events {
        ensure!(
            Instant::now() < deadline,
            "broker ceiling: {n} of {} messages in 600 s",
            p.events
        );
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                bytes += m.payload_len();
                n += 1;
            }
            Some(Err(e)) => bail!("broker ceiling: {e}"),
            None => {}
        }
    }
    std::hint::black_box(bytes);
    let secs = first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    Ok((secs, stack_cpu().zip(stack0).map(|(b, a)| b.since(a))))
}

/// Fails unless `database.qris_payments` holds exactly `unique` rows (what the model produced).
async fn ensure_landed(env: &Env, database: &str, unique: u64, who: &str) -> Result<()> {
    ensure_grew(env, database, 0, unique, who).await
}

/// Rows in `database.qris_payments`.
pub async fn qris_rows(env: &Env, database: &str) -> Result<u64> {
    ch_u64(
        env,
        &format!("SELECT count() FROM `{database}`.qris_payments"),
    )
    .await
}

/// Checks that `database.qris_payments` holds `unique` rows more than the `before` it held.
async fn ensure_grew(env: &Env, database: &str, before: u64, unique: u64, who: &str) -> Result<()> {
    let rows = qris_rows(env, database).await?;
    ensure!(
        rows == before + unique,
        "{who} landed {} rows, expected {unique} (the model's unique payments not already there)",
        rows as i64 - before as i64
    );
    Ok(())
}

/// CPU seconds used so far by the local stack's tansu and ClickHouse server, from the pid files
/// `scripts/stack` writes (`$UMKM_STACK_DIR`, default `.stack/`); `None` for a stack run
/// elsewhere. The bench uses it to show where a 2-core machine's CPU goes.
pub fn stack_cpu() -> Option<StackCpu> {
    let dir = std::env::var_os("UMKM_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| umkm_e2e::repo_root().join(".stack"));
    let of = |name: &str| -> Option<f64> {
        let pid: u32 = std::fs::read_to_string(dir.join(name).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        cpu_seconds(pid)
    };
    Some(StackCpu {
        tansu: of("tansu")?,
        clickhouse: of("clickhouse")?,
    })
}

/// CPU seconds of the broker and the ClickHouse server (a snapshot, or a difference of two).
#[derive(Debug, Clone, Copy, Default)]
pub struct StackCpu {
    pub tansu: f64,
    pub clickhouse: f64,
}

impl StackCpu {
    /// What was used between `before` and `self`.
    pub fn since(self, before: StackCpu) -> StackCpu {
        StackCpu {
            tansu: self.tansu - before.tansu,
            clickhouse: self.clickhouse - before.clickhouse,
        }
    }
}

/// Waits until ClickHouse runs no merges (at most 2 minutes), so that the background merges
/// one part leaves behind do not slow the next part's timing. Returns the seconds waited.
pub async fn settle(env: &Env) -> Result<f64> {
    let t = Instant::now();
    while ch_u64(env, "SELECT count() FROM system.merges").await? > 0
        && t.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Drops a database a part made once it is no longer needed (its merges would cost the next
/// parts CPU).
pub async fn drop_database(env: &Env, database: &str) -> Result<()> {
    let on_cluster = env
        .cluster
        .as_ref()
        .map(|c| format!(" ON CLUSTER {c}"))
        .unwrap_or_default();
    ch(
        env,
        &format!("DROP DATABASE IF EXISTS `{database}`{on_cluster}"),
    )
    .await
    .map(|_| ())
}

/// One end-to-end run of the real qris-consumer binary.
pub struct E2eRun {
    /// From its partition assignment to every offset committed.
    pub secs: f64,
    /// The consumer's CPU between those two points, per event.
    pub cpu_us_per_event: f64,
    /// The consumer's, the broker's and ClickHouse's CPU seconds in that window (`None` for the
    /// last two when the stack is not the local one).
    pub consumer_cpu: f64,
    pub stack_cpu: Option<StackCpu>,
    pub peak_rss_kib: u64,
    pub database: String,
    /// Batches flushed, and seconds spent flushing (dedup lookup, insert, commit), in the dedup
    /// lookups and inserting.
    pub flushes: f64,
    pub flush_secs: f64,
    pub lookup_secs: f64,
    pub insert_secs: f64,
    /// Rows the table held before the run (0 on a fresh database).
    pub rows_before: u64,
    /// Index granules (marks) ClickHouse selected for SELECTs in the window, server-wide
    /// (`system.events` SelectedMarks): in this window, almost all the dedup lookups'.
    pub marks_read: u64,
}

/// ClickHouse's count of index granules selected for reading since it started.
async fn selected_marks(env: &Env) -> Result<u64> {
    ch_u64(
        env,
        "SELECT sum(value) FROM system.events WHERE event = 'SelectedMarks'",
    )
    .await
}

/// A qris-consumer on `topic` with a fresh group and database, the service's default batch
/// settings (the test helper's small batches overridden) and JSON logs off.
fn consumer_setup(topic: &str, extra: &[(String, String)]) -> Result<ConsumerSetup> {
    let b = BatchSettings::default();
    let mut s = ConsumerSetup::prepare_for(QRIS, "bench")?
        .with_env("UMKM__BATCH__MAX_ROWS", &b.max_rows.to_string())
        .with_env("UMKM__BATCH__MAX_BYTES", &b.max_bytes.to_string())
        .with_env("UMKM__BATCH__MAX_AGE_MS", &b.max_age_ms.to_string())
        .with_env("UMKM__LOG__LEVEL", "info");
    s.topic = topic.to_string();
    for (k, v) in extra {
        s = s.with_env(k, v);
    }
    Ok(s)
}

/// An existing database for an end-to-end run (e.g. `scripts/perf-dataset`'s), and how many of
/// the topic's unique payments it already holds (they are duplicates there).
pub struct Existing<'a> {
    pub database: &'a str,
    pub already_there: u64,
}

/// How many rows of `landed` (a database an end-to-end run of the same topic filled) `database`
/// already holds, by dedup key: another model seed can produce the same payment (same NMID,
/// RRN, amount, date and status), which is a duplicate for the pipeline too.
pub async fn overlap(env: &Env, database: &str, landed: &str) -> Result<u64> {
    ch_u64(
        env,
        &format!(
            "SELECT count() FROM `{database}`.qris_payments WHERE dedup_key IN \
             (SELECT dedup_key FROM `{landed}`.qris_payments)"
        ),
    )
    .await
}

/// Runs qris-consumer over the pre-published topic until every offset is committed, into a
/// fresh database or `into` an existing one; checks that exactly the unique payments landed
/// (less those `into` already holds).
pub async fn e2e(
    env: &Env,
    p: &Published,
    extra: &[(String, String)],
    into: Option<Existing<'_>>,
) -> Result<E2eRun> {
    let mut s = consumer_setup(&p.topic, extra)?;
    let (rows_before, already_there) = match into {
        Some(i) => {
            s.database = i.database.to_string();
            (qris_rows(env, i.database).await?, i.already_there)
        }
        None => (0, 0),
    };
    create_topic(env, &s.dlq_topic, 1).await?;
    let mut proc = ConsumerProc::start(env, &s, "bench")?;
    let pid = proc.child.id();
    let result = async {
        let t0 = assigned_at(&proc, Duration::from_millis(10)).await?;
        let (cpu0, stack0) = (cpu_seconds(pid).unwrap_or(0.0), stack_cpu());
        let marks0 = selected_marks(env).await?;
        let mut peak = 0u64;
        let (env2, s2, ends) = (env.clone(), s.clone(), p.ends.clone());
        let parts = p.partitions;
        let t1 = poll_every(
            Duration::from_secs(900),
            Duration::from_millis(50),
            "every offset committed",
            || {
                peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
                let done = committed(&env2, &s2.group, &s2.topic, parts).map(|got| {
                    ends.iter()
                        .all(|(part, end)| got.get(part).copied() == Some(*end))
                });
                std::future::ready(done)
            },
        )
        .await?;
        let secs = t1.duration_since(t0).as_secs_f64();
        let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
        let marks_read = selected_marks(env).await?.saturating_sub(marks0);
        let stack = stack_cpu().zip(stack0).map(|(b, a)| b.since(a));
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        let expected = p.unique_rows - already_there;
        ensure_grew(env, &s.database, rows_before, expected, "end to end").await?;
        Ok(E2eRun {
            secs,
            cpu_us_per_event: cpu / p.events as f64 * 1e6,
            consumer_cpu: cpu,
            stack_cpu: stack,
            peak_rss_kib: peak,
            database: s.database.clone(),
            flushes: proc.metric("umkm_flush_duration_seconds_count").await,
            flush_secs: proc.metric("umkm_flush_duration_seconds_sum").await,
            lookup_secs: proc.metric("umkm_lookup_duration_seconds_sum").await,
            insert_secs: proc.metric("umkm_insert_duration_seconds_sum").await,
            rows_before,
            marks_read,
        })
    }
    .await;
    let _ = proc.terminate(Duration::from_secs(30));
    result.map_err(|e: anyhow::Error| e.context(proc.log_tail()))
}

/// When `proc` logged its first assignment (checked every `every`); an error if it exited.
async fn assigned_at(proc: &ConsumerProc, every: Duration) -> Result<Instant> {
    let pid = proc.child.id();
    let t = poll_every(
        Duration::from_secs(120),
        every,
        "partitions assigned",
        || std::future::ready(Ok(proc_exited(pid) || proc.assigned())),
    )
    .await?;
    ensure!(!proc_exited(pid), "qris-consumer exited");
    Ok(t)
}

/// Whether the process has exited (a zombie until its parent waits for it).
fn proc_exited(pid: u32) -> bool {
    umkm_e2e::procfs::state(pid).is_none_or(|s| s == 'Z')
}

/// The rows the end-to-end run landed, as RowBinary request bodies that mirror the consumer's
/// batches: body `i` holds the rows of source offsets `[i*step, (i+1)*step)` of every partition,
/// `step` = `batch / partitions`, in offset order (so each body spans the same stretch of the
/// stream, hence the same days and merchants, as a batch of `batch` messages does; that matters
/// for the rollup views' cost). Fetched once, before the ClickHouse ceiling is timed.
pub async fn encoded_batches(
    env: &Env,
    database: &str,
    partitions: i32,
    batch: u64,
) -> Result<Vec<Vec<u8>>> {
    let step = (batch / partitions.max(1) as u64).max(1);
    let max_offset = ch_u64(
        env,
        &format!("SELECT max(source_offset) FROM `{database}`.qris_payments"),
    )
    .await?;
    let k = max_offset / step + 1;
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let mut out = Vec::new();
    for i in 0..k {
        let sql = format!(
            "SELECT * FROM `{database}`.qris_payments WHERE intDiv(source_offset, {step}) = {i} \
             ORDER BY source_offset, source_partition FORMAT RowBinary"
        );
        let r = client
            .post(&env.clickhouse)
            .body(sql)
            .timeout(Duration::from_secs(120))
            .send()
            .await?;
        ensure!(r.status().is_success(), "export: {}", r.text().await?);
        let body = r.bytes().await?.to_vec();
        if !body.is_empty() {
            out.push(body);
        }
    }
    Ok(out)
}

/// The ClickHouse ceiling: one insert stream (as one consumer has) posting the already encoded
/// bodies, as fast as it can. With `views`, into `qris_payments` of a freshly migrated database,
/// so ClickHouse also feeds the materialized views (the rollups) as it does for the consumer;
/// without, into a bare copy of the table (same engine and sorting key, no views). Returns
/// seconds for all of them.
pub async fn clickhouse_ceiling(
    env: &Env,
    database: &str,
    bodies: &[Vec<u8>],
    views: bool,
) -> Result<f64> {
    let fresh = if views {
        Some(migrated(env, "bench-ceiling")?)
    } else {
        None
    };
    let table = match &fresh {
        Some(s) => format!("`{}`.qris_payments", s.database),
        None => {
            let table = format!("`{database}`.{}", umkm_e2e::unique("ceiling"));
            ch(
                env,
                &format!("CREATE TABLE {table} AS `{database}`.qris_payments"),
            )
            .await?;
            table
        }
    };
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let url = format!(
        "{}/?query={}",
        env.clickhouse,
        urlencode(&format!("INSERT INTO {table} FORMAT RowBinary"))
    );
    let t = Instant::now();
    for b in bodies {
        let r = client
            .post(&url)
            .body(b.clone())
            .timeout(Duration::from_secs(120))
            .send()
            .await?;
        ensure!(r.status().is_success(), "insert: {}", r.text().await?);
    }
    let secs = t.elapsed().as_secs_f64();
    let rows = ch_u64(env, &format!("SELECT count() FROM {table}")).await?;
    match &fresh {
        Some(s) => drop_database(env, &s.database).await?,
        None => ch(env, &format!("DROP TABLE {table}")).await.map(|_| ())?,
    }
    ensure!(rows > 0, "the ClickHouse ceiling inserted nothing");
    Ok(secs)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The highest landed source offset per partition of `database.qris_payments`.
async fn landed_offsets(env: &Env, database: &str) -> Result<BTreeMap<i32, i64>> {
    let text = ch(
        env,
        &format!(
            "SELECT source_partition, max(source_offset) FROM `{database}`.qris_payments \
             GROUP BY source_partition FORMAT TabSeparated"
        ),
    )
    .await?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once('\t')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect())
}

/// Publish → row visible latencies at a fixed rate.
pub struct Latency {
    pub rate: f64,
    pub sent: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub poll_ms: u64,
}

/// Starts a qris-consumer on a fresh topic, waits for its assignment, then publishes unique
/// payments at `rate` per second for `secs` seconds. A poller reads the highest landed offset
/// per partition from ClickHouse every `poll_ms`; a message is visible at the first poll that
/// shows its partition at or past its offset (batches land whole and in order, and without
/// duplicates every message is one row). Latency = that poll's time − the send time.
pub async fn latency(
    env: &Env,
    data: &Dataset,
    partitions: i32,
    rate: f64,
    secs: f64,
    extra: &[(String, String)],
) -> Result<Latency> {
    let n = ((rate * secs) as usize).min(data.msgs.len());
    ensure!(n > 0, "latency: nothing to send");
    let topic = umkm_e2e::unique("bench-lat") + ".payments.qris.v1";
    create_topic(env, &topic, partitions).await?;
    let s = consumer_setup(&topic, extra)?;
    create_topic(env, &s.dlq_topic, 1).await?;
    let mut proc = ConsumerProc::start(env, &s, "latency")?;
    let poll_ms = 20u64;
    let result = async {
        assigned_at(&proc, Duration::from_millis(20)).await?;
        // Poller: (time, highest landed offset per partition).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (env2, db, stop2) = (env.clone(), s.database.clone(), stop.clone());
        let poller = tokio::spawn(async move {
            let mut snaps: Vec<(Instant, BTreeMap<i32, i64>)> = Vec::new();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                if let Ok(m) = landed_offsets(&env2, &db).await {
                    snaps.push((t, m));
                }
                tokio::time::sleep_until((t + Duration::from_millis(poll_ms)).into()).await;
            }
            snaps
        });
        let producer = umkm_traffic::kafka::batching_producer(&env.kafka_config(), 5)?;
        let mut publisher =
            umkm_traffic::kafka::Publisher::new(&producer, n).recording_deliveries();
        let start = Instant::now();
        let mut sent_at = Vec::with_capacity(n);
        for (i, (k, v)) in data.msgs[..n].iter().enumerate() {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            sent_at.push(Instant::now());
            publisher.send(&topic, Some(k), v).await?;
        }
        let publish_secs = start.elapsed().as_secs_f64();
        let (ends, deliveries) = publisher.finish().await?;
        let sent: Vec<(Instant, i32, i64)> = sent_at
            .into_iter()
            .zip(deliveries)
            .map(|(t, (part, off))| (t, part, off))
            .collect();
        let last = ends.clone();
        let db = s.database.clone();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let m = landed_offsets(env, &db).await?;
            if last.iter().all(|(p, e)| m.get(p).copied() >= Some(e - 1)) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "latency: not every message landed within 120 s of the last send"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // One more poll after everything is visible.
        tokio::time::sleep(Duration::from_millis(poll_ms * 3)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let snaps = poller.await?;
        let mut lat = Vec::with_capacity(sent.len());
        for (t, part, off) in &sent {
            let seen = snaps
                .iter()
                .find(|(st, m)| st >= t && m.get(part).copied().unwrap_or(-1) >= *off)
                .map(|(st, _)| st.duration_since(*t).as_secs_f64() * 1000.0);
            match seen {
                Some(ms) => lat.push(ms),
                None => bail!("latency: partition {part} offset {off} never seen by the poller"),
            }
        }
        lat.sort_by(f64::total_cmp);
        let q = |x: f64| lat[((lat.len() as f64 * x).ceil() as usize).clamp(1, lat.len()) - 1];
        ensure_landed(env, &db, n as u64, "latency").await?;
        Ok(Latency {
            rate: n as f64 / publish_secs,
            sent: n,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: lat[lat.len() - 1],
            poll_ms,
        })
    }
    .await;
    let _ = proc.terminate(Duration::from_secs(30));
    if result.is_ok() {
        drop_database(env, &s.database).await?;
    }
    result.map_err(|e: anyhow::Error| e.context(proc.log_tail()))
}

/// A fresh consumer setup whose database has the service's schema (tables, materialized views):
/// `qris-consumer migrate`.
fn migrated(env: &Env, topic: &str) -> Result<ConsumerSetup> {
    let s = consumer_setup(topic, &[])?;
    let out = Command::new(umkm_e2e::service_bin("qris-consumer"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("UMKM_CLICKHOUSE_URL", &env.clickhouse)
        .env("UMKM_KAFKA_BROKERS", &env.brokers)
        .env("UMKM_PII_HASH_KEY", umkm_e2e::PII_KEY)
        .env("UMKM__CLICKHOUSE__DATABASE", &s.database)
        .env("UMKM__REGISTRY__DIR", &s.registry_dir)
        .output()?;
    ensure!(
        out.status.success(),
        "qris-consumer migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(s)
}

/// One run of the Python baseline (tools/bench/baseline.py).
pub struct BaselineRun {
    pub secs: f64,
    pub cpu_us_per_event: f64,
    pub peak_rss_kib: u64,
}

/// Runs tools/bench/baseline.py with `python` over the pre-published topic into a fresh database
/// migrated by qris-consumer (the same tables and materialized views), then checks its rows.
pub async fn baseline(
    env: &Env,
    p: &Published,
    python: &PathBuf,
    native: &str,
) -> Result<BaselineRun> {
    let s = migrated(env, &p.topic)?;
    let root = umkm_e2e::repo_root();
    let report = s.work_dir.join("baseline.json");
    let mut child = Command::new(python)
        .arg(root.join("tools/bench/baseline.py"))
        .args(["--brokers", &env.brokers])
        .args(["--topic", &p.topic])
        .args(["--group", &s.group])
        .args(["--clickhouse", native])
        .args(["--database", &s.database])
        .args(["--events", &p.events.to_string()])
        .args([
            "--reference-dir",
            &root.join("schemas/reference").to_string_lossy(),
        ])
        .args([
            "--schema",
            &root
                .join("schemas/avro/qris_payment.avsc")
                .to_string_lossy(),
        ])
        .args(["--report", &report.to_string_lossy()])
        .env("UMKM_PII_HASH_KEY", umkm_e2e::PII_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("spawn {}", python.display()))?;
    let pid = child.id();
    let mut peak = 0u64;
    let mut cpu = 0.0;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        cpu = cpu_seconds(pid).unwrap_or(cpu);
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the baseline did not finish within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(
        status.success(),
        "tools/bench/baseline.py failed ({status})"
    );
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    let secs = r["seconds"].as_f64().context("report: seconds")?;
    let cpu_total = r["cpu_seconds"].as_f64().unwrap_or(cpu);
    ensure_landed(env, &s.database, p.unique_rows, "the baseline").await?;
    drop_database(env, &s.database).await?;
    Ok(BaselineRun {
        secs,
        cpu_us_per_event: cpu_total / p.events as f64 * 1e6,
        peak_rss_kib: peak,
    })
}
