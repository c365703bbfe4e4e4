//! Configuration: built-in defaults, then an optional TOML file (`--config FILE` or
//! `UMKM_CONFIG`), then environment overrides `UMKM__SECTION__KEY` (e.g.
//! `UMKM__BATCH__MAX_ROWS=50000`), plus the stack's shorthands `UMKM_KAFKA_BROKERS` and
//! `UMKM_CLICKHOUSE_URL`. Validated once at start-up; every problem is reported at once.
//! Secrets (`clickhouse.password`, `pii.hash_key`) come from env or `*_file` and are never
//! printed: `Secret`'s Debug is redacted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use umkm_core::batch::BatchPolicy;

use umkm_core::reference::Regions;

use crate::retry::RetryPolicy;
use crate::security::{
    KafkaProperties, RegistryAccess, RegistryAuth, Tls, kafka_properties, read_secret,
};
pub use crate::security::{KafkaSecurity, Secret, TlsSettings};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    pub clickhouse: ClickHouseSettings,
    pub batch: BatchSettings,
    pub retry: RetrySettings,
    pub dedup: DedupSettings,
    pub pii: PiiSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
    pub shutdown: ShutdownSettings,
    pub progress: ProgressSettings,
    pub reference: ReferenceSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    pub group_id: String,
    pub topic: String,
    pub dlq_topic: String,
    /// A dead letter whose payload is larger goes without it (headers, source coordinates and
    /// `dlq.payload_omitted_bytes` only): below the DLQ producer's `message.max.bytes`.
    pub dlq_max_payload_bytes: usize,
    pub session_timeout_ms: u64,
    /// How often the consumer heartbeats; below the session timeout, at most a third of it
    /// advised (README "Configuration": why 1 s rather than librdkafka's 3 s).
    pub heartbeat_interval_ms: u64,
    pub max_poll_interval_ms: u64,
    /// `earliest` or `latest`: where a group without committed offsets starts.
    pub auto_offset_reset: String,
    /// How the connections to the brokers are secured (README "Security").
    pub security: KafkaSecurity,
    /// CA, client certificate and key for `ssl` and `sasl_ssl`.
    pub tls: TlsSettings,
    /// Passed to librdkafka as is, last (any other property). Values are never logged.
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Confluent-compatible schema registry base URL (GET /schemas/ids/{id}).
    pub url: Option<String>,
    /// File registry: a directory holding `registry.json` ({"<id>": "<file>.avsc"}).
    pub dir: Option<PathBuf>,
    pub timeout_ms: u64,
    /// HTTP basic auth: the user (a Confluent Cloud API key), with `password` or
    /// `password_file` (the API secret).
    pub user: Option<String>,
    pub password: Secret,
    pub password_file: Option<PathBuf>,
    /// A bearer token instead of basic auth (`Authorization: Bearer …`).
    pub bearer_token: Secret,
    pub bearer_token_file: Option<PathBuf>,
    /// For an `https://` URL: CA, and client certificate and key.
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSettings {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: Secret,
    pub password_file: Option<PathBuf>,
    /// For an `https://` URL (ClickHouse's `https_port`): CA, and client certificate and key.
    pub tls: TlsSettings,
    pub insert_timeout_ms: u64,
    pub query_timeout_ms: u64,
    /// `lz4` or `none`.
    pub compression: String,
    /// Apply migrations at start-up (they are idempotent).
    pub migrate_on_start: bool,
    /// The ClickHouse cluster (a `remote_servers` name) the tables are sharded and replicated
    /// over (README "Scaling out"); unset on a single server.
    pub cluster: Option<String>,
    /// How long an `ON CLUSTER` statement may wait for every node (the server's
    /// `distributed_ddl_task_timeout`); an unreachable node then fails the migration clearly.
    pub ddl_timeout_ms: u64,
    /// On a cluster, the dedup lookup skips a replica more than this many seconds behind
    /// (`max_replica_delay_for_distributed_queries`) and fails, to be retried, when every
    /// replica of a shard is: never a stale answer.
    pub max_replica_delay_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_age_ms: u64,
}

