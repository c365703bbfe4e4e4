//! docker-compose.yml cannot run here (no Docker engine), so this keeps it honest: every
//! `UMKM__SECTION__KEY` it sets must be a real configuration key, and the topics, group and
//! admin port it uses must match the code's defaults.

use anyhow::{Result, ensure};
use umkm_runtime::config::Settings;
use umkm_runtime::family::Family;

fn compose() -> String {
    std::fs::read_to_string(umkm_e2e::repo_root().join("docker-compose.yml")).unwrap_or_default()
}

#[test]
fn every_env_key_in_compose_is_a_config_key() -> Result<()> {
    let defaults = serde_json::to_value(Settings::default())?;
    let text = compose();
    let mut checked = 0;
    for line in text.lines() {
        let t = line.trim();
        let Some(var) = t.split(':').next().filter(|v| v.starts_with("UMKM__")) else {
            continue;
        };
        let path: Vec<String> = var["UMKM__".len()..]
            .split("__")
            .map(str::to_lowercase)
            .collect();
        let mut v = &defaults;
        for p in &path {
            v = v.get(p).ok_or_else(|| {
                anyhow::anyhow!("{var} in docker-compose.yml is not a configuration key")
            })?;
        }
        checked += 1;
    }
    ensure!(
        checked >= 8,
        "only {checked} UMKM__ keys found in docker-compose.yml"
    );
    Ok(())
}

/// The compose block of one service: its `  name:` line and every deeper-indented line after.
fn service_block(text: &str, name: &str) -> String {
    let header = format!("  {name}:");
    let mut lines = text.lines().skip_while(|l| *l != header);
    let Some(first) = lines.next() else {
        return String::new();
    };
    let mut block = vec![first];
    block.extend(lines.take_while(|l| l.is_empty() || l.starts_with("   ")));
    block.join("\n")
}

fn check_service<F: Family>(text: &str) -> Result<()> {
    let block = service_block(text, F::SERVICE);
    ensure!(
        !block.is_empty(),
        "docker-compose.yml has no {} service",
        F::SERVICE
    );
    let s = Settings::default();
    for (what, needle) in [
        ("binary", format!("/usr/local/bin/{}", F::SERVICE)),
        ("topic", format!("UMKM__KAFKA__TOPIC: {}", F::DEFAULT_TOPIC)),
        (
            "group",
            format!("UMKM__KAFKA__GROUP_ID: {}", F::DEFAULT_GROUP),
        ),
        (
            "dlq",
            format!("UMKM__KAFKA__DLQ_TOPIC: {}", F::DEFAULT_DLQ_TOPIC),
        ),
        (
            "database",
            format!("UMKM__CLICKHOUSE__DATABASE: {}", s.clickhouse.database),
        ),
        (
            "admin port",
            format!("UMKM__ADMIN__LISTEN: {}", s.admin.listen),
        ),
        ("readiness", "/health/ready".to_string()),
        (
            "migrations first",
            "migrate: { condition: service_completed_successfully }".into(),
        ),
    ] {
        ensure!(
            block.contains(&needle),
            "docker-compose.yml {}: {what}: expected {needle:?} in\n{block}",
            F::SERVICE
        );
    }
    for topic in [F::DEFAULT_TOPIC, F::DEFAULT_DLQ_TOPIC] {
        ensure!(
            text.contains(&format!(" {topic}:")),
            "docker-compose.yml: kafka-init does not create {topic}"
        );
    }
    let register =
        std::fs::read_to_string(umkm_e2e::repo_root().join("deploy/register_schemas.py"))?;
    ensure!(
        register.contains(&format!("\"{}-value\"", F::DEFAULT_TOPIC)),
        "deploy/register_schemas.py does not register {}-value",
        F::DEFAULT_TOPIC
    );
    let dockerfile = std::fs::read_to_string(umkm_e2e::repo_root().join("Dockerfile"))?;
    ensure!(
        dockerfile.contains(&format!("-p {}", F::SERVICE))
            && dockerfile.contains(&format!("release/{}", F::SERVICE)),
        "Dockerfile does not build and ship {}",
        F::SERVICE
    );
    Ok(())
}

#[test]
fn compose_matches_the_code_defaults() -> Result<()> {
    let text = compose();
    check_service::<qris_consumer::Qris>(&text)?;
    check_service::<noncash_consumer::Noncash>(&text)?;
    check_service::<merchant_consumer::Merchants>(&text)?;
    ensure!(
        service_block(&text, "migrate").contains("command: [\"migrate\"]"),
        "no one-shot migrate job"
    );
    Ok(())
}

#[test]
fn grafana_and_prometheus_are_wired() -> Result<()> {
    let text = compose();
    let g = service_block(&text, "grafana");
    for needle in [
        "./grafana/provisioning:/etc/grafana/provisioning",
        "./grafana/dashboards:/var/lib/grafana/dashboards",
        "grafana-clickhouse-datasource",
    ] {
        ensure!(g.contains(needle), "grafana service lacks {needle:?}");
    }
    let root = umkm_e2e::repo_root();
    let p = service_block(&text, "prometheus");
    for needle in [
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml",
        "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml",
    ] {
        ensure!(p.contains(needle), "prometheus service lacks {needle:?}");
    }
    let prom = std::fs::read_to_string(root.join("deploy/prometheus/prometheus.yml"))?;
    ensure!(
        prom.contains("rule_files:") && prom.contains("- alerts.yml"),
        "deploy/prometheus/prometheus.yml does not load the alert rules"
    );
    for svc in ["qris-consumer", "noncash-consumer", "merchant-consumer"] {
        ensure!(
            prom.contains(&format!("{svc}:9464")),
            "prometheus does not scrape {svc}"
        );
    }
    // Prometheus's own checker accepts the file and the rule files it names.
    let out = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(root.join("deploy/prometheus/prometheus.yml"))
        .output()?;
    ensure!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ds =
        std::fs::read_to_string(root.join("grafana/provisioning/datasources/datasources.yml"))?;
    ensure!(
        ds.contains("uid: clickhouse") && ds.contains("uid: prometheus"),
        "data source uids the dashboards use are not provisioned"
    );
    Ok(())
}
