//! Smoke test of the benchmark (`umkm-bench all`, docs/benchmarks.md) on a small size: every
//! part runs against the real broker and ClickHouse, end to end and the Python baseline land
//! exactly the unique payments, and the summary table is printed. Nothing here is timed: the
//! numbers belong to docs/benchmarks.md, measured with `scripts/bench`.

use std::process::Command;

use anyhow::{Result, ensure};
use umkm_e2e::{Env, service_bin};

#[test]
fn bench_all_parts_run_and_land_exactly() -> Result<()> {
    let env = Env::from_env();
    let python = std::env::var("UMKM_BENCH_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.stack/bench-venv/bin/python",
            umkm_e2e::repo_root().display()
        )
    });
    let out = Command::new(service_bin("umkm-bench"))
        .args([
            "all",
            "--events",
            "20000",
            "--runs",
            "1",
            "--core-events",
            "5000",
        ])
        .args(["--latency-seconds", "2", "--latency-rate", "2000"])
        .args(["--python", &python])
        .env("UMKM_KAFKA_BROKERS", &env.brokers)
        .env("UMKM_CLICKHOUSE_URL", &env.clickhouse)
        .env("RUST_LIB_BACKTRACE", "0")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    ensure!(out.status.success(), "umkm-bench all failed: {stderr}");
    // Each part checked its own rows (the bench fails otherwise); the table has every line.
    for line in [
        "| core, one core |",
        "| core, heap allocations per event |",
        "| broker ceiling",
        "| ClickHouse ceiling",
        "| ... the same into a bare table",
        "| end to end, qris-consumer |",
        "| latency at ",
        "| qris-consumer peak RSS",
        "| Python baseline, same work |",
        "| speed-up of end to end over the baseline |",
    ] {
        ensure!(stdout.contains(line), "summary lacks {line:?}:\n{stdout}");
    }
    Ok(())
}
