//! docker-compose.yml cannot run here (no Docker engine), so this keeps it honest: every
//! `UMKM__SECTION__KEY` it sets must be a real configuration key, and the topics, group and
//! admin port it uses must match the code's defaults.

use anyhow::{Result, ensure};
use umkm_runtime::config::Settings;
use umkm_runtime::family::Family;

fn compose() -> String {
    read("docker-compose.yml")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(umkm_e2e::repo_root().join(path)).unwrap_or_default()
}

#[test]
fn every_env_key_in_compose_is_a_config_key() -> Result<()> {
    for file in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        env_keys_are_config_keys(file)?;
    }
    Ok(())
}

fn env_keys_are_config_keys(file: &str) -> Result<()> {
    let defaults = serde_json::to_value(Settings::default())?;
    let text = read(file);
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
            v = v
                .get(p)
                .ok_or_else(|| anyhow::anyhow!("{var} in {file} is not a configuration key"))?;
        }
        checked += 1;
    }
    ensure!(checked >= 8, "only {checked} UMKM__ keys found in {file}");
    Ok(())
}

/// The text of every `<tag>…</tag>` in `xml`, in order.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// docker-compose.cluster.yml against deploy/cluster/*.xml and the code: the cluster the
/// services name is the one the servers define; each server's shard and replica macros are
/// its place in `remote_servers`, replicas unique; the Keeper nodes are the services with
/// their ids; every service writes with clickhouse.cluster set through a node of the cluster.
#[test]
fn the_cluster_compose_file_matches_its_cluster_and_the_code() -> Result<()> {
    let text = read("docker-compose.cluster.yml");
    let ch = read("deploy/cluster/clickhouse.xml");
    let keeper = read("deploy/cluster/keeper.xml");
    let servers = elements(&ch, "remote_servers");
    ensure!(servers.len() == 1, "one <remote_servers> in clickhouse.xml");
    let name = servers[0]
        .trim()
        .strip_prefix('<')
        .and_then(|r| r.split('>').next())
        .unwrap_or_default();
    ensure!(!name.is_empty(), "no cluster in <remote_servers>");
    let mut replicas = std::collections::BTreeSet::new();
    for (i, shard) in elements(servers[0], "shard").iter().enumerate() {
        ensure!(
            shard.contains("<internal_replication>true</internal_replication>"),
            "shard {} must replicate internally (Replicated tables)",
            i + 1
        );
        for host in elements(shard, "host") {
            ensure!(replicas.insert(host), "{host} twice in remote_servers");
            let block = service_block(&text, host);
            for needle in [
                format!("UMKM_SHARD: \"{:02}\"", i + 1),
                format!("UMKM_REPLICA: {host}"),
                "<<: *clickhouse".to_string(),
            ] {
                ensure!(
                    block.contains(&needle),
                    "service {host}: expected {needle:?} in\n{block}"
                );
            }
        }
    }
    ensure!(
        replicas.len() == 4,
        "2 shards x 2 replicas, found {replicas:?}"
    );
    for (k, server) in elements(&keeper, "server").iter().enumerate() {
        let id = elements(server, "id").concat();
        let host = elements(server, "hostname").concat();
        ensure!(id == (k + 1).to_string(), "keeper server ids 1, 2, 3");
        ensure!(
            service_block(&text, &host).contains(&format!("KEEPER_ID: \"{id}\"")),
            "service {host} must set KEEPER_ID {id}"
        );
        ensure!(
            ch.contains(&format!(
                "<node><host>{host}</host><port>9181</port></node>"
            )),
            "clickhouse.xml does not name keeper {host}"
        );
    }
    ensure!(
        keeper.contains("<tcp_port>9181</tcp_port>"),
        "keeper port 9181"
    );
    // What every umkm-pulse service shares.
    let shared = text
        .split("x-umkm-env: &umkm-env")
        .nth(1)
        .and_then(|t| t.split("\n\n").next())
        .unwrap_or_default();
    ensure!(
        shared.contains(&format!("UMKM__CLICKHOUSE__CLUSTER: {name}")),
        "the services do not set clickhouse.cluster = {name}"
    );
    let url_host = shared
        .split("UMKM_CLICKHOUSE_URL: http://")
        .nth(1)
        .and_then(|u| u.split(':').next())
        .unwrap_or_default();
    ensure!(
        replicas.contains(url_host),
        "the services write through {url_host:?}, not a node"
    );
    let s = Settings::default();
    for (svc, topic, group, dlq) in [
        (
            qris_consumer::Qris::SERVICE,
            qris_consumer::Qris::DEFAULT_TOPIC,
            qris_consumer::Qris::DEFAULT_GROUP,
            qris_consumer::Qris::DEFAULT_DLQ_TOPIC,
        ),
        (
            noncash_consumer::Noncash::SERVICE,
            noncash_consumer::Noncash::DEFAULT_TOPIC,
            noncash_consumer::Noncash::DEFAULT_GROUP,
            noncash_consumer::Noncash::DEFAULT_DLQ_TOPIC,
        ),
        (
            merchant_consumer::Merchants::SERVICE,
            merchant_consumer::Merchants::DEFAULT_TOPIC,
            merchant_consumer::Merchants::DEFAULT_GROUP,
            merchant_consumer::Merchants::DEFAULT_DLQ_TOPIC,
        ),
    ] {
        let block = service_block(&text, svc);
        for needle in [
            "<<: *consumer".to_string(),
            "<<: *umkm-env".to_string(),
            format!("/usr/local/bin/{svc}"),
            format!("UMKM__KAFKA__TOPIC: {topic}"),
            format!("UMKM__KAFKA__GROUP_ID: {group}"),
            format!("UMKM__KAFKA__DLQ_TOPIC: {dlq}"),
            format!("UMKM__ADMIN__LISTEN: {}", s.admin.listen),
        ] {
            ensure!(
                block.contains(&needle),
                "{svc}: expected {needle:?} in\n{block}"
            );
        }
        ensure!(
            text.contains(&format!(" {topic}:")),
            "kafka-init does not create {topic}"
        );
    }
    for svc in ["migrate", "metrics-refresh"] {
        ensure!(
            service_block(&text, svc).contains("<<: *umkm-env"),
            "{svc} does not use the cluster settings"
        );
    }
    ensure!(
        service_block(&text, "migrate").contains("command: [\"migrate\"]"),
        "no one-shot migrate job"
    );
    let consumer = text
        .split("x-consumer: &consumer")
        .nth(1)
        .unwrap_or_default();
    ensure!(
        consumer.contains("migrate: { condition: service_completed_successfully }")
            && consumer.contains("/health/ready"),
        "consumers must wait for the migrations and report readiness"
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
