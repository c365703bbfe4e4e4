//! The test harness (and the benchmark's): the stack's endpoints, a handle on a consumer
//! process, publishing through the traffic tool's one publish loop (`umkm_traffic::kafka`),
//! readers for ClickHouse, the DLQ and committed offsets, one polling helper, the `/proc`
//! reader, a stand-in schema registry and the chDB runner. The traffic itself (the Banten model
//! and the per-family generators) is `umkm_traffic`.

pub mod grafana;
pub mod procfs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
pub use umkm_traffic::kafka::Ends;
use umkm_traffic::kafka::{Publisher, single_record_producer};

pub const PII_KEY: &str = "e2e-test-pii-key-0123456789";

/// Endpoints: the stack's defaults, or `UMKM_KAFKA_BROKERS` / `UMKM_CLICKHOUSE_URL`.
#[derive(Debug, Clone)]
pub struct Env {
    pub brokers: String,
    pub clickhouse: String,
    /// `clickhouse.cluster` for the services: `clickhouse` is then a node of that cluster.
    pub cluster: Option<String>,
    /// librdkafka properties of the tests' own clients (a secured broker: `security::Secured`).
    pub kafka_props: Vec<(String, String)>,
    /// Settings every service started against this Env gets (e.g. `UMKM__KAFKA__SECURITY__*`).
    pub service_env: Vec<(String, String)>,
}

impl Env {
    pub fn from_env() -> Env {
        Env {
            brokers: std::env::var("UMKM_KAFKA_BROKERS")
                .unwrap_or_else(|_| "127.0.0.1:19092".into()),
            clickhouse: std::env::var("UMKM_CLICKHOUSE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:18123".into()),
            cluster: None,
            kafka_props: Vec::new(),
            service_env: Vec::new(),
        }
    }

    /// The base of every Kafka client the tests make: the brokers and `kafka_props`.
    pub fn kafka_config(&self) -> ClientConfig {
        umkm_traffic::kafka::client_config(&self.brokers, &self.kafka_props)
    }
}

/// The ClickHouse cluster `scripts/stack up --cluster` starts (`scripts/cluster`: 2 shards x 2
/// replicas, nodes 1-2 shard 1, nodes 3-4 shard 2), or the one `UMKM_CLUSTER_URLS` and
/// `UMKM_CLUSTER_NAME` name.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    /// Every node's HTTP URL; the services write through the first.
    pub urls: Vec<String>,
    /// Whether `scripts/cluster` runs it here (so a test may kill and restart its parts).
    pub local: bool,
}

impl Cluster {
    /// The cluster from the environment `scripts/stack env` prints; an error (never a skip)
    /// without one.
    pub fn from_env() -> Result<Cluster> {
        let urls: Vec<String> = std::env::var("UMKM_CLUSTER_URLS")
            .context(
                "UMKM_CLUSTER_URLS is not set: start the cluster with scripts/stack up --cluster",
            )?
            .split(',')
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect();
        ensure!(!urls.is_empty(), "UMKM_CLUSTER_URLS lists no node");
        Ok(Cluster {
            name: std::env::var("UMKM_CLUSTER_NAME").unwrap_or_else(|_| "umkm".into()),
            urls,
            local: std::env::var("UMKM_CLUSTER_LOCAL").is_ok_and(|v| v == "1"),
        })
    }

    /// The services' and tests' endpoints with ClickHouse on this cluster's first node.
    pub fn env(&self, base: &Env) -> Env {
        Env {
            clickhouse: self.urls[0].clone(),
            cluster: Some(self.name.clone()),
            ..base.clone()
        }
    }

    /// `sql` on node `i` (0-based) alone.
    pub async fn on_node(&self, i: usize, sql: &str) -> Result<String> {
        let node = Env {
            brokers: String::new(),
            clickhouse: self.urls[i].clone(),
            cluster: None,
            kafka_props: Vec::new(),
            service_env: Vec::new(),
        };
        ch(&node, sql)
            .await
            .with_context(|| format!("node {}", i + 1))
    }

    /// What `scripts/cluster diagnose` prints about the local cluster (nothing for an
    /// external one): for the error of a failed test.
    pub fn diagnosis(&self) -> String {
        if !self.local {
            return String::new();
        }
        match Command::new(repo_root().join("scripts/cluster"))
            .arg("diagnose")
            .output()
        {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("scripts/cluster diagnose: {e}"),
        }
    }

