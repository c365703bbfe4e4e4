//! The alert rules (`deploy/prometheus/alerts.yml`): Prometheus's own checker and unit tests
//! (`promtool check rules`, `promtool test rules`), one test case and one runbook entry per
//! alert, and every metric an alert or a Prometheus panel reads exported by a running consumer.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use umkm_e2e::grafana::{prometheus_exprs, umkm_metrics_in};
use umkm_e2e::{
    ConsumerProc, ConsumerSetup, Ends, Env, publish_tracked, repo_root, wait_committed, wait_until,
};
use umkm_traffic::qris::{Spec, generate};

fn promtool(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .context("promtool (Debian package prometheus) must be installed")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

/// The values of `key: value` lines (list items included) of a YAML file.
fn values_of<'a>(yaml: &'a str, key: &str) -> Vec<&'a str> {
    yaml.lines()
        .filter_map(|l| {
            l.trim()
                .trim_start_matches("- ")
                .strip_prefix(&format!("{key}:"))
        })
        .map(str::trim)
        .collect()
}

fn alerts_yml() -> Result<String> {
    Ok(std::fs::read_to_string(
        repo_root().join("deploy/prometheus/alerts.yml"),
    )?)
}

#[test]
fn promtool_checks_and_unit_tests_every_alert() -> Result<()> {
    let dir = repo_root().join("deploy/prometheus");
    print!("{}", promtool(&dir, &["check", "rules", "alerts.yml"])?);
    let tested = promtool(&dir, &["test", "rules", "alerts.test.yml"])?;
    print!("{tested}");
    ensure!(tested.contains("SUCCESS"), "promtool test rules: {tested}");

    let rules = alerts_yml()?;
    let alerts: BTreeSet<&str> = values_of(&rules, "alert").into_iter().collect();
    ensure!(alerts.len() >= 8, "alerts: {alerts:?}");
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml"))?;
    let runbook = std::fs::read_to_string(repo_root().join("docs/operations.md"))?;
    for a in &alerts {
        // A case where it fires: an alertname line followed by expected alerts with labels.
        let fires = tests.split("- eval_time:").any(|case| {
            case.contains(&format!("alertname: {a}\n")) && case.contains("exp_labels:")
        });
        ensure!(fires, "alerts.test.yml never expects {a} to fire");
        ensure!(
            runbook.contains(&format!("### {a}\n")),
            "docs/operations.md has no entry for {a}"
        );
        ensure!(
            rules.contains(&format!("runbook: docs/operations.md#{}", a.to_lowercase())),
            "{a} does not link its runbook entry"
        );
    }
    println!("{} alerts, each tested and documented", alerts.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_panels_read_only_metrics_a_running_consumer_exports() -> Result<()> {
    let env = Env::from_env();
    let s = ConsumerSetup::new(&env, "alerts", 1).await?;
    let plan = generate(&Spec {
        payments: 200,
        bad_each: 2,
        ..Spec::default()
    });
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;
    let mut c = ConsumerProc::start(&env, &s, "c")?;
    wait_committed(&env, &s, 1, &ends, Duration::from_secs(90))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    let c1 = &c;
    wait_until(
        Duration::from_secs(30),
        "the group's lag metric",
        || async move {
            Ok(c1
                .get("/metrics")
                .await?
                .1
                .contains("umkm_group_lag_messages{"))
        },
    )
    .await?;
    let (_, page) = c.get("/metrics").await?;
    let exported: BTreeSet<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();

    let rules = alerts_yml()?;
    let mut used: Vec<(String, String)> = values_of(&rules, "expr")
        .into_iter()
        .map(|e| ("deploy/prometheus/alerts.yml".to_string(), e.to_string()))
        .collect();
    // Multi-line expressions (`expr: |`) continue on the following lines.
    used.extend(
        rules
            .lines()
            .filter(|l| l.starts_with("          ") && l.contains("umkm_"))
            .map(|l| {
                (
                    "deploy/prometheus/alerts.yml".to_string(),
                    l.trim().to_string(),
                )
            }),
    );
    used.extend(prometheus_exprs()?);
    let mut names = BTreeSet::new();
    for (file, expr) in &used {
        for name in umkm_metrics_in(expr) {
            ensure!(
                exported.contains(name),
                "{file}: {name} is not exported by a running qris-consumer"
            );
            names.insert(name.to_string());
        }
    }
    ensure!(names.len() >= 12, "only {names:?} checked");
    println!(
        "{} metrics read by the alerts and panels, all exported: {names:?}",
        names.len()
    );
    let code = c.terminate(Duration::from_secs(30))?;
    ensure!(code == 0, "exit code {code}");
    Ok(())
}
