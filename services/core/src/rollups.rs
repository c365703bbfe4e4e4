//! The payment rollups (migrations 0011 and 0016) as the facts define them, and their repair
//! after a ClickHouse crash (docs/reliability.md "Rollups after a crash").
//!
//! Each rollup is kept by materialized views on the fact tables; [`Source::select`] is the
//! view's own SELECT list, so [`diff_sql`] computes from the facts what the rollup must hold
//! and compares: over every group, or over the groups of the keys the consumers noted in
//! `rollup_suspects` (migration 0020). [`settled_deltas`] keeps only the differences seen
//! unchanged in two reads a settling time apart: an INSERT still between its facts part and its
//! views' parts differs for milliseconds, a part lost in a crash for good. SQL accepted by
//! ClickHouse 18.16 and current servers.

/// Where `rollup_suspects` and `rollup_repairs` are (migration 0020).
pub const SUSPECTS_TABLE: &str = "rollup_suspects";
pub const REPAIRS_TABLE: &str = "rollup_repairs";

/// One rollup table.
#[derive(Debug)]
pub struct Rollup {
    pub table: &'static str,
    /// Its sorting key: (column, type).
    pub keys: &'static [(&'static str, &'static str)],
    /// Its summed columns: (column, type).
    pub sums: &'static [(&'static str, &'static str)],
    /// Rollup columns that narrow the comparison to the noted keys' groups; each source gives
    /// the same tuple over a fact row in [`Source::narrow`].
    pub narrow: &'static str,
    pub sources: &'static [Source],
}

/// One materialized view feeding a rollup.
#[derive(Debug)]
pub struct Source {
    pub facts: &'static str,
    /// The view's SELECT list (keys, then sums, named as the rollup's columns).
    pub select: &'static str,
    /// The view's WHERE, if any.
    pub filter: Option<&'static str>,
    /// [`Rollup::narrow`] computed from a fact row.
    pub narrow: &'static str,
}

const MERCHANT_KEYS_TAIL: [(&str, &str); 6] = [
    ("merchant_ref", "String"),
    ("channel", "String"),
    ("instrument", "String"),
    ("reported_kab_kota_code", "String"),
    ("reported_kecamatan_code", "String"),
    ("reported_sector", "String"),
];

const fn merchant_keys(period: (&'static str, &'static str)) -> [(&'static str, &'static str); 7] {
    let t = MERCHANT_KEYS_TAIL;
    [period, t[0], t[1], t[2], t[3], t[4], t[5]]
}

const DAILY_KEYS: [(&str, &str); 7] = merchant_keys(("event_date", "Date"));
const MONTHLY_KEYS: [(&str, &str); 7] = merchant_keys(("month", "Date"));

const MERCHANT_SUMS: &[(&str, &str)] = &[
    ("success_count", "UInt64"),
    ("success_value_idr", "Int64"),
    ("refund_count", "UInt64"),
    ("refund_value_idr", "Int64"),
    ("cancelled_count", "UInt64"),
    ("failed_count", "UInt64"),
];

macro_rules! merchant_sums_sql {
    () => {
        "countIf(status = 'success') AS success_count, sumIf(amount_idr, status = 'success') AS success_value_idr, \
         countIf(status = 'refunded') AS refund_count, sumIf(amount_idr, status = 'refunded') AS refund_value_idr, \
         countIf(status = 'cancelled') AS cancelled_count, countIf(status = 'failed') AS failed_count"
    };
}

macro_rules! qris_keys_sql {
    ($period:literal) => {
        concat!(
            $period,
            ", concat('NMID:', nmid) AS merchant_ref, 'qris' AS channel, concat('qris_', qr_mode) AS instrument, \
             kab_kota_code AS reported_kab_kota_code, kecamatan_code AS reported_kecamatan_code, sector AS reported_sector, "
        )
    };
}

macro_rules! noncash_keys_sql {
    ($period:literal) => {
        concat!(
            $period,
            ", merchant_ref, multiIf(instrument IN ('debit_card', 'credit_card'), 'card', instrument IN ('emoney', 'ewallet'), 'emoney', 'transfer') AS channel, \
             instrument, kab_kota_code AS reported_kab_kota_code, kecamatan_code AS reported_kecamatan_code, sector AS reported_sector, "
        )
    };
}

