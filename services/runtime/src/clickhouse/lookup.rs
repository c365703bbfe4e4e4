//! The dedup lookup: which of a batch's keys are already in the table.
//!
//! The keys travel as *external data* (a temporary table `_umkm_keys` in a multipart request
//! body, supported by every ClickHouse version), not as an `IN ('…', …)` literal: parsing
//! 20,000 literals took ClickHouse 18.16 about 0.3 s per chunk, the external table about
//! 0.02 s (docs/benchmarks.md). When the key determines the date, the query names the batch's
//! dates so that it reads the primary index prefix `(event_date, dedup_key)`.

use std::collections::{BTreeSet, HashMap};

use umkm_core::dedup::Key;

use super::external::ExternalData;
use super::{ClickHouse, ClickHouseError};

/// Where a found row came from (its `source_*` columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundAt {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One lookup query: its SQL and the keys as the external table `_umkm_keys`, one per line.
#[derive(Debug, PartialEq, Eq)]
struct LookupRequest {
    sql: String,
    keys: ExternalData,
}

/// Builds the lookup of `keys` (each with its `event_date` in days) in `database.table`.
fn lookup_request(
    database: &str,
    table: &str,
    select: &str,
    keys: &[(u16, Key)],
    by_date: bool,
) -> LookupRequest {
    let mut sql = format!("SELECT {select} FROM {database}.{table} WHERE ");
    if by_date {
        let dates: BTreeSet<u16> = keys.iter().map(|(d, _)| *d).collect();
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
    let keys = ExternalData::lines(
        "_umkm_keys",
        // 32 hex characters: nothing to escape.
        keys.iter().map(|(_, k)| k.hex_inline()),
    );
    LookupRequest { sql, keys }
}

impl ClickHouse {
    /// Which of `keys` (dedup keys with their `event_date` in days) are already in `table`, each
    /// with the source coordinates of the row found (the pipeline tells a redelivery of a
    /// message it may have inserted from a publisher's duplicate by them). With `by_date` the
    /// lookup is restricted to the keys' dates (the primary index prefix); families whose key
    /// does not determine the date look at every date.
    pub async fn existing_keys(
        &self,
        table: &str,
        keys: &[(u16, Key)],
        chunk: usize,
        by_date: bool,
    ) -> Result<HashMap<Key, FoundAt>, ClickHouseError> {
        let mut found = HashMap::new();
        self.lookup(
            table,
            "dedup_key, source_topic, source_partition, source_offset",
            keys,
            chunk,
            by_date,
            |l| {
                let mut f = l.split('\t');
                if let (Some(k), Some(topic), Some(p), Some(o)) =
                    (f.next(), f.next(), f.next(), f.next())
                    && let Some(k) = Key::from_hex(k)
                {
                    found.insert(
                        k,
                        FoundAt {
                            topic: topic.to_string(),
                            partition: p.parse().unwrap_or(-1),
                            offset: o.parse().unwrap_or(-1),
                        },
                    );
                }
            },
        )
        .await?;
        Ok(found)
    }

    /// Like [`ClickHouse::existing_keys`] on the keys' dates, with each found row's
    /// `event_time` (UTC seconds): the near-midnight check needs to know when the other
    /// report happened.
    pub async fn existing_keys_with_time(
        &self,
        table: &str,
        keys: &[(u16, Key)],
        chunk: usize,
    ) -> Result<HashMap<Key, i64>, ClickHouseError> {
        let mut found = HashMap::new();
        self.lookup(
            table,
            "dedup_key, toUInt32(event_time)",
            keys,
            chunk,
            true,
            |l| {
                if let Some((k, t)) = l.split_once('\t')
                    && let Some(k) = Key::from_hex(k)
                    && let Ok(t) = t.parse()
                {
                    found.insert(k, t);
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
        keys: &[(u16, Key)],
        chunk: usize,
        by_date: bool,
        mut each: impl FnMut(&str),
    ) -> Result<(), ClickHouseError> {
        let max_execution_time = self.query_timeout.as_secs().max(1).to_string();
        for part in keys.chunks(chunk.max(1)) {
            let req = lookup_request(&self.database, table, select, part, by_date);
            let text = self
                .post_external(
                    "dedup lookup",
                    &[
                        ("query", req.sql.as_str()),
                        ("_umkm_keys_structure", "dedup_key String"),
                        ("_umkm_keys_format", "TabSeparated"),
                        ("max_execution_time", &max_execution_time),
                    ],
                    req.keys,
                    self.query_timeout,
                )
                .await?;
            text.lines().filter(|l| !l.is_empty()).for_each(&mut each);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_dates_and_sends_the_keys_as_external_data() {
        let a = Key(0xab);
        let b = Key(u128::MAX);
        // 20454 = 2026-01-01, 20455 = 2026-01-02.
        let r = lookup_request(
            "umkm",
            "qris_payments",
            "dedup_key",
            &[(20455, a), (20454, b), (20455, b)],
            true,
        );
        assert_eq!(
            r.sql,
            "SELECT dedup_key FROM umkm.qris_payments WHERE event_date IN ('2026-01-01','2026-01-02') AND dedup_key IN _umkm_keys FORMAT TabSeparated"
        );
        assert_eq!(
            String::from_utf8_lossy(r.keys.data())
                .lines()
                .collect::<Vec<_>>(),
            [a.hex().as_str(), b.hex().as_str(), b.hex().as_str()]
        );
        assert!(String::from_utf8_lossy(&r.keys.body).contains("name=\"_umkm_keys\""));
    }

    #[test]
    fn without_dates_the_lookup_reads_every_date() {
        let r = lookup_request("db", "merchant_events", "dedup_key", &[(1, Key(1))], false);
        assert_eq!(
            r.sql,
            "SELECT dedup_key FROM db.merchant_events WHERE dedup_key IN _umkm_keys FORMAT TabSeparated"
        );
    }
}
