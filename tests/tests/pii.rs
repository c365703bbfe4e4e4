//! The PII audit: after the three consumers have landed a Banten stream (good and bad records,
//! double reports, redeliveries), no raw payer identifier that was published (QRIS `payer_id`,
//! non-cash `masked_account`) appears in any String column of any table, in the consumers'
//! logs, on their `/metrics` pages or in the dead letters' headers. The dead letters' payloads
//! are the original bytes, under the source topic's access rules (README "Dead-letter topic").

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use anyhow::{Result, ensure};
use apache_avro::types::Value;
use umkm_e2e::{ConsumerProc, ConsumerSetup, Deployment, Env, ch, ch_u64, publish_via, read_all};
use umkm_traffic::banten::{Feed, Msg, Spec, Stream};
use umkm_traffic::contracts::{NONCASH_SCHEMA, QRIS_SCHEMA};

const PARTITIONS: i32 = 3;

/// The payer identifiers in the published messages that decode (garbage and unknown schema
/// ids carry none): what must never come out again.
fn payer_identifiers(msgs: &[Msg]) -> Result<BTreeSet<String>> {
    let qris = apache_avro::Schema::parse_str(QRIS_SCHEMA)?;
    let noncash = apache_avro::Schema::parse_str(NONCASH_SCHEMA)?;
    let readers = [
        apache_avro::reader::datum::GenericDatumReader::builder(&qris).build()?,
        apache_avro::reader::datum::GenericDatumReader::builder(&noncash).build()?,
    ];
    let mut out = BTreeSet::new();
    for m in msgs {
        let reader = match m.family {
            Feed::Qris => &readers[0],
            Feed::Noncash => &readers[1],
            Feed::Merchants => continue,
        };
        let Ok((_, mut datum)) = umkm_core::wire::parse(&m.payload) else {
            continue;
        };
        let Ok(Value::Record(fields)) = reader.read_value(&mut datum) else {
            continue;
        };
        for (name, v) in fields {
            if let ("payer_id" | "masked_account", Value::Union(_, inner)) = (name.as_str(), v)
                && let Value::String(s) = *inner
            {
                out.insert(s);
            }
        }
    }
    Ok(out)
}

/// Every needle found in `hay` (each needle length scanned with a hash set).
fn hits<'a>(hay: &[u8], needles: &'a BTreeSet<String>) -> Vec<&'a str> {
    let mut by_len: BTreeMap<usize, HashSet<&[u8]>> = BTreeMap::new();
    for n in needles {
        by_len.entry(n.len()).or_default().insert(n.as_bytes());
    }
    let mut found = BTreeSet::new();
    for (len, set) in &by_len {
        for w in hay.windows(*len) {
            if set.contains(w) {
                found.insert(w);
            }
        }
    }
    needles
        .iter()
        .filter(|n| found.contains(n.as_bytes()))
        .map(String::as_str)
        .collect()
}

