//! The ClickHouse client: one connection pool (TCP_NODELAY, keep-alive) through clickhouse-rs,
//! a plain HTTP client for what clickhouse-rs cannot send (the lookup's external data), the
//! server version, and the error type with its class (`umkm_core::clickhouse_error`).

use std::time::Duration;

use ::clickhouse::{Client, Compression};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use umkm_core::clickhouse_error::{self, ErrorClass};
use umkm_core::migrations::{self, RenderContext};

use super::external::ExternalData;
use crate::config::Validated;

pub const MODERN: (u32, u32) = (22, 8);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClickHouseError {
    pub class: ErrorClass,
    pub code: Option<i32>,
    pub message: String,
}

impl ClickHouseError {
    pub(super) fn from_client(e: ::clickhouse::error::Error) -> Self {
        use ::clickhouse::error::Error as E;
        let message = e.to_string();
        let (class, code) = match &e {
            E::BadResponse(m) => {
                let code = clickhouse_error::code_of(m);
                (clickhouse_error::classify(code), code)
            }
            // An untrusted or expired certificate: no retry fixes it (README "Security").
            E::Network(n) if crate::security::tls_failure(n.as_ref()).is_some() => {
                return ClickHouseError {
                    class: ErrorClass::Fatal,
                    code: None,
                    message: crate::security::tls_failure(n.as_ref()).unwrap_or(message),
                };
            }
            E::Network(_) | E::TimedOut => (ErrorClass::Retryable, None),
            // The row does not fit the table: a deployment problem, not a passing one.
            E::SchemaMismatch(_) | E::NotEnoughData | E::InvalidColumnsHeader(_) => {
                (ErrorClass::Fatal, None)
            }
            _ => (ErrorClass::Retryable, None),
        };
        ClickHouseError {
            class,
            code,
            message,
        }
    }

    /// A failure a retry may fix, found on our side.
    pub fn retryable(message: impl Into<String>) -> Self {
        ClickHouseError {
            class: ErrorClass::Retryable,
            code: None,
            message: message.into(),
        }
    }

    /// A failure no retry fixes, found on our side.
    pub(super) fn fatal(message: impl Into<String>) -> Self {
        ClickHouseError {
            class: ErrorClass::Fatal,
            code: None,
            message: message.into(),
        }
    }

    pub(super) fn timeout(what: &str) -> Self {
        ClickHouseError {
            class: ErrorClass::Retryable,
            code: None,
            message: format!("{what}: timed out"),
        }
    }

    pub fn class_str(&self) -> &'static str {
        match self.class {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Fatal => "fatal",
        }
    }
}

#[derive(Clone)]
pub struct ClickHouse {
    /// No default database: used for DDL and system tables.
    pub(super) admin: Client,
    pub database: String,
    pub server_version: (u32, u32),
    pub server_version_text: String,
    pub(super) query_timeout: Duration,
    pub(super) insert_timeout: Duration,
    /// How long DDL may take (on a cluster, every node's part of it).
    pub(super) ddl_timeout: Duration,
    pub(super) render: RenderContext,
    /// Settings every query carries on a cluster ([`cluster_settings`]).
    pub(super) cluster_settings: Vec<(&'static str, String)>,
    /// Plain HTTP for what clickhouse-rs cannot send (the dedup lookup's external data).
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) user: String,
    pub(super) password: crate::config::Secret,
    /// The external-data structure of each table's inserted columns (`fence`), read once.
    pub(super) structures:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<str>>>>,
}

/// A reqwest error without the request URL (it carries the query, not secrets, but is long).
pub(super) fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<clickhouse>");
    }
    s
}

/// A request of ours that did not get an answer: an untrusted certificate is fatal (no retry
/// fixes it, README "Security"), anything else may pass.
pub(super) fn request_failed(what: &str, e: &reqwest::Error) -> ClickHouseError {
    match crate::security::tls_failure(e) {
        Some(tls) => ClickHouseError {
            class: ErrorClass::Fatal,
            code: None,
            message: format!("{what}: {tls}"),
        },
        None => ClickHouseError {
            class: ErrorClass::Retryable,
            code: None,
            message: format!("{what}: {}", without_url(e)),
        },
    }
}