/// One [`RetryPolicy`] per kind of operation. Giving up stops the service (exit 1) with
/// nothing committed past unwritten data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// ClickHouse writes: the dedup lookup and the INSERT of a batch.
    pub clickhouse: RetryPolicy,
    /// Attempts for ClickHouse errors a retry is unlikely to fix (unknown table, type
    /// mismatch, auth), within `clickhouse`'s budget.
    pub fatal_attempts: u32,
    /// The dead-letter producer's acknowledgements.
    pub dlq: RetryPolicy,
    /// Fetching a writer schema from the registry.
    pub registry: RetryPolicy,
    /// Connecting to ClickHouse at start-up.
    pub connect: RetryPolicy,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupSettings {
    /// Keys remembered in memory after a successful insert (an optimisation: ClickHouse is
    /// always asked about keys not in memory).
    pub cache_keys: usize,
    /// Keys per ClickHouse lookup query.
    pub lookup_chunk: usize,
    /// Two parties' reports of one payment within this of the same WIB midnight are one
    /// payment even though their clocks put them on two dates (README "Deduplication keys").
    pub midnight_skew_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiiSettings {
    pub hash_key: Secret,
    pub hash_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `json` or `text`.
    pub format: String,
    /// tracing filter, e.g. `info` or `info,umkm_runtime=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    pub timeout_s: u64,
}

/// Reference data newer than the shipped one (docs/operations.md "Replaying after a
/// reference-data fix").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReferenceSettings {
    /// Banten's kab/kota and kecamatan, in the format of
    /// `schemas/reference/kemendagri_banten_2025.csv`; replaces the shipped list.
    pub regions_file: Option<PathBuf>,
    /// The name of that list (e.g. the decree), recorded in `ref_regions.version` and named in
    /// `region_unknown` reasons. Required with `regions_file`.
    pub regions_version: Option<String>,
}

/// The progress watch (`progress.rs`): the group's offsets from the broker, and when to call a
/// lack of progress a stall.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgressSettings {
    /// How often the group's committed and end offsets are read.
    pub interval_ms: u64,
    /// Lag with no committed progress for this long is a stall (`/health/ready` 503).
    pub stall_after_s: u64,
    /// Bound on each request of one read (metadata, offsets, watermarks).
    pub request_timeout_ms: u64,
}

impl Default for ProgressSettings {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            stall_after_s: 300,
            request_timeout_ms: 5_000,
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: String::new(),
            topic: String::new(),
            dlq_topic: "payments.dlq".into(),
            dlq_max_payload_bytes: 900_000,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            max_poll_interval_ms: 300_000,
            auto_offset_reset: "earliest".into(),
            security: KafkaSecurity::default(),
            tls: TlsSettings::default(),
            extra: BTreeMap::new(),
        }
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            url: None,
            dir: None,
            timeout_ms: 5_000,
            user: None,
            password: Secret::default(),
            password_file: None,
            bearer_token: Secret::default(),
            bearer_token_file: None,
            tls: TlsSettings::default(),
        }
    }
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "umkm".into(),
            user: "default".into(),
            password: Secret::default(),
            password_file: None,
            tls: TlsSettings::default(),
            insert_timeout_ms: 30_000,
            query_timeout_ms: 10_000,
            compression: "lz4".into(),
            migrate_on_start: true,
            cluster: None,
            ddl_timeout_ms: 60_000,
            max_replica_delay_s: 2,
        }
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_rows: 30_000,
            max_bytes: 32 << 20,
            max_age_ms: 1_000,
        }
    }
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            clickhouse: RetryPolicy::default(),
            fatal_attempts: 5,
            dlq: RetryPolicy::default(),
            registry: RetryPolicy {
                initial_backoff_ms: 200,
                max_backoff_ms: 5_000,
                max_elapsed_s: 120,
                max_attempts: 8,
            },
            connect: RetryPolicy::default(),
        }
    }
}

impl Default for DedupSettings {
    fn default() -> Self {
        Self {
            cache_keys: 500_000,
            lookup_chunk: 20_000,
            midnight_skew_ms: umkm_core::time::DEFAULT_MIDNIGHT_SKEW_MS,
        }
    }
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "json".into(),
            level: "info".into(),
        }
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { timeout_s: 30 }
    }
}

/// Service-specific defaults applied before the file and the environment.
#[derive(Debug, Clone)]
pub struct ServiceDefaults {
    pub topic: &'static str,
    pub group_id: &'static str,
    pub dlq_topic: &'static str,
}

