//! The migrations on a ClickHouse cluster (`clickhouse.cluster`, README "Scaling out"): which
//! tables are sharded and by what, and the rewriting of a rendered statement into what the
//! cluster runs.
//!
//! - A **sharded** table `X` (the facts, the registry history, the rollups) becomes
//!   `X_local`, a `Replicated*MergeTree` at `/clickhouse/tables/{shard}/<db>/X_local` on every
//!   node, plus `X`, a `Distributed` table over it. Everything else names `X`: the consumers
//!   write through it (synchronously) and look keys up through it, the views read it. The
//!   materialized views are the exception: they fire on the rows that reach a shard, so they
//!   read `F_local` and write `R_local`.
//! - A **reference** table (regions, sectors, population, column docs, the migrations ledger)
//!   is replicated to every node (`/clickhouse/tables/all/<db>/X`, one shard), so joins with it
//!   stay on the node. `{replica}` must therefore be unique across the cluster.
//! - The adoption **snapshots** are replicated to every node too; `refresh-metrics` builds each
//!   new copy under a Keeper path of its own and swaps it in on every node
//!   (`crate::adoption::Scope::Cluster`).
//!
//! Every report and status of one payment, and its refunds, carry the same merchant reference,
//! so the sharding key keeps them, and the merchant's rollup rows, on one shard.

/// Sharded tables and their sharding keys.
pub const SHARDED: &[(&str, &str)] = &[
    // QRIS merchants are `NMID:<nmid>` in the rollups and views (migration 0011).
    ("qris_payments", "cityHash64(concat('NMID:', nmid))"),
    ("noncash_payments", "cityHash64(merchant_ref)"),
    ("merchant_events", "cityHash64(merchant_id)"),
    ("payments_merchant_daily", "cityHash64(merchant_ref)"),
    ("payments_merchant_monthly", "cityHash64(merchant_ref)"),
    // No merchant column: its rows are sums over merchants.
    ("payments_ticket_monthly", "rand()"),
];

/// The sharding key of `table`, if it is sharded.
pub fn sharding_key(table: &str) -> Option<&'static str> {
    SHARDED.iter().find(|(t, _)| *t == table).map(|(_, k)| *k)
}

/// The adoption snapshots ([`crate::adoption::ALL`]): plain `MergeTree` in their migrations
/// (rebuilt by `refresh-metrics`), replicated to every node on a cluster.
fn is_snapshot(table: &str) -> bool {
    crate::adoption::ALL.iter().any(|s| s.table == table)
}

/// The table a statement names right after `prefix` (`<db>.<name>`), if it starts so.
fn named_after<'s>(stmt: &'s str, prefix: &str, db: &str) -> Option<&'s str> {
    let rest = stmt.strip_prefix(prefix)?.trim_start();
    let rest = rest.strip_prefix(db)?.strip_prefix('.')?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `<db>.<table>` replaced by `<db>.<table>_local` wherever it stands as a whole name.
fn localise(stmt: &str, db: &str, table: &str) -> String {
    let name = format!("{db}.{table}");
    let mut out = String::with_capacity(stmt.len() + 16);
    let mut rest = stmt;
    while let Some(i) = rest.find(&name) {
        let after = &rest[i + name.len()..];
        out.push_str(&rest[..i + name.len()]);
        if !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str("_local");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `ENGINE = Replicated<X>MergeTree(args)` given its Keeper path and `{replica}`.
fn with_replica_path(stmt: &str, path: &str) -> String {
    let Some(at) = stmt.find("ENGINE = Replicated") else {
        return stmt.to_string();
    };
    let head = &stmt[..at];
    let engine = &stmt[at..];
    let name_end = engine["ENGINE = ".len()..]
        .find(|c: char| !c.is_ascii_alphanumeric())
        .map_or(engine.len(), |i| i + "ENGINE = ".len());
    let (name, tail) = engine.split_at(name_end);
    let args = format!("'{path}', '{{replica}}'");
    match tail.strip_prefix('(') {
        Some(t) if t.trim_start().starts_with(')') => format!("{head}{name}({args}{t}"),
        Some(t) => format!("{head}{name}({args}, {t}"),
        None => format!("{head}{name}({args}){tail}"),
    }
}

/// The statement without its columns' `COMMENT '…'`: ClickHouse 18.16 cannot create a second
/// replica of a table whose columns have comments ("Table structure in ZooKeeper is too
/// different"). The descriptions stay readable in `column_docs` (migration 0015).
pub fn without_column_comments(stmt: &str) -> String {
    let mut out = String::with_capacity(stmt.len());
    let mut rest = stmt;
    loop {
        // The next string literal or COMMENT keyword, whichever comes first.
        let quote = rest.find('\'');
        let comment = rest.find(" COMMENT '");
        match (quote, comment) {
            (_, Some(c)) if quote.is_none_or(|q| c < q) => {
                out.push_str(&rest[..c]);
                rest = skip_literal(&rest[c + " COMMENT ".len()..]);
            }
            (Some(q), _) => {
                let after = skip_literal(&rest[q..]);
                out.push_str(&rest[..rest.len() - after.len()]);
                rest = after;
            }
            _ => break,
        }
    }
    out.push_str(rest);
    out
}

/// What follows the string literal `s` starts with (`''` and `\'` escape a quote).
fn skip_literal(s: &str) -> &str {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return &s[i + 1..],
            _ => i += 1,
        }
    }
    ""
}

