//! The adoption snapshots' rebuild (`<service> refresh-metrics`, docs/metrics.md): statements that
//! build `<table>_next` from an activity view and swap it in. Two snapshots:
//! - [`MONTHLY`] `adoption_merchant_monthly` (0013): every month of history;
//! - [`DAILY`] `adoption_merchant_daily` (0014): the last [`DAILY_WINDOW_DAYS`] days of data.
//!
//! SQL accepted by ClickHouse 18.16 and current servers (no EXCHANGE TABLES on 18.16, so two
//! RENAMEs; a crash between them is repaired by the next run).

/// Days the daily snapshot covers, ending at the latest `event_date` of the daily rollup (not at
/// today, so a backfill of older data gets its day and week panels too; event times more than
/// 10 minutes in the future are rejected by the consumers, so the anchor cannot run ahead).
pub const DAILY_WINDOW_DAYS: u32 = 120;

#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub table: &'static str,
    /// The view it is built from.
    source: &'static str,
    /// The period column (`month` or `event_date`).
    period: &'static str,
    /// The rollup whose latest `event_date` anchors a window, if the snapshot has one.
    window_anchor: Option<&'static str>,
    /// Its PARTITION BY and ORDER BY, as its migration creates it.
    storage: &'static str,
}

/// Where a snapshot is rebuilt: on the one server, or on every node of a cluster at once (a
/// copy replicated to every node under a Keeper path of its own, `build`, swapped in on every
/// node by `RENAME … ON CLUSTER`).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Server,
    Cluster { name: &'a str, build: &'a str },
}

impl Scope<'_> {
    fn on_cluster(&self) -> String {
        match self {
            Scope::Server => String::new(),
            Scope::Cluster { name, .. } => format!(" ON CLUSTER {name}"),
        }
    }
}

pub const MONTHLY: Snapshot = Snapshot {
    table: "adoption_merchant_monthly",
    source: "v_merchant_activity_monthly",
    period: "month",
    window_anchor: None,
    storage: "PARTITION BY toYYYYMM(month)\nORDER BY (month, kab_kota_code, sector, channel, merchant_key)",
};

pub const DAILY: Snapshot = Snapshot {
    table: "adoption_merchant_daily",
    source: "v_merchant_activity_daily",
    period: "event_date",
    window_anchor: Some("payments_merchant_daily"),
    storage: "PARTITION BY toYYYYMM(event_date)\nORDER BY (event_date, kab_kota_code, sector, channel, merchant_key)",
};

/// Every snapshot, in rebuild order.
pub const ALL: &[Snapshot] = &[MONTHLY, DAILY];

/// The grouping columns after the period, in table order.
const GROUP: &str = "merchant_key, merchant_registered, province_code, kab_kota_code, \
                     kecamatan_code, sector, channel";

impl Snapshot {
    /// Before the rebuild: drop leftovers, create an empty `_next` copy.
    pub fn prepare(&self, db: &str, scope: Scope) -> Vec<String> {
        let t = self.table;
        let on = scope.on_cluster();
        let create = match scope {
            Scope::Server => format!("CREATE TABLE {db}.{t}_next AS {db}.{t}"),
            Scope::Cluster { name, build } => format!(
                "CREATE TABLE {db}.{t}_next ON CLUSTER {name} AS {db}.{t} ENGINE = \
                 ReplicatedMergeTree('/clickhouse/tables/all/{db}/{t}_{build}', '{{replica}}') {}",
                self.storage
            ),
        };
        vec![format!("DROP TABLE IF EXISTS {db}.{t}_next{on}"), create]
    }

    /// The rebuild itself. No aliases on the sums: ClickHouse 18.16 rejects `sum(x) AS x`.
    pub fn build(&self, db: &str) -> String {
        let (t, p, src) = (self.table, self.period, self.source);
        let window = match self.window_anchor {
            Some(anchor) => format!(
                " WHERE {p} >= (SELECT max(event_date) FROM {db}.{anchor}) - {}",
                DAILY_WINDOW_DAYS - 1
            ),
            None => String::new(),
        };
        format!(
            "INSERT INTO {db}.{t}_next ({p}, {GROUP}, success_count, success_value_idr, \
             undone_count, undone_value_idr, net_count, net_value_idr, refund_count, \
             refund_value_idr, unlinked_refund_count, cancelled_count, failed_count, refreshed_at) \
             SELECT {p}, {GROUP}, sum(success_count), sum(success_value_idr), sum(undone_count), \
             sum(undone_value_idr), sum(net_count), sum(net_value_idr), sum(refund_count), \
             sum(refund_value_idr), sum(unlinked_refund_count), sum(cancelled_count), \
             sum(failed_count), now() \
             FROM {db}.{src}{window} GROUP BY {p}, {GROUP}"
        )
    }