pub const DAILY: Rollup = Rollup {
    table: "payments_merchant_daily",
    keys: &DAILY_KEYS,
    sums: MERCHANT_SUMS,
    narrow: "event_date, merchant_ref",
    sources: &[
        Source {
            facts: "qris_payments",
            select: concat!(qris_keys_sql!("event_date"), merchant_sums_sql!()),
            filter: None,
            narrow: "event_date, concat('NMID:', nmid)",
        },
        Source {
            facts: "noncash_payments",
            select: concat!(noncash_keys_sql!("event_date"), merchant_sums_sql!()),
            filter: None,
            narrow: "event_date, merchant_ref",
        },
    ],
};

pub const MONTHLY: Rollup = Rollup {
    table: "payments_merchant_monthly",
    keys: &MONTHLY_KEYS,
    sums: MERCHANT_SUMS,
    narrow: "month, merchant_ref",
    sources: &[
        Source {
            facts: "qris_payments",
            select: concat!(
                qris_keys_sql!("toStartOfMonth(event_date) AS month"),
                merchant_sums_sql!()
            ),
            filter: None,
            narrow: "toStartOfMonth(event_date), concat('NMID:', nmid)",
        },
        Source {
            facts: "noncash_payments",
            select: concat!(
                noncash_keys_sql!("toStartOfMonth(event_date) AS month"),
                merchant_sums_sql!()
            ),
            filter: None,
            narrow: "toStartOfMonth(event_date), merchant_ref",
        },
    ],
};

pub const TICKETS: Rollup = Rollup {
    table: "payments_ticket_monthly",
    keys: &[
        ("month", "Date"),
        ("channel", "String"),
        ("reported_kab_kota_code", "String"),
        ("reported_sector", "String"),
        ("amount_idr", "Int64"),
    ],
    sums: &[("success_count", "UInt64")],
    narrow: "month, reported_kab_kota_code, reported_sector, amount_idr",
    sources: &[
        Source {
            facts: "qris_payments",
            select: "toStartOfMonth(event_date) AS month, 'qris' AS channel, \
                     kab_kota_code AS reported_kab_kota_code, sector AS reported_sector, amount_idr, \
                     count() AS success_count",
            filter: Some("status = 'success'"),
            narrow: "toStartOfMonth(event_date), kab_kota_code, sector, amount_idr",
        },
        Source {
            facts: "noncash_payments",
            select: "toStartOfMonth(event_date) AS month, \
                     multiIf(instrument IN ('debit_card', 'credit_card'), 'card', instrument IN ('emoney', 'ewallet'), 'emoney', 'transfer') AS channel, \
                     kab_kota_code AS reported_kab_kota_code, sector AS reported_sector, amount_idr, \
                     count() AS success_count",
            filter: Some("status = 'success'"),
            narrow: "toStartOfMonth(event_date), kab_kota_code, sector, amount_idr",
        },
    ],
};

/// Every rollup fed by the payment facts.
pub const ALL: [&Rollup; 3] = [&DAILY, &MONTHLY, &TICKETS];

/// Whether any rollup is fed by `facts` (its consumer then notes suspects).
pub fn fed_by(facts: &str) -> bool {
    ALL.iter()
        .any(|r| r.sources.iter().any(|s| s.facts == facts))
}

/// The suspects noted in `(from, until]` (Unix seconds) for `facts`.
fn suspects_in(db: &str, facts: &str, window: (u32, u32)) -> String {
    format!(
        "SELECT event_date, dedup_key FROM {db}.{SUSPECTS_TABLE} WHERE fact_table = '{facts}' \
         AND noted_at > toDateTime({}, 'UTC') AND noted_at <= toDateTime({}, 'UTC')",
        window.0, window.1
    )
}

