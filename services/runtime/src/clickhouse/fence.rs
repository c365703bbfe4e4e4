//! Fencing: a consumer that lost its partitions cannot insert their rows (README "Delivery
//! guarantees").
//!
//! A consumer *claims* each partition it gains in `partition_claims` before its first lookup
//! for it; claims are ordered by `(claim, claim_id)` and a new one is numbered above every
//! claim it reads. Every INSERT then carries the claims its batch was looked up under and
//! succeeds only if they are still the latest: the rows travel as external data and the
//! statement is `INSERT … SELECT … FROM _umkm_rows WHERE throwIf(<claims not current>) = 0`,
//! so the check runs on the server after the whole body has arrived and after the INSERT is
//! listed in `system.processes`. A consumer frozen (SIGSTOP) past the session timeout with a
//! batch in hand therefore either inserts before the new owner's claim (and the new owner,
//! which waits for our running inserts after claiming and before looking up, sees those rows)
//! or is refused with code 395 and inserts nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::external::ExternalData;
use super::rowbinary;
use super::{ClickHouse, ClickHouseError, InsertId};
use umkm_core::clickhouse_error::ErrorClass;

/// FUNCTION_THROW_IF_VALUE_IS_NON_ZERO: the fence refused the insert.
pub const FENCED_CODE: i32 = 395;

pub const CLAIMS_TABLE: &str = "partition_claims";

