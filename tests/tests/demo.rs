//! The README's first command, on its small size: `scripts/demo --small` runs the stack, the
//! three consumers and the publisher end to end, and exits 0 only when everything published
//! landed exactly once. Its printed adoption table must match ClickHouse.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Result, ensure};
use umkm_e2e::{Env, ch, repo_root, unique};

#[tokio::test]
async fn the_demo_runs_to_completion_and_its_summary_matches_clickhouse() -> Result<()> {
    let env = Env::from_env();
    let db = unique("demo");
    let out = Command::new(repo_root().join("scripts/demo"))
        .arg("--small")
        .env("DEMO_DATABASE", &db)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "scripts/demo --small failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains("demo: everything published landed exactly once"),
        "{stdout}"
    );
    ensure!(!stdout.contains("MISMATCH"), "{stdout}");
    // The kab/kota table: code, name words..., registered, active, adoption%, payments, value, QRIS%.
    // Payments are net: successful ones not cancelled or refunded in full, counted here straight
    // from the facts.
    let mut printed: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("36.")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = f.len();
        if n >= 8 {
            printed.insert(f[0].into(), (f[n - 6].parse()?, f[n - 3].parse()?));
        }
    }
    ensure!(
        printed.len() == 8,
        "kab/kota rows printed: {printed:?}\n{stdout}"
    );
    let rows = ch(
        &env,
        &format!(
            "SELECT kab, registered, payments FROM \
             (SELECT kab_kota_code AS kab, count() AS registered FROM {db}.v_merchants_current WHERE status = 'active' GROUP BY kab) AS r_ \
             ANY LEFT JOIN (SELECT kab_kota_code AS kab, count() AS payments FROM {db}.v_payments WHERE status = 'success' \
               AND payment_key NOT IN (SELECT payment_key FROM {db}.v_payments GROUP BY payment_key \
                 HAVING countIf(status = 'cancelled') > 0 OR sumIf(amount_idr, status = 'refunded') >= maxIf(amount_idr, status = 'success')) \
               GROUP BY kab) AS p_ \
             USING kab ORDER BY kab FORMAT TabSeparated"
        ),
    )
    .await?;
    let mut want = BTreeMap::new();
    for l in rows.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        want.insert(
            f[0].to_string(),
            (f[1].parse::<u64>()?, f[2].parse::<u64>()?),
        );
    }
    ensure!(
        printed == want,
        "printed (registered, payments) {printed:?}\nClickHouse {want:?}"
    );
    println!("demo --small: exit 0, truth = landed; kab/kota table equals ClickHouse: {printed:?}");
    Ok(())
}
