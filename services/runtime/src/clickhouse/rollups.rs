//! The rollups' repair after a ClickHouse crash (docs/reliability.md "Rollups after a crash",
//! `umkm_core::rollups`): the consumers note the keys they find in the facts when an earlier
//! insert of them may have been cut short, and `refresh-metrics` inserts what the rollups lack
//! for those keys' groups.

use std::time::Duration;

use umkm_core::dedup::Key;
use umkm_core::rollups::{self, REPAIRS_TABLE, SUSPECTS_TABLE};

use super::external::ExternalData;
use super::{ClickHouse, ClickHouseError};

/// What one repair run did.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Suspect keys noted since the previous run (up to the settling time ago).
    pub suspects: u64,
    /// Per rollup: rows inserted, groups above the facts (left alone), groups still changing.
    pub per_rollup: Vec<(&'static str, usize, usize, usize)>,
}

impl ClickHouse {
    /// Notes `keys` (each with its `event_date` in days) of `facts` as suspects: found in the
    /// facts where an earlier insert of them may have been cut short between the facts' part
    /// and the views' parts.
    pub async fn note_suspects(
        &self,
        facts: &str,
        keys: &[(u16, Key)],
    ) -> Result<(), ClickHouseError> {
        if keys.is_empty() {
            return Ok(());
        }
        let rows = keys.iter().map(|(d, k)| {
            format!(
                "{}\t{}",
                umkm_core::time::date_string(*d),
                k.hex_inline().as_str()
            )
        });
        let data = ExternalData::lines("_umkm_suspects", rows);
        let sql = format!(
            "INSERT INTO {}.{SUSPECTS_TABLE} (fact_table, event_date, dedup_key, noted_at) \
             SELECT '{facts}', event_date, dedup_key, now() FROM _umkm_suspects",
            self.database
        );
        self.post_external(
            "rollup suspects",
            &[
                ("query", sql.as_str()),
                (
                    "_umkm_suspects_structure",
                    "event_date Date, dedup_key String",
                ),
                ("_umkm_suspects_format", "TabSeparated"),
            ],
            data,
            self.query_timeout,
        )
        .await
        .map(|_| ())
    }

    /// Compares every rollup with the facts over the groups of the suspects noted since the
    /// last run (and [`REVISIT_S`] before) up to `settle` ago, twice `settle` apart, and inserts what the rollups lack
    /// where both reads agree; then records how far it got. Run by one refresher at a time
    /// (docs/operations.md): two at once would both insert the same missing rows.
    pub async fn repair_rollups(&self, settle: Duration) -> Result<RepairReport, ClickHouseError> {
        let db = &self.database;
        if self.render.cluster.is_some() {
            // The suspects are on every node; this node's copy must hold what the others took.
            self.execute(&format!("SYSTEM SYNC REPLICA {db}.{SUSPECTS_TABLE}"))
                .await?;
        }
        let window = self
            .fetch_text(&format!(
                "SELECT (SELECT toUInt32(max(repaired_until)) FROM {db}.{REPAIRS_TABLE}), \
                 toUInt32(now()) - {}",
                settle.as_secs()
            ))
            .await?;
        let window = parse_window(&window).map_err(ClickHouseError::fatal)?;
        let mut report = RepairReport::default();
        if window.1 <= window.0 {
            return Ok(report);
        }
        report.suspects = self
            .fetch_text(&format!(
                "SELECT count() FROM {db}.{SUSPECTS_TABLE} WHERE noted_at > toDateTime({}, 'UTC') \
                 AND noted_at <= toDateTime({}, 'UTC')",
                window.0, window.1
            ))
            .await?
            .trim()
            .parse()
            .map_err(|_| ClickHouseError::fatal("rollup suspects: not a count"))?;
        let mut above_total = 0;
        let mut repaired_total = 0;
        if report.suspects > 0 {
            let mut first = Vec::new();
            for r in rollups::ALL {
                first.push(
                    self.fetch_text(&rollups::diff_sql(db, r, Some(window)))
                        .await?,
                );
            }
            tokio::time::sleep(settle).await;
            for (r, first) in rollups::ALL.into_iter().zip(first) {
                let second = self
                    .fetch_text(&rollups::diff_sql(db, r, Some(window)))
                    .await?;
                let d =
                    rollups::settled_deltas(r, &first, &second).map_err(ClickHouseError::fatal)?;
                for g in &d.above {
                    tracing::warn!(rollup = r.table, group = %g, "rollup holds more than the facts; left alone");
                }
                if !d.rows.is_empty() {
                    self.insert_repair(r, &d.rows).await?;
                    tracing::info!(
                        rollup = r.table,
                        rows = d.rows.len(),
                        "rollup repaired from the facts"
                    );
                }
                repaired_total += d.rows.len();
                above_total += d.above.len();
                report
                    .per_rollup
                    .push((r.table, d.rows.len(), d.above.len(), d.unsettled));
            }
        }
        self.execute(&format!(
            "INSERT INTO {db}.{REPAIRS_TABLE} (repaired_until, suspects, groups_repaired, groups_above, repaired_at) \
             VALUES (toDateTime({}, 'UTC'), {}, {repaired_total}, {above_total}, now())",
            window.1, report.suspects
        ))
        .await?;
        Ok(report)
    }

    async fn insert_repair(
        &self,
        rollup: &rollups::Rollup,
        rows: &[String],
    ) -> Result<(), ClickHouseError> {
        let data = ExternalData::lines("_umkm_repair", rows);
        let columns = rollup
            .keys
            .iter()
            .chain(rollup.sums)
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {}.{} ({columns}) SELECT {columns} FROM _umkm_repair",
            self.database, rollup.table
        );
        let structure = rollups::repair_structure(rollup);
        self.post_external(
            "rollup repair",
            &[
                ("query", sql.as_str()),
                ("_umkm_repair_structure", structure.as_str()),
                ("_umkm_repair_format", "TabSeparated"),
            ],
            data,
            self.insert_timeout,
        )
        .await
        .map(|_| ())
    }
}

/// How far back a run looks again before where the last one ended: a suspect whose INSERT
/// took long to finish can carry a `noted_at` the last run had already passed. Checking a group
/// again finds it equal and inserts nothing.
const REVISIT_S: u32 = 60;

/// `(from, until]` from "last run's end\tuntil" (0 before the first run), reaching
/// [`REVISIT_S`] behind the last run's end.
fn parse_window(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("rollup repair window: unexpected answer {text:?}");
    let (a, b) = text.trim().split_once('\t').ok_or_else(bad)?;
    let last: u32 = a.parse().map_err(|_| bad())?;
    Ok((
        last.saturating_sub(REVISIT_S),
        b.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_starts_where_the_last_run_ended() {
        assert_eq!(parse_window("0\t1700000000\n"), Ok((0, 1_700_000_000)));
        assert_eq!(
            parse_window("1700000000\t1700000300"),
            Ok((1_700_000_000 - REVISIT_S, 1_700_000_300))
        );
        assert!(parse_window("x").is_err());
    }
}