    /// Restarts every local node whose DDL worker stopped (`scripts/cluster heal`, a
    /// ClickHouse 18.16 bug: docs/operations.md "On a ClickHouse cluster"); returns what it
    /// restarted, nothing for an external cluster.
    pub fn heal(&self) -> Result<Vec<String>> {
        if !self.local {
            return Ok(Vec::new());
        }
        let out = Command::new(repo_root().join("scripts/cluster"))
            .arg("heal")
            .output()?;
        ensure!(
            out.status.success(),
            "scripts/cluster heal: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect())
    }

    /// `scripts/cluster <args>` (kill N, start N, zk-stop, zk-start): only on the local cluster.
    pub fn script(&self, args: &[&str]) -> Result<()> {
        ensure!(
            self.local,
            "the cluster is external: a fault test needs the local one"
        );
        let out = Command::new(repo_root().join("scripts/cluster"))
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "scripts/cluster {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// The consumers' `kafka.session_timeout_ms` in the tests.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// Waits until a member that died now is out of its group: on tansu 0.6 a member that joins
/// before a dead one's session expired can get an empty assignment and never another (README
/// "Tests", test broker quirks).
pub async fn outlast_session() {
    tokio::time::sleep(SESSION_TIMEOUT + Duration::from_secs(2)).await;
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Unique suffix for topics, groups and databases of one test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Creates `name` with `partitions` (through `umkm_traffic::kafka::create_topics`, the one
/// way topics are created).
pub async fn create_topic(env: &Env, name: &str, partitions: i32) -> Result<()> {
    umkm_traffic::kafka::create_topics(&env.kafka_config(), &[(name, partitions)]).await
}

/// The tests' producer: one record per batch (`single_record_producer` says why).
pub fn producer(env: &Env) -> Result<FutureProducer> {
    single_record_producer(&env.kafka_config())
}

/// Publishes every message, waits for all acknowledgements and records partition ends in `ends`.
pub async fn publish_tracked(
    env: &Env,
    topic: &str,
    msgs: &[(Option<Vec<u8>>, Vec<u8>)],
    ends: &mut Ends,
) -> Result<()> {
    let msgs = msgs.iter().map(|(k, v)| (k.as_deref(), v.as_slice()));
    publish_via(&producer(env)?, topic, msgs, ends).await
}

/// Publishes every message through `p` with the one publish loop, waits for all
/// acknowledgements and records partition ends in `ends`.
pub async fn publish_via<'a>(
    p: &FutureProducer,
    topic: &str,
    msgs: impl IntoIterator<Item = (Option<&'a [u8]>, &'a [u8])>,
    ends: &mut Ends,
) -> Result<()> {
    let mut publisher = Publisher::new(p, 100_000);
    for (k, v) in msgs {
        publisher.send(topic, k, v).await?;
    }
    for (partition, end) in publisher.finish().await?.0 {
        let e = ends.entry(partition).or_insert(0);
        *e = (*e).max(end);
    }
    Ok(())
}

/// Publishes every message and waits for all acknowledgements.
pub async fn publish(env: &Env, topic: &str, msgs: &[(Option<Vec<u8>>, Vec<u8>)]) -> Result<()> {
    publish_tracked(env, topic, msgs, &mut Ends::new()).await
}

/// The `(nmid, rrn, status)` of every QRIS row in `database` (a repeat collapses: compare the
/// count too).
pub async fn landed_payments(
    env: &Env,
    database: &str,
) -> Result<std::collections::BTreeSet<(String, String, String)>> {
    let rows = ch(
        env,
        &format!("SELECT nmid, rrn, status FROM {database}.qris_payments FORMAT TabSeparated"),
    )
    .await?;
    Ok(rows
        .lines()
        .map(|l| {
            let mut it = l.split('\t').map(str::to_string);
            (
                it.next().unwrap_or_default(),
                it.next().unwrap_or_default(),
                it.next().unwrap_or_default(),
            )
        })
        .collect())
}

/// Every rollup group of `database` whose rows differ from what the facts give
/// (`umkm_core::rollups::diff_sql`): (rollup, the differing groups, facts' sums then rollup's).
pub async fn rollup_mismatches(
    env: &Env,
    database: &str,
) -> Result<Vec<(&'static str, Vec<String>)>> {
    let mut out = Vec::new();
    for r in umkm_core::rollups::ALL {
        let sql = format!(
            "{} FORMAT TabSeparated",
            umkm_core::rollups::diff_sql(database, r, None)
        );
        let text = ch(env, &sql).await?;
        out.push((r.table, text.lines().map(str::to_string).collect()));
    }
    Ok(out)
}

/// Runs a query over ClickHouse's HTTP interface and returns the TSV text.
pub async fn ch(env: &Env, sql: &str) -> Result<String> {
    let resp = reqwest::Client::new()
        .post(&env.clickhouse)
        .body(sql.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("ClickHouse at {}", env.clickhouse))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("ClickHouse: {sql}: {text}");
    }
    Ok(text)
}

pub async fn ch_u64(env: &Env, sql: &str) -> Result<u64> {
    let t = ch(env, sql).await?;
    t.trim()
        .parse()
        .with_context(|| format!("{sql} returned {t:?}"))
}

/// A message's headers as text (`dlq.*` values are UTF-8; anything else is shown lossily).
pub fn headers_of(m: &impl rdkafka::message::Message) -> BTreeMap<String, String> {
    use rdkafka::message::Headers;
    let mut headers = BTreeMap::new();
    if let Some(h) = m.headers() {
        for hd in h.iter() {
            headers.insert(
                hd.key.to_string(),
                String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
            );
        }
    }
    headers
}

/// One message read back from the DLQ.
#[derive(Debug, Clone)]
pub struct DlqRecord {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads `topic` from the beginning until at least `expected` messages arrived and then nothing
/// more for `quiet` (so extra records are seen too), or until `timeout`.
pub fn read_all(
    env: &Env,
    topic: &str,
    partitions: i32,
    expected: usize,
    quiet: Duration,
    timeout: Duration,
) -> Result<Vec<DlqRecord>> {
    let c: BaseConsumer = env
        .kafka_config()
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut last = Instant::now();
    let mut out = Vec::new();
    loop {
        if out.len() >= expected && last.elapsed() >= quiet {
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!(
                "reading {topic}: {} of {expected} messages after {timeout:?}",
                out.len()
            );
        }
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m?;
            last = Instant::now();
            out.push(DlqRecord {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers: headers_of(&m),
            });
        }
    }
}

/// Reads the DLQ (one partition) and checks it holds exactly `expected` records.
pub fn read_dlq_exactly(env: &Env, topic: &str, expected: usize) -> Result<Vec<DlqRecord>> {
    let dlq = read_all(
        env,
        topic,
        1,
        expected,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )?;
    if dlq.len() != expected {
        bail!("DLQ holds {} records, expected {expected}", dlq.len());
    }
    Ok(dlq)
}

/// Committed offset of `group` per partition of `topic` (-1 when none).
pub fn committed(env: &Env, group: &str, topic: &str, partitions: i32) -> Result<Ends> {
    let c: BaseConsumer = env
        .kafka_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let off = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (e.partition(), off)
        })
        .collect())
}

