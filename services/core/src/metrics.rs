//! The adoption snapshot rebuild (`<service> refresh-metrics`, docs/metrics.md): statements that
//! build `adoption_merchant_monthly_next` from `v_merchant_activity_monthly` and swap it in.
//! SQL accepted by ClickHouse 18.16 and current servers (no EXCHANGE TABLES on 18.16, so two
//! RENAMEs; a crash between them is repaired by the next run).

pub const TABLE: &str = "adoption_merchant_monthly";

/// Columns filled by the rebuild, in table order (all but `refreshed_at`).
const GROUP: &str = "month, merchant_key, merchant_registered, province_code, kab_kota_code, \
                     kecamatan_code, sector, channel";

/// Before the rebuild: put a copy left by an interrupted swap back, drop leftovers.
pub fn prepare(db: &str) -> Vec<String> {
    vec![
        format!("DROP TABLE IF EXISTS {db}.{TABLE}_next"),
        format!("CREATE TABLE {db}.{TABLE}_next AS {db}.{TABLE}"),
    ]
}

/// The rebuild itself. No aliases on the sums: ClickHouse 18.16 rejects `sum(x) AS x`.
pub fn build(db: &str) -> String {
    format!(
        "INSERT INTO {db}.{TABLE}_next ({GROUP}, success_count, success_value_idr, refund_count, \
         refund_value_idr, cancelled_count, failed_count, refreshed_at) \
         SELECT {GROUP}, sum(success_count), sum(success_value_idr), sum(refund_count), \
         sum(refund_value_idr), sum(cancelled_count), sum(failed_count), now() \
         FROM {db}.v_merchant_activity_monthly GROUP BY {GROUP}"
    )
}

/// The swap: the old copy out, the new one in, the old one dropped.
pub fn swap(db: &str) -> Vec<String> {
    vec![
        format!("DROP TABLE IF EXISTS {db}.{TABLE}_prev"),
        format!(
            "RENAME TABLE {db}.{TABLE} TO {db}.{TABLE}_prev, {db}.{TABLE}_next TO {db}.{TABLE}"
        ),
        format!("DROP TABLE IF EXISTS {db}.{TABLE}_prev"),
    ]
}

/// Repair after a crash between the two renames: the table is missing but `_prev` exists.
pub fn repair(db: &str) -> String {
    format!("RENAME TABLE {db}.{TABLE}_prev TO {db}.{TABLE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_database() {
        assert!(build("umkm").starts_with("INSERT INTO umkm.adoption_merchant_monthly_next"));
        assert!(!build("umkm").contains(" AS success_count"));
        assert!(
            swap("d")[1]
                .contains("d.adoption_merchant_monthly_next TO d.adoption_merchant_monthly")
        );
        assert_eq!(prepare("d").len(), 2);
    }
}
