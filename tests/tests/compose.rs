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

#[test]
fn compose_matches_the_code_defaults() -> Result<()> {
    let text = compose();
    let s = Settings::default();
    for (what, needle) in [
        (
            "topic",
            format!("UMKM__KAFKA__TOPIC: {}", qris_consumer::Qris::DEFAULT_TOPIC),
        ),
        (
            "group",
            format!(
                "UMKM__KAFKA__GROUP_ID: {}",
                qris_consumer::Qris::DEFAULT_GROUP
            ),
        ),
        (
            "dlq",
            format!("UMKM__KAFKA__DLQ_TOPIC: {}", s.kafka.dlq_topic),
        ),
        (
            "database",
            format!("UMKM__CLICKHOUSE__DATABASE: {}", s.clickhouse.database),
        ),
        (
            "admin port",
            format!("UMKM__ADMIN__LISTEN: {}", s.admin.listen),
        ),
        (
            "topic creation",
            format!("{}:", qris_consumer::Qris::DEFAULT_TOPIC),
        ),
    ] {
        ensure!(
            text.contains(&needle),
            "docker-compose.yml: {what}: expected {needle:?}"
        );
    }
    ensure!(text.contains("/health/ready"), "no readiness healthcheck");
    let dockerfile = std::fs::read_to_string(umkm_e2e::repo_root().join("Dockerfile"))?;
    ensure!(
        dockerfile.contains("-p qris-consumer"),
        "Dockerfile does not build qris-consumer"
    );
    Ok(())
}
