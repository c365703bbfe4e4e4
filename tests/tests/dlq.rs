//! umkm-dlq against the real broker and ClickHouse that `scripts/test` starts: payments of a
//! kecamatan the shipped reference does not know are dead-lettered; the summary counts every
//! rule as sent; after the reference is updated (`reference.regions_file`) the records are
//! replayed and land exactly once; a second replay changes nothing; replays carry their audit
//! headers; `show` decodes a record with the payer redacted and `export` writes every record.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use apache_avro::Schema;
use rand::SeedableRng;
use rand::rngs::StdRng;
use umkm_e2e::{
    ConsumerProc, ConsumerSetup, Ends, Env, ch_u64, publish_tracked, read_all, read_dlq_exactly,
    service_bin, wait_committed, wait_until,
};
use umkm_traffic::qris::{Spec, V1, generate, merchants, now_ms, payment};

const NEW_KECAMATAN: &str = "36.03.34";
const NEW_PAYMENTS: usize = 25;

/// Runs umkm-dlq; returns its stdout, or fails with both streams.
fn dlq(env: &Env, args: &[&str]) -> Result<String> {
    let out = Command::new(service_bin("umkm-dlq"))
        .args(args)
        .args(["--brokers", &env.brokers, "--timeout-s", "60"])
        .output()
        .context("umkm-dlq (built by cargo build --workspace)")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "umkm-dlq {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kecamatan_replayed_after_the_reference_fix_lands_once() -> Result<()> {
    let env = Env::from_env();
    let s = ConsumerSetup::new(&env, "dlq_replay", 3).await?;
    let plan = generate(&Spec {
        payments: 2_000,
        bad_each: 10,
        ..Spec::default()
    });
    // Payments from a kecamatan a newer decree adds.
    let v1 = Schema::parse_str(V1)?;
    let mut rng = StdRng::seed_from_u64(7);
    let mut messages = plan.messages.clone();
    for (i, mut m) in merchants(NEW_PAYMENTS, &mut rng).into_iter().enumerate() {
        m.nmid = format!("ID10{:011}", 90_000_000 + i);
        m.region = NEW_KECAMATAN;
        let mut e = payment(
            &m,
            format!("{:012}", 950_000_000_000u64 + i as u64),
            &mut rng,
            now_ms(),
        );
        e.payer_id = Some("081234567890".into());
        messages.push((
            Some(m.nmid.into_bytes()),
            umkm_core::avro::encode(&v1, 1, &e)?,
        ));
    }
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &messages, &mut ends).await?;
    let dead = plan.bad_total() + NEW_PAYMENTS;

    // 1. The shipped reference: the new kecamatan's payments are dead-lettered.
    let mut c = ConsumerProc::start(&env, &s, "before")?;
    wait_committed(&env, &s, 3, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    let rows_sql = format!("SELECT count() FROM {}.qris_payments", s.database);
    let landed = ch_u64(&env, &rows_sql).await?;
    ensure!(
        landed as usize == plan.unique.len(),
        "{landed} rows before the fix"
    );
    read_dlq_exactly(&env, &s.dlq_topic, dead)?;
    ensure!(c.terminate(Duration::from_secs(30))? == 0);

    // 2. The summary counts each rule as sent.
    let summary: serde_json::Value =
        serde_json::from_str(&dlq(&env, &["summary", "--topic", &s.dlq_topic, "--json"])?)?;
    let mut want: BTreeMap<String, usize> =
        plan.bad.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    *want.entry("region_unknown".into()).or_default() += NEW_PAYMENTS;
    let got: BTreeMap<String, usize> = serde_json::from_value(summary["by_rule"].clone())?;
    ensure!(got == want, "summary by rule {got:?}, sent {want:?}");
    ensure!(
        summary["records"] == dead,
        "summary records {}",
        summary["records"]
    );
    println!("{}", dlq(&env, &["summary", "--topic", &s.dlq_topic])?);

    // 3. `show` decodes a record and redacts the payer; `export` writes every record.
    let listed = dlq(
        &env,
        &["list", "--topic", &s.dlq_topic, "--reason", NEW_KECAMATAN],
    )?;
    ensure!(listed.lines().count() == NEW_PAYMENTS, "list:\n{listed}");
    let first = listed.split_whitespace().next().unwrap_or_default();
    let registry = s.registry_dir.display().to_string();
    let shown: serde_json::Value = serde_json::from_str(&dlq(
        &env,
        &[
            "show",
            "--topic",
            &s.dlq_topic,
            "--record",
            first,
            "--registry-dir",
            &registry,
        ],
    )?)?;
    ensure!(
        shown["value"]["region_code"] == NEW_KECAMATAN,
        "show: {shown}"
    );
    ensure!(shown["value"]["payer_id"] == "<redacted>", "show: {shown}");
    ensure!(
        shown["headers"]["dlq.rule"] == "region_unknown",
        "show: {shown}"
    );
    let export = s.work_dir.join("dlq.jsonl");
    let export_s = export.display().to_string();
    dlq(
        &env,
        &[
            "export",
            "--topic",
            &s.dlq_topic,
            "--out",
            &export_s,
            "--registry-dir",
            &registry,
        ],
    )?;
    let text = std::fs::read_to_string(&export)?;
    ensure!(
        text.lines().count() == dead,
        "export holds {} lines",
        text.lines().count()
    );
    ensure!(
        !text.contains("081234567890"),
        "the export holds a payer id"
    );

    // 4. The reference is updated, the consumer restarted with it.
    let regions = s.work_dir.join("kemendagri_banten_2026.csv");
    std::fs::write(
        &regions,
        format!(
            "{}{NEW_KECAMATAN},Kecamatan Baru,kecamatan\n",
            umkm_core::reference::BANTEN_CSV
        ),
    )?;
    let s2 = s
        .clone()
        .with_env(
            "UMKM__REFERENCE__REGIONS_FILE",
            &regions.display().to_string(),
        )
        .with_env("UMKM__REFERENCE__REGIONS_VERSION", "test-decree-2026");
    let mut c = ConsumerProc::start(&env, &s2, "after")?;
    let select = [
        "--topic",
        &s.dlq_topic,
        "--rule",
        "region_unknown",
        "--reason",
        NEW_KECAMATAN,
    ];

    // 5. A dry run sends nothing.
    let dry = dlq(&env, &[&["replay", "--dry-run"][..], &select[..]].concat())?;
    ensure!(
        dry.contains(&format!("would replay {NEW_PAYMENTS}")),
        "dry run: {dry}"
    );

    // 6. The replay lands each record once.
    let out = dlq(
        &env,
        &[
            &["replay", "--id", "fix-1", "--rate", "200"][..],
            &select[..],
        ]
        .concat(),
    )?;
    println!("{out}");
    ensure!(
        out.contains(&format!("replayed {NEW_PAYMENTS},")),
        "replay: {out}"
    );
    let (e2, sql, want_rows) = (
        &env,
        rows_sql.as_str(),
        (plan.unique.len() + NEW_PAYMENTS) as u64,
    );
    wait_until(
        Duration::from_secs(60),
        "the replayed payments",
        || async move { Ok(ch_u64(e2, sql).await? == want_rows) },
    )
    .await
    .map_err(|e| e.context(c.log_tail()))?;
    let kec = ch_u64(
        &env,
        &format!(
            "SELECT count() FROM {}.qris_payments WHERE kecamatan_code = '{NEW_KECAMATAN}'",
            s.database
        ),
    )
    .await?;
    ensure!(
        kec as usize == NEW_PAYMENTS,
        "{kec} rows in {NEW_KECAMATAN}"
    );

    // 7. A second replay changes nothing: the consumer drops them as duplicates.
    let dups = c.metric("umkm_events_total{outcome=\"duplicate\"").await;
    dlq(
        &env,
        &[&["replay", "--id", "fix-2"][..], &select[..]].concat(),
    )?;
    let c1 = &c;
    wait_until(
        Duration::from_secs(60),
        "the second replay dropped",
        || async move {
            Ok(c1.metric("umkm_events_total{outcome=\"duplicate\"").await
                >= dups + NEW_PAYMENTS as f64)
        },
    )
    .await
    .map_err(|e| e.context(c.log_tail()))?;
    let rows = ch_u64(&env, &rows_sql).await?;
    let keys = ch_u64(
        &env,
        &format!(
            "SELECT uniqExact(dedup_key) FROM {}.qris_payments",
            s.database
        ),
    )
    .await?;
    ensure!(
        rows == want_rows && keys == rows,
        "{rows} rows, {keys} keys after a second replay"
    );
    read_dlq_exactly(&env, &s.dlq_topic, dead)?;

    // 8. Replayed records name their replay and their DLQ coordinates; the new reference is in
    //    ClickHouse under its version.
    let source = read_all(
        &env,
        &s.topic,
        3,
        messages.len() + 2 * NEW_PAYMENTS,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )?;
    for id in ["fix-1", "fix-2"] {
        let replayed: Vec<_> = source
            .iter()
            .filter(|r| r.headers.get("replay.id").map(String::as_str) == Some(id))
            .collect();
        ensure!(
            replayed.len() == NEW_PAYMENTS,
            "{} records of {id}",
            replayed.len()
        );
        ensure!(
            replayed.iter().all(|r| {
                r.headers.get("replay.dlq.topic") == Some(&s.dlq_topic)
                    && r.headers
                        .get("replay.dlq.offset")
                        .is_some_and(|o| o.parse::<i64>().is_ok())
            }),
            "replay headers missing"
        );
    }
    let reference = ch_u64(
        &env,
        &format!(
            "SELECT count() FROM {}.ref_regions WHERE version = 'test-decree-2026' AND code = '{NEW_KECAMATAN}'",
            s.database
        ),
    )
    .await?;
    ensure!(
        reference == 1,
        "ref_regions holds the new code {reference} times"
    );
    ensure!(c.terminate(Duration::from_secs(30))? == 0);
    Ok(())
}