/// The TLS of an `https://` URL (`clickhouse.tls`), or a default one that an `http://` URL never
/// uses.
fn tls_connector(v: &Validated) -> Result<native_tls::TlsConnector, ClickHouseError> {
    let built = match &v.clickhouse_tls {
        Some(t) => t.connector(),
        None => native_tls::TlsConnector::new().map_err(|e| format!("TLS: {e}")),
    };
    built.map_err(|message| ClickHouseError {
        class: ErrorClass::Fatal,
        code: None,
        message,
    })
}

fn http_client(connect_timeout: Duration, tls: native_tls::TlsConnector) -> Client {
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    // Without it every INSERT stalls ~40 ms on Nagle + delayed ACK (docs/benchmarks.md, "How the defaults were chosen").
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::with_http_client(
        HyperClient::builder(TokioExecutor::new())
            // Below ClickHouse's keep-alive timeout (3 s before 23.11, 10 s after).
            .pool_idle_timeout(Duration::from_millis(2_500))
            .pool_max_idle_per_host(4)
            .build(hyper_tls::HttpsConnector::from((connector, tls.into()))),
    )
}

/// The settings every query sends on a cluster (README "Scaling out"):
/// - an INSERT through a Distributed table returns once every shard has its rows
///   (`insert_distributed_sync`), within the insert timeout;
/// - reads and writes go to the first healthy replica of each shard in `remote_servers` order
///   (`load_balancing = in_order`), so the lookup normally reads the replica that took the
///   inserts; a replica more than `max_replica_delay_s` behind is skipped, and when every
///   replica of a shard is, the query fails (to be retried) instead of answering stale;
/// - a view's `IN`/`JOIN` over Distributed tables is computed once and shipped to the shards
///   (`distributed_product_mode = global`), which is right whatever the sharding;
/// - `ON CLUSTER` DDL waits for every node at most `ddl_timeout_ms`.
pub fn cluster_settings(c: &crate::config::ClickHouseSettings) -> Vec<(&'static str, String)> {
    if c.cluster.is_none() {
        return Vec::new();
    }
    vec![
        ("insert_distributed_sync", "1".into()),
        (
            "insert_distributed_timeout",
            c.insert_timeout_ms.div_ceil(1000).to_string(),
        ),
        ("load_balancing", "in_order".into()),
        (
            "max_replica_delay_for_distributed_queries",
            c.max_replica_delay_s.to_string(),
        ),
        (
            "fallback_to_stale_replicas_for_distributed_queries",
            "0".into(),
        ),
        ("distributed_product_mode", "global".into()),
        (
            "distributed_ddl_task_timeout",
            c.ddl_timeout_ms.div_ceil(1000).to_string(),
        ),
    ]
}

