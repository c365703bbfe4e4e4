//! The INSERT of a batch, and its query id ([`InsertId`]): a later attempt, or the next owner
//! of a partition, finds an earlier insert still running on the server by it.

use std::collections::BTreeSet;
use std::fmt;

use umkm_core::dedup::Key;

use super::{ClickHouse, ClickHouseError};

/// The query id of one INSERT: `umkm-<table>-p<partition>_<partition>…-<nonce>`. Table names
/// are identifiers (no `-`), so the id parses back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertId {
    pub table: String,
    pub partitions: BTreeSet<i32>,
    nonce: String,
}

impl InsertId {
    pub fn new(table: &str, partitions: BTreeSet<i32>) -> InsertId {
        InsertId {
            table: table.to_string(),
            partitions,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// What every insert id of `table` starts with.
    pub fn prefix(table: &str) -> String {
        format!("umkm-{table}-p")
    }

    pub fn parse(id: &str) -> Option<InsertId> {
        let (table, rest) = id.strip_prefix("umkm-")?.split_once("-p")?;
        let (parts, nonce) = rest.split_once('-')?;
        let partitions = parts
            .split('_')
            .map(|p| p.parse().ok())
            .collect::<Option<BTreeSet<i32>>>()?;
        Some(InsertId {
            table: table.to_string(),
            partitions,
            nonce: nonce.to_string(),
        })
    }

    /// Whether this insert writes rows of any of `partitions`.
    pub fn touches(&self, partitions: &BTreeSet<i32>) -> bool {
        !self.partitions.is_disjoint(partitions)
    }
}

impl fmt::Display for InsertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&InsertId::prefix(&self.table))?;
        for (i, p) in self.partitions.iter().enumerate() {
            if i > 0 {
                f.write_str("_")?;
            }
            write!(f, "{p}")?;
        }
        write!(f, "-{}", self.nonce)
    }
}

/// The `insert_deduplication_token` of a batch on servers >= 22.8: the same keys give the same
/// token, so a re-sent identical batch is dropped by the server.
pub fn dedup_token(keys: impl Iterator<Item = Key>) -> String {
    let mut sorted: Vec<Key> = keys.collect();
    sorted.sort();
    let hexes: Vec<String> = sorted.iter().map(|k| k.hex()).collect();
    let refs: Vec<&str> = hexes.iter().map(String::as_str).collect();
    Key::of("insert", &refs).hex()
}

impl ClickHouse {
    /// Our inserts into `table` still running on the server: one that timed out on our side
    /// may still be writing.
    pub async fn running_inserts(&self, table: &str) -> Result<Vec<InsertId>, ClickHouseError> {
        let sql = format!(
            "SELECT query_id FROM system.processes WHERE startsWith(query_id, '{}')",
            InsertId::prefix(table)
        );
        let ids = tokio::time::timeout(
            self.query_timeout,
            self.admin.query(&sql).fetch_all::<String>(),
        )
        .await
        .map_err(|_| ClickHouseError::timeout("system.processes"))?
        .map_err(ClickHouseError::from_client)?;
        Ok(ids.iter().filter_map(|id| InsertId::parse(id)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_ids_format_and_parse_back() {
        let id = InsertId::new("qris_payments", BTreeSet::from([3, 0, 11]));
        let text = id.to_string();
        assert!(text.starts_with("umkm-qris_payments-p0_3_11-"), "{text}");
        assert!(text.starts_with(&InsertId::prefix("qris_payments")));
        assert_eq!(InsertId::parse(&text), Some(id.clone()));
        assert!(id.touches(&BTreeSet::from([11, 40])));
        assert!(!id.touches(&BTreeSet::from([1, 2])));
        for bad in ["", "umkm-t", "umkm-t-px-1", "other-t-p1-n", "umkm-t-p1"] {
            assert_eq!(InsertId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_dedup_token_depends_on_the_keys_not_their_order() {
        let a = dedup_token([Key(1), Key(2)].into_iter());
        assert_eq!(a, dedup_token([Key(2), Key(1)].into_iter()));
        assert_ne!(a, dedup_token([Key(1), Key(3)].into_iter()));
        assert_eq!(a.len(), 32);
    }
}