/// Loads settings from defaults, an optional file and the environment (`env` is passed in so
/// tests need not touch the process environment).
pub fn load(
    defaults: &ServiceDefaults,
    file: Option<&std::path::Path>,
    env: &BTreeMap<String, String>,
) -> Result<Settings, String> {
    let toml = match file {
        Some(f) if !f.exists() => {
            return Err(format!("config file {} does not exist", f.display()));
        }
        Some(f) => Some(
            std::fs::read_to_string(f).map_err(|e| format!("config file {}: {e}", f.display()))?,
        ),
        None => None,
    };
    load_toml(defaults, toml.as_deref(), env).map_err(|e| match file {
        Some(f) => format!("{}: {e}", f.display()),
        None => e,
    })
}

/// [`load`] with the file's text (the config loader's fuzz target feeds it arbitrary text).
pub fn load_toml(
    defaults: &ServiceDefaults,
    toml: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Result<Settings, String> {
    let mut base = Settings::default();
    base.kafka.topic = defaults.topic.into();
    base.kafka.dlq_topic = defaults.dlq_topic.into();
    base.kafka.group_id = defaults.group_id.into();
    // The defaults as one JSON source: `Config::try_from` sets every field separately and
    // rebuilds the whole tree each time, about 10 ms per load (the config fuzz target's rate).
    let defaults_json = serde_json::to_string(&base).map_err(|e| e.to_string())?;
    let mut b = config::Config::builder().add_source(config::File::from_str(
        &defaults_json,
        config::FileFormat::Json,
    ));
    if let Some(text) = toml {
        b = b.add_source(config::File::from_str(text, config::FileFormat::Toml));
    }
    let env_map: std::collections::HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("UMKM__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    b = b.add_source(
        config::Environment::with_prefix("UMKM")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env_map)),
    );
    for (var, key) in [
        ("UMKM_KAFKA_BROKERS", "kafka.brokers"),
        ("UMKM_CLICKHOUSE_URL", "clickhouse.url"),
        ("UMKM_CLICKHOUSE_PASSWORD", "clickhouse.password"),
        ("UMKM_PII_HASH_KEY", "pii.hash_key"),
    ] {
        if let Some(v) = env.get(var) {
            b = b.set_override(key, v.clone()).map_err(|e| e.to_string())?;
        }
    }
    let cfg = b.build().map_err(|e| e.to_string())?;
    cfg.try_deserialize::<Settings>()
        .map_err(|e| format!("configuration does not parse: {e}"))
}

/// Checked settings, with secrets read from their files.
#[derive(Debug, Clone)]
pub struct Validated {
    pub settings: Settings,
    /// `kafka.security` and `kafka.tls` as librdkafka properties (SASL password included).
    pub kafka_security: KafkaProperties,
    pub clickhouse_password: Secret,
    /// For an `https://` ClickHouse URL.
    pub clickhouse_tls: Option<Tls>,
    pub registry_access: RegistryAccess,
    pub pii_key: Secret,
    pub admin_addr: SocketAddr,
    /// The region reference codes are checked against: the shipped one, or
    /// `reference.regions_file`.
    pub regions: Arc<Regions>,
}

impl Validated {
    pub fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy {
            max_rows: self.settings.batch.max_rows,
            max_bytes: self.settings.batch.max_bytes,
            max_age: Duration::from_millis(self.settings.batch.max_age_ms),
        }
    }
}

/// The registry's credentials and TLS (README "Security"), secrets read from env or file.
impl RegistryAccess {
    pub fn from_settings(r: &RegistrySettings, problems: &mut Vec<String>) -> RegistryAccess {
        let password = read_secret(&r.password, &r.password_file, "registry.password", problems);
        let token = read_secret(
            &r.bearer_token,
            &r.bearer_token_file,
            "registry.bearer_token",
            problems,
        );
        let user = r.user.clone().filter(|u| !u.is_empty());
        let auth = match (user, token.0.is_empty()) {
            (Some(_), false) => {
                problems.push(
                    "registry: set registry.user (basic auth) or registry.bearer_token, not both"
                        .into(),
                );
                RegistryAuth::None
            }
            (Some(user), true) => RegistryAuth::Basic { user, password },
            (None, false) => RegistryAuth::Bearer(token),
            (None, true) => {
                if !password.0.is_empty() {
                    problems.push("registry.password: set, but registry.user is not".into());
                }
                RegistryAuth::None
            }
        };
        let tls = match &r.url {
            Some(url) => Tls::for_url("registry.tls", url, &r.tls, problems),
            None if r.tls.is_set() => {
                problems.push("registry.tls: set, but registry.url is not".into());
                None
            }
            None => None,
        };
        RegistryAccess { auth, tls }
    }
}