impl ClickHouse {
    /// Connects and detects the server version. Fails if ClickHouse does not answer within the
    /// query timeout.
    pub async fn connect(v: &Validated) -> Result<ClickHouse, ClickHouseError> {
        let c = &v.settings.clickhouse;
        let query_timeout = Duration::from_millis(c.query_timeout_ms);
        let compression = if c.compression == "lz4" {
            Compression::Lz4
        } else {
            Compression::None
        };
        let cluster_settings = cluster_settings(c);
        let tls = tls_connector(v)?;
        let mut admin = http_client(query_timeout, tls.clone())
            .with_url(&c.url)
            .with_user(&c.user)
            .with_password(&v.clickhouse_password.0)
            .with_compression(compression)
            .with_validation(false);
        for (k, v) in &cluster_settings {
            admin = admin.with_setting(*k, v.clone());
        }
        let version_text = tokio::time::timeout(
            query_timeout,
            admin.query("SELECT version()").fetch_one::<String>(),
        )
        .await
        .map_err(|_| ClickHouseError::timeout("SELECT version()"))?
        .map_err(ClickHouseError::from_client)?;
        let server_version = migrations::parse_version(&version_text).ok_or(ClickHouseError {
            class: ErrorClass::Fatal,
            code: None,
            message: format!("cannot parse server version {version_text:?}"),
        })?;
        let modern = server_version >= MODERN;
        Ok(ClickHouse {
            admin,
            database: c.database.clone(),
            server_version,
            server_version_text: version_text,
            query_timeout,
            insert_timeout: Duration::from_millis(c.insert_timeout_ms),
            ddl_timeout: Duration::from_millis(c.ddl_timeout_ms),
            cluster_settings,
            render: RenderContext {
                database: c.database.clone(),
                cluster: c.cluster.clone(),
                column_comments: modern,
            },
            http: reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .tcp_nodelay(true)
                .connect_timeout(query_timeout)
                .pool_idle_timeout(Duration::from_millis(2_500))
                .build()
                .map_err(|e| ClickHouseError {
                    class: ErrorClass::Fatal,
                    code: None,
                    message: format!("HTTP client: {e}"),
                })?,
            url: c.url.clone(),
            user: c.user.clone(),
            password: v.clickhouse_password.clone(),
            structures: Default::default(),
        })
    }

    pub fn modern(&self) -> bool {
        self.server_version >= MODERN
    }

    pub async fn ping(&self) -> bool {
        matches!(
            tokio::time::timeout(
                Duration::from_secs(2),
                self.admin.query("SELECT 1").fetch_one::<u8>()
            )
            .await,
            Ok(Ok(1))
        )
    }

    /// POSTs a query whose body is *external data* (multipart, README "Delivery guarantees": the
    /// lookup's keys, the fenced insert's rows) and returns the answer's text. `params` are the
    /// query's URL parameters (the query, its tables' structure and format, settings).
    pub(super) async fn post_external(
        &self,
        what: &str,
        params: &[(&str, &str)],
        data: ExternalData,
        timeout: Duration,
    ) -> Result<String, ClickHouseError> {
        let resp = self
            .http
            .post(&self.url)
            .query(params)
            .query(&self.cluster_settings)
            .basic_auth(&self.user, Some(&self.password.0))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={}", data.boundary),
            )
            .timeout(timeout)
            .body(data.body)
            .send()
            .await
            .map_err(|e| request_failed(what, &e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| request_failed(what, &e))?;
        if !status.is_success() {
            let code = clickhouse_error::code_of(&text);
            return Err(ClickHouseError {
                class: clickhouse_error::classify(code),
                code,
                message: format!("{what}: HTTP {status}: {}", text.trim()),
            });
        }
        Ok(text)
    }

    /// Runs one statement (DDL, or an INSERT … SELECT of the migrations and snapshots).
    pub(super) async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        let limit = self.ddl_timeout + self.query_timeout;
        let result = tokio::time::timeout(limit, self.admin.query(sql).execute())
            .await
            .map_err(|_| ClickHouseError::timeout("DDL"))?
            .map_err(ClickHouseError::from_client);
        match (&self.render.cluster, result) {
            (Some(cluster), Err(e)) if sql.contains("ON CLUSTER") && e.code == Some(159) => {
                Err(ddl_not_everywhere(cluster, self.ddl_timeout, &e))
            }
            (_, r) => r,
        }
    }
}

/// An `ON CLUSTER` statement some node did not finish in time: the nodes that did keep it, the
/// others run it when they come back (ClickHouse's DDL queue), and the migration stops here.
fn ddl_not_everywhere(cluster: &str, limit: Duration, e: &ClickHouseError) -> ClickHouseError {
    ClickHouseError {
        class: ErrorClass::Fatal,
        code: e.code,
        message: format!(
            "ON CLUSTER DDL did not finish on every node of cluster {cluster} within \
             clickhouse.ddl_timeout_ms ({} s): is every node up and connected to \
             ZooKeeper/Keeper? ({})",
            limit.as_secs(),
            e.message
        ),
    }
}
