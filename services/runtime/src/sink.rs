//! ClickHouse side: connection (TCP_NODELAY, timeouts), server version detection, migrations,
//! the dedup lookup and the INSERT itself. Modern-only features are gated on the version the
//! server reports at start-up:
//! - servers >= 22.8: RowBinaryWithNamesAndTypes with schema validation (the crate's default),
//!   `insert_deduplication_token` per insert, `async_insert=0` (on by default since 26.2; we
//!   batch ourselves);
//! - older servers (the 18.16 test server): plain RowBinary without validation.

use std::collections::HashSet;
use std::time::Duration;

use clickhouse::{Client, Compression, RowOwned, RowWrite};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use umkm_core::chclass::{self, ErrorClass};
use umkm_core::migrations::{self, RenderContext};

use crate::config::Validated;

pub const MODERN: (u32, u32) = (22, 8);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub class: ErrorClass,
    pub code: Option<i32>,
    pub message: String,
}

impl SinkError {
    fn from_ch(e: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error as E;
        let message = e.to_string();
        let (class, code) = match &e {
            E::BadResponse(m) => {
                let code = chclass::code_of(m);
                (chclass::classify(code), code)
            }
            E::Network(_) | E::TimedOut => (ErrorClass::Retryable, None),
            // The row does not fit the table: a deployment problem, not a passing one.
            E::SchemaMismatch(_) | E::NotEnoughData | E::InvalidColumnsHeader(_) => {
                (ErrorClass::Fatal, None)
            }
            _ => (ErrorClass::Retryable, None),
        };
        SinkError {
            class,
            code,
            message,
        }
    }