    /// The swap: the old copy out, the new one in, the old one dropped.
    pub fn swap(&self, db: &str, scope: Scope) -> Vec<String> {
        let t = self.table;
        let on = scope.on_cluster();
        vec![
            format!("DROP TABLE IF EXISTS {db}.{t}_prev{on}"),
            format!("RENAME TABLE {db}.{t} TO {db}.{t}_prev, {db}.{t}_next TO {db}.{t}{on}"),
            format!("DROP TABLE IF EXISTS {db}.{t}_prev{on}"),
        ]
    }

    /// Repair after a crash between the two renames: the table is missing but `_prev` exists.
    pub fn repair(&self, db: &str, scope: Scope) -> String {
        let t = self.table;
        format!(
            "RENAME TABLE {db}.{t}_prev TO {db}.{t}{}",
            scope.on_cluster()
        )
    }
}

/// Every statement of a full rebuild of every snapshot, in order (tests and tools; the service
/// runs them step by step with timeouts and the repair check).
pub fn rebuild_statements(db: &str) -> Vec<String> {
    let mut v = Vec::new();
    for s in ALL {
        v.extend(s.prepare(db, Scope::Server));
        v.push(s.build(db));
        v.extend(s.swap(db, Scope::Server));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_database() {
        assert!(
            MONTHLY
                .build("umkm")
                .starts_with("INSERT INTO umkm.adoption_merchant_monthly_next (month, ")
        );
        assert!(!MONTHLY.build("umkm").contains(" AS success_count"));
        assert!(!MONTHLY.build("umkm").contains("WHERE"));
        assert!(
            MONTHLY.swap("d", Scope::Server)[1]
                .contains("d.adoption_merchant_monthly_next TO d.adoption_merchant_monthly")
        );
        assert_eq!(MONTHLY.prepare("d", Scope::Server).len(), 2);
    }

    #[test]
    fn on_a_cluster_each_build_is_replicated_under_its_own_path_and_swapped_everywhere() {
        let scope = Scope::Cluster {
            name: "c",
            build: "b1",
        };
        let p = DAILY.prepare("d", scope);
        assert_eq!(
            p[0],
            "DROP TABLE IF EXISTS d.adoption_merchant_daily_next ON CLUSTER c"
        );
        assert!(p[1].starts_with(
            "CREATE TABLE d.adoption_merchant_daily_next ON CLUSTER c AS d.adoption_merchant_daily \
             ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/d/adoption_merchant_daily_b1', '{replica}') PARTITION BY"
        ));
        assert!(DAILY.swap("d", scope)[1].ends_with(" ON CLUSTER c"));
        assert!(DAILY.repair("d", scope).ends_with(" ON CLUSTER c"));
    }

    #[test]
    fn the_storage_is_the_migrations() {
        let sql = [
            include_str!("../../../schemas/clickhouse/0013_adoption_snapshot.sql"),
            include_str!("../../../schemas/clickhouse/0014_adoption_daily_snapshot.sql"),
        ];
        for (snap, sql) in ALL.iter().zip(sql) {
            assert!(
                sql.contains(&format!("ENGINE = MergeTree\n{}", snap.storage)),
                "{}",
                snap.table
            );
        }
    }

    #[test]
    fn the_daily_snapshot_covers_a_window_ending_at_the_latest_data() {
        let b = DAILY.build("d");
        assert!(b.starts_with("INSERT INTO d.adoption_merchant_daily_next (event_date, "));
        assert!(b.contains(
            "FROM d.v_merchant_activity_daily WHERE event_date >= \
             (SELECT max(event_date) FROM d.payments_merchant_daily) - 119 GROUP BY"
        ));
        assert_eq!(rebuild_statements("d").len(), 12);
    }
}
