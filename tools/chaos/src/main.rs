//! `umkm-chaos`: the fault-injecting checker (README "Reliability", docs/reliability.md).
//!
//! It starts its own broker (tansu on SQLite storage, so that it can be restarted), publishes a
//! known QRIS stream (single-record batches) at a steady rate, runs 1-3 `qris-consumer`s in one
//! group, and meanwhile injects a seeded random schedule of faults (`schedule`), one after the
//! other. Then it checks the history: every unique payment exactly once by plain `count()`, no
//! `dedup_key` ever inserted twice (a materialized view counts every inserted row, so a
//! duplicate that a merge collapsed is still seen), every bad record in the DLQ with its source
//! coordinates, the group's offsets at the ends, the rollups equal to the facts, and no stall.
//! It prints the seed and every fault as it runs, so any failure reproduces.

mod schedule;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use umkm_e2e::{ConsumerProc, ConsumerSetup, Ends, Env, ch, ch_u64, committed, procfs};
use umkm_traffic::qris::{Plan, Spec, generate};

use schedule::{Fault, Kind};

const PARTITIONS: i32 = 4;
const USAGE: &str = "umkm-chaos [--seed N] [--minutes M] [--events N] [--consumers 1-3] \
[--faults all|kind,...] [--clickhouse URL] [--clickhouse-pid-file FILE] \
[--clickhouse-start 'shell command'] [--tansu BIN] [--work DIR] [--stall-s S] [--heartbeat-ms MS]";