    fn timeout(what: &str) -> Self {
        SinkError {
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
pub struct Sink {
    /// No default database: used for DDL and system tables.
    admin: Client,
    /// Bound to the target database, with validation set by server version.
    data: Client,
    pub database: String,
    pub server_version: (u32, u32),
    pub server_version_text: String,
    query_timeout: Duration,
    insert_timeout: Duration,
    render: RenderContext,
    /// Plain HTTP for what clickhouse-rs cannot send (the dedup lookup's external data).
    http: reqwest::Client,
    url: String,
    user: String,
    password: crate::config::Secret,
}

/// A reqwest error without the request URL (it carries the query, not secrets, but is long).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<clickhouse>");
    }
    s
}

fn http_client(connect_timeout: Duration) -> Client {
    let mut connector = HttpConnector::new();
    // Without it every INSERT stalls ~40 ms on Nagle + delayed ACK (PERF.md §6).
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

impl Sink {
    /// Connects and detects the server version. Fails if ClickHouse does not answer within the
    /// query timeout.
    pub async fn connect(v: &Validated) -> Result<Sink, SinkError> {
        let c = &v.s.clickhouse;
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
        .map_err(|_| SinkError::timeout("SELECT version()"))?
        .map_err(SinkError::from_ch)?;
        let server_version = migrations::parse_version(&version_text).ok_or(SinkError {
            class: ErrorClass::Fatal,
            code: None,
            message: format!("cannot parse server version {version_text:?}"),
        })?;
        let modern = server_version >= MODERN;
        let data = admin
            .clone()
            .with_database(&c.database)
            .with_validation(modern);
        Ok(Sink {
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
                .map_err(|e| SinkError {
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

    async fn execute(&self, sql: &str) -> Result<(), SinkError> {
        tokio::time::timeout(self.query_timeout * 3, self.admin.query(sql).execute())
            .await
            .map_err(|_| SinkError::timeout("DDL"))?
            .map_err(SinkError::from_ch)
    }

    /// Rebuilds every adoption snapshot (`umkm_core::metrics::ALL`) and swaps each in; returns
    /// (table, rows) per snapshot. Each build is bounded by `timeout`; the previous copy stays
    /// readable until its swap.
    pub async fn refresh_adoption(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(&'static str, u64)>, SinkError> {
        let mut out = Vec::new();
        for snap in umkm_core::metrics::ALL {
            out.push((snap.table, self.refresh_snapshot(snap, timeout).await?));
        }
        Ok(out)
    }

    async fn refresh_snapshot(
        &self,
        snap: &umkm_core::metrics::Snapshot,
        timeout: Duration,
    ) -> Result<u64, SinkError> {
        let db = &self.database;
        let table = snap.table;
        let exists = |t: String| {
            let q = self.admin.query(&format!("EXISTS TABLE {db}.{t}"));
            async move {
                tokio::time::timeout(self.query_timeout, q.fetch_one::<u8>())
                    .await
                    .map_err(|_| SinkError::timeout("EXISTS TABLE"))?
                    .map_err(SinkError::from_ch)
            }
        };
        if exists(table.into()).await? == 0 && exists(format!("{table}_prev")).await? == 1 {
            tracing::warn!(table, "repairing an interrupted snapshot swap");
            self.execute(&snap.repair(db)).await?;
        }
        for s in snap.prepare(db) {
            self.execute(&s).await?;
        }
        let build = snap.build(db);
        tokio::time::timeout(timeout, self.admin.query(&build).execute())
            .await
            .map_err(|_| SinkError::timeout("adoption snapshot build"))?
            .map_err(SinkError::from_ch)?;
        for s in snap.swap(db) {
            self.execute(&s).await?;
        }
        tokio::time::timeout(
            self.query_timeout,
            self.admin
                .query(&format!("SELECT count() FROM {db}.{table}"))
                .fetch_one::<u64>(),
        )
        .await
        .map_err(|_| SinkError::timeout("count"))?
        .map_err(SinkError::from_ch)
    }

    /// Applies every migration not yet recorded; returns (applied, skipped-for-version).
    pub async fn migrate(&self) -> Result<(Vec<String>, Vec<String>), SinkError> {
        for stmt in migrations::BOOTSTRAP {
            for s in migrations::render(stmt, &self.render) {
                self.execute(&s).await?;
            }
        }
        let applied: Vec<(u32, String)> = tokio::time::timeout(
            self.query_timeout,
            self.admin
                .query(&format!(
                    "SELECT version, checksum FROM {}.schema_migrations",
                    self.database
                ))
                .fetch_all::<(u32, String)>(),
        )
        .await
        .map_err(|_| SinkError::timeout("read schema_migrations"))?
        .map_err(SinkError::from_ch)?;
        let mut done = Vec::new();
        let mut skipped = Vec::new();
        for m in migrations::ALL {
            let sum = migrations::checksum(m.sql);
            if let Some((_, old)) = applied.iter().find(|(v, _)| *v == m.version) {
                if *old != sum {
                    tracing::warn!(
                        migration = m.name,
                        "migration file changed after it was applied; not re-applied"
                    );
                }
                continue;
            }
            if !migrations::applies_to(m, self.server_version) {
                skipped.push(m.name.to_string());
                continue;
            }
            for stmt in migrations::render(m.sql, &self.render) {
                match self.execute(&stmt).await {
                    Err(e)
                        if e.code == Some(migrations::COLUMN_EXISTS)
                            && migrations::is_add_column(&stmt) =>
                    {
                        tracing::info!(migration = m.name, "column already added");
                    }
                    r => r?,
                }
            }
            self.execute(&format!(
                "INSERT INTO {}.schema_migrations (version, name, checksum, applied_at) VALUES ({}, '{}', '{}', now())",
                self.database, m.version, m.name, sum
            ))
            .await?;
            tracing::info!(migration = m.name, "migration applied");
            done.push(m.name.to_string());
        }
        Ok((done, skipped))
    }

    /// Which of `keys` (hex dedup keys with their `event_date` in days) are already in `table`.
    /// With `by_date` the lookup is restricted to the keys' dates (the primary index prefix);
    /// families whose key does not determine the date look at every date.
    ///
    /// The keys travel as *external data* (a temporary table `_umkm_keys` sent in a multipart
    /// request body, supported by every ClickHouse version), not as an `IN ('…', …)` literal:
    /// parsing 20,000 literals took ClickHouse 18.16 about 0.3 s per chunk, the external table
    /// about 0.02 s (docs/benchmarks.md).
    pub async fn existing_keys(
        &self,
        table: &str,
        keys: &[(u16, String)],
        chunk: usize,
        by_date: bool,
    ) -> Result<HashSet<String>, SinkError> {
        let mut found = HashSet::new();
        self.lookup(table, "dedup_key", keys, chunk, by_date, |l| {
            found.insert(l.to_string());
        })
        .await?;
        Ok(found)
    }

    /// Like [`Sink::existing_keys`] on the keys' dates, with each found row's `event_time`
    /// (UTC seconds): the near-midnight check needs to know when the other report happened.
    pub async fn existing_keys_with_time(
        &self,
        table: &str,
        keys: &[(u16, String)],
        chunk: usize,
    ) -> Result<Vec<(String, i64)>, SinkError> {
        let mut found = Vec::new();
        self.lookup(
            table,
            "dedup_key, toUInt32(event_time)",
            keys,
            chunk,
            true,
            |l| {
                if let Some((k, t)) = l.split_once('\t')
                    && let Ok(t) = t.parse()
                {
                    found.push((k.to_string(), t));
                }
            },
        )
        .await?;
        Ok(found)
    }

    /// One lookup of `keys` in `table` per `chunk`, handing each answer line to `each`.
    async fn lookup(
        &self,
        table: &str,
        select: &str,
        keys: &[(u16, String)],
        chunk: usize,
        by_date: bool,
        mut each: impl FnMut(&str),
    ) -> Result<(), SinkError> {
        const BOUNDARY: &str = "umkm-pulse-external-data-5f0c2a";
        for part in keys.chunks(chunk.max(1)) {
            let mut sql = format!("SELECT {select} FROM {}.{} WHERE ", self.database, table);
            if by_date {
                let dates: std::collections::BTreeSet<u16> = part.iter().map(|(d, _)| *d).collect();
                sql.push_str("event_date IN (");
                for (i, d) in dates.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push('\'');
                    sql.push_str(&umkm_core::time::date_string(*d));
                    sql.push('\'');
                }
                sql.push_str(") AND ");
            }
            sql.push_str("dedup_key IN _umkm_keys FORMAT TabSeparated");
            let mut body = Vec::with_capacity(part.len() * 33 + 256);
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"_umkm_keys\"; filename=\"keys.tsv\"\r\nContent-Type: text/tab-separated-values\r\n\r\n"
                )
                .as_bytes(),
            );
            for (i, (_, k)) in part.iter().enumerate() {
                // Keys are 32 hex characters (built by the service): nothing to escape.
                debug_assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
                if i > 0 {
                    body.push(b'\n');
                }
                body.extend_from_slice(k.as_bytes());
            }
            body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
            let req = self
                .http
                .post(&self.url)
                .query(&[
                    ("query", sql.as_str()),
                    ("_umkm_keys_structure", "dedup_key String"),
                    ("_umkm_keys_format", "TabSeparated"),
                    (
                        "max_execution_time",
                        &self.query_timeout.as_secs().max(1).to_string(),
                    ),
                ])
                .basic_auth(&self.user, Some(&self.password.0))
                .header(
                    "Content-Type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .timeout(self.query_timeout)
                .body(body);
            let resp = req.send().await.map_err(|e| SinkError {
                class: ErrorClass::Retryable,
                code: None,
                message: format!("dedup lookup: {}", without_url(&e)),
            })?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| SinkError {
                class: ErrorClass::Retryable,
                code: None,
                message: format!("dedup lookup: {}", without_url(&e)),
            })?;
            if !status.is_success() {
                let code = chclass::code_of(&text);
                return Err(SinkError {
                    class: chclass::classify(code),
                    code,
                    message: format!("dedup lookup: HTTP {status}: {}", text.trim()),
                });
            }
            text.lines().filter(|l| !l.is_empty()).for_each(&mut each);
        }
        Ok(())
    }

    /// Ids of running queries that start with `prefix` (our inserts carry
    /// `umkm-<table>-p<partitions>-<uuid>`): a timed-out insert may still run on the server.
    pub async fn running_ids(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let sql = format!(
            "SELECT query_id FROM system.processes WHERE startsWith(query_id, '{}')",
            prefix.replace(['\'', '\\'], "")
        );
        tokio::time::timeout(
            self.query_timeout,
            self.admin.query(&sql).fetch_all::<String>(),
        )
        .await
        .map_err(|_| SinkError::timeout("system.processes"))?
        .map_err(SinkError::from_ch)
    }

    /// One INSERT of `rows` into `table`, bounded by the insert timeout.
    pub async fn insert<'r, R: RowOwned + RowWrite + 'r>(
        &self,
        table: &str,
        rows: impl IntoIterator<Item = &'r R>,
        query_id: &str,
        dedup_token: &str,
    ) -> Result<(), SinkError> {
        let mut ins = self
            .data
            .insert::<R>(table)
            .await
            .map_err(SinkError::from_ch)?
            .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout))
            .with_setting("query_id", query_id);
        if self.modern() {
            ins = ins
                .with_setting("insert_deduplication_token", dedup_token)
                .with_setting("async_insert", "0");
        }
        for r in rows {
            ins.write(r).await.map_err(SinkError::from_ch)?;
        }
        ins.end().await.map_err(SinkError::from_ch)
    }

    /// Runs a read query (tests and the demo): rows as TSV text.
    pub async fn query_tsv(&self, sql: &str) -> Result<String, SinkError> {
        let mut cursor = self
            .admin
            .query(sql)
            .fetch_bytes("TabSeparated")
            .map_err(SinkError::from_ch)?;
        let bytes = tokio::time::timeout(self.query_timeout, cursor.collect())
            .await
            .map_err(|_| SinkError::timeout("query"))?
            .map_err(SinkError::from_ch)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
