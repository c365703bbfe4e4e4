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
    /// Bound to the target database, with validation set by server version.
    pub(super) data: Client,
    pub database: String,
    pub server_version: (u32, u32),
    pub server_version_text: String,
    pub(super) query_timeout: Duration,
    pub(super) insert_timeout: Duration,
    pub(super) render: RenderContext,
    /// Plain HTTP for what clickhouse-rs cannot send (the dedup lookup's external data).
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) user: String,
    pub(super) password: crate::config::Secret,
}

/// A reqwest error without the request URL (it carries the query, not secrets, but is long).
pub(super) fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<clickhouse>");
    }
    s
}

fn http_client(connect_timeout: Duration) -> Client {
    let mut connector = HttpConnector::new();
    // Without it every INSERT stalls ~40 ms on Nagle + delayed ACK (docs/benchmarks.md, "How the defaults were chosen").
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::with_http_client(
        HyperClient::builder(TokioExecutor::new())
            // Below ClickHouse's keep-alive timeout (3 s before 23.11, 10 s after).
            .pool_idle_timeout(Duration::from_millis(2_500))
            .pool_max_idle_per_host(4)
            .build(connector),
    )
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
        let admin = http_client(query_timeout)
            .with_url(&c.url)
            .with_user(&c.user)
            .with_password(&v.clickhouse_password.0)
            .with_compression(compression)
            .with_validation(false);
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
        let data = admin
            .clone()
            .with_database(&c.database)
            .with_validation(modern);
        Ok(ClickHouse {
            admin,
            data,
            database: c.database.clone(),
            server_version,
            server_version_text: version_text,
            query_timeout,
            insert_timeout: Duration::from_millis(c.insert_timeout_ms),
            render: RenderContext {
                database: c.database.clone(),
                cluster: c.cluster.clone(),
                replicated: c.replicated,
            },
            http: reqwest::Client::builder()
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

    pub(super) async fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        tokio::time::timeout(self.query_timeout * 3, self.admin.query(sql).execute())
            .await
            .map_err(|_| ClickHouseError::timeout("DDL"))?
            .map_err(ClickHouseError::from_client)
    }
}