struct Args {
    seed: u64,
    minutes: f64,
    events: usize,
    consumers: usize,
    kinds: Vec<Kind>,
    clickhouse: String,
    clickhouse_pid_file: Option<PathBuf>,
    clickhouse_start: Option<String>,
    tansu: String,
    work: PathBuf,
    stall: Duration,
    session_timeout_ms: u64,
    /// The consumers' `kafka.heartbeat_interval_ms`; their own default when not given.
    heartbeat_ms: Option<u64>,
    insert_timeout_ms: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        minutes: 2.0,
        events: 20_000,
        consumers: 3,
        kinds: schedule::ALL.to_vec(),
        clickhouse: std::env::var("UMKM_CLICKHOUSE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:18123".into()),
        clickhouse_pid_file: std::env::var("UMKM_STACK_DIR")
            .ok()
            .map(|d| PathBuf::from(d).join("clickhouse/pid")),
        clickhouse_start: None,
        tansu: "tansu".into(),
        work: std::env::temp_dir().join(format!("umkm-chaos-{}", std::process::id())),
        stall: Duration::from_secs(60),
        session_timeout_ms: 6_000,
        heartbeat_ms: None,
        insert_timeout_ms: 5_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--seed" => a.seed = value.parse().context("--seed")?,
            "--minutes" => a.minutes = value.parse().context("--minutes")?,
            "--events" => a.events = value.parse().context("--events")?,
            "--consumers" => a.consumers = value.parse().context("--consumers")?,
            "--faults" => a.kinds = schedule::parse_kinds(&value).map_err(anyhow::Error::msg)?,
            "--clickhouse" => a.clickhouse = value,
            "--clickhouse-pid-file" => a.clickhouse_pid_file = Some(value.into()),
            "--clickhouse-start" => a.clickhouse_start = Some(value),
            "--tansu" => a.tansu = value,
            "--work" => a.work = value.into(),
            "--stall-s" => a.stall = Duration::from_secs(value.parse().context("--stall-s")?),
            "--heartbeat-ms" => a.heartbeat_ms = Some(value.parse().context("--heartbeat-ms")?),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    ensure!(
        (1..=3).contains(&a.consumers),
        "--consumers must be 1, 2 or 3"
    );
    let needs_ch = a
        .kinds
        .iter()
        .any(|k| matches!(k, Kind::ClickHouseKill | Kind::ClickHouseFreeze));
    ensure!(
        !needs_ch || a.clickhouse_pid_file.is_some(),
        "ClickHouse faults need --clickhouse-pid-file (or UMKM_STACK_DIR)"
    );
    ensure!(
        !a.kinds.contains(&Kind::ClickHouseKill) || a.clickhouse_start.is_some(),
        "clickhouse-kill needs --clickhouse-start, the command that starts ClickHouse again"
    );
    Ok(a)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn port_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// The run's own broker, on SQLite storage in its directory so that a restart keeps the data.
struct Broker {
    bin: String,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--storage-engine",
                "sqlite://tansu.db",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !port_answers(self.port) {
            ensure!(
                Instant::now() < deadline,
                "the broker did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the DLQ reader saw: source coordinates → rule.
type Letters = Arc<Mutex<BTreeMap<(i32, i64), String>>>;

/// Reads the DLQ topic from its beginning until `stop` is set.
fn read_dlq(env: &Env, topic: &str, letters: Letters, stop: Arc<AtomicBool>) -> Result<()> {
    let c: BaseConsumer = env
        .kafka_config()
        .set(
            "group.id",
            format!("chaos-dlq-reader-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let h = umkm_e2e::headers_of(&m);
        let coord = (
            h.get("dlq.source.partition").and_then(|p| p.parse().ok()),
            h.get("dlq.source.offset").and_then(|o| o.parse().ok()),
        );
        if let (Some(p), Some(o)) = coord {
            let rule = h.get("dlq.rule").cloned().unwrap_or_default();
            letters.lock().expect("letters").insert((p, o), rule);
        }
    }
    Ok(())
}

struct DlqReader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl DlqReader {
    fn start(env: &Env, topic: &str, letters: &Letters) -> DlqReader {
        let stop = Arc::new(AtomicBool::new(false));
        let (env, topic, letters, s) = (
            env.clone(),
            topic.to_string(),
            letters.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || read_dlq(&env, &topic, letters, s));
        DlqReader {
            stop,
            thread: Some(thread),
        }
    }

    /// Reads until nothing new arrived for 1 s (at most `limit`), then stops.
    fn drain(mut self, letters: &Letters, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut seen = letters.lock().expect("letters").len();
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(100));
            let n = letters.lock().expect("letters").len();
            if n != seen {
                seen = n;
                quiet_since = Instant::now();
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The consumers, by slot.
struct Consumers {
    env: Env,
    setup: ConsumerSetup,
    slots: Vec<Option<ConsumerProc>>,
    started: usize,
}

impl Consumers {
    fn start(&mut self, slot: usize, fault: Option<String>) -> Result<()> {
        self.started += 1;
        let mut s = self.setup.clone();
        if let Some(f) = &fault {
            s = s.with_env("UMKM_FAULT", f);
        }
        let name = format!("c{slot}-{}", self.started);
        self.slots[slot] = Some(ConsumerProc::start(&self.env, &s, &name)?);
        Ok(())
    }

    fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| self.slots[*i].is_some())
            .collect()
    }

    fn pid(&self, slot: usize) -> Option<u32> {
        self.slots[slot].as_ref().map(|c| c.child.id())
    }

    /// Takes out the consumers that exited on their own (a crash point fired).
    fn reap(&mut self) -> Vec<(usize, i32)> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(c) = slot
                && let Some(code) = c.exited()
            {
                out.push((i, code));
                *slot = None;
            }
        }
        out
    }

    /// SIGTERM and the exit code; anything but a clean or unflushed stop is a problem.
    fn stop(&mut self, slot: usize, problems: &Mutex<Vec<String>>) -> Result<()> {
        if let Some(mut c) = self.slots[slot].take() {
            let code = c.terminate(Duration::from_secs(40))?;
            if code != 0 && code != i32::from(umkm_runtime::EXIT_UNFLUSHED) {
                let msg = format!(
                    "consumer slot {slot} exited {code} on SIGTERM ({})",
                    c.log.display()
                );
                println!("{msg}");
                problems.lock().expect("problems").push(msg);
            }
        }
        Ok(())
    }

    fn kill(&mut self, slot: usize) {
        if let Some(mut c) = self.slots[slot].take() {
            c.kill9();
        }
    }
}

/// Shared state of the background tasks.
struct Shared {
    ends: Mutex<Ends>,
    publishing_done: AtomicBool,
    /// Set while a fault is in effect (progress may stop then).
    fault_active: AtomicBool,
    problems: Mutex<Vec<String>>,
}

fn lag(ends: &Ends, got: &Ends) -> i64 {
    ends.iter()
        .map(|(p, e)| (e - got.get(p).copied().unwrap_or(-1).max(0)).max(0))
        .sum()
}

struct Run {
    args: Args,
    env: Env,
    setup: ConsumerSetup,
    plan: Plan,
    broker: Broker,
    consumers: Consumers,
    letters: Letters,
    reader: Option<DlqReader>,
    shared: Arc<Shared>,
    started: Instant,
    session_gap: Duration,
    faults_done: BTreeMap<&'static str, usize>,
}

impl Run {
    fn log(&self, what: &str) {
        println!("[{:>7.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn ch_pid(&self) -> Result<u32> {
        let file = self
            .args
            .clickhouse_pid_file
            .as_ref()
            .context("no --clickhouse-pid-file")?;
        std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?
            .trim()
            .parse()
            .context("ClickHouse pid")
    }

    /// Creates the DLQ topic that was absent since the start (once) and starts reading it.
    async fn end_dlq_refusal(&mut self) -> Result<()> {
        if self.reader.is_some() {
            return Ok(());
        }
        umkm_e2e::create_topic(&self.env, &self.setup.dlq_topic, 1).await?;
        self.reader = Some(DlqReader::start(
            &self.env,
            &self.setup.dlq_topic,
            &self.letters,
        ));
        self.log("dlq-refusal ends: the DLQ topic created");
        *self.faults_done.entry(Kind::DlqRefusal.name()).or_default() += 1;
        Ok(())
    }

    async fn clickhouse_answers(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while ch(&self.env, "SELECT 1").await.is_err() {
            ensure!(
                Instant::now() < deadline,
                "ClickHouse did not answer within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    /// A slot to aim at: `slot` if it runs, else another running one; none when none runs.
    fn aim(&self, slot: usize) -> Option<usize> {
        let running = self.consumers.running();
        running
            .iter()
            .copied()
            .find(|s| *s == slot)
            .or_else(|| running.first().copied())
    }

    /// Restarts every slot that exited on its own, after the session timeout.
    async fn restart_exited(&mut self) -> Result<()> {
        let exited = self.consumers.reap();
        if exited.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(self.session_gap).await;
        for (slot, code) in exited {
            self.log(&format!("slot {slot} had exited ({code}); restarting it"));
            self.consumers.start(slot, None)?;
        }
        Ok(())
    }

    async fn inject(&mut self, f: &Fault) -> Result<()> {
        let s = self.session_gap;
        let slot = self.aim(f.slot);
        match f.kind {
            Kind::Kill | Kind::Freeze | Kind::Churn if slot.is_none() => {
                self.consumers.start(f.slot, None)?;
            }
            Kind::Kill => {
                let slot = slot.expect("aimed");
                self.consumers.kill(slot);
                tokio::time::sleep(s).await;
                self.consumers.start(slot, None)?;
            }
            Kind::Freeze => {
                let pid = self.consumers.pid(slot.expect("aimed")).expect("running");
                signal(pid, "-STOP");
                tokio::time::sleep(s + Duration::from_secs(1)).await;
                signal(pid, "-CONT");
            }
            Kind::CrashAfterInsert
            | Kind::CrashDuringDlqWrite
            | Kind::CrashInRebalance
            | Kind::Zombie => {
                let slot = slot.unwrap_or(f.slot);
                self.consumers.stop(slot, &self.shared.problems)?;
                tokio::time::sleep(s).await;
                let nth = if f.kind == Kind::CrashInRebalance {
                    1
                } else {
                    f.nth
                };
                let point = f.kind.crash_point().expect("a crash kind");
                self.consumers.start(slot, Some(format!("{point}@{nth}")))?;
                let pid = self.consumers.pid(slot).expect("started");
                let deadline = Instant::now() + Duration::from_secs(45);
                let mut fired = false;
                while Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if f.kind == Kind::Zombie {
                        if procfs::state(pid) == Some('T') {
                            fired = true;
                            break;
                        }
                    } else if self.consumers.slots[slot]
                        .as_mut()
                        .and_then(|c| c.exited())
                        .is_some()
                    {
                        fired = true;
                        break;
                    }
                }
                self.log(&format!(
                    "  {point}@{nth} {}",
                    if fired {
                        "reached"
                    } else {
                        "not reached within 45 s"
                    }
                ));
                if f.kind == Kind::Zombie {
                    if fired {
                        tokio::time::sleep(s + Duration::from_secs(1)).await;
                        signal(pid, "-CONT");
                    }
                } else {
                    if !fired {
                        self.consumers.stop(slot, &self.shared.problems)?;
                    } else {
                        self.consumers.slots[slot] = None;
                    }
                    tokio::time::sleep(s).await;
                    self.consumers.start(slot, None)?;
                }
            }
            Kind::Churn => {
                let running = self.consumers.running();
                if running.len() < self.consumers.slots.len() {
                    let free = (0..self.consumers.slots.len())
                        .find(|i| !running.contains(i))
                        .expect("a free slot");
                    self.log(&format!("  slot {free} joins"));
                    self.consumers.start(free, None)?;
                } else {
                    let slot = slot.expect("aimed");
                    self.log(&format!("  slot {slot} leaves"));
                    self.consumers.stop(slot, &self.shared.problems)?;
                }
                tokio::time::sleep(s).await;
            }
            Kind::ClickHouseKill => {
                let pid = self.ch_pid()?;
                signal(pid, "-KILL");
                tokio::time::sleep(Duration::from_millis(1000 + 1500 * u64::from(f.nth))).await;
                let cmd = self.args.clickhouse_start.clone().expect("checked");
                let ok = Command::new("sh")
                    .args(["-c", &cmd])
                    .stdout(Stdio::null())
                    .status()?;
                ensure!(ok.success(), "{cmd} failed");
                // 18.16 loads every part before it answers: minutes for a million rows in many parts.
                self.clickhouse_answers(Duration::from_secs(300)).await?;
            }
            Kind::ClickHouseFreeze => {
                let pid = self.ch_pid()?;
                signal(pid, "-STOP");
                tokio::time::sleep(Duration::from_millis(self.args.insert_timeout_ms + 2000)).await;
                signal(pid, "-CONT");
            }
            // Not drawn (`schedule::plan` leaves it to the start of the run).
            Kind::DlqRefusal => {}
            Kind::BrokerRestart => {
                self.broker.stop();
                tokio::time::sleep(Duration::from_millis(1000 * u64::from(f.nth))).await;
                self.broker.start()?;
                tokio::time::sleep(s).await;
            }
        }
        Ok(())
    }
}

/// A message as the publish loop takes it (a function, not a closure: the spawned future must
/// be `Send` for every lifetime, which a closure's inferred signature is not).
fn as_refs(m: &(Option<Vec<u8>>, Vec<u8>)) -> (Option<&[u8]>, &[u8]) {
    (m.0.as_deref(), m.1.as_slice())
}

/// Publishes the plan's messages at an even rate over `over`, recording the partition ends.
async fn publish(
    env: Env,
    topic: String,
    plan_messages: Vec<(Option<Vec<u8>>, Vec<u8>)>,
    over: Duration,
    shared: Arc<Shared>,
) -> Result<()> {
    let producer = umkm_e2e::producer(&env)?;
    let chunk = 200usize;
    let chunks = plan_messages.len().div_ceil(chunk).max(1);
    let pause = over / chunks as u32;
    let t0 = Instant::now();
    for (i, part) in plan_messages.chunks(chunk).enumerate() {
        let mut ends = Ends::new();
        // A chunk refused (the broker restarting) is sent again, as a publisher would: copies
        // of it in the topic are redeliveries for the consumers.
        let mut attempt = 0;
        while let Err(e) =
            umkm_e2e::publish_via(&producer, &topic, part.iter().map(as_refs), &mut ends).await
        {
            attempt += 1;
            ensure!(attempt < 60, "publishing failed 60 times in a row: {e}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        {
            let mut all = shared.ends.lock().expect("ends");
            for (p, e) in ends {
                let x = all.entry(p).or_insert(0);
                *x = (*x).max(e);
            }
        }
        let due = t0 + pause * (i as u32 + 1);
        tokio::time::sleep_until(due.into()).await;
    }
    shared.publishing_done.store(true, Ordering::Relaxed);
    Ok(())
}

/// Watches the group's committed offsets: lag with no progress for `stall` while no fault is in
/// effect is a stall.
async fn watch_progress(
    env: Env,
    setup: ConsumerSetup,
    stall: Duration,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let mut last: Option<Ends> = None;
    let mut since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (e, s) = (env.clone(), setup.clone());
        let got =
            tokio::task::spawn_blocking(move || committed(&e, &s.group, &s.topic, PARTITIONS))
                .await;
        let Ok(Ok(got)) = got else { continue };
        let ends = shared.ends.lock().expect("ends").clone();
        if shared.fault_active.load(Ordering::Relaxed)
            || lag(&ends, &got) == 0
            || last.as_ref() != Some(&got)
        {
            since = Instant::now();
            last = Some(got);
            continue;
        }
        if since.elapsed() >= stall {
            let msg = format!(
                "stall: lag {} with no commit for {:?} and no fault in effect (committed {got:?}, ends {ends:?})",
                lag(&ends, &got),
                since.elapsed()
            );
            println!("{msg}");
            shared.problems.lock().expect("problems").push(msg);
            since = Instant::now();
        }
    }
}

/// The history checks; each failure is one line.
async fn check(run: &Run, ends: &Ends) -> Result<Vec<String>> {
    let (env, db) = (&run.env, &run.setup.database);
    let mut failures = Vec::new();
    let unique = run.plan.unique.len() as u64;
    let n = ch_u64(env, &format!("SELECT count() FROM {db}.qris_payments")).await?;
    if n != unique {
        failures.push(format!(
            "plain count() is {n}, expected {unique} unique payments"
        ));
    }
    let inserted = ch_u64(env, &format!("SELECT sum(n) FROM {db}.chaos_inserted")).await?;
    let twice = ch_u64(
        env,
        &format!("SELECT count() FROM (SELECT dedup_key, sum(n) AS c FROM {db}.chaos_inserted GROUP BY dedup_key HAVING c > 1)"),
    )
    .await?;
    if twice > 0 || inserted != unique {
        failures.push(format!("{inserted} rows ever inserted for {unique} unique payments; {twice} dedup_keys inserted more than once"));
    }
    let landed = umkm_e2e::landed_payments(env, db).await?;
    if landed != run.plan.unique {
        let missing = run.plan.unique.difference(&landed).count();
        let extra = landed.difference(&run.plan.unique).count();
        failures.push(format!(
            "landed payments differ: {missing} missing, {extra} not published"
        ));
    }
    let letters = run.letters.lock().expect("letters").clone();
    let bad = run.plan.bad_total();
    let copies: i64 = ends.values().sum::<i64>() - run.plan.messages.len() as i64;
    if letters.len() < bad || letters.len() as i64 > bad as i64 + copies.max(0) {
        failures.push(format!(
            "DLQ holds {} distinct source records, expected {bad} (plus at most {copies} producer retries' copies)",
            letters.len()
        ));
    }
    let got = committed(env, &run.setup.group, &run.setup.topic, PARTITIONS)?;
    for (p, e) in ends {
        if got.get(p) != Some(e) {
            failures.push(format!(
                "partition {p}: committed {:?}, end {e}",
                got.get(p)
            ));
        }
    }
    for (rollup, groups) in umkm_e2e::rollup_mismatches(env, db).await? {
        if !groups.is_empty() {
            failures.push(format!(
                "{rollup}: {} groups differ from the facts after refresh-metrics, e.g. {:?} \
                 (keys, the facts' sums, the rollup's)",
                groups.len(),
                &groups[..groups.len().min(3)]
            ));
        }
    }
    failures.extend(
        run.shared
            .problems
            .lock()
            .expect("problems")
            .iter()
            .cloned(),
    );
    Ok(failures)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.work)?;
    println!(
        "umkm-chaos seed={} minutes={} events={} consumers={} faults={} (reproduce with the same flags and --seed {})",
        args.seed,
        args.minutes,
        args.events,
        args.consumers,
        args.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(","),
        args.seed
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut broker = Broker {
        bin: args.tansu.clone(),
        dir: args.work.join("tansu"),
        port,
        child: None,
    };
    broker.start()?;
    let env = Env {
        brokers: format!("127.0.0.1:{port}"),
        clickhouse: args.clickhouse.clone(),
        cluster: None,
        kafka_props: Vec::new(),
        service_env: Vec::new(),
    };
    let mut setup = ConsumerSetup::prepare("chaos")?;
    umkm_e2e::create_topic(&env, &setup.topic, PARTITIONS).await?;
    // The DLQ refusal: the topic does not exist (the broker refuses every write to it) until a
    // seeded moment 10-40 s into the run. tansu 0.6 cannot delete a topic alone (its
    // DeleteTopics removed the source topic too), so this is the one refusal of a run.
    let refuse_dlq_for = args
        .kinds
        .contains(&Kind::DlqRefusal)
        .then(|| Duration::from_secs(10 + args.seed % 31));
    if refuse_dlq_for.is_none() {
        umkm_e2e::create_topic(&env, &setup.dlq_topic, 1).await?;
    }
    for (k, v) in [
        (
            "UMKM__KAFKA__SESSION_TIMEOUT_MS",
            args.session_timeout_ms.to_string(),
        ),
        (
            "UMKM__CLICKHOUSE__INSERT_TIMEOUT_MS",
            args.insert_timeout_ms.to_string(),
        ),
        ("UMKM__BATCH__MAX_ROWS", "1000".to_string()),
    ] {
        setup = setup.with_env(k, &v);
    }
    if let Some(ms) = args.heartbeat_ms {
        setup = setup.with_env("UMKM__KAFKA__HEARTBEAT_INTERVAL_MS", &ms.to_string());
    }
    // Spec::default() reports ~1.25 messages per payment.
    // Bad records of each kind: 15, or one per 2,000 messages in longer runs (one bad record
    // in ~500 messages), so that a crash during a DLQ write meets its dead letter within
    // seconds, not most of its 45 s.
    let plan = generate(&Spec {
        payments: (args.events * 4 / 5).max(100),
        bad_each: (args.events / 2_000).max(15),
        seed: args.seed,
        ..Spec::default()
    });
    println!(
        "stream: {} messages, {} unique payments, {} bad records; topic {} ({PARTITIONS} partitions), database {}",
        plan.messages.len(),
        plan.unique.len(),
        plan.bad_total(),
        setup.topic,
        setup.database
    );
    let mut consumers = Consumers {
        env: env.clone(),
        setup: setup.clone(),
        slots: (0..args.consumers).map(|_| None).collect(),
        started: 0,
    };
    // One at a time, each until it holds partitions (README "Tests", test broker quirks).
    consumers.start(0, None)?;
    consumers.slots[0]
        .as_ref()
        .expect("started")
        .wait_assigned(Duration::from_secs(60))
        .await?;
    ch(
        &env,
        &format!(
            "CREATE MATERIALIZED VIEW {db}.chaos_inserted ENGINE = SummingMergeTree() ORDER BY dedup_key \
             AS SELECT dedup_key, toUInt64(1) AS n FROM {db}.qris_payments",
            db = setup.database
        ),
    )
    .await?;
    for slot in 1..args.consumers {
        consumers.start(slot, None)?;
        consumers.slots[slot]
            .as_ref()
            .expect("started")
            .wait_assigned(Duration::from_secs(60))
            .await?;
    }
    let shared = Arc::new(Shared {
        ends: Mutex::new(Ends::new()),
        publishing_done: AtomicBool::new(false),
        fault_active: AtomicBool::new(false),
        problems: Mutex::new(Vec::new()),
    });
    let letters: Letters = Arc::default();
    let reader = None;
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let publisher = tokio::spawn(publish(
        env.clone(),
        setup.topic.clone(),
        plan.messages.clone(),
        run_for.mul_f64(0.9),
        shared.clone(),
    ));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_progress(
        env.clone(),
        setup.clone(),
        args.stall,
        shared.clone(),
        stop_watch.clone(),
    ));
    let session_gap = Duration::from_millis(args.session_timeout_ms + 2_000);
    let faults = schedule::plan(
        args.seed,
        100_000,
        &args.kinds,
        args.consumers,
        (500, 3_000),
    );
    let mut run = Run {
        args,
        env,
        setup,
        plan,
        broker,
        consumers,
        letters,
        reader,
        shared: shared.clone(),
        started: Instant::now(),
        session_gap,
        faults_done: BTreeMap::new(),
    };
    match refuse_dlq_for {
        None => {
            run.reader = Some(DlqReader::start(
                &run.env,
                &run.setup.dlq_topic,
                &run.letters,
            ))
        }
        Some(d) => run.log(&format!(
            "dlq-refusal: the DLQ topic is absent for the first {d:?}"
        )),
    }
    for f in &faults {
        if run.started.elapsed() >= run_for {
            break;
        }
        if refuse_dlq_for.is_some_and(|d| run.started.elapsed() >= d) {
            run.end_dlq_refusal().await?;
        }
        tokio::time::sleep(Duration::from_millis(f.gap_ms)).await;
        run.restart_exited().await?;
        run.log(&format!("{f}"));
        shared.fault_active.store(true, Ordering::Relaxed);
        run.inject(f)
            .await
            .with_context(|| format!("injecting {f}"))?;
        shared.fault_active.store(false, Ordering::Relaxed);
        *run.faults_done.entry(f.kind.name()).or_default() += 1;
    }
    run.end_dlq_refusal().await?;
    run.restart_exited().await?;
    if run.consumers.running().is_empty() {
        run.consumers.start(0, None)?;
    }
    publisher.await??;
    let ends = shared.ends.lock().expect("ends").clone();
    run.log(&format!(
        "faults done: {:?}; published {} messages; waiting for the group to commit the ends",
        run.faults_done,
        run.plan.messages.len()
    ));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (e, s) = (run.env.clone(), run.setup.clone());
        let got =
            tokio::task::spawn_blocking(move || committed(&e, &s.group, &s.topic, PARTITIONS))
                .await?;
        if let Ok(got) = got
            && lag(&ends, &got) == 0
        {
            break;
        }
        if Instant::now() > deadline {
            shared
                .problems
                .lock()
                .expect("problems")
                .push("stall: the ends were not committed within 180 s of the last fault".into());
            break;
        }
        run.restart_exited().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop_watch.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    if let Some(r) = run.reader.take() {
        let letters = run.letters.clone();
        tokio::task::spawn_blocking(move || r.drain(&letters, Duration::from_secs(10))).await?;
    }
    // The deployment's refresher (every 5 minutes) repairs the rollups from the keys the
    // consumers noted; it checks what was noted at least its settling time (5 s) ago.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (e, db) = (run.env.clone(), run.setup.database.clone());
    let refreshed = tokio::task::spawn_blocking(move || {
        umkm_e2e::run_subcommand(&e, "qris-consumer", "refresh-metrics", &db)
    })
    .await??;
    for line in refreshed.lines().filter(|l| l.starts_with("checked")) {
        run.log(line);
    }
    let failures = check(&run, &ends).await?;
    let total: usize = run.faults_done.values().sum();
    for slot in run.consumers.running() {
        run.consumers.stop(slot, &run.shared.problems)?;
    }
    println!(
        "history: {} messages, {} unique payments, {} dead letters read, {total} faults {:?}",
        run.plan.messages.len(),
        run.plan.unique.len(),
        run.letters.lock().expect("letters").len(),
        run.faults_done
    );
    if failures.is_empty() {
        println!(
            "PASS seed={}: exactly once, DLQ complete, offsets at the ends, rollups equal to the facts, no stall",
            run.args.seed
        );
        Ok(())
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        bail!("seed {}: {} check(s) failed", run.args.seed, failures.len())
    }
}
