//! Versioned ClickHouse migrations (`schemas/clickhouse/NNNN_name.sql`), rendered for one
//! deployment and applied idempotently (every statement is `IF NOT EXISTS` or otherwise safe to
//! repeat; applied versions are recorded in `schema_migrations`).
//!
//! Placeholders in the SQL:
//! - `${database}`: the target database;
//! - `${on_cluster}`: empty, or `ON CLUSTER <name>` when `clickhouse.cluster` is set;
//! - `${replicated}`: empty, or `Replicated` on a cluster, turning
//!   `${replicated}ReplacingMergeTree(v)` into `ReplicatedReplacingMergeTree(v)`.
//!
//! On a cluster each statement is then rewritten by [`crate::cluster::rewrite`] (local and
//! Distributed tables, Keeper paths).
//!
//! A file may start with `-- umkm:min_server_version X.Y`: it then applies only on servers of
//! that version or newer (features the 18.16 test server lacks) and is retried at every start
//! until the server is new enough.

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($v:expr, $name:literal) => {
        Migration {
            version: $v,
            name: $name,
            sql: include_str!(concat!("../../../schemas/clickhouse/", $name, ".sql")),
        }
    };
}

/// Every migration, in order. Adding one: create the file, add a line here.
pub const ALL: &[Migration] = &[
    migration!(1, "0001_qris_payments"),
    migration!(2, "0002_qris_insert_dedup_window"),
    migration!(3, "0003_reference_regions"),
    migration!(4, "0004_reference_mcc_sector"),
    migration!(5, "0005_reference_kbli_sector"),
    migration!(6, "0006_noncash_payments"),
    migration!(7, "0007_noncash_insert_dedup_window"),
    migration!(8, "0008_merchant_events"),
    migration!(9, "0009_merchant_insert_dedup_window"),
    migration!(10, "0010_canonical_views"),
    migration!(11, "0011_payment_rollups"),
    migration!(12, "0012_adoption_views"),
    migration!(13, "0013_adoption_snapshot"),
    migration!(14, "0014_adoption_daily_snapshot"),
    migration!(15, "0015_column_docs"),
    migration!(16, "0016_ticket_rollup"),
    migration!(17, "0017_refund_links"),
    migration!(18, "0018_net_metrics"),
    migration!(19, "0019_partition_claims"),
    migration!(20, "0020_rollup_repair"),
];

/// ClickHouse's error code for "column with this name already exists".
pub const COLUMN_EXISTS: i32 = 44;

/// Whether `stmt` adds one column (`ALTER TABLE … ADD COLUMN …`). ClickHouse 18.16 has no
/// `ADD COLUMN IF NOT EXISTS`, so the runner treats [`COLUMN_EXISTS`] from such a statement as
/// already applied: a migration interrupted halfway completes on the next run.
pub fn is_add_column(stmt: &str) -> bool {
    // Outside string literals (a COMMENT may say anything).
    let mut code = String::with_capacity(stmt.len());
    let mut quoted = false;
    let mut escaped = false;
    for ch in stmt.chars() {
        match (quoted, escaped, ch) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, _, '\'') => quoted = !quoted,
            (false, _, c) => code.push(c.to_ascii_uppercase()),
            _ => {}
        }
    }
    code.trim_start().starts_with("ALTER TABLE") && code.matches("ADD COLUMN").count() == 1
}

/// Creates the database and the migrations ledger; run before any migration.
pub const BOOTSTRAP: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS ${database} ${on_cluster}",
    "CREATE TABLE IF NOT EXISTS ${database}.schema_migrations ${on_cluster} \
     (version UInt32, name String, checksum String, applied_at DateTime) \
     ENGINE = ${replicated}ReplacingMergeTree(applied_at) ORDER BY version",
];