/// A view's `IN (SELECT …)` and `JOIN`s made `GLOBAL`: the subquery or right side is computed
/// once on the node that runs the query and shipped to the shards, which is correct whatever
/// the sharding (ClickHouse refuses a plain one over Distributed tables,
/// `distributed_product_mode = deny`).
pub fn globalise(stmt: &str) -> String {
    let mut out = String::with_capacity(stmt.len() + 64);
    let mut rest = stmt;
    while let Some(i) = next_distributed_product(rest) {
        out.push_str(&rest[..i]);
        out.push_str("GLOBAL ");
        rest = &rest[i..];
        // Past the keyword, so it is not found again.
        let kw = if rest.starts_with("IN") {
            2
        } else {
            "ANY LEFT JOIN".len()
        };
        out.push_str(&rest[..kw]);
        rest = &rest[kw..];
    }
    out.push_str(rest);
    out
}

/// Where the next `IN (SELECT` (any whitespace) or `ANY LEFT JOIN` starts, not already GLOBAL.
fn next_distributed_product(s: &str) -> Option<usize> {
    let word_start = |i: usize| i == 0 || s[..i].ends_with(|c: char| c.is_whitespace() || c == ')');
    let not_global = |i: usize| !s[..i].trim_end().ends_with("GLOBAL");
    let mut best: Option<usize> = None;
    let mut from = 0;
    while let Some(j) = s[from..].find("IN").map(|j| j + from) {
        let after = s[j + 2..].trim_start();
        if word_start(j)
            && not_global(j)
            && after.starts_with('(')
            && after[1..].trim_start().starts_with("SELECT")
        {
            best = Some(j);
            break;
        }
        from = j + 2;
    }
    if let Some(j) = s.find("ANY LEFT JOIN")
        && not_global(j)
        && best.is_none_or(|b| j < b)
    {
        best = Some(j);
    }
    best
}

/// The Distributed table `X` over `X_local`, with `X`'s sharding key.
fn distributed(db: &str, table: &str, cluster: &str) -> String {
    let key = sharding_key(table).unwrap_or("rand()");
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} AS {db}.{table}_local \
         ENGINE = Distributed({cluster}, {db}, {table}_local, {key})"
    )
}

