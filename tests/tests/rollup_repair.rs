//! Rollup rows lost with a cut-short insert come back (docs/reliability.md "Rollups after a
//! crash"). A server killed between an INSERT's facts part and its views' parts keeps the facts
//! and loses the rollup rows; here two of the views are detached while consumer `a` inserts its
//! first batch and crashes before committing it (`UMKM_FAULT=after-insert@1`), which leaves the
//! same state. Consumer `b` consumes the batch again, finds its rows in the facts from its own
//! uncommitted range and notes them; `refresh-metrics` then inserts what the rollups lack, and
//! every rollup group equals the facts. The same on the cluster (2 shards x 2 replicas), where
//! the views are detached on every node and the suspects are a replicated table.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use umkm_e2e::{
    Cluster, ConsumerProc, ConsumerSetup, Ends, Env, ch, ch_u64, publish_tracked,
    rollup_mismatches, run_subcommand, wait_committed,
};
use umkm_traffic::qris::{Spec, generate};

const LOST_VIEWS: [&str; 2] = ["mv_qris_merchant_monthly", "mv_qris_ticket_monthly"];

/// Where the test runs: the one server, or every node of the cluster.
struct Target {
    env: Env,
    cluster: Option<Cluster>,
}

impl Target {
    /// `sql` on the server, or on every node.
    async fn everywhere(&self, sql: &str) -> Result<()> {
        match &self.cluster {
            None => ch(&self.env, sql).await.map(|_| ()),
            Some(c) => {
                for i in 0..c.urls.len() {
                    c.on_node(i, sql).await?;
                }
                Ok(())
            }
        }
    }

    /// On the cluster, every replica has what the others took (a count through a
    /// Distributed table reads any replica of a shard).
    async fn sync(&self, db: &str) -> Result<()> {
        if self.cluster.is_some() {
            for t in [
                "qris_payments_local",
                "payments_merchant_daily_local",
                "payments_merchant_monthly_local",
                "payments_ticket_monthly_local",
                "rollup_suspects",
            ] {
                self.everywhere(&format!("SYSTEM SYNC REPLICA {db}.{t}"))
                    .await?;
            }
        }
        Ok(())
    }
}

async fn differing(t: &Target, db: &str) -> Result<Vec<(&'static str, usize)>> {
    t.sync(db).await?;
    let env = &t.env;
    Ok(rollup_mismatches(env, db)
        .await?
        .into_iter()
        .map(|(t, g)| (t, g.len()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_rows_lost_with_a_cut_short_insert_are_restored_by_refresh_metrics() -> Result<()> {
    lost_rollup_rows_come_back(&Target {
        env: Env::from_env(),
        cluster: None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_cluster_too() -> Result<()> {
    let cluster = Cluster::from_env()?;
    lost_rollup_rows_come_back(&Target {
        env: cluster.env(&Env::from_env()),
        cluster: Some(cluster),
    })
    .await
}

async fn lost_rollup_rows_come_back(t: &Target) -> Result<()> {
    let env = t.env.clone();
    let partitions = 2;
    let s = ConsumerSetup::new(&env, "rollfix", partitions)
        .await?
        .with_env("UMKM__BATCH__MAX_ROWS", "400");
    if let Some(c) = &t.cluster {
        for restarted in c.heal()? {
            println!("before the test: {restarted} (its DDL worker had stopped)");
        }
    }
    if let Err(e) = run_subcommand(&env, s.service, "migrate", &s.database) {
        // ClickHouse 18.16's DDL worker can stop for good when both replicas of a shard run
        // one ON CLUSTER ALTER (docs/operations.md "On a ClickHouse cluster"): restarted, the
        // node runs its queue again and a second run completes. Any other failure stands.
        let healed = match &t.cluster {
            Some(c) => c.heal()?,
            None => Vec::new(),
        };
        if healed.is_empty() {
            return Err(e);
        }
        println!(
            "migrate: {} (its DDL worker had stopped); run again",
            healed.join(", ")
        );
        run_subcommand(&env, s.service, "migrate", &s.database)?;
    }
    let db = s.database.clone();
    let plan = generate(&Spec {
        payments: 3_000,
        seed: 91,
        ..Spec::default()
    });
    for v in LOST_VIEWS {
        t.everywhere(&format!("DETACH TABLE {db}.{v}")).await?;
    }
    let mut a = ConsumerProc::start(
        &env,
        &s.clone().with_env("UMKM_FAULT", "after-insert@1"),
        "a",
    )?;
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.exited().is_none() {
        if Instant::now() > deadline {
            bail!("a did not crash after its first insert:\n{}", a.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.sync(&db).await?;
    let landed = ch_u64(&env, &format!("SELECT count() FROM {db}.qris_payments")).await?;
    ensure!(
        landed > 0,
        "a's first insert landed nothing:\n{}",
        a.log_tail()
    );
    for v in LOST_VIEWS {
        t.everywhere(&format!("ATTACH TABLE {db}.{v}")).await?;
    }
    let lost = differing(t, &db).await?;
    println!("after a's insert ({landed} rows) without two views: {lost:?}");
    ensure!(
        lost.iter().all(|(t, n)| (*n > 0)
            == LOST_VIEWS
                .iter()
                .any(|v| v.ends_with(&t["payments_".len()..]))),
        "the detached views' rollups must differ from the facts, the daily rollup not: {lost:?}"
    );

    // a died holding the partitions: b joins once a is out of the group.
    umkm_e2e::outlast_session().await;
    let mut b = ConsumerProc::start(&env, &s, "b")?;
    wait_committed(&env, &s, partitions, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(b.log_tail()))?;
    t.sync(&db).await?;
    let unique = plan.unique.len() as u64;
    let n = ch_u64(&env, &format!("SELECT count() FROM {db}.qris_payments")).await?;
    ensure!(n == unique, "{n} rows, {unique} unique payments");
    let noted = ch_u64(
        &env,
        &format!("SELECT uniqExact(dedup_key) FROM {db}.rollup_suspects"),
    )
    .await?;
    ensure!(
        noted == landed,
        "b noted {noted} keys; a inserted {landed} rows it never committed"
    );
    ensure!(
        differing(t, &db).await? == lost,
        "nothing but refresh-metrics repairs the rollups"
    );

    // Older than the settling time, then one refresh repairs every group.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let out = run_subcommand(&env, s.service, "refresh-metrics", &db)?;
    println!("{out}");
    let after = differing(t, &db).await?;
    ensure!(
        after.iter().all(|(_, n)| *n == 0),
        "after refresh-metrics: {after:?}\n{out}"
    );
    let daily = out
        .lines()
        .find(|l| l.contains(".payments_merchant_daily for"))
        .unwrap_or_default();
    ensure!(
        daily.contains(&format!("for {landed} suspect keys: 0 rows repaired")),
        "the daily rollup was checked for a's rows and had nothing to repair: {out}"
    );
    // A second run (which looks a minute behind the first's end again) inserts nothing.
    let again = run_subcommand(&env, s.service, "refresh-metrics", &db)?;
    ensure!(
        again
            .lines()
            .filter(|l| l.starts_with("checked"))
            .all(|l| l.contains(": 0 rows repaired")),
        "the second run repaired again: {again}"
    );
    ensure!(differing(t, &db).await?.iter().all(|(_, n)| *n == 0));
    ensure!(
        b.terminate(Duration::from_secs(30))? == 0,
        "b did not stop cleanly"
    );
    Ok(())
}