#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    pub database: String,
    /// The cluster's name (`clickhouse.cluster`): sharded, replicated tables.
    pub cluster: Option<String>,
    /// Whether the server replicates column comments (not 18.16; [`crate::cluster`]).
    pub column_comments: bool,
}

/// Server version as (major, minor), parsed from `SELECT version()` (e.g. `18.16.1`).
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn min_server_version(sql: &str) -> Option<(u32, u32)> {
    sql.lines()
        .find_map(|l| l.trim().strip_prefix("-- umkm:min_server_version"))
        .and_then(parse_version)
}

pub fn applies_to(m: &Migration, server: (u32, u32)) -> bool {
    min_server_version(m.sql).is_none_or(|min| server >= min)
}

/// Replaces the placeholders and splits into statements (on `;` at a line end), dropping
/// comment-only lines.
pub fn render(sql: &str, ctx: &RenderContext) -> Vec<String> {
    let on_cluster = ctx
        .cluster
        .as_deref()
        .map(|c| format!("ON CLUSTER {c}"))
        .unwrap_or_default();
    let text = sql
        .replace("${database}", &ctx.database)
        .replace("${on_cluster}", &on_cluster)
        .replace(
            "${replicated}",
            if ctx.cluster.is_some() {
                "Replicated"
            } else {
                ""
            },
        );
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("--") || t.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if t.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').trim().to_string();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    let tail = cur.trim().trim_end_matches(';').trim();
    if !tail.is_empty() {
        out.push(tail.to_string());
    }
    match &ctx.cluster {
        Some(c) => out
            .iter()
            .flat_map(|s| crate::cluster::rewrite(s, &ctx.database, c, ctx.column_comments))
            .collect(),
        None => out,
    }
}

/// SHA-256 (hex, first 16 bytes) of the file as shipped: a changed migration is reported.
pub fn checksum(sql: &str) -> String {
    crate::dedup::Key::of("migration", &[sql]).hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_and_unique() {
        for w in ALL.windows(2) {
            assert!(w[0].version < w[1].version);
        }
        for m in ALL {
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn renders_placeholders_and_splits() {
        let sql = "-- header\nCREATE TABLE IF NOT EXISTS ${database}.t ${on_cluster} (a UInt8)\nENGINE = ${replicated}MergeTree ORDER BY a;\n\nSELECT 1;\n";
        let plain = render(
            sql,
            &RenderContext {
                database: "db".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            plain,
            vec![
                "CREATE TABLE IF NOT EXISTS db.t  (a UInt8)\nENGINE = MergeTree ORDER BY a",
                "SELECT 1"
            ]
        );
        let cluster = render(
            sql,
            &RenderContext {
                database: "db".into(),
                cluster: Some("c1".into()),
                column_comments: true,
            },
        );
        assert!(cluster[0].contains("ON CLUSTER c1"));
        assert!(cluster[0].contains("ReplicatedMergeTree('/clickhouse/tables/all/db/t'"));
    }

    #[test]
    fn add_column_statements_are_recognised() {
        assert!(is_add_column(
            "ALTER TABLE d.t ADD COLUMN x String COMMENT 'add column'"
        ));
        assert!(is_add_column(
            "alter table d.t on cluster c add column x Int64"
        ));
        assert!(!is_add_column(
            "ALTER TABLE d.t ADD COLUMN x Int64, ADD COLUMN y Int64"
        ));
        assert!(!is_add_column("CREATE TABLE d.t (x Int64)"));
    }

    #[test]
    fn min_version_gate() {
        let gated = Migration {
            version: 9,
            name: "x",
            sql: "-- umkm:min_server_version 22.8\nSELECT 1;",
        };
        assert!(!applies_to(&gated, (18, 16)));
        assert!(applies_to(&gated, (22, 8)));
        assert!(applies_to(&gated, (26, 1)));
        assert_eq!(parse_version("18.16.1"), Some((18, 16)));
        assert_eq!(parse_version("26.9.1.123"), Some((26, 9)));
    }
}
