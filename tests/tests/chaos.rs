//! The fault-injecting checker's two-minute run (README "Reliability", docs/reliability.md):
//! `umkm-chaos` with three consumers and every kind of fault, against the stack's ClickHouse
//! (which it kills, restarts and freezes) and a broker of its own on SQLite storage. The seed is
//! fixed so that CI is reproducible; `UMKM_CHAOS_SEED` runs another.

use std::process::Command;

use anyhow::{Result, ensure};

#[test]
fn two_minutes_of_random_faults_leave_an_exact_history() -> Result<()> {
    let seed = std::env::var("UMKM_CHAOS_SEED").unwrap_or_else(|_| "2026".into());
    let root = umkm_e2e::repo_root();
    let mut cmd = Command::new(umkm_e2e::service_bin("umkm-chaos"));
    cmd.args([
        "--seed",
        &seed,
        "--minutes",
        "2",
        "--events",
        "20000",
        "--consumers",
        "3",
    ])
    .env("RUST_BACKTRACE", "0");
    let local_clickhouse = std::env::var("UMKM_STACK_DIR")
        .map(|d| std::path::Path::new(&d).join("clickhouse/pid").exists())
        .unwrap_or(false);
    if local_clickhouse {
        cmd.args([
            "--clickhouse-start",
            &format!("{} clickhouse-start", root.join("scripts/stack").display()),
        ]);
    } else {
        // An external ClickHouse is not ours to kill: every other fault still runs.
        cmd.args([
            "--faults",
            "kill,crash-after-insert,crash-during-dlq-write,crash-in-rebalance,freeze,zombie,churn,dlq-refusal,broker-restart",
        ]);
    }
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    ensure!(
        out.status.success() && stdout.contains("PASS seed="),
        "umkm-chaos failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let faults: usize = stdout.lines().filter(|l| l.contains("] #")).count();
    ensure!(
        faults >= 6,
        "only {faults} faults were injected in two minutes"
    );
    Ok(())
}