/// The consumer services: binary name and default topic suffix.
pub const QRIS: (&str, &str) = ("qris-consumer", "payments.qris.v1");
pub const NONCASH: (&str, &str) = ("noncash-consumer", "payments.noncash.v1");
pub const MERCHANTS: (&str, &str) = ("merchant-consumer", "merchants.registry.v1");

/// Everything one consumer process needs to know.
#[derive(Debug, Clone)]
pub struct ConsumerSetup {
    /// Binary name: qris-consumer, noncash-consumer or merchant-consumer.
    pub service: &'static str,
    pub topic: String,
    pub dlq_topic: String,
    pub group: String,
    pub database: String,
    pub registry_dir: PathBuf,
    pub work_dir: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

impl ConsumerSetup {
    /// A qris-consumer with fresh topics (created), group, database and a file registry.
    pub async fn new(env: &Env, name: &str, partitions: i32) -> Result<ConsumerSetup> {
        Self::new_for(env, QRIS, name, partitions).await
    }

    /// Like `new`, for any service (`QRIS`, `NONCASH`, `MERCHANTS`).
    pub async fn new_for(
        env: &Env,
        service: (&'static str, &str),
        name: &str,
        partitions: i32,
    ) -> Result<ConsumerSetup> {
        let s = Self::prepare_for(service, name)?;
        create_topic(env, &s.topic, partitions).await?;
        create_topic(env, &s.dlq_topic, 1).await?;
        Ok(s)
    }

    /// Like `new`, but leaves topic creation to the caller (e.g. a mock cluster).
    pub fn prepare(name: &str) -> Result<ConsumerSetup> {
        Self::prepare_for(QRIS, name)
    }

    /// Fresh names for `service`, and a file registry holding every contract as in
    /// `schemas/avro/registry.json` (1, 2: QRIS and non-cash revision 1; 3: merchants; 4, 5: QRIS
    /// and non-cash revision 2), and 12 (the QRIS v2 test fixture).
    pub fn prepare_for(service: (&'static str, &str), name: &str) -> Result<ConsumerSetup> {
        let id = unique(name);
        let work_dir = std::env::temp_dir().join(&id);
        let registry_dir = work_dir.join("registry");
        std::fs::create_dir_all(&registry_dir)?;
        let root = repo_root();
        for f in [
            "qris_payment.rev1.avsc",
            "noncash_payment.rev1.avsc",
            "qris_payment.avsc",
            "noncash_payment.avsc",
            "merchant_event.avsc",
        ] {
            std::fs::copy(root.join("schemas/avro").join(f), registry_dir.join(f))?;
        }
        std::fs::copy(
            root.join("tests/fixtures/qris_payment_v2.avsc"),
            registry_dir.join("qris_payment_v2.avsc"),
        )?;
        std::fs::write(
            registry_dir.join("registry.json"),
            r#"{"1": "qris_payment.rev1.avsc", "2": "noncash_payment.rev1.avsc", "3": "merchant_event.avsc", "4": "qris_payment.avsc", "5": "noncash_payment.avsc", "12": "qris_payment_v2.avsc"}"#,
        )?;
        let s = ConsumerSetup {
            service: service.0,
            topic: format!("{id}.{}", service.1),
            dlq_topic: format!("{id}.payments.dlq"),
            group: format!("{id}-group"),
            database: id.clone(),
            registry_dir,
            work_dir,
            extra_env: Vec::new(),
        };
        Ok(s)
    }

    /// The setup's file registry (`registry.json` and its `.avsc` files) as id → schema text,
    /// for a stand-in REST registry ([`serve_registry_with`]).
    pub fn registry_schemas(&self) -> Result<BTreeMap<u32, String>> {
        let index: BTreeMap<String, String> = serde_json::from_str(&std::fs::read_to_string(
            self.registry_dir.join("registry.json"),
        )?)?;
        index
            .into_iter()
            .map(|(id, file)| {
                Ok((
                    id.parse()?,
                    std::fs::read_to_string(self.registry_dir.join(file))?,
                ))
            })
            .collect()
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    /// Writes into `database` instead of its own (consumers of several families sharing one
    /// database, as in production).
    pub fn with_database(mut self, database: &str) -> Self {
        self.database = database.into();
        self
    }
}

/// The qris-consumer binary built next to the test binary.
pub fn consumer_bin() -> PathBuf {
    service_bin("qris-consumer")
}

/// A service binary from the same target directory as the running binary: next to it (a bin
/// such as `target/release/umkm-bench`) or one level up (a test binary in
/// `target/<profile>/deps/`).
/// Runs `<service> refresh-metrics` against `database` (the adoption snapshots' rebuild) and fails
/// unless it exits 0 and reports the tables it refreshed.
/// Runs `<service> <command>` (a one-shot subcommand: `migrate`, `refresh-metrics`) against
/// `database` with the tests' settings; its stdout, or an error with its output.
pub fn run_subcommand(env: &Env, service: &str, command: &str, database: &str) -> Result<String> {
    let out = Command::new(service_bin(service))
        .arg(command)
        .env_clear()
        .env("UMKM_CLICKHOUSE_URL", &env.clickhouse)
        .env("UMKM_PII_HASH_KEY", PII_KEY)
        .env("UMKM__CLICKHOUSE__DATABASE", database)
        .env("UMKM__REGISTRY__DIR", repo_root().join("schemas/avro"))
        .env("UMKM__LOG__FORMAT", "text")
        .envs(env.cluster.iter().map(|c| ("UMKM__CLICKHOUSE__CLUSTER", c)))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{service} {command}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// Rebuilds the adoption snapshots of `database` with `<service> refresh-metrics`.
pub fn refresh_metrics(env: &Env, service: &str, database: &str) -> Result<()> {
    let stdout = run_subcommand(env, service, "refresh-metrics", database)?;
    ensure!(stdout.contains("refreshed"), "refresh-metrics: {stdout}");
    Ok(())
}

pub fn service_bin(service: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let here = exe.parent().map(|d| d.join(service));
    if let Some(p) = here.filter(|p| p.is_file()) {
        return p;
    }
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join(service))
        .unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Whether every partition's committed offset is at its end (partitions that got nothing
/// need no commit).
pub fn all_committed(env: &Env, s: &ConsumerSetup, partitions: i32, ends: &Ends) -> Result<bool> {
    let got = committed(env, &s.group, &s.topic, partitions)?;
    Ok((0..partitions).all(|p| {
        let end = ends.get(&p).copied().unwrap_or(0);
        end == 0 || got.get(&p).copied() == Some(end)
    }))
}

/// Waits until every partition's committed offset is at its end.
pub async fn wait_committed(
    env: &Env,
    s: &ConsumerSetup,
    partitions: i32,
    ends: &Ends,
    timeout: Duration,
) -> Result<()> {
    let (env2, s2, ends2) = (env.clone(), s.clone(), ends.clone());
    wait_until(
        timeout,
        "committed offsets at the end of every partition",
        move || {
            let (env, s, ends) = (env2.clone(), s2.clone(), ends2.clone());
            async move {
                tokio::task::spawn_blocking(move || all_committed(&env, &s, partitions, &ends))
                    .await?
            }
        },
    )
    .await
    .map_err(|e| {
        let got = committed(env, &s.group, &s.topic, partitions);
        e.context(format!("committed {got:?}, ends {ends:?}"))
    })
}

pub fn offsets_at_end(env: &Env, s: &ConsumerSetup, partitions: i32, ends: &Ends) -> Result<()> {
    let got = committed(env, &s.group, &s.topic, partitions)?;
    for (p, end) in ends {
        ensure!(
            got.get(p) == Some(end),
            "partition {p}: committed {:?}, end {end}",
            got.get(p)
        );
    }
    Ok(())
}

/// The three consumers of one deployment, sharing one database (`<name>_…`): fresh topics for
/// each, the qris-consumer started first and awaited until ready (it applies the migrations,
/// as docker-compose's `migrate` job does before the services start), then the other two.
pub struct Deployment {
    pub database: String,
    pub qris: ConsumerSetup,
    pub noncash: ConsumerSetup,
    pub merchants: ConsumerSetup,
    pub qris_proc: ConsumerProc,
    pub noncash_proc: ConsumerProc,
    pub merchants_proc: ConsumerProc,
}

impl Deployment {
    pub async fn start(env: &Env, name: &str, partitions: i32) -> Result<Deployment> {
        let database = unique(name);
        let setup = |svc, suffix: &str| {
            let db = database.clone();
            let n = format!("{name}_{suffix}");
            async move {
                Ok::<_, anyhow::Error>(
                    ConsumerSetup::new_for(env, svc, &n, partitions)
                        .await?
                        .with_database(&db),
                )
            }
        };
        let qris = setup(QRIS, "q").await?;
        let noncash = setup(NONCASH, "n").await?;
        let merchants = setup(MERCHANTS, "m").await?;
        let qris_proc = ConsumerProc::start(env, &qris, "q")?;
        let q = &qris_proc;
        wait_until(
            Duration::from_secs(60),
            "qris-consumer ready",
            || async move {
                Ok(q.get("/health/ready")
                    .await
                    .map(|r| r.0 == 200)
                    .unwrap_or(false))
            },
        )
        .await
        .map_err(|e| e.context(qris_proc.log_tail()))?;
        let noncash_proc = ConsumerProc::start(env, &noncash, "n")?;
        let merchants_proc = ConsumerProc::start(env, &merchants, "m")?;
        Ok(Deployment {
            database,
            qris,
            noncash,
            merchants,
            qris_proc,
            noncash_proc,
            merchants_proc,
        })
    }
}

/// A running consumer process.
pub struct ConsumerProc {
    pub child: Child,
    pub admin: String,
    pub log: PathBuf,
}

impl ConsumerProc {
    pub fn start(env: &Env, s: &ConsumerSetup, name: &str) -> Result<ConsumerProc> {
        let port = free_port();
        let log = s.work_dir.join(format!("{name}.log"));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let bin = service_bin(s.service);
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("UMKM_KAFKA_BROKERS", &env.brokers)
            .env("UMKM_CLICKHOUSE_URL", &env.clickhouse)
            .env("UMKM_PII_HASH_KEY", PII_KEY)
            .env("UMKM__KAFKA__TOPIC", &s.topic)
            .env("UMKM__KAFKA__DLQ_TOPIC", &s.dlq_topic)
            .env("UMKM__KAFKA__GROUP_ID", &s.group)
            .env(
                "UMKM__KAFKA__SESSION_TIMEOUT_MS",
                SESSION_TIMEOUT.as_millis().to_string(),
            )
            .env("UMKM__CLICKHOUSE__DATABASE", &s.database)
            .env("UMKM__REGISTRY__DIR", &s.registry_dir)
            .env("UMKM__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
            .env("UMKM__BATCH__MAX_ROWS", "2000")
            .env("UMKM__BATCH__MAX_AGE_MS", "300")
            .env("UMKM__RETRY__CLICKHOUSE__MAX_BACKOFF_MS", "2000")
            .env("UMKM__RETRY__DLQ__MAX_BACKOFF_MS", "2000")
            .env("UMKM__SHUTDOWN__TIMEOUT_S", "20")
            .env("UMKM__PROGRESS__INTERVAL_MS", "1000")
            .env("UMKM__LOG__FORMAT", "text")
            .envs(env.cluster.iter().map(|c| ("UMKM__CLICKHOUSE__CLUSTER", c)))
            .envs(env.service_env.iter().map(|(k, v)| (k, v)));
        for (k, v) in &s.extra_env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        Ok(ConsumerProc {
            child,
            admin: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `timeout` for the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!("consumer did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn exited(&mut self) -> Option<i32> {
        self.child
            .try_wait()
            .ok()
            .flatten()
            .map(|s| s.code().unwrap_or(-1))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// Sum of the `/metrics` samples whose line starts with `prefix` (name and leading labels,
    /// e.g. `umkm_events_total{outcome="inserted"`); 0 when the admin port does not answer.
    pub async fn metric(&self, prefix: &str) -> f64 {
        let Ok((_, text)) = self.get("/metrics").await else {
            return 0.0;
        };
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// User + system CPU seconds the process has used so far (Linux /proc, 100 ticks/s).
    pub fn cpu_seconds(&self) -> Option<f64> {
        procfs::cpu_seconds(self.child.id())
    }

    /// Waits up to `timeout` until the consumer has logged an assignment of partitions.
    pub async fn wait_assigned(&self, timeout: Duration) -> Result<()> {
        poll_every(
            timeout,
            Duration::from_millis(200),
            "partitions assigned",
            || std::future::ready(Ok(self.assigned())),
        )
        .await
        .map(|_| ())
        .with_context(|| self.log_tail())
    }

    /// Whether the consumer has logged an assignment of partitions.
    pub fn assigned(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .map(|t| t.contains("partitions assigned"))
            .unwrap_or(false)
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ConsumerProc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill9();
        }
    }
}

/// Polls `check` every 250 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    poll_every(timeout, Duration::from_millis(250), what, check)
        .await
        .map(|_| ())
}

/// The one polling helper: runs `check` every `every` until it returns true (then returns
/// when) or `timeout` passes. An error of `check` counts as "not yet" until the timeout, then
/// it is the error returned.
pub async fn poll_every<F, Fut>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut check: F,
) -> Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(true) => return Ok(Instant::now()),
            Ok(false) => {}
            Err(e) if Instant::now() > deadline => return Err(e.context(what.to_string())),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// How the stand-in registry serves: the first `fail_first` requests answer 503 (a registry
/// outage must delay decoding, never dead-letter); with `tls` (certificate and key PEM files)
/// it speaks HTTPS only; with `basic` or `bearer` every request without those credentials
/// answers 401.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub fail_first: usize,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub basic: Option<(String, String)>,
    pub bearer: Option<String>,
}

/// A minimal Confluent-compatible schema registry (`GET /schemas/ids/{id}`, `GET /subjects`)
/// on loopback, for testing the REST client. Returns its base URL and a log of requested paths.
pub async fn serve_registry(
    schemas: BTreeMap<u32, String>,
    fail_first: usize,
) -> Result<(String, std::sync::Arc<std::sync::Mutex<Vec<String>>>)> {
    serve_registry_with(
        schemas,
        RegistryOptions {
            fail_first,
            ..RegistryOptions::default()
        },
    )
    .await
}

/// [`serve_registry`] with TLS and credentials ([`RegistryOptions`]).
pub async fn serve_registry_with(
    schemas: BTreeMap<u32, String>,
    opts: RegistryOptions,
) -> Result<(String, std::sync::Arc<std::sync::Mutex<Vec<String>>>)> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    let acceptor = match &opts.tls {
        Some((cert, key)) => {
            let identity =
                native_tls::Identity::from_pkcs8(&std::fs::read(cert)?, &std::fs::read(key)?)?;
            Some(tokio_native_tls::TlsAcceptor::from(
                native_tls::TlsAcceptor::new(identity)?,
            ))
        }
        None => None,
    };
    let expected_auth = match (&opts.basic, &opts.bearer) {
        (Some((u, p)), _) => Some(format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
        (None, Some(t)) => Some(format!("Bearer {t}")),
        (None, None) => None,
    };
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new((schemas, expected_auth, opts.fail_first));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, log, served, shared) = (
                acceptor.clone(),
                log2.clone(),
                served.clone(),
                shared.clone(),
            );
            tokio::spawn(async move {
                let (schemas, expected_auth, fail_first) = &*shared;
                let answer = |req: &str| {
                    let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                    let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Ok(mut l) = log.lock() {
                        l.push(path.clone());
                    }
                    let auth = req.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    });
                    if expected_auth.is_some() && &auth != expected_auth {
                        return (
                            "401 Unauthorized",
                            r#"{"error_code":401,"message":"Unauthorized"}"#.to_string(),
                        );
                    }
                    if n <= *fail_first {
                        return (
                            "503 Service Unavailable",
                            r#"{"error_code":50301,"message":"unavailable"}"#.to_string(),
                        );
                    }
                    if path == "/subjects" {
                        return ("200 OK", "[]".to_string());
                    }
                    let id: Option<u32> = path
                        .strip_prefix("/schemas/ids/")
                        .and_then(|s| s.split('?').next())
                        .and_then(|s| s.parse().ok());
                    match id.and_then(|i| schemas.get(&i)) {
                        Some(s) => ("200 OK", serde_json::json!({ "schema": s }).to_string()),
                        None => (
                            "404 Not Found",
                            r#"{"error_code":40403,"message":"Schema not found"}"#.to_string(),
                        ),
                    }
                };
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(sock).await {
                            registry_exchange(tls, answer).await;
                        }
                    }
                    None => registry_exchange(sock, answer).await,
                }
            });
        }
    });
    Ok((url, log))
}

