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

/// `scripts/perf-dataset` builds a (small) database and `umkm-bench scale` lands each run's
/// payments exactly, into an empty database and on top of that one (the bench fails otherwise).
#[test]
fn scale_bench_runs_on_a_built_dataset() -> Result<()> {
    let env = Env::from_env();
    let db = umkm_e2e::unique("perfsmoke");
    let built = Command::new(umkm_e2e::repo_root().join("scripts/perf-dataset"))
        .args([
            "--database",
            &db,
            "--payments",
            "60000",
            "--merchants",
            "3000",
        ])
        .args(["--registered", "1400", "--skew", "2", "--chunk", "25000"])
        .env("UMKM_CLICKHOUSE_URL", &env.clickhouse)
        .output()?;
    let stdout = String::from_utf8_lossy(&built.stdout);
    ensure!(
        built.status.success(),
        "perf-dataset failed: {stdout}{}",
        String::from_utf8_lossy(&built.stderr)
    );
    ensure!(
        stdout.contains("loaded 60000 payments") && stdout.contains("refreshed"),
        "perf-dataset said: {stdout}"
    );
    // 85% of the payments are QRIS: n % 20 >= 3.
    let rows = tokio::runtime::Runtime::new()?.block_on(umkm_e2e::ch_u64(
        &env,
        &format!("SELECT count() FROM `{db}`.qris_payments"),
    ))?;
    ensure!(rows == 51_000, "perf-dataset wrote {rows} QRIS rows");

    let stdout = umkm_bench(
        &env,
        &[
            "scale",
            "--database",
            &db,
            "--events",
            "20000",
            "--runs",
            "1",
        ],
    )?;
    ensure!(
        stdout.contains(&format!("{db} / empty =")),
        "no summary: {stdout}"
    );
    Ok(())
}

/// `umkm-bench memory` runs the consumer end to end for each partition count and cache size,
/// each landing exactly the unique payments (the bench fails otherwise).
#[test]
fn memory_bench_runs_every_setting() -> Result<()> {
    let env = Env::from_env();
    let stdout = umkm_bench(
        &env,
        &[
            "memory",
            "--events",
            "20000",
            "--partitions",
            "2",
            "--partition-counts",
            "1,3",
            "--cache-keys",
            "1000",
        ],
    )?;
    for line in [
        "  1 partitions, dedup.cache_keys    500000: peak RSS",
        "  3 partitions, dedup.cache_keys    500000: peak RSS",
        "  2 partitions, dedup.cache_keys      1000: peak RSS",
    ] {
        ensure!(stdout.contains(line), "no {line:?} in: {stdout}");
    }
    Ok(())
}

/// Runs `umkm-bench` with `args` against the test stack; its output, or an error with its
/// stderr if it failed.
fn umkm_bench(env: &Env, args: &[&str]) -> Result<String> {
    let out = Command::new(service_bin("umkm-bench"))
        .args(args)
        .env("UMKM_KAFKA_BROKERS", &env.brokers)
        .env("UMKM_CLICKHOUSE_URL", &env.clickhouse)
        .env("RUST_LIB_BACKTRACE", "0")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    ensure!(
        out.status.success(),
        "umkm-bench {} failed: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}
