//! A zombie consumer is fenced (README "Delivery guarantees"): consumer `a` stops itself
//! (SIGSTOP, `UMKM_FAULT=before-insert-stop@N`) after looking up a batch and before inserting
//! it; the group gives its partitions to `b`, which lands everything; `a` is continued and sends
//! its insert, which the server refuses. Nothing lands twice, and both keep consuming after.
//! Merges are stopped on the table so that a duplicate could not hide in a merge.

use std::time::Duration;

use anyhow::{Result, ensure};
use umkm_e2e::{
    ConsumerProc, ConsumerSetup, Ends, Env, ch, ch_u64, procfs, publish_tracked, wait_committed,
    wait_until,
};
use umkm_traffic::qris::{Spec, generate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_frozen_past_the_session_timeout_cannot_insert_its_batch() -> Result<()> {
    let env = Env::from_env();
    let partitions = 4;
    // librdkafka's 3 s heartbeat here: with the 1 s default, tansu 0.6 gave the surviving
    // member only its own partitions after the frozen one's session expired, and the frozen
    // member's were never assigned again (docs/reliability.md "Runs"). Apache Kafka reassigns
    // them whatever the heartbeat.
    let s = ConsumerSetup::new(&env, "fence", partitions)
        .await?
        .with_env("UMKM__BATCH__MAX_ROWS", "500")
        .with_env("UMKM__KAFKA__HEARTBEAT_INTERVAL_MS", "3000");
    let plan = generate(&Spec {
        payments: 6_000,
        seed: 77,
        ..Spec::default()
    });
    let split = plan.messages.len() * 6 / 10;
    let mut a = ConsumerProc::start(
        &env,
        &s.clone().with_env("UMKM_FAULT", "before-insert-stop@3"),
        "a",
    )?;
    a.wait_assigned(Duration::from_secs(30)).await?;
    let mut b = ConsumerProc::start(&env, &s, "b")?;
    b.wait_assigned(Duration::from_secs(30)).await?;

    // Duplicates must stay visible: ReplacingMergeTree's merges would collapse them.
    ch(
        &env,
        &format!("SYSTEM STOP MERGES {}.qris_payments", s.database),
    )
    .await?;

    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages[..split], &mut ends).await?;
    let pid = a.child.id();
    wait_until(
        Duration::from_secs(60),
        "a stopped itself before an insert",
        move || std::future::ready(Ok(procfs::state(pid) == Some('T'))),
    )
    .await
    .map_err(|e| e.context(a.log_tail()))?;
    // a's session expires (6 s in the tests), b gets every partition and lands what a held.
    wait_committed(&env, &s, partitions, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(format!("b:\n{}", b.log_tail())))?;
    let before = ch_u64(
        &env,
        &format!("SELECT count() FROM {}.qris_payments", s.database),
    )
    .await?;

    std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()?;
    // Until a's insert was refused, or its rows landed (which is the failure checked below).
    let (a_ref, env_ref, db) = (&a, &env, s.database.clone());
    wait_until(
        Duration::from_secs(60),
        "a's insert refused or landed",
        || {
            let db = db.clone();
            async move {
                let landed =
                    ch_u64(env_ref, &format!("SELECT count() FROM {db}.qris_payments")).await?;
                Ok(a_ref.metric("umkm_fenced_inserts_total").await >= 1.0 || landed > before)
            }
        },
    )
    .await
    .map_err(|e| e.context(a.log_tail()))?;
    let after = ch_u64(
        &env,
        &format!("SELECT count() FROM {}.qris_payments", s.database),
    )
    .await?;
    ensure!(
        after == before,
        "the zombie's batch landed: {before} rows before it was continued, {after} after"
    );

    // Both are members again and the rest of the stream lands exactly.
    publish_tracked(&env, &s.topic, &plan.messages[split..], &mut ends).await?;
    wait_committed(&env, &s, partitions, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(format!("a:\n{}\nb:\n{}", a.log_tail(), b.log_tail())))?;
    let n = ch_u64(
        &env,
        &format!("SELECT count() FROM {}.qris_payments", s.database),
    )
    .await?;
    let distinct = ch_u64(
        &env,
        &format!(
            "SELECT uniqExact(dedup_key) FROM {}.qris_payments",
            s.database
        ),
    )
    .await?;
    ensure!(
        n == plan.unique.len() as u64 && distinct == n,
        "plain count() {n}, distinct keys {distinct}, unique payments {}",
        plan.unique.len()
    );
    let landed = umkm_e2e::landed_payments(&env, &s.database).await?;
    ensure!(
        landed == plan.unique,
        "landed payments differ from the unique payments published"
    );
    let claims = ch_u64(
        &env,
        &format!("SELECT count() FROM {}.partition_claims", s.database),
    )
    .await?;
    println!(
        "fencing: {before} rows when a was continued, a fenced {} time(s), {n} rows at the end = unique payments; {claims} claims",
        a.metric("umkm_fenced_inserts_total").await
    );
    ensure!(
        a.terminate(Duration::from_secs(30))? == 0,
        "a did not stop cleanly"
    );
    ensure!(
        b.terminate(Duration::from_secs(30))? == 0,
        "b did not stop cleanly"
    );
    Ok(())
}