/// Reads one request's head from `sock`, writes `answer`'s status and body, closes.
async fn registry_exchange<S>(mut sock: S, answer: impl FnOnce(&str) -> (&'static str, String))
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while n < buf.len() {
        match sock.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let (status, body) = answer(&String::from_utf8_lossy(&buf[..n]));
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Standard base64 with padding (HTTP basic auth).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs `promtool check metrics` (Debian's prometheus package) over a `/metrics` page.
pub fn promtool_check_metrics(page: &str) -> Result<()> {
    use std::io::Write;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("promtool (Debian package prometheus) must be installed")?;
    if let Some(mut stdin) = promtool.stdin.take() {
        stdin.write_all(page.as_bytes())?;
    }
    let checked = promtool.wait_with_output()?;
    ensure!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    Ok(())
}

/// Runs `statements` in chDB (current ClickHouse, in-process, via tests/chdb/run_sql.py), then
/// each `check` (`SQL=expected CSV`); returns the script's output, or the error with it.
pub fn run_chdb(name: &str, statements: &[String], checks: &[String]) -> Result<String> {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("statements.sql");
    std::fs::write(&file, statements.join("\n;;\n"))?;
    let out = Command::new("python3")
        .arg(repo_root().join("tests/chdb/run_sql.py"))
        .arg(&file)
        .args(checks)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "chDB: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}
