//! The traffic publisher (`umkm-traffic`): the same seed gives the same events in two separate
//! runs, and its ground truth is exactly what the three consumers land (≥ 50,000 events through
//! tansu and ClickHouse 18.16).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use umkm_e2e::{Env, ch_u64, read_dlq_exactly, wait_until};

fn bin() -> std::path::PathBuf {
    umkm_e2e::service_bin("umkm-traffic")
}

fn run(args: &[&str], json: &std::path::Path) -> Result<Value> {
    let out = Command::new(bin())
        .args(args)
        .arg("--summary-json")
        .arg(json)
        .output()
        .context("run umkm-traffic")?;
    ensure!(
        out.status.success(),
        "umkm-traffic {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_str(&std::fs::read_to_string(json)?)?)
}

const RANGE: [&str; 4] = ["--from", "2026-06-01", "--to", "2026-08-31"];

/// `--help` names every option the publisher parses, and the summary shows what the README
/// says it shows (rows per table, refunds, midnight doubles, gross and net per channel and per
/// kab/kota).
#[test]
fn help_lists_every_option_and_the_summary_has_every_part() -> Result<()> {
    let out = Command::new(bin()).arg("--help").output()?;
    ensure!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let source = std::fs::read_to_string(umkm_e2e::repo_root().join("tools/traffic/src/main.rs"))?;
    let mut parsed = 0;
    let is_option = |t: &&str| {
        t.len() > 2
            && t.starts_with("--")
            && t[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-')
    };
    for arm in source.split('"').filter(is_option) {
        parsed += 1;
        ensure!(help.contains(arm), "--help does not mention {arm}:\n{help}");
    }
    ensure!(parsed >= 20, "only {parsed} options found in the source");
    ensure!(help.contains("umkm-traffic topics"), "{help}");

    let json = std::env::temp_dir().join(umkm_e2e::unique("traffic_summary") + ".json");
    let summary = Command::new(bin())
        .args(["--dry-run", "--payments", "3000", "--merchants", "200"])
        .args(RANGE)
        .arg("--summary-json")
        .arg(&json)
        .output()?;
    ensure!(summary.status.success());
    let text = String::from_utf8_lossy(&summary.stdout);
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    for part in [
        "qris_payments",
        "noncash_payments",
        "merchant_events",
        "refunds",
        "midnight doubles",
        "stream digest",
    ] {
        ensure!(text.contains(part), "summary lacks {part}:\n{text}");
    }
    for kab in truth["truth"]["by_kab_kota"]
        .as_object()
        .context("by_kab_kota")?
        .keys()
    {
        ensure!(
            text.contains(&format!("    {kab} ")),
            "summary lacks {kab}:\n{text}"
        );
    }
    for channel in truth["truth"]["success_by_channel"]
        .as_object()
        .context("success_by_channel")?
        .keys()
    {
        ensure!(
            text.contains(&format!("    {channel} ")),
            "summary lacks {channel}:\n{text}"
        );
    }
    std::fs::remove_file(&json)?;
    Ok(())
}

#[test]
fn the_same_seed_gives_the_same_events_in_two_runs() -> Result<()> {
    let dir = std::env::temp_dir().join(umkm_e2e::unique("traffic_det"));
    std::fs::create_dir_all(&dir)?;
    let mut args = vec!["--dry-run", "--payments", "20000", "--seed", "7"];
    args.extend(RANGE);
    let a = run(&args, &dir.join("a.json"))?;
    let b = run(&args, &dir.join("b.json"))?;
    ensure!(
        a["digest"] == b["digest"],
        "{} != {}",
        a["digest"],
        b["digest"]
    );
    ensure!(a["truth"] == b["truth"], "ground truths differ");
    ensure!(a["published"].as_u64() > Some(20_000));
    args[4] = "8";
    let c = run(&args, &dir.join("c.json"))?;
    ensure!(
        a["digest"] != c["digest"],
        "another seed gave the same stream"
    );
    println!(
        "traffic: seed 7 twice -> digest {} ({} messages); seed 8 -> {}",
        a["digest"], a["published"], c["digest"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ground_truth_is_exactly_what_lands() -> Result<()> {
    let env = Env::from_env();
    let d = umkm_e2e::Deployment::start(&env, "e2e_traffic", 3).await?;
    let db = d.database.clone();
    let json = d.qris.work_dir.join("truth.json");
    let mut args = vec![
        "--brokers",
        &env.brokers,
        "--payments",
        "45000",
        "--merchants",
        "3000",
        "--seed",
        "11",
        "--qris-topic",
        &d.qris.topic,
        "--noncash-topic",
        &d.noncash.topic,
        "--merchant-topic",
        &d.merchants.topic,
    ];
    args.extend(RANGE);
    let s = run(&args, &json)?;
    let t = &s["truth"];
    let published = s["published"].as_u64().unwrap_or(0);
    ensure!(published >= 50_000, "{published} messages");
    let want = [
        ("qris_payments", t["qris_payments"].as_u64().unwrap_or(0)),
        (
            "noncash_payments",
            t["noncash_payments"].as_u64().unwrap_or(0),
        ),
        (
            "merchant_events",
            t["merchant_versions"].as_u64().unwrap_or(0),
        ),
    ];
    for (table, n) in want {
        let (env2, db2) = (env.clone(), db.clone());
        wait_until(
            Duration::from_secs(240),
            &format!("{table} reaching {n} rows"),
            move || {
                let (env, db) = (env2.clone(), db2.clone());
                async move { Ok(ch_u64(&env, &format!("SELECT count() FROM {db}.{table}")).await? >= n) }
            },
        )
        .await
        .map_err(|e| e.context(format!("{}\n{}", d.qris_proc.log_tail(), d.noncash_proc.log_tail())))?;
    }
    // Exact: nothing beyond the truth, dead letters exactly per family and rule.
    for (family, setup) in [
        ("qris", &d.qris),
        ("noncash", &d.noncash),
        ("merchants", &d.merchants),
    ] {
        let rules: BTreeMap<String, u64> = t["bad"][family]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let total: u64 = rules.values().sum();
        let dlq = read_dlq_exactly(&env, &setup.dlq_topic, total as usize)?;
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        for r in &dlq {
            *got.entry(r.headers.get("dlq.rule").cloned().unwrap_or_default())
                .or_default() += 1;
        }
        ensure!(
            got == rules,
            "{family} DLQ by rule {got:?}, expected {rules:?}"
        );
    }
    let mut landed = Vec::new();
    for (table, n) in want {
        let got = ch_u64(&env, &format!("SELECT count() FROM {db}.{table}")).await?;
        ensure!(got == n, "{table}: {got} rows, ground truth {n}");
        landed.push(format!("{table} {got}"));
    }
    // Successful value by channel, as published.
    let rows = umkm_e2e::ch(
        &env,
        &format!(
            "SELECT channel, count(), sum(amount_idr) FROM {db}.v_payments WHERE status = 'success' GROUP BY channel ORDER BY channel FORMAT TabSeparated"
        ),
    )
    .await?;
    let mut want_ch = Vec::new();
    for (ch, v) in t["success_by_channel"].as_object().into_iter().flatten() {
        want_ch.push(format!("{ch}\t{}\t{}", v[0], v[1]));
    }
    want_ch.sort();
    let got_ch: Vec<String> = rows.lines().map(String::from).collect();
    ensure!(
        got_ch == want_ch,
        "success by channel {got_ch:?}, expected {want_ch:?}"
    );
    // Net of refunds and cancellations (in the payment's period), by channel and by kab/kota,
    // and the refunds whose payment is not in the data.
    let tsv = |rows: String| -> Vec<String> { rows.lines().map(String::from).collect() };
    let got_net = tsv(
        umkm_e2e::ch(
            &env,
            &format!(
                "SELECT channel, sum(net_count), sum(net_value_idr) FROM {db}.v_merchant_activity_monthly GROUP BY channel ORDER BY channel FORMAT TabSeparated"
            ),
        )
        .await?,
    );
    let mut want_net: Vec<String> = t["net_by_channel"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(ch, v)| format!("{ch}\t{}\t{}", v[0], v[1]))
        .collect();
    want_net.sort();
    ensure!(
        got_net == want_net,
        "net by channel {got_net:?}, expected {want_net:?}"
    );
    let got_kab = tsv(
        umkm_e2e::ch(
            &env,
            &format!(
                "SELECT kab_kota_code, sum(success_count), sum(success_value_idr), sum(net_count), sum(net_value_idr) FROM {db}.v_merchant_activity_monthly GROUP BY kab_kota_code ORDER BY kab_kota_code FORMAT TabSeparated"
            ),
        )
        .await?,
    );
    let want_kab: Vec<String> = t["by_kab_kota"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}\t{}\t{}\t{}\t{}", v[0], v[1], v[2], v[3]))
        .collect();
    ensure!(
        got_kab == want_kab,
        "gross and net by kab/kota {got_kab:?}, expected {want_kab:?}"
    );
    let unlinked = ch_u64(
        &env,
        &format!("SELECT count() FROM {db}.v_payment_undos WHERE linked = 0 AND refund_rows > 0"),
    )
    .await?;
    let want_unlinked = t["unlinked_refunds"].as_u64().unwrap_or(u64::MAX);
    ensure!(
        unlinked == want_unlinked,
        "unlinked refunds {unlinked}, expected {want_unlinked}"
    );
    ensure!(
        t["refunds"].as_u64().unwrap_or(0) > 0 && t["midnight_doubles"].as_u64().unwrap_or(0) > 0,
        "the traffic had no refunds or no midnight doubles: {t}"
    );
    println!(
        "traffic: {published} messages (seed 11); landed {} = ground truth; DLQ exact per rule; success by channel {got_ch:?}; net {got_net:?}; {} refunds ({unlinked} unlinked), {} midnight doubles",
        landed.join(", "),
        t["refunds"],
        t["midnight_doubles"]
    );
    let (mut q, mut n, mut m) = (d.qris_proc, d.noncash_proc, d.merchants_proc);
    for c in [&mut q, &mut n, &mut m] {
        ensure!(c.terminate(Duration::from_secs(30))? == 0);
    }
    Ok(())
}