impl Rollup {
    fn key_list(&self) -> String {
        self.keys
            .iter()
            .map(|(k, _)| *k)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One source's rows as the view computes them, over the facts matching `narrowed`.
    fn source_sql(&self, db: &str, s: &Source, narrowed: Option<&str>) -> String {
        let mut conds: Vec<&str> = s.filter.into_iter().collect();
        conds.extend(narrowed);
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        format!(
            "SELECT {} FROM {db}.{}{filter} GROUP BY {}",
            s.select,
            s.facts,
            self.key_list()
        )
    }

    /// The output types of the comparison: keys, then the facts' sums, then the rollup's.
    pub fn diff_columns(&self) -> usize {
        self.keys.len() + 2 * self.sums.len()
    }
}

/// Per group whose facts and rollup differ: the keys, the facts' sums, then the rollup's
/// (TabSeparated). With a `window` (Unix seconds, `(from, until]`) only the groups of the keys
/// noted then in `rollup_suspects`; without, every group (tests, operators' checks).
pub fn diff_sql(db: &str, rollup: &Rollup, window: Option<(u32, u32)>) -> String {
    let keys = rollup.key_list();
    let zero = |t: &str| format!("to{t}(0)");
    let facts_cols = rollup
        .sums
        .iter()
        .map(|(c, _)| format!("{c} AS f_{c}"))
        .chain(
            rollup
                .sums
                .iter()
                .map(|(c, t)| format!("{} AS r_{c}", zero(t))),
        )
        .collect::<Vec<_>>()
        .join(", ");
    let rollup_cols = rollup
        .sums
        .iter()
        .map(|(c, t)| format!("{} AS f_{c}", zero(t)))
        .chain(rollup.sums.iter().map(|(c, _)| format!("{c} AS r_{c}")))
        .collect::<Vec<_>>()
        .join(", ");
    let mut parts = Vec::new();
    let mut noted = Vec::new();
    for s in rollup.sources {
        let narrowed = window.map(|w| {
            let groups = format!(
                "SELECT {} FROM {db}.{} WHERE (event_date, dedup_key) GLOBAL IN ({})",
                s.narrow,
                s.facts,
                suspects_in(db, s.facts, w)
            );
            let narrowed = format!("({}) IN ({groups})", s.narrow);
            noted.push(groups);
            narrowed
        });
        parts.push(format!(
            "SELECT {keys}, {facts_cols} FROM ({})",
            rollup.source_sql(db, s, narrowed.as_deref())
        ));
    }
    let rollup_filter = if noted.is_empty() {
        String::new()
    } else {
        format!(
            " WHERE ({}) IN ({})",
            rollup.narrow,
            noted.join(" UNION ALL ")
        )
    };
    parts.push(format!(
        "SELECT {keys}, {rollup_cols} FROM {db}.{}{rollup_filter}",
        rollup.table
    ));
    let sums = |side: &str| {
        rollup
            .sums
            .iter()
            .map(|(c, _)| format!("sum({side}_{c})"))
            .collect::<Vec<_>>()
    };
    let (f, r) = (sums("f"), sums("r"));
    let differs = f
        .iter()
        .zip(&r)
        .map(|(a, b)| format!("{a} != {b}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    format!(
        "SELECT {keys}, {}, {} FROM ({}) AS umkm_rollup_diff_ GROUP BY {keys} HAVING {differs} \
         ORDER BY {keys}",
        f.join(", "),
        r.join(", "),
        parts.join(" UNION ALL ")
    )
}

/// The external-data structure of the repair rows ([`settled_deltas`]): the rollup's keys and
/// sums with their types.
pub fn repair_structure(rollup: &Rollup) -> String {
    rollup
        .keys
        .iter()
        .chain(rollup.sums)
        .map(|(c, t)| format!("{c} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a repair found in one rollup.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deltas {
    /// TabSeparated rows of [`repair_structure`]: each group's keys and what the rollup lacks.
    pub rows: Vec<String>,
    /// Groups where the rollup holds more than the facts: left alone (a SummingMergeTree's
    /// unsigned counts cannot take a negative row).
    pub above: Vec<String>,
    /// Groups that differed in one read only (an insert under way): checked at the next run.
    pub unsettled: usize,
}

/// From two reads of [`diff_sql`] a settling time apart: the groups that differed the same way
/// both times, as rows to insert (the facts' sums minus the rollup's).
pub fn settled_deltas(rollup: &Rollup, first: &str, second: &str) -> Result<Deltas, String> {
    let n_keys = rollup.keys.len();
    let n_sums = rollup.sums.len();
    let earlier: std::collections::HashSet<&str> =
        first.lines().filter(|l| !l.is_empty()).collect();
    let mut out = Deltas::default();
    for line in second.lines().filter(|l| !l.is_empty()) {
        if !earlier.contains(line) {
            out.unsettled += 1;
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != rollup.diff_columns() {
            return Err(format!(
                "{}: a comparison row has {} fields, expected {}: {line:?}",
                rollup.table,
                fields.len(),
                rollup.diff_columns()
            ));
        }
        let num = |s: &str| {
            s.parse::<i128>()
                .map_err(|_| format!("{}: not a number {s:?} in {line:?}", rollup.table))
        };
        let mut deltas = Vec::with_capacity(n_sums);
        for i in 0..n_sums {
            deltas.push(num(fields[n_keys + i])? - num(fields[n_keys + n_sums + i])?);
        }
        if deltas.iter().any(|d| *d < 0) {
            out.above.push(line.to_string());
            continue;
        }
        let mut row = fields[..n_keys].join("\t");
        for d in deltas {
            row.push('\t');
            row.push_str(&d.to_string());
        }
        out.rows.push(row);
    }
    out.unsettled += earlier.len() - (out.rows.len() + out.above.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_is_its_views_select() {
        // The views of migrations 0011 and 0016 select exactly these lists: a change to one
        // must change the other.
        let m0011 = include_str!("../../../schemas/clickhouse/0011_payment_rollups.sql");
        let m0016 = include_str!("../../../schemas/clickhouse/0016_ticket_rollup.sql");
        let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let (m0011, m0016) = (flat(m0011), flat(m0016));
        for r in ALL {
            for s in r.sources {
                let view = format!(
                    "TO ${{database}}.{} AS SELECT {} FROM ${{database}}.{}",
                    r.table,
                    flat(s.select),
                    s.facts
                );
                assert!(
                    m0011.contains(&view) || m0016.contains(&view),
                    "no view selects {view}"
                );
            }
        }
        assert!(fed_by("qris_payments") && fed_by("noncash_payments"));
        assert!(!fed_by("merchant_events"));
    }

    #[test]
    fn the_comparison_is_narrowed_to_the_noted_keys_groups() {
        let sql = diff_sql("umkm", &TICKETS, Some((100, 200)));
        assert!(sql.contains(
            "SELECT toStartOfMonth(event_date), kab_kota_code, sector, amount_idr FROM umkm.qris_payments \
             WHERE (event_date, dedup_key) GLOBAL IN (SELECT event_date, dedup_key FROM umkm.rollup_suspects \
             WHERE fact_table = 'qris_payments' AND noted_at > toDateTime(100, 'UTC') AND noted_at <= toDateTime(200, 'UTC'))"
        ));
        assert!(
            sql.contains("WHERE status = 'success' AND (toStartOfMonth(event_date), kab_kota_code")
        );
        assert!(sql.contains(
            "FROM umkm.payments_ticket_monthly WHERE (month, reported_kab_kota_code, reported_sector, amount_idr) IN ("
        ));
        let whole = diff_sql("umkm", &TICKETS, None);
        assert!(!whole.contains("rollup_suspects"));
        assert!(whole.contains(
            "success_count AS r_success_count FROM umkm.payments_ticket_monthly) AS umkm_rollup_diff_"
        ));
        assert!(sql.ends_with(
            "HAVING sum(f_success_count) != sum(r_success_count) ORDER BY month, channel, reported_kab_kota_code, reported_sector, amount_idr"
        ));
        assert_eq!(
            repair_structure(&TICKETS),
            "month Date, channel String, reported_kab_kota_code String, reported_sector String, amount_idr Int64, success_count UInt64"
        );
    }

    #[test]
    fn only_differences_seen_twice_are_repaired() {
        // month, channel, kab, sector, amount, facts' count, rollup's count
        let lost = "2026-01-01\tqris\t36.71\tfood\t15000\t7\t5";
        let in_flight = "2026-01-01\tqris\t36.71\tfood\t20000\t3\t2";
        let above = "2026-01-01\tqris\t36.03\tretail\t5000\t1\t2";
        let first = format!("{lost}\n{in_flight}\n{above}\n");
        let second = format!("{lost}\n{above}\n");
        let d = settled_deltas(&TICKETS, &first, &second).unwrap();
        assert_eq!(d.rows, ["2026-01-01\tqris\t36.71\tfood\t15000\t2"]);
        assert_eq!(d.above, [above]);
        assert_eq!(d.unsettled, 1);
        // A group that changed between the reads is not repaired either.
        let changed = "2026-01-01\tqris\t36.71\tfood\t15000\t8\t5";
        let d = settled_deltas(&TICKETS, lost, changed).unwrap();
        assert!(d.rows.is_empty());
        assert_eq!(d.unsettled, 2);
        assert!(settled_deltas(&TICKETS, "a\tb", "a\tb").is_err());
    }
}