/// Every String column of every table of `db`, as TSV: (table, text).
async fn string_columns(env: &Env, db: &str) -> Result<Vec<(String, String)>> {
    let tables = ch(
        env,
        &format!(
            "SELECT name FROM system.tables WHERE database = '{db}' AND engine NOT LIKE '%View' \
             ORDER BY name FORMAT TabSeparated"
        ),
    )
    .await?;
    let mut out = Vec::new();
    for t in tables.lines() {
        let cols = ch(
            env,
            &format!(
                "SELECT name FROM system.columns WHERE database = '{db}' AND table = '{t}' \
                 AND type LIKE '%String%' FORMAT TabSeparated"
            ),
        )
        .await?;
        let cols: Vec<&str> = cols.lines().collect();
        if cols.is_empty() {
            continue;
        }
        let text = ch(
            env,
            &format!(
                "SELECT {} FROM {db}.{t} FORMAT TabSeparated",
                cols.join(", ")
            ),
        )
        .await?;
        out.push((format!("table {t}"), text));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_payer_identifier_leaves_the_consumers_in_clear() -> Result<()> {
    let env = Env::from_env();
    let (msgs, truth) = Stream::new(Spec {
        seed: 77,
        merchants: 300,
        payments: 3_000,
        first_day: 20_700,
        last_day: 20_714,
        bad_each: 4,
        ..Spec::default()
    })
    .all_days();
    let needles = payer_identifiers(&msgs)?;
    ensure!(
        needles.len() > 1_000,
        "only {} payer identifiers",
        needles.len()
    );
    // The scanner finds what is there: every identifier is in the published bytes.
    let published: Vec<u8> = msgs.iter().flat_map(|m| m.payload.clone()).collect();
    ensure!(
        hits(&published, &needles).len() == needles.len(),
        "the scanner misses identifiers in the published messages"
    );

    let d = Deployment::start(&env, "pii", PARTITIONS).await?;
    let producer = umkm_e2e::producer(&env)?;
    let families: [(Feed, &ConsumerSetup, &ConsumerProc); 3] = [
        (Feed::Qris, &d.qris, &d.qris_proc),
        (Feed::Noncash, &d.noncash, &d.noncash_proc),
        (Feed::Merchants, &d.merchants, &d.merchants_proc),
    ];
    for (feed, setup, proc) in families {
        let mut ends = umkm_e2e::Ends::new();
        let mine = msgs
            .iter()
            .filter(|m| m.family == feed)
            .map(|m| (Some(m.key.as_slice()), m.payload.as_slice()));
        publish_via(&producer, &setup.topic, mine, &mut ends).await?;
        umkm_e2e::wait_committed(&env, setup, PARTITIONS, &ends, Duration::from_secs(180))
            .await
            .map_err(|e| e.context(proc.log_tail()))?;
    }
    let db = &d.database;
    let landed = ch_u64(&env, &format!("SELECT count() FROM {db}.qris_payments")).await?;
    ensure!(
        landed == truth.qris_payments,
        "{landed} QRIS rows, expected {}",
        truth.qris_payments
    );

    umkm_e2e::refresh_metrics(&env, "qris-consumer", db)?;
    let mut sources: Vec<(String, String)> = string_columns(&env, db).await?;
    for (feed, setup, proc) in families {
        sources.push((format!("{feed:?} /metrics"), proc.get("/metrics").await?.1));
        let bad = truth.bad_total(feed) as usize;
        let (env2, topic) = (env.clone(), setup.dlq_topic.clone());
        let dlq = tokio::task::spawn_blocking(move || {
            read_all(
                &env2,
                &topic,
                1,
                bad,
                Duration::from_secs(3),
                Duration::from_secs(60),
            )
        })
        .await??;
        ensure!(
            dlq.len() >= bad,
            "{feed:?}: {} dead letters, expected {bad}",
            dlq.len()
        );
        let headers: Vec<String> = dlq
            .iter()
            .flat_map(|r| r.headers.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        sources.push((format!("{feed:?} DLQ headers"), headers.join("\n")));
    }
    let Deployment {
        qris_proc,
        noncash_proc,
        merchants_proc,
        ..
    } = d;
    for (name, mut p) in [
        ("qris", qris_proc),
        ("noncash", noncash_proc),
        ("merchants", merchants_proc),
    ] {
        let code = p.terminate(Duration::from_secs(30))?;
        ensure!(code == 0, "{name} exited {code}");
        sources.push((format!("{name} log"), std::fs::read_to_string(&p.log)?));
    }

    let mut scanned = Vec::new();
    for (what, text) in &sources {
        let found = hits(text.as_bytes(), &needles);
        ensure!(
            found.is_empty(),
            "{what}: {} payer identifiers in clear, e.g. {:?}",
            found.len(),
            &found[..found.len().min(3)]
        );
        scanned.push(format!("{what} {} B", text.len()));
    }
    println!(
        "PII audit: {} payer identifiers published, 0 found in {} places: {}",
        needles.len(),
        sources.len(),
        scanned.join(", ")
    );
    Ok(())
}
