//! Times every ClickHouse panel of `grafana/dashboards/` against a database, the way Grafana
//! would run it ("All" for every variable), and prints the median of N runs per panel.
//!
//!   panel-timings [--database umkm] [--days 365] [--runs 3]
//!
//! ClickHouse: UMKM_CLICKHOUSE_URL (default http://127.0.0.1:18123). A measuring tool for
//! docs/metrics.md, not a test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;
use umkm_e2e::grafana::{clickhouse_targets, dashboards, expand};

async fn post(url: &str, db: &str, sql: &str) -> Result<String> {
    let resp = reqwest::Client::new()
        .post(format!("{url}/?database={db}"))
        .body(sql.to_string())
        .timeout(Duration::from_secs(120))
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("{sql}: {text}");
    }
    Ok(text)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut db = "umkm".to_string();
    let mut days: i64 = 365;
    let mut runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--database" => db = args.next().unwrap_or(db),
            "--days" => days = args.next().and_then(|v| v.parse().ok()).unwrap_or(days),
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            other => bail!("unknown argument {other}"),
        }
    }
    let url =
        std::env::var("UMKM_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:18123".into());
    let to_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let from_ms = to_ms - days * 86_400_000;
    let payments = post(&url, &db, "SELECT count() FROM v_payments").await?;
    let snapshot = post(&url, &db, "SELECT count() FROM adoption_merchant_monthly").await?;
    println!(
        "database {db}: {} payments, snapshot {} rows; range {days} days; median of {runs} runs",
        payments.trim(),
        snapshot.trim()
    );
    let mut slowest = (0.0f64, String::new());
    for (file, d) in dashboards()? {
        let mut vars = BTreeMap::new();
        for v in d
            .pointer("/templating/list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let q = v["query"].as_str().unwrap_or_default();
            let values: Vec<String> = post(&url, &db, &format!("{q} FORMAT TabSeparated"))
                .await?
                .lines()
                .map(String::from)
                .collect();
            vars.insert(v["name"].as_str().unwrap_or_default().to_string(), values);
        }
        for (title, raw) in clickhouse_targets(&d) {
            {
                let sql = expand(&raw, &vars, from_ms, to_ms)?;
                let mut times = Vec::new();
                for _ in 0..runs {
                    let started = Instant::now();
                    post(&url, &db, &format!("{sql} FORMAT Null")).await?;
                    times.push(started.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                let median = times[times.len() / 2];
                println!(
                    "{median:>7.3} s  {title}  ({})",
                    file.rsplit('/').next().unwrap_or("")
                );
                if median > slowest.0 {
                    slowest = (median, title.to_string());
                }
            }
        }
    }
    println!("slowest: {:.3} s  {}", slowest.0, slowest.1);
    Ok(())
}