/// The claims a batch was looked up under: its topic and, per partition, the claim id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fence {
    pub topic: String,
    pub claims: BTreeMap<i32, String>,
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn partition_list(partitions: impl Iterator<Item = i32>) -> String {
    partitions
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The highest claim number of each of `partitions`.
fn latest_claims_sql(db: &str, table: &str, topic: &str, partitions: &BTreeSet<i32>) -> String {
    format!(
        "SELECT partition, max(claim) FROM {db}.{CLAIMS_TABLE} WHERE target_table = {} AND topic = {} \
         AND partition IN ({}) GROUP BY partition",
        quoted(table),
        quoted(topic),
        partition_list(partitions.iter().copied())
    )
}

/// Claims numbered above `latest` (absent: none yet), one fresh id each.
fn new_claims(
    partitions: &BTreeSet<i32>,
    latest: &BTreeMap<i32, u64>,
) -> BTreeMap<i32, (u64, String)> {
    partitions
        .iter()
        .map(|p| {
            let claim = latest.get(p).map_or(1, |c| c + 1);
            (*p, (claim, uuid::Uuid::new_v4().simple().to_string()))
        })
        .collect()
}

fn insert_claims_sql(
    db: &str,
    table: &str,
    topic: &str,
    claims: &BTreeMap<i32, (u64, String)>,
) -> String {
    let values: Vec<String> = claims
        .iter()
        .map(|(p, (claim, id))| {
            format!(
                "({}, {}, {p}, {claim}, {}, now())",
                quoted(table),
                quoted(topic),
                quoted(id)
            )
        })
        .collect();
    format!(
        "INSERT INTO {db}.{CLAIMS_TABLE} (target_table, topic, partition, claim, claim_id, claimed_at) VALUES {}",
        values.join(", ")
    )
}

/// Zero while every claim of `fence` is its partition's latest, else non-zero.
pub fn fence_condition(db: &str, table: &str, fence: &Fence) -> String {
    let pairs: Vec<String> = fence
        .claims
        .iter()
        .map(|(p, id)| format!("({p}, {})", quoted(id)))
        .collect();
    format!(
        "(SELECT count() FROM (SELECT partition, argMax(claim_id, (claim, claim_id)) AS latest \
         FROM {db}.{CLAIMS_TABLE} WHERE target_table = {} AND topic = {} AND partition IN ({}) \
         GROUP BY partition) WHERE (partition, latest) IN ({})) != {}",
        quoted(table),
        quoted(&fence.topic),
        partition_list(fence.claims.keys().copied()),
        pairs.join(", "),
        fence.claims.len()
    )
}

/// The fenced INSERT of `columns` into `db.table` from the external table `_umkm_rows` (public
/// for the chDB check of current ClickHouse, which reads a real table of that name instead).
pub fn fenced_insert_sql(db: &str, table: &str, columns: &[&str], fence: &Fence) -> String {
    let cols = columns.join(", ");
    format!(
        "INSERT INTO {db}.{table} ({cols}) SELECT {cols} FROM _umkm_rows WHERE throwIf({}) = 0",
        fence_condition(db, table, fence)
    )
}

/// The external table's structure (`name Type, …`) for `columns` from the table's
/// `(name, type)` list. ClickHouse splits the structure on spaces and commas, so a type
/// containing either cannot travel this way; a column the table lacks is a deployment error.
fn structure(table: &str, columns: &[&str], types: &[(String, String)]) -> Result<String, String> {
    let mut out = Vec::with_capacity(columns.len());
    for c in columns {
        let Some((_, t)) = types.iter().find(|(n, _)| n == c) else {
            return Err(format!("table {table} has no column {c}"));
        };
        if t.contains([' ', ',']) {
            return Err(format!(
                "column {table}.{c} has type {t}, which external data cannot declare"
            ));
        }
        out.push(format!("{c} {t}"));
    }
    Ok(out.join(", "))
}

impl ClickHouseError {
    /// The fence refused the insert: some partition of the batch was claimed by another
    /// consumer since.
    pub fn is_fenced(&self) -> bool {
        self.code == Some(FENCED_CODE)
    }
}

impl ClickHouse {
    /// Claims `partitions` of `topic` for inserts into `table`: returns each one's claim id.
    /// On a cluster the claim is on every replica before this returns (`insert_quorum`).
    pub async fn claim(
        &self,
        table: &str,
        topic: &str,
        partitions: &BTreeSet<i32>,
    ) -> Result<BTreeMap<i32, String>, ClickHouseError> {
        let db = &self.database;
        let text = self
            .fetch_text(&latest_claims_sql(db, table, topic, partitions))
            .await?;
        let latest: BTreeMap<i32, u64> = text
            .lines()
            .filter_map(|l| {
                let (p, c) = l.split_once('\t')?;
                Some((p.parse().ok()?, c.parse().ok()?))
            })
            .collect();
        let claims = new_claims(partitions, &latest);
        let mut q = self
            .admin
            .query(&insert_claims_sql(db, table, topic, &claims));
        if self.render.cluster.is_some() {
            let replicas = self.replicas_of(CLAIMS_TABLE).await?;
            q = q
                .with_setting("insert_quorum", replicas.to_string())
                .with_setting(
                    "insert_quorum_timeout",
                    self.query_timeout.as_millis().to_string(),
                );
        }
        tokio::time::timeout(self.query_timeout, q.execute())
            .await
            .map_err(|_| ClickHouseError::timeout("partition claim"))?
            .map_err(ClickHouseError::from_client)?;
        Ok(claims.into_iter().map(|(p, (_, id))| (p, id)).collect())
    }

    /// The external-data structure of `columns` of `table`, read once per table.
    async fn structure_of(
        &self,
        table: &str,
        columns: &[&str],
    ) -> Result<Arc<str>, ClickHouseError> {
        if let Some(s) = self.structures.lock().expect("structures").get(table) {
            return Ok(s.clone());
        }
        let text = self
            .fetch_text(&format!(
                "SELECT name, type FROM system.columns WHERE database = {} AND table = {}",
                quoted(&self.database),
                quoted(table)
            ))
            .await?;
        let types: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            // TabSeparated escapes the quote of DateTime('UTC').
            .map(|(n, t)| (n.to_string(), t.replace("\\'", "'")))
            .collect();
        let s: Arc<str> = structure(table, columns, &types)
            .map_err(|message| ClickHouseError {
                class: ErrorClass::Fatal,
                code: None,
                message,
            })?
            .into();
        self.structures
            .lock()
            .expect("structures")
            .insert(table.to_string(), s.clone());
        Ok(s)
    }

    /// One fenced INSERT of `rows` (fields named `columns`, in order) into `id.table`, bounded
    /// by the insert timeout; refused with [`FENCED_CODE`] when `fence` is no longer current.
    /// `dedup_token` is sent to servers >= 22.8 only.
    pub async fn insert<'r, R: Serialize + 'r>(
        &self,
        id: &InsertId,
        columns: &[&str],
        rows: impl IntoIterator<Item = &'r R>,
        dedup_token: &str,
        fence: &Fence,
    ) -> Result<(), ClickHouseError> {
        let structure = self.structure_of(&id.table, columns).await?;
        let data = ExternalData::build("_umkm_rows", |body| {
            rows.into_iter()
                .try_for_each(|r| rowbinary::write_row(body, r))
        })
        .map_err(|e| ClickHouseError::fatal(e.to_string()))?;
        let sql = fenced_insert_sql(&self.database, &id.table, columns, fence);
        let query_id = id.to_string();
        let mut params = vec![
            ("query", sql.as_str()),
            ("query_id", query_id.as_str()),
            ("_umkm_rows_structure", &*structure),
            ("_umkm_rows_format", "RowBinary"),
        ];
        if self.modern() {
            params.push(("insert_deduplication_token", dedup_token));
            params.push(("async_insert", "0"));
        }
        self.post_external("insert", &params, data, self.insert_timeout)
            .await
            .map(|_| ())
    }

    /// A query's answer as text, bounded by the query timeout.
    pub(super) async fn fetch_text(&self, sql: &str) -> Result<String, ClickHouseError> {
        let bytes = tokio::time::timeout(self.query_timeout, async {
            let mut cursor = self.admin.query(sql).fetch_bytes("TabSeparated")?;
            cursor.collect().await
        })
        .await
        .map_err(|_| ClickHouseError::timeout("query"))?
        .map_err(ClickHouseError::from_client)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence() -> Fence {
        Fence {
            topic: "qris".into(),
            claims: BTreeMap::from([(0, "a".to_string()), (3, "b".to_string())]),
        }
    }

    #[test]
    fn the_insert_is_refused_unless_every_claim_is_still_the_latest() {
        let sql = fenced_insert_sql("umkm", "qris_payments", &["x", "y"], &fence());
        assert_eq!(
            sql,
            "INSERT INTO umkm.qris_payments (x, y) SELECT x, y FROM _umkm_rows WHERE throwIf(\
             (SELECT count() FROM (SELECT partition, argMax(claim_id, (claim, claim_id)) AS latest \
             FROM umkm.partition_claims WHERE target_table = 'qris_payments' AND topic = 'qris' \
             AND partition IN (0,3) GROUP BY partition) WHERE (partition, latest) IN ((0, 'a'), (3, 'b'))) != 2) = 0"
        );
    }

    #[test]
    fn a_new_claim_is_numbered_above_the_latest_one() {
        let parts = BTreeSet::from([1, 2]);
        let claims = new_claims(&parts, &BTreeMap::from([(2, 7)]));
        assert_eq!(claims[&1].0, 1);
        assert_eq!(claims[&2].0, 8);
        assert_ne!(claims[&1].1, claims[&2].1);
        let sql = insert_claims_sql("db", "t", "top'ic", &claims);
        assert!(sql.starts_with("INSERT INTO db.partition_claims (target_table, topic, partition, claim, claim_id, claimed_at) VALUES ('t', 'top\\'ic', 1, 1, '"), "{sql}");
        assert_eq!(
            latest_claims_sql("db", "t", "q", &parts),
            "SELECT partition, max(claim) FROM db.partition_claims WHERE target_table = 't' AND topic = 'q' AND partition IN (1,2) GROUP BY partition"
        );
    }

    #[test]
    fn the_structure_follows_the_rows_fields_with_the_tables_types() {
        let types = vec![
            ("b".to_string(), "DateTime('UTC')".to_string()),
            ("a".to_string(), "Nullable(Date)".to_string()),
        ];
        assert_eq!(
            structure("t", &["a", "b"], &types).unwrap(),
            "a Nullable(Date), b DateTime('UTC')"
        );
        assert!(
            structure("t", &["c"], &types)
                .unwrap_err()
                .contains("no column c")
        );
        let decimal = vec![("d".to_string(), "Decimal(18, 2)".to_string())];
        assert!(structure("t", &["d"], &decimal).is_err());
    }
}
