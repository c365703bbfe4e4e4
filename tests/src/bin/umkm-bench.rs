//! umkm-bench: benchmarks (issue 5; docs/benchmarks.md). A measuring tool, never a test.
//!
//!   umkm-bench core [--events N] [--runs R] [--batch B]
//!
//! `core`: the qris-consumer's own work on one core, without Kafka or ClickHouse: for each
//! pre-published message (umkm-traffic's Banten, QRIS only, incl. double reports and
//! redeliveries) the Confluent/Avro decode through the pinned reader schema, validation and
//! normalisation (`Family::process`: amounts, WIB time, regions, sectors, PII hashing), then per
//! batch the in-batch dedup and the RowBinary encoding of the rows by clickhouse-rs, which sends
//! them to its in-process mock server (`clickhouse::test::Mock`; the HTTP round trip to it is
//! included). Runs on a current-thread runtime: one core. Prints events/s per run and the
//! median, and the CPU time per event.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use qris_consumer::{Qris, QrisPayment, QrisRow};
use umkm_core::avro::Decoder;
use umkm_core::dedup::{Candidate, resolve_in_batch};
use umkm_core::pii::PiiHasher;
use umkm_e2e::banten::{Family as Fam, Spec, Stream};
use umkm_runtime::family::{Family, MessageMeta};

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn core(events: usize, runs: usize, batch: usize) -> Result<()> {
    // Pre-published QRIS messages from the Banten model.
    let mut stream = Stream::new(Spec {
        seed: 5,
        merchants: 20_000,
        payments: events * 10 / 8,
        bad_each: 0,
        ..Spec::default()
    });
    let mut msgs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(events);
    while let Some(day) = stream.next_day() {
        msgs.extend(
            day.into_iter()
                .filter(|m| m.family == Fam::Qris)
                .map(|m| (m.key, m.payload)),
        );
    }
    msgs.truncate(events);
    if msgs.len() < events {
        bail!("generated only {} QRIS messages", msgs.len());
    }
    let mut decoder = Decoder::new(<Qris as Family>::READER_SCHEMA)?;
    decoder
        .register(1, umkm_e2e::traffic::V1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let family =
        Qris::new(PiiHasher::new(b"bench-only-pii-key-0123456789").map_err(anyhow::Error::msg)?);
    let mock = clickhouse::test::Mock::new();
    let client = clickhouse::Client::default()
        .with_mock(&mock)
        .with_validation(false);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    println!(
        "core: {} QRIS messages (Banten model, seed 5), batches of {batch}, {runs} runs, one core",
        msgs.len()
    );
    // Where the time goes: decode alone, then decode + process, over the same messages.
    let t = Instant::now();
    for (_, payload) in &msgs {
        let e: QrisPayment = decoder.decode(payload).context("decode")?;
        std::hint::black_box(e);
    }
    let decode_us = t.elapsed().as_secs_f64() / msgs.len() as f64 * 1e6;
    // The same through the resolving Value path (what every datum took before the fast path;
    // writers on another schema version still take it).
    let t = Instant::now();
    for (_, payload) in &msgs {
        let (_, v) = decoder.decode_value(payload).context("decode")?;
        let e: QrisPayment = apache_avro::from_value(&v)?;
        std::hint::black_box(e);
    }
    let resolving_us = t.elapsed().as_secs_f64() / msgs.len() as f64 * 1e6;
    let t = Instant::now();
    for (i, (key, payload)) in msgs.iter().enumerate() {
        let e: QrisPayment = decoder.decode(payload).context("decode")?;
        let meta = MessageMeta {
            topic: "payments.qris.v1",
            partition: 0,
            offset: i as i64,
            key: Some(key),
            schema_id: 1,
            now_ms: now,
            now_secs: (now / 1000) as u32,
        };
        let _ = std::hint::black_box(family.process(e, &meta));
    }
    let process_us = t.elapsed().as_secs_f64() / msgs.len() as f64 * 1e6 - decode_us;
    println!(
        "  stages (one pass, wall): decode {decode_us:.2} us/event (resolving Value path: {resolving_us:.2}, {:.1}x slower), validate + normalise {process_us:.2} us/event",
        resolving_us / decode_us
    );
    let mut rates = Vec::new();
    let mut cpu_per_event = Vec::new();
    for run in 1..=runs {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let (mut rows_out, mut dups, mut invalid) = (0usize, 0usize, 0usize);
        for (chunk_no, chunk) in msgs.chunks(batch).enumerate() {
            let mut candidates: Vec<Candidate<QrisRow>> = Vec::with_capacity(chunk.len());
            for (i, (key, payload)) in chunk.iter().enumerate() {
                let offset = (chunk_no * batch + i) as i64;
                let event: QrisPayment = decoder.decode(payload).context("decode")?;
                let meta = MessageMeta {
                    topic: "payments.qris.v1",
                    partition: 0,
                    offset,
                    key: Some(key),
                    schema_id: 1,
                    now_ms: now,
                    now_secs: (now / 1000) as u32,
                };
                match family.process(event, &meta) {
                    Ok(p) => candidates.push(Candidate {
                        key: p.key,
                        priority: p.priority,
                        partition: 0,
                        offset,
                        row: p.row,
                    }),
                    Err(_) => invalid += 1,
                }
            }
            let (winners, d) = resolve_in_batch(candidates);
            dups += d;
            let _recorded = mock.add(clickhouse::test::handlers::record_ddl());
            let mut insert = client.insert::<QrisRow>("qris_payments").await?;
            for c in &winners {
                insert.write(&c.row).await?;
            }
            insert.end().await?;
            rows_out += winners.len();
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c0;
        let rate = msgs.len() as f64 / secs;
        println!(
            "  run {run}: {rate:>10.0} events/s  ({secs:.2} s wall, {:.2} us CPU/event; {rows_out} rows, {dups} in-batch duplicates, {invalid} invalid)",
            cpu / msgs.len() as f64 * 1e6
        );
        rates.push(rate);
        cpu_per_event.push(cpu / msgs.len() as f64 * 1e6);
    }
    println!(
        "core median: {:.0} events/s on one core, {:.2} us CPU per event (target >= 250,000 events/s)",
        median(&mut rates),
        median(&mut cpu_per_event)
    );
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let (mut events, mut runs, mut batch) = (200_000usize, 5usize, 50_000usize);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--events" => events = val()?.parse()?,
            "--runs" => runs = val()?.parse()?,
            "--batch" => batch = val()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cmd.as_str() {
        "core" => rt.block_on(core(events, runs.max(1), batch.max(1))),
        _ => bail!("usage: umkm-bench core [--events N] [--runs R] [--batch B]"),
    }?;
    Ok(())
}