/// The shipped region reference, or `reference.regions_file` read and checked.
fn regions(r: &ReferenceSettings, problems: &mut Vec<String>) -> Arc<Regions> {
    let shipped = || Arc::new(Regions::shipped().clone());
    let version = r
        .regions_version
        .as_deref()
        .filter(|v| !v.trim().is_empty());
    match (&r.regions_file, version) {
        (None, None) => shipped(),
        (None, Some(_)) => {
            problems.push("reference.regions_version: set only with reference.regions_file".into());
            shipped()
        }
        (Some(f), None) => {
            problems.push(format!(
                "reference.regions_file: {} needs reference.regions_version (the decree's name)",
                f.display()
            ));
            shipped()
        }
        (Some(f), Some(v)) => match std::fs::read_to_string(f) {
            Err(e) => {
                problems.push(format!(
                    "reference.regions_file: cannot read {}: {e}",
                    f.display()
                ));
                shipped()
            }
            Ok(csv) => match Regions::with_banten(v, &csv) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    problems.push(format!("reference.regions_file: {}: {e}", f.display()));
                    shipped()
                }
            },
        },
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

pub fn validate(mut s: Settings) -> Result<Validated, Vec<String>> {
    let mut p = Vec::new();
    // An empty value (e.g. `UMKM__REGISTRY__DIR=`) means unset.
    s.registry.url = s.registry.url.filter(|u| !u.trim().is_empty());
    s.registry.dir = s.registry.dir.filter(|d| !d.as_os_str().is_empty());
    s.clickhouse.cluster = s.clickhouse.cluster.filter(|c| !c.trim().is_empty());
    for t in [&mut s.kafka.tls, &mut s.registry.tls, &mut s.clickhouse.tls] {
        *t = std::mem::take(t).normalised();
    }
    s.reference.regions_file = s
        .reference
        .regions_file
        .filter(|f| !f.as_os_str().is_empty());
    let k = &s.kafka;
    if k.brokers.split(',').all(|b| b.trim().is_empty()) {
        p.push("kafka.brokers: empty".into());
    }
    if k.group_id.trim().is_empty() {
        p.push("kafka.group_id: empty".into());
    }
    if k.topic.trim().is_empty() {
        p.push("kafka.topic: empty".into());
    }
    if k.dlq_topic.trim().is_empty() {
        p.push("kafka.dlq_topic: empty".into());
    }
    if !(1_024..=100 << 20).contains(&k.dlq_max_payload_bytes) {
        p.push("kafka.dlq_max_payload_bytes: must be between 1024 and 104857600".into());
    }
    if k.topic == k.dlq_topic {
        p.push(format!(
            "kafka.dlq_topic: must differ from kafka.topic ({})",
            k.topic
        ));
    }
    if !matches!(k.auto_offset_reset.as_str(), "earliest" | "latest") {
        p.push(format!(
            "kafka.auto_offset_reset: {:?} is not earliest or latest",
            k.auto_offset_reset
        ));
    }
    let pr = &s.progress;
    if pr.interval_ms < 100 || pr.request_timeout_ms == 0 {
        p.push("progress.interval_ms: below 100, or progress.request_timeout_ms: 0".into());
    }
    if pr.stall_after_s.saturating_mul(1_000) < 2 * pr.interval_ms {
        p.push(format!(
            "progress.stall_after_s: {} s must span at least two reads ({} ms apart)",
            pr.stall_after_s, pr.interval_ms
        ));
    }
    if k.session_timeout_ms < 1_000 {
        p.push("kafka.session_timeout_ms: below 1000".into());
    }
    if k.heartbeat_interval_ms == 0 || k.heartbeat_interval_ms >= k.session_timeout_ms {
        p.push(format!(
            "kafka.heartbeat_interval_ms: {} ms must be above 0 and below kafka.session_timeout_ms ({} ms)",
            k.heartbeat_interval_ms, k.session_timeout_ms
        ));
    }
    match (&s.registry.url, &s.registry.dir) {
        (None, None) => p.push(
            "registry: set registry.url (Confluent-compatible registry) or registry.dir (file registry)"
                .into(),
        ),
        (Some(_), Some(_)) => p.push("registry: set registry.url or registry.dir, not both".into()),
        (Some(u), None) if !u.starts_with("http://") && !u.starts_with("https://") => {
            p.push(format!("registry.url: {u:?} is not an http:// or https:// URL"))
        }
        (None, Some(d)) if !d.join("registry.json").is_file() => p.push(format!(
            "registry.dir: {} has no registry.json",
            d.display()
        )),
        _ => {}
    }
    let c = &s.clickhouse;
    if !c.url.starts_with("http://") && !c.url.starts_with("https://") {
        p.push(format!(
            "clickhouse.url: {:?} is not an http:// or https:// URL",
            c.url
        ));
    }
    let clickhouse_tls = Tls::for_url("clickhouse.tls", &c.url, &c.tls, &mut p);
    let registry_access = RegistryAccess::from_settings(&s.registry, &mut p);
    let sasl_password = read_secret(
        &k.security.sasl_password,
        &k.security.sasl_password_file,
        "kafka.security.sasl_password",
        &mut p,
    );
    let kafka_security = kafka_properties(&k.security, &k.tls, &k.extra, &sasl_password, &mut p);
    if !is_identifier(&c.database) {
        p.push(format!(
            "clickhouse.database: {:?} is not a plain identifier",
            c.database
        ));
    }
    if let Some(cl) = &c.cluster
        && !is_identifier(cl)
    {
        p.push(format!(
            "clickhouse.cluster: {cl:?} is not a plain identifier"
        ));
    }
    if !matches!(c.compression.as_str(), "lz4" | "none") {
        p.push(format!(
            "clickhouse.compression: {:?} is not lz4 or none",
            c.compression
        ));
    }
    if c.insert_timeout_ms == 0 || c.query_timeout_ms == 0 {
        p.push("clickhouse.insert_timeout_ms / query_timeout_ms: must be > 0".into());
    }
    if c.ddl_timeout_ms < 1_000 {
        p.push("clickhouse.ddl_timeout_ms: must be at least 1000".into());
    }
    if c.max_replica_delay_s == 0 {
        p.push("clickhouse.max_replica_delay_s: must be > 0 (0 would turn the check off)".into());
    }
    // An insert (plus its lookup) must finish well inside max.poll.interval.ms, or the group
    // would evict this consumer while it waits (clickhouse-kafka-connect PR #756).
    if c.insert_timeout_ms + c.query_timeout_ms >= k.max_poll_interval_ms / 2 {
        p.push(format!(
            "clickhouse.insert_timeout_ms + query_timeout_ms ({} ms) must be below half of kafka.max_poll_interval_ms ({} ms)",
            c.insert_timeout_ms + c.query_timeout_ms,
            k.max_poll_interval_ms
        ));
    }
    let b = &s.batch;
    if b.max_rows == 0 {
        p.push("batch.max_rows: must be > 0".into());
    }
    if b.max_bytes < 1024 {
        p.push("batch.max_bytes: must be at least 1024".into());
    }
    if b.max_age_ms < 10 {
        p.push("batch.max_age_ms: must be at least 10".into());
    }
    let r = &s.retry;
    for (name, policy) in [
        ("retry.clickhouse", &r.clickhouse),
        ("retry.dlq", &r.dlq),
        ("retry.registry", &r.registry),
        ("retry.connect", &r.connect),
    ] {
        p.extend(policy.problems(name));
    }
    if r.fatal_attempts == 0 {
        p.push("retry.fatal_attempts: must be > 0".into());
    }
    if s.dedup.lookup_chunk == 0 {
        p.push("dedup.lookup_chunk: must be > 0".into());
    }
    if !(0..=3_600_000).contains(&s.dedup.midnight_skew_ms) {
        p.push("dedup.midnight_skew_ms: must be between 0 and 3600000 (one hour)".into());
    }
    if s.shutdown.timeout_s == 0 {
        p.push("shutdown.timeout_s: must be > 0".into());
    }
    let admin_addr = match s.admin.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.push(format!(
                "admin.listen: {:?} is not host:port",
                s.admin.listen
            ));
            None
        }
    };
    if !matches!(s.log.format.as_str(), "json" | "text") {
        p.push(format!(
            "log.format: {:?} is not json or text",
            s.log.format
        ));
    }
    let clickhouse_password =
        read_secret(&c.password, &c.password_file, "clickhouse.password", &mut p);
    let pii_key = read_secret(
        &s.pii.hash_key,
        &s.pii.hash_key_file,
        "pii.hash_key",
        &mut p,
    );
    if pii_key.0.len() < umkm_core::pii::MIN_KEY_BYTES {
        p.push(format!(
            "pii.hash_key: required (env UMKM_PII_HASH_KEY or pii.hash_key_file), at least {} bytes",
            umkm_core::pii::MIN_KEY_BYTES
        ));
    }
    let regions = regions(&s.reference, &mut p);
    match admin_addr {
        Some(admin_addr) if p.is_empty() => Ok(Validated {
            settings: s,
            kafka_security,
            clickhouse_password,
            clickhouse_tls,
            registry_access,
            pii_key,
            admin_addr,
            regions,
        }),
        _ => Err(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ServiceDefaults {
        ServiceDefaults {
            topic: "payments.qris.v1",
            group_id: "qris-consumer",
            dlq_topic: "payments.dlq",
        }
    }

    fn with_reference(
        file: Option<PathBuf>,
        version: Option<&str>,
    ) -> Result<Validated, Vec<String>> {
        let mut s = load(&defaults(), None, &BTreeMap::new()).unwrap();
        s.registry.url = Some("http://registry:8081".into());
        s.pii.hash_key = Secret("0123456789abcdef0123".into());
        s.reference = ReferenceSettings {
            regions_file: file,
            regions_version: version.map(Into::into),
        };
        validate(s)
    }

    #[test]
    fn a_regions_file_replaces_the_shipped_reference_or_is_refused() {
        let v = with_reference(None, None).unwrap();
        assert_eq!(v.regions.version(), umkm_core::reference::REGIONS_VERSION);
        assert_eq!(
            v.regions.check("36.03.34").unwrap_err().rule,
            "region_unknown"
        );

        let dir = std::env::temp_dir().join(format!("umkm-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("banten.csv");
        std::fs::write(
            &good,
            format!(
                "{}36.03.34,Kecamatan Baru,kecamatan\n",
                umkm_core::reference::BANTEN_CSV
            ),
        )
        .unwrap();
        let v = with_reference(Some(good.clone()), Some("decree-2026")).unwrap();
        assert_eq!(v.regions.version(), "decree-2026");
        assert!(v.regions.check("36.03.34").is_ok());

        let no_version = with_reference(Some(good.clone()), None).unwrap_err();
        assert!(
            no_version[0].contains("needs reference.regions_version"),
            "{no_version:?}"
        );
        let only_version = with_reference(None, Some("x")).unwrap_err();
        assert!(only_version[0].contains("only with reference.regions_file"));
        let missing = with_reference(Some(dir.join("nope.csv")), Some("x")).unwrap_err();
        assert!(missing[0].contains("cannot read"), "{missing:?}");
        let bad = dir.join("bad.csv");
        std::fs::write(
            &bad,
            "kode,nama,level\n36.01,A,kab_kota\n36.01,B,kab_kota\n",
        )
        .unwrap();
        let twice = with_reference(Some(bad), Some("x")).unwrap_err();
        assert!(
            twice[0].contains("line 3: 36.01 is listed twice"),
            "{twice:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_heartbeat_must_come_within_the_session() {
        let valid = |session: u64, heartbeat: u64| {
            let mut s = load(&defaults(), None, &BTreeMap::new()).unwrap();
            s.registry.url = Some("http://registry:8081".into());
            s.pii.hash_key = Secret("0123456789abcdef0123".into());
            s.kafka.session_timeout_ms = session;
            s.kafka.heartbeat_interval_ms = heartbeat;
            validate(s)
        };
        assert!(valid(10_000, 1_000).is_ok(), "the defaults");
        assert!(valid(6_000, 3_000).is_ok());
        let slow = valid(6_000, 6_000).unwrap_err();
        assert!(
            slow[0].contains("kafka.heartbeat_interval_ms: 6000 ms")
                && slow[0].contains("(6000 ms)"),
            "{slow:?}"
        );
        assert!(valid(10_000, 0).is_err());
    }

    #[test]
    fn env_overrides_and_shorthands() {
        let env: BTreeMap<String, String> = [
            ("UMKM__BATCH__MAX_ROWS", "500"),
            ("UMKM__KAFKA__GROUP_ID", "g2"),
            ("UMKM_KAFKA_BROKERS", "h1:9092,h2:9092"),
            ("UMKM_PII_HASH_KEY", "0123456789abcdef0123"),
            ("UMKM__REGISTRY__URL", "http://registry:8081"),
            ("UMKM__RETRY__DLQ__MAX_ATTEMPTS", "12"),
            ("PATH", "/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = load(&defaults(), None, &env).unwrap();
        assert_eq!(s.batch.max_rows, 500);
        assert_eq!(s.kafka.group_id, "g2");
        assert_eq!(s.kafka.brokers, "h1:9092,h2:9092");
        assert_eq!(s.kafka.topic, "payments.qris.v1");
        assert_eq!(s.retry.dlq.max_attempts, 12);
        assert_eq!(
            s.retry.dlq.max_elapsed_s, 900,
            "the rest of the budget keeps its defaults"
        );
        assert_eq!(s.retry.registry.max_attempts, 8);
        let v = validate(s).unwrap();
        assert_eq!(v.pii_key.0, "0123456789abcdef0123");
        assert!(!format!("{v:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn lists_every_problem() {
        let mut s = Settings::default();
        s.kafka.dlq_topic = String::new();
        s.batch.max_rows = 0;
        s.clickhouse.url = "localhost:8123".into();
        s.admin.listen = "nope".into();
        s.retry.registry.initial_backoff_ms = 0;
        let problems = validate(s).unwrap_err();
        for needle in [
            "kafka.group_id",
            "kafka.topic",
            "kafka.dlq_topic",
            "registry:",
            "clickhouse.url",
            "batch.max_rows",
            "admin.listen",
            "pii.hash_key",
            "retry.registry",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(needle)),
                "{needle} missing from {problems:?}"
            );
        }
    }

    #[test]
    fn file_and_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("umkm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "[batch]\nmax_age_ms = 750\n").unwrap();
        let s = load(&defaults(), Some(&f), &BTreeMap::new()).unwrap();
        assert_eq!(s.batch.max_age_ms, 750);
        std::fs::write(&f, "[batch]\nmax_agee_ms = 750\n").unwrap();
        let err = load(&defaults(), Some(&f), &BTreeMap::new()).unwrap_err();
        assert!(err.contains("max_agee_ms"), "{err}");
    }

    #[test]
    fn registry_credentials_one_kind() {
        let mut r = RegistrySettings {
            url: Some("https://registry:8081".into()),
            user: Some("key".into()),
            password: Secret("secret".into()),
            ..RegistrySettings::default()
        };
        let mut p = Vec::new();
        let a = RegistryAccess::from_settings(&r, &mut p);
        assert!(p.is_empty(), "{p:?}");
        assert!(
            matches!(&a.auth, RegistryAuth::Basic { user, password } if user == "key" && password.0 == "secret")
        );
        assert!(a.tls.is_some(), "https gets TLS with the system's roots");
        assert!(!format!("{a:?}").contains("secret"));
        r.bearer_token = Secret("tok".into());
        RegistryAccess::from_settings(&r, &mut p);
        assert!(p[0].contains("not both"), "{p:?}");
        let r = RegistrySettings {
            url: Some("http://registry:8081".into()),
            tls: TlsSettings {
                ca_file: Some("/x.pem".into()),
                ..TlsSettings::default()
            },
            ..RegistrySettings::default()
        };
        let mut p = Vec::new();
        RegistryAccess::from_settings(&r, &mut p);
        assert!(p[0].contains("is not https://"), "{p:?}");
    }
}
