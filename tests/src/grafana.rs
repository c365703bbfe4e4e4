//! Grafana dashboards as the tests and the panel-timing tool read them: the panels' queries,
//! with the ClickHouse data source plugin's macros and variables expanded.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::repo_root;

/// 2026-09-01 00:00 UTC and 2026-10-31 12:00 UTC: the time range of the panel tests.
pub const FROM_MS: i64 = 1_788_220_800_000;
pub const TO_MS: i64 = 1_793_448_000_000;

/// The plugin's macros and variables, as grafana-clickhouse-datasource expands them.
pub fn expand(
    sql: &str,
    vars: &BTreeMap<String, Vec<String>>,
    from_ms: i64,
    to_ms: i64,
) -> Result<String> {
    let from = format!("toDateTime(intDiv({from_ms},1000))");
    let to = format!("toDateTime(intDiv({to_ms},1000))");
    let mut s = sql.replace("$__fromTime", &from).replace("$__toTime", &to);
    while let Some(i) = s.find("$__timeFilter(") {
        let end = s[i..].find(')').context("unclosed $__timeFilter")? + i;
        let col = s[i + "$__timeFilter(".len()..end].trim().to_string();
        s.replace_range(i..=end, &format!("{col} >= {from} AND {col} <= {to}"));
    }
    for (name, values) in vars {
        let quoted: Vec<String> = values
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "\\'")))
            .collect();
        s = s.replace(&format!("${{{name}:singlequote}}"), &quoted.join(","));
    }
    ensure!(!s.contains('$'), "unexpanded macro or variable in {s}");
    Ok(s)
}

/// Every dashboard under `grafana/dashboards/`: (path, JSON).
pub fn dashboards() -> Result<Vec<(String, Value)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(repo_root().join("grafana/dashboards"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") {
            v.push((
                p.display().to_string(),
                serde_json::from_str(&std::fs::read_to_string(&p)?)?,
            ));
        }
    }
    ensure!(
        v.len() >= 2,
        "expected the adoption and pipeline-health dashboards"
    );
    Ok(v)
}

/// The data source type of a panel target.
pub fn ds_type(v: &Value) -> &str {
    v.pointer("/datasource/type")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// (title, rawSql) of every ClickHouse panel target of a dashboard, in panel order.
pub fn clickhouse_targets(d: &Value) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if ds_type(t) == "grafana-clickhouse-datasource" {
                v.push((
                    p["title"].as_str().unwrap_or_default().to_string(),
                    t["rawSql"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    v
}

/// (dashboard, PromQL) of every Prometheus panel target.
pub fn prometheus_exprs() -> Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    for (file, d) in dashboards()? {
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if ds_type(t) == "prometheus" {
                    v.push((
                        file.clone(),
                        t["expr"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
    }
    Ok(v)
}

/// The `umkm_*` metric names a PromQL expression reads (recording rules, `umkm:…`, are not
/// metrics of the services).
pub fn umkm_metrics_in(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("umkm_"))
        .collect()
}