/// What the cluster `cluster` runs for one rendered statement of database `db`;
/// `column_comments` is false on servers that cannot replicate them (18.16).
pub fn rewrite(stmt: &str, db: &str, cluster: &str, column_comments: bool) -> Vec<String> {
    // On a cluster every table is replicated ([`is_snapshot`]'s included).
    let replicated = stmt.contains("ENGINE = Replicated")
        || named_after(stmt, "CREATE TABLE IF NOT EXISTS", db).is_some_and(is_snapshot)
        || named_after(stmt, "ALTER TABLE", db).is_some();
    if replicated && !column_comments {
        return rewrite(&without_column_comments(stmt), db, cluster, true);
    }
    if let Some(table) = named_after(stmt, "CREATE TABLE IF NOT EXISTS", db) {
        if is_snapshot(table) && !stmt.contains("ENGINE = Replicated") {
            let replicated = stmt.replacen("ENGINE = MergeTree", "ENGINE = ReplicatedMergeTree", 1);
            return rewrite(&replicated, db, cluster, column_comments);
        }
        if !stmt.contains("ENGINE = Replicated") {
            return vec![stmt.to_string()];
        }
        return match sharding_key(table) {
            Some(_) => vec![
                with_replica_path(
                    &localise(stmt, db, table),
                    &format!("/clickhouse/tables/{{shard}}/{db}/{table}_local"),
                ),
                distributed(db, table, cluster),
            ],
            None => vec![with_replica_path(
                stmt,
                &format!("/clickhouse/tables/all/{db}/{table}"),
            )],
        };
    }
    if let Some(table) = named_after(stmt, "ALTER TABLE", db)
        && sharding_key(table).is_some()
    {
        let local = localise(stmt, db, table);
        // Settings belong to the storage. Columns: the Distributed table must have them too,
        // but ClickHouse refuses `ALTER … ON CLUSTER` on a table that is not replicated when
        // the shards are, so it is created again over the altered storage.
        return if stmt.contains("MODIFY SETTING") {
            vec![local]
        } else {
            vec![
                local,
                format!("DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {cluster}"),
                distributed(db, table, cluster),
            ]
        };
    }
    if stmt.starts_with("CREATE VIEW") {
        return vec![globalise(stmt)];
    }
    if stmt.starts_with("CREATE MATERIALIZED VIEW") {
        let mut s = stmt.to_string();
        for (table, _) in SHARDED {
            s = localise(&s, db, table);
        }
        return vec![s];
    }
    vec![stmt.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_table_becomes_a_local_replicated_table_and_a_distributed_one() {
        let out = rewrite(
            "CREATE TABLE IF NOT EXISTS d.qris_payments ON CLUSTER c\n(a String)\n\
             ENGINE = ReplicatedReplacingMergeTree(ingested_at)\nORDER BY a",
            "d",
            "c",
            true,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            "CREATE TABLE IF NOT EXISTS d.qris_payments_local ON CLUSTER c\n(a String)\n\
             ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/d/qris_payments_local', \
             '{replica}', ingested_at)\nORDER BY a"
        );
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS d.qris_payments ON CLUSTER c AS d.qris_payments_local \
             ENGINE = Distributed(c, d, qris_payments_local, cityHash64(concat('NMID:', nmid)))"
        );
    }

    #[test]
    fn engines_without_arguments_get_the_path_and_replica() {
        let out = rewrite(
            "CREATE TABLE IF NOT EXISTS d.payments_ticket_monthly ON CLUSTER c (a UInt8)\n\
             ENGINE = ReplicatedSummingMergeTree\nORDER BY a",
            "d",
            "c",
            true,
        );
        assert!(out[0].contains(
            "ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/d/payments_ticket_monthly_local', '{replica}')\nORDER BY a"
        ));
        assert!(out[1].ends_with("rand())"));
    }

    #[test]
    fn reference_tables_are_replicated_to_every_node() {
        let out = rewrite(
            "CREATE TABLE IF NOT EXISTS d.ref_regions ON CLUSTER c (a UInt8) \
             ENGINE = ReplicatedReplacingMergeTree(loaded_at) ORDER BY a",
            "d",
            "c",
            true,
        );
        assert_eq!(
            out,
            vec![
                "CREATE TABLE IF NOT EXISTS d.ref_regions ON CLUSTER c (a UInt8) ENGINE = \
             ReplicatedReplacingMergeTree('/clickhouse/tables/all/d/ref_regions', '{replica}', \
             loaded_at) ORDER BY a"
            ]
        );
    }

    #[test]
    fn snapshots_are_replicated_to_every_node() {
        assert_eq!(
            rewrite(
                "CREATE TABLE IF NOT EXISTS d.adoption_merchant_monthly ON CLUSTER c (a UInt8 COMMENT 'x') ENGINE = MergeTree ORDER BY a",
                "d",
                "c",
                false
            ),
            vec![
                "CREATE TABLE IF NOT EXISTS d.adoption_merchant_monthly ON CLUSTER c (a UInt8) ENGINE = \
                 ReplicatedMergeTree('/clickhouse/tables/all/d/adoption_merchant_monthly', '{replica}') ORDER BY a"
            ]
        );
    }

    #[test]
    fn views_and_inserts_are_left_alone() {
        for s in [
            "INSERT INTO d.payments_merchant_daily SELECT * FROM d.qris_payments",
            "ALTER TABLE d.adoption_merchant_daily ON CLUSTER c ADD COLUMN x UInt8",
        ] {
            assert_eq!(rewrite(s, "d", "c", true), vec![s.to_string()]);
        }
    }

    #[test]
    fn alters_reach_the_storage_and_columns_the_distributed_table_too() {
        let add = "ALTER TABLE d.qris_payments ON CLUSTER c ADD COLUMN x String COMMENT 'x'";
        assert_eq!(
            rewrite(add, "d", "c", true),
            vec![
                "ALTER TABLE d.qris_payments_local ON CLUSTER c ADD COLUMN x String COMMENT 'x'"
                    .to_string(),
                "DROP TABLE IF EXISTS d.qris_payments ON CLUSTER c".to_string(),
                "CREATE TABLE IF NOT EXISTS d.qris_payments ON CLUSTER c AS d.qris_payments_local \
                 ENGINE = Distributed(c, d, qris_payments_local, cityHash64(concat('NMID:', nmid)))"
                    .to_string(),
            ]
        );
        let setting = "ALTER TABLE d.noncash_payments ON CLUSTER c MODIFY SETTING non_replicated_deduplication_window = 1000";
        assert_eq!(
            rewrite(setting, "d", "c", true),
            vec![
                "ALTER TABLE d.noncash_payments_local ON CLUSTER c MODIFY SETTING non_replicated_deduplication_window = 1000"
            ]
        );
    }

    #[test]
    fn materialized_views_read_and_write_the_shard_local_tables() {
        let out = rewrite(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS d.mv_qris_merchant_daily ON CLUSTER c\n\
             TO d.payments_merchant_daily AS SELECT x FROM d.qris_payments",
            "d",
            "c",
            true,
        );
        assert_eq!(
            out,
            vec![
                "CREATE MATERIALIZED VIEW IF NOT EXISTS d.mv_qris_merchant_daily ON CLUSTER c\n\
             TO d.payments_merchant_daily_local AS SELECT x FROM d.qris_payments_local"
            ]
        );
    }

    #[test]
    fn column_comments_can_be_left_out() {
        let s = "CREATE TABLE IF NOT EXISTS d.ref_regions ON CLUSTER c (a String COMMENT 'it''s \\' x', \
                 b String DEFAULT ' COMMENT ''x''' COMMENT 'b') ENGINE = ReplicatedMergeTree ORDER BY a";
        assert_eq!(
            without_column_comments(s),
            "CREATE TABLE IF NOT EXISTS d.ref_regions ON CLUSTER c (a String, \
             b String DEFAULT ' COMMENT ''x''') ENGINE = ReplicatedMergeTree ORDER BY a"
        );
        let out = rewrite(s, "d", "c", false);
        assert!(!out[0].contains("COMMENT 'b'"), "{out:?}");
        assert!(
            out[0].contains("'/clickhouse/tables/all/d/ref_regions'"),
            "{out:?}"
        );
        let add = "ALTER TABLE d.qris_payments ON CLUSTER c ADD COLUMN x String COMMENT 'x'";
        assert!(
            rewrite(add, "d", "c", false)
                .iter()
                .all(|s| !s.contains("COMMENT"))
        );
        let snap =
            "ALTER TABLE d.adoption_merchant_daily ON CLUSTER c ADD COLUMN x UInt8 COMMENT 'x'";
        assert_eq!(
            rewrite(snap, "d", "c", false),
            vec!["ALTER TABLE d.adoption_merchant_daily ON CLUSTER c ADD COLUMN x UInt8"]
        );
    }

    #[test]
    fn views_use_global_subqueries_and_joins() {
        let v = "CREATE VIEW IF NOT EXISTS d.v ON CLUSTER c AS SELECT a FROM d.f WHERE (a, b) IN\n    \
                 (SELECT a, max(b) FROM d.f GROUP BY a) AND s IN ('x', 'y') AND k IN (SELECT k FROM d.g)\n\
                 ANY LEFT JOIN d.r USING a";
        assert_eq!(
            rewrite(v, "d", "c", true),
            vec![
                "CREATE VIEW IF NOT EXISTS d.v ON CLUSTER c AS SELECT a FROM d.f WHERE (a, b) GLOBAL IN\n    \
                 (SELECT a, max(b) FROM d.f GROUP BY a) AND s IN ('x', 'y') AND k GLOBAL IN (SELECT k FROM d.g)\n\
                 GLOBAL ANY LEFT JOIN d.r USING a"
            ]
        );
        assert_eq!(globalise(&globalise(v)), globalise(v));
        assert_eq!(globalise("SELECT JOIN_IN FROM t"), "SELECT JOIN_IN FROM t");
    }

    #[test]
    fn longer_names_are_not_localised() {
        assert_eq!(
            localise(
                "FROM d.qris_payments_x, d.qris_payments",
                "d",
                "qris_payments"
            ),
            "FROM d.qris_payments_x, d.qris_payments_local"
        );
    }
}
