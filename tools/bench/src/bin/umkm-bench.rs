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

// The consumers' allocator (mimalloc), so that `core` measures what they do; it counts
// allocations while `core` asks it to.
#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// mimalloc with an allocation counter that `core` switches on for its counted pass
/// (docs/benchmarks.md "Allocations"); switched off it costs one relaxed load per allocation.
#[allow(unsafe_code)] // the workspace's one exception: a `GlobalAlloc` is unsafe to implement
mod counting {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

    pub struct Counting;

    static ON: AtomicBool = AtomicBool::new(false);
    static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

    fn note() {
        if ON.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
        }
    }

    // SAFETY: every call goes to mimalloc unchanged; counting touches only two atomics.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note();
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note();
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note();
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    /// Starts counting heap allocations (reallocations included) from zero, on every thread.
    pub fn start() {
        ALLOCATIONS.store(0, Relaxed);
        ON.store(true, Relaxed);
    }

    /// Stops counting and returns the allocations since `start`.
    pub fn stop() -> u64 {
        ON.store(false, Relaxed);
        ALLOCATIONS.load(Relaxed)
    }
}

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use qris_consumer::{Qris, QrisPayment, QrisRow};
use umkm_bench as bench;
use umkm_core::avro::Decoder;
use umkm_core::dedup::{Candidate, resolve_in_batch};
use umkm_core::pii::PiiHasher;
use umkm_e2e::Env;
use umkm_runtime::family::{Family, MessageMeta};
use umkm_traffic::banten::{Feed, QRIS_ID, QRIS_SCHEMA, Spec, Stream};

/// CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    umkm_e2e::procfs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn core(events: usize, runs: usize, batch: usize) -> Result<Core> {
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
                .filter(|m| m.family == Feed::Qris)
                .map(|m| (m.key, m.payload)),
        );
    }
    msgs.truncate(events);
    if msgs.len() < events {
        bail!("generated only {} QRIS messages", msgs.len());
    }
    let mut decoder = Decoder::new(<Qris as Family>::READER_SCHEMA)?;
    decoder
        .register(QRIS_ID, QRIS_SCHEMA)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let family = Qris::new(
        PiiHasher::new(b"bench-only-pii-key-0123456789").map_err(anyhow::Error::msg)?,
        umkm_core::time::DEFAULT_MIDNIGHT_SKEW_MS,
    );
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
    let pass = Pass {
        msgs: &msgs,
        decoder: &decoder,
        family: &family,
        client: &client,
        mock: &mock,
        now,
        batch,
        topic: "payments.qris.v1".into(),
    };
    // Where the time goes: decode alone, then decode + process, over the same messages.
    let t = Instant::now();
    pass.decode_all()?;
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
    pass.process_all()?;
    let process_us = t.elapsed().as_secs_f64() / msgs.len() as f64 * 1e6 - decode_us;
    println!(
        "  stages (one pass, wall): decode {decode_us:.2} us/event (resolving Value path: {resolving_us:.2}, {:.1}x slower), validate + normalise {process_us:.2} us/event",
        resolving_us / decode_us
    );
    let mut rates = Vec::new();
    let mut cpu_per_event = Vec::new();
    for run in 1..=runs {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let PassResult {
            rows_out,
            dups,
            invalid,
        } = pass.run().await?;
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
    // Heap allocations, counted in passes of their own (the timed runs do not count): decode
    // alone, decode + process, and a whole run as above (batches, dedup, encoding included),
    // after the timed runs warmed every buffer.
    let per_event = |n: u64| n as f64 / msgs.len() as f64;
    counting::start();
    pass.decode_all()?;
    let decode_allocs = per_event(counting::stop());
    counting::start();
    pass.process_all()?;
    let process_allocs = per_event(counting::stop());
    counting::start();
    pass.run().await?;
    let run_allocs = per_event(counting::stop());
    println!(
        "  heap allocations per event: {run_allocs:.2} in a whole run (decode {decode_allocs:.2}, decode + validate + normalise {process_allocs:.2})"
    );
    let (rate, cpu) = (median(&mut rates), median(&mut cpu_per_event));
    println!(
        "core median: {rate:.0} events/s on one core, {cpu:.2} us CPU per event (target >= 500,000 events/s, docs/benchmarks.md)"
    );
    Ok(Core {
        rate,
        cpu_us: cpu,
        allocations: run_allocs,
    })
}

/// The core's medians, and its heap allocations per event.
struct Core {
    rate: f64,
    cpu_us: f64,
    allocations: f64,
}

/// One pass of the core over every message, batch by batch, as the consumer does it.
struct Pass<'a> {
    msgs: &'a [(Vec<u8>, Vec<u8>)],
    decoder: &'a Decoder,
    family: &'a Qris,
    client: &'a clickhouse::Client,
    mock: &'a clickhouse::test::Mock,
    now: i64,
    batch: usize,
    topic: umkm_core::fields::Shared,
}

struct PassResult {
    rows_out: usize,
    dups: usize,
    invalid: usize,
}

impl Pass<'_> {
    fn meta<'m>(&'m self, offset: i64, key: &'m [u8]) -> MessageMeta<'m> {
        MessageMeta {
            topic: &self.topic,
            partition: 0,
            offset,
            key: Some(key),
            schema_id: 1,
            now_ms: self.now,
            now_secs: (self.now / 1000) as u32,
        }
    }

    /// Decodes every message (the first stage alone).
    fn decode_all(&self) -> Result<()> {
        for (_, payload) in self.msgs {
            let e: QrisPayment = self.decoder.decode(payload).context("decode")?;
            std::hint::black_box(e);
        }
        Ok(())
    }

    /// Decodes, validates and normalises every message, without batching.
    fn process_all(&self) -> Result<()> {
        for (i, (key, payload)) in self.msgs.iter().enumerate() {
            let e: QrisPayment = self.decoder.decode(payload).context("decode")?;
            let _ = std::hint::black_box(self.family.process(e, &self.meta(i as i64, key)));
        }
        Ok(())
    }

    /// The whole core, batch by batch.
    async fn run(&self) -> Result<PassResult> {
        let (mut rows_out, mut dups, mut invalid) = (0usize, 0usize, 0usize);
        for (chunk_no, chunk) in self.msgs.chunks(self.batch).enumerate() {
            let mut candidates: Vec<Candidate<QrisRow>> = Vec::with_capacity(chunk.len());
            for (i, (key, payload)) in chunk.iter().enumerate() {
                let offset = (chunk_no * self.batch + i) as i64;
                let event: QrisPayment = self.decoder.decode(payload).context("decode")?;
                match self.family.process(event, &self.meta(offset, key)) {
                    Ok(p) => candidates.push(Candidate {
                        key: p.key,
                        alt: p.alt,
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
            let _recorded = self.mock.add(clickhouse::test::handlers::record_ddl());
            let mut insert = self.client.insert::<QrisRow>("qris_payments").await?;
            for c in &winners {
                insert.write(&c.row).await?;
            }
            insert.end().await?;
            rows_out += winners.len();
        }
        Ok(PassResult {
            rows_out,
            dups,
            invalid,
        })
    }
}

/// What `all` measures, besides the core.
struct AllArgs {
    events: usize,
    runs: usize,
    partitions: i32,
    latency_seconds: f64,
    latency_rate: Option<f64>,
    python: Option<PathBuf>,
    native: String,
    /// Extra environment for the qris-consumer runs (e.g. `UMKM__BATCH__MAX_ROWS=50000`).
    consumer_env: Vec<(String, String)>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn runs_text(v: &[f64], unit: &str) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.0}")).collect();
    format!("{} {unit}", parts.join(", "))
}

/// Waits for ClickHouse's background merges before a timed run (see `bench::settle`).
async fn settle(env: &Env) -> Result<()> {
    let waited = bench::settle(env).await?;
    if waited >= 1.0 {
        println!("  (waited {waited:.1} s for ClickHouse's background merges)");
    }
    Ok(())
}

async fn all(core_events: usize, a: AllArgs) -> Result<()> {
    let env = Env::from_env();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runs = a.runs;
    println!("== core ==");
    let service_batch = umkm_runtime::config::BatchSettings::default().max_rows;
    let core = core(core_events, runs, service_batch).await?;

    println!("== dataset ==");
    let t = Instant::now();
    let data = bench::dataset(a.events, true, bench::SEED)?;
    println!(
        "  {} QRIS messages ({} unique payments; the rest issuer double reports and redeliveries), generated in {:.1} s",
        data.msgs.len(),
        data.unique_rows,
        t.elapsed().as_secs_f64()
    );
    let p = bench::prepublish(&env, &data, a.partitions).await?;
    println!(
        "  published to {} ({} partitions) in {:.1} s ({:.0} msg/s)",
        p.topic,
        p.partitions,
        p.publish_secs,
        p.events as f64 / p.publish_secs
    );
    let n = p.events as f64;

    println!("== broker ceiling: a bare rdkafka consumer, no work ==");
    let mut broker = Vec::new();
    for run in 1..=runs {
        let (env2, topic) = (env.clone(), p.topic.clone());
        let pub2 = bench::Published {
            topic,
            partitions: p.partitions,
            ends: p.ends.clone(),
            events: p.events,
            unique_rows: p.unique_rows,
            publish_secs: p.publish_secs,
        };
        settle(&env).await?;
        let (secs, cpu) =
            tokio::task::spawn_blocking(move || bench::broker_ceiling(&env2, &pub2)).await??;
        let cpu = cpu
            .map(|c| format!("; tansu used {:.1} s CPU", c.tansu))
            .unwrap_or_default();
        println!("  run {run}: {:>9.0} events/s ({secs:.2} s{cpu})", n / secs);
        broker.push(n / secs);
    }

    println!(
        "== end to end: qris-consumer, pre-published topic -> ClickHouse, offsets committed =="
    );
    let mut e2e = Vec::new();
    let (mut e2e_cpu, mut rss) = (Vec::new(), Vec::new());
    let mut last_db = String::new();
    let mut cpu_split: Vec<(f64, f64, f64, f64)> = Vec::new();
    for run in 1..=runs {
        settle(&env).await?;
        let r = bench::e2e(&env, &p, &a.consumer_env, None).await?;
        println!(
            "  run {run}: {:>9.0} events/s ({:.2} s from assignment to the last commit; {:.2} us CPU/event; peak RSS {:.0} MiB; {} rows)",
            n / r.secs,
            r.secs,
            r.cpu_us_per_event,
            mib(r.peak_rss_kib),
            p.unique_rows
        );
        println!(
            "         {:.0} flushes taking {:.2} s in all, of which dedup lookups {:.2} s and inserts {:.2} s",
            r.flushes, r.flush_secs, r.lookup_secs, r.insert_secs
        );
        if let Some(c) = r.stack_cpu {
            let used = r.consumer_cpu + c.tansu + c.clickhouse;
            println!(
                "         CPU in that window: qris-consumer {:.1} s, tansu {:.1} s, ClickHouse {:.1} s = {:.1} of the {:.1} CPU-seconds {cores} cores give ({:.0}%)",
                r.consumer_cpu,
                c.tansu,
                c.clickhouse,
                used,
                r.secs * cores as f64,
                used / (r.secs * cores as f64) * 100.0
            );
            cpu_split.push((r.consumer_cpu, c.tansu, c.clickhouse, r.secs));
        }
        e2e.push(n / r.secs);
        e2e_cpu.push(r.cpu_us_per_event);
        rss.push(mib(r.peak_rss_kib));
        if !last_db.is_empty() {
            bench::drop_database(&env, &last_db).await?;
        }
        last_db = r.database;
    }

    println!(
        "== ClickHouse ceiling: the same rows, already encoded, one insert stream into qris_payments with its materialized views (as the consumer writes) =="
    );
    let batch = umkm_runtime::config::BatchSettings::default().max_rows as u64;
    let bodies = bench::encoded_batches(&env, &last_db, p.partitions, batch).await?;
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "  {} rows in {} RowBinary bodies ({:.0} MiB)",
        p.unique_rows,
        bodies.len(),
        bytes as f64 / (1 << 20) as f64
    );
    let (mut chc, mut bare) = (Vec::new(), Vec::new());
    for views in [true, false] {
        if !views {
            println!(
                "  -- the same into a bare copy of the table (no materialized views), for comparison"
            );
        }
        for run in 1..=runs {
            settle(&env).await?;
            let secs = bench::clickhouse_ceiling(&env, &last_db, &bodies, views).await?;
            println!(
                "  run {run}: {:>9.0} rows/s = {:>9.0} events/s equivalent ({secs:.2} s)",
                p.unique_rows as f64 / secs,
                n / secs
            );
            if views { &mut chc } else { &mut bare }.push(n / secs);
        }
    }

    let e2e_med = median(&mut e2e.clone());
    let rate = a.latency_rate.unwrap_or((e2e_med / 2.0).round());
    println!(
        "== latency: publish -> row visible at {rate:.0} events/s for {} s ==",
        a.latency_seconds
    );
    let unique = bench::dataset((rate * a.latency_seconds) as usize + 1, false, bench::SEED)?;
    let (mut p50, mut p99, mut lmax) = (Vec::new(), Vec::new(), Vec::new());
    let mut achieved = Vec::new();
    bench::drop_database(&env, &last_db).await?;
    for run in 1..=runs {
        settle(&env).await?;
        let l = bench::latency(
            &env,
            &unique,
            a.partitions,
            rate,
            a.latency_seconds,
            &a.consumer_env,
        )
        .await?;
        println!(
            "  run {run}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} messages at {:.0}/s; ClickHouse polled every {} ms)",
            l.p50_ms, l.p99_ms, l.max_ms, l.sent, l.rate, l.poll_ms
        );
        p50.push(l.p50_ms);
        p99.push(l.p99_ms);
        lmax.push(l.max_ms);
        achieved.push(l.rate);
    }

    let mut base = Vec::new();
    let mut base_cpu = Vec::new();
    let mut base_rss = Vec::new();
    if let Some(python) = &a.python {
        println!(
            "== baseline: tools/bench/baseline.py (confluent-kafka, fastavro, clickhouse-driver) =="
        );
        for run in 1..=runs {
            settle(&env).await?;
            let r = bench::baseline(&env, &p, python, &a.native).await?;
            println!(
                "  run {run}: {:>9.0} events/s ({:.2} s; {:.2} us CPU/event; peak RSS {:.0} MiB)",
                n / r.secs,
                r.secs,
                r.cpu_us_per_event,
                mib(r.peak_rss_kib)
            );
            base.push(n / r.secs);
            base_cpu.push(r.cpu_us_per_event);
            base_rss.push(mib(r.peak_rss_kib));
        }
    }

    let broker_med = median(&mut broker.clone());
    let ch_med = median(&mut chc.clone());
    let lower = broker_med.min(ch_med);
    let lower_name = if broker_med <= ch_med {
        "broker"
    } else {
        "ClickHouse"
    };
    let ok = |b: bool| if b { "met" } else { "NOT met" };
    println!();
    println!(
        "Summary: medians of {runs} runs; {} events on {} partitions; {} unique rows",
        p.events, p.partitions, p.unique_rows
    );
    println!("| measure | median | runs | target |");
    println!("|---|---|---|---|");
    println!(
        "| core, one core | {:.0} events/s ({:.2} us CPU/event) | see above | >= 500,000 (<= 2 us): {} |",
        core.rate,
        core.cpu_us,
        ok(core.rate >= 500_000.0)
    );
    println!(
        "| core, heap allocations per event | {:.2} | | 0: {} |",
        core.allocations,
        ok(core.allocations < 0.005)
    );
    println!(
        "| broker ceiling (bare rdkafka consumer) | {broker_med:.0} events/s | {} | |",
        runs_text(&broker, "")
    );
    println!(
        "| ClickHouse ceiling (encoded rows, one stream, with the rollup views) | {ch_med:.0} events/s ({:.0} rows/s) | {} | |",
        ch_med * p.unique_rows as f64 / n,
        runs_text(&chc, "")
    );
    let bare_med = median(&mut bare.clone());
    let e2e_cpu_med = median(&mut e2e_cpu);
    println!(
        "| ... the same into a bare table (no views), for comparison | {bare_med:.0} events/s ({:.0} rows/s) | {} | |",
        bare_med * p.unique_rows as f64 / n,
        runs_text(&bare, "")
    );
    println!(
        "| end to end, qris-consumer | {e2e_med:.0} events/s = {:.0}% of the {lower_name} ceiling ({e2e_cpu_med:.2} us CPU/event) | {} | >= 90% (<= 3 us): {} |",
        e2e_med / lower * 100.0,
        runs_text(&e2e, ""),
        ok(e2e_med >= 0.9 * lower && e2e_cpu_med <= 3.0)
    );
    let p99m = median(&mut p99.clone());
    println!(
        "| latency at {:.0} events/s, publish -> row visible | p50 {:.0} ms, p99 {p99m:.0} ms, max {:.0} ms | p99 {} ms | p99 <= 1,000 ms: {} |",
        median(&mut achieved),
        median(&mut p50),
        median(&mut lmax),
        runs_text(&p99, ""),
        ok(p99m <= 1000.0)
    );
    if !cpu_split.is_empty() {
        let col = |f: fn(&(f64, f64, f64, f64)) -> f64| {
            median(&mut cpu_split.iter().map(f).collect::<Vec<_>>())
        };
        let (c, t, k, w) = (col(|x| x.0), col(|x| x.1), col(|x| x.2), col(|x| x.3));
        println!(
            "| CPU-seconds in the end-to-end window ({cores} cores x {w:.1} s = {:.1}) | qris-consumer {c:.1}, tansu {t:.1}, ClickHouse {k:.1}: {:.0}% of the machine | | |",
            w * cores as f64,
            (c + t + k) / (w * cores as f64) * 100.0
        );
    }
    let rss_med = median(&mut rss.clone());
    println!(
        "| qris-consumer peak RSS (end to end) | {rss_med:.0} MiB | {} MiB | <= 256 MiB: {} |",
        runs_text(&rss, ""),
        ok(rss_med <= 256.0)
    );
    if !base.is_empty() {
        let bm = median(&mut base.clone());
        let base_cpu_med = median(&mut base_cpu);
        let cpu_ratio = base_cpu_med / e2e_cpu_med;
        println!(
            "| Python baseline, same work | {bm:.0} events/s ({base_cpu_med:.2} us CPU/event, peak RSS {:.0} MiB) | {} | |",
            median(&mut base_rss),
            runs_text(&base, "")
        );
        println!(
            "| speed-up of end to end over the baseline | {:.1}x (CPU per event: {cpu_ratio:.1}x less) | | >= 15x less CPU: {} |",
            e2e_med / bm,
            ok(cpu_ratio >= 15.0)
        );
    }
    Ok(())
}

/// End to end on one server and on the cluster, same topic, same run.
async fn cluster(a: AllArgs) -> Result<()> {
    let env = Env::from_env();
    let on_cluster = umkm_e2e::Cluster::from_env()?.env(&env);
    let data = bench::dataset(a.events, true, bench::SEED)?;
    let p = bench::prepublish(&env, &data, a.partitions).await?;
    let n = p.events as f64;
    println!(
        "== end to end: {} QRIS messages ({} unique payments) on {} partitions, one server vs the cluster ==",
        p.events, data.unique_rows, p.partitions
    );
    let (mut single, mut clustered) = (Vec::new(), Vec::new());
    for run in 1..=a.runs {
        for (name, e, rates) in [
            ("one server", &env, &mut single),
            ("cluster   ", &on_cluster, &mut clustered),
        ] {
            settle(e).await?;
            let r = bench::e2e(e, &p, &a.consumer_env, None).await?;
            println!(
                "  run {run} {name}: {:>9.0} events/s ({:.2} s, {:.2} us CPU/event, {} flushes)",
                n / r.secs,
                r.secs,
                r.cpu_us_per_event,
                r.flushes
            );
            rates.push(n / r.secs);
            bench::drop_database(e, &r.database).await?;
        }
    }
    let (s, c) = (median(&mut single), median(&mut clustered));
    println!(
        "median: one server {s:.0} events/s, cluster {c:.0} events/s (cluster / one server = {:.2})",
        c / s
    );
    Ok(())
}

/// End to end into an empty database and into `database` (e.g. `scripts/perf-dataset`'s year
/// of Banten), alternating, each run on a topic of its own (another model seed: other payments;
/// the few the big database already holds count as duplicates there): how ingest and the dedup
/// lookup grow with the table.
async fn scale(a: AllArgs, database: &str) -> Result<()> {
    let env = Env::from_env();
    let held = bench::qris_rows(&env, database).await?;
    println!(
        "== scale: end to end into an empty database and into {database} ({held} QRIS rows), alternating =="
    );
    let (mut rates, mut lookups) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for run in 1..=a.runs {
        // Seeds the database has not seen: the rows it holds count up with every run.
        let seed = 1_000 + bench::qris_rows(&env, database).await?;
        let data = bench::dataset(a.events, true, seed)?;
        let p = bench::prepublish(&env, &data, a.partitions).await?;
        let n = p.events as f64;
        let mut fresh = String::new();
        for (i, into) in [None, Some(database)].into_iter().enumerate() {
            settle(&env).await?;
            let target = match into {
                Some(db) => Some(bench::Existing {
                    database: db,
                    already_there: bench::overlap(&env, db, &fresh).await?,
                }),
                None => None,
            };
            let r = bench::e2e(&env, &p, &a.consumer_env, target).await?;
            let per = |secs: f64| secs / r.flushes.max(1.0) * 1e3;
            println!(
                "  run {run} into {:<9} ({:>11} rows before): {:>9.0} events/s, {:.2} us CPU/event; per batch ({:.0}): dedup lookup {:.1} ms reading {:.0} granules, insert {:.1} ms; peak RSS {:.0} MiB",
                into.unwrap_or("empty"),
                r.rows_before,
                n / r.secs,
                r.cpu_us_per_event,
                r.flushes,
                per(r.lookup_secs),
                r.marks_read as f64 / r.flushes.max(1.0),
                per(r.insert_secs),
                mib(r.peak_rss_kib)
            );
            rates[i].push(n / r.secs);
            lookups[i].push(per(r.lookup_secs));
            if into.is_none() {
                fresh = r.database;
            }
        }
        bench::drop_database(&env, &fresh).await?;
    }
    let [e, d] = rates.map(|mut v| median(&mut v));
    let [le, ld] = lookups.map(|mut v| median(&mut v));
    println!(
        "median: empty {e:.0} events/s (lookup {le:.1} ms/batch), {database} {d:.0} events/s (lookup {ld:.1} ms/batch); {database} / empty = {:.2} in events/s, {:.2} in lookup time",
        d / e,
        ld / le
    );
    Ok(())
}

/// The consumer's peak RSS end to end against the partitions it is assigned and against
/// `dedup.cache_keys`, one fresh database per run.
async fn memory(a: AllArgs, partitions: &[i32], cache_keys: &[usize]) -> Result<()> {
    let env = Env::from_env();
    let data = bench::dataset(a.events, true, bench::SEED)?;
    println!(
        "== memory: qris-consumer's peak RSS over {} QRIS messages ({} unique payments) ==",
        data.msgs.len(),
        data.unique_rows
    );
    let default_keys = umkm_runtime::config::DedupSettings::default().cache_keys;
    let mut runs: Vec<(i32, usize)> = partitions.iter().map(|&p| (p, default_keys)).collect();
    runs.extend(
        cache_keys
            .iter()
            .filter(|&&k| k != default_keys)
            .map(|&k| (a.partitions, k)),
    );
    let mut topics: Vec<(i32, bench::Published)> = Vec::new();
    for (parts, keys) in runs {
        let i = match topics.iter().position(|(p, _)| *p == parts) {
            Some(i) => i,
            None => {
                topics.push((parts, bench::prepublish(&env, &data, parts).await?));
                topics.len() - 1
            }
        };
        let p = &topics[i].1;
        let mut extra = a.consumer_env.clone();
        extra.push(("UMKM__DEDUP__CACHE_KEYS".into(), keys.to_string()));
        settle(&env).await?;
        let r = bench::e2e(&env, p, &extra, None).await?;
        println!(
            "  {parts:>3} partitions, dedup.cache_keys {keys:>9}: peak RSS {:>5.0} MiB, {:>9.0} events/s, {:.2} us CPU/event",
            mib(r.peak_rss_kib),
            p.events as f64 / r.secs,
            r.cpu_us_per_event
        );
        bench::drop_database(&env, &r.database).await?;
    }
    Ok(())
}

const USAGE: &str = "usage:
  umkm-bench core [--events N] [--runs R] [--batch B]
  umkm-bench all  [--events N] [--runs R] [--partitions P] [--core-events N]
                  [--latency-seconds S] [--latency-rate R]
                  [--python PATH | --no-baseline] [--clickhouse-native HOST:PORT]
                  [--consumer-env KEY=VALUE]...
  umkm-bench cluster [--events N] [--runs R] [--partitions P] [--consumer-env KEY=VALUE]...
  umkm-bench scale --database DB [--events N] [--runs R] [--partitions P] [--consumer-env KEY=VALUE]...
  umkm-bench memory [--events N] [--partitions P] [--partition-counts 1,4,16,64]
                    [--cache-keys 100000,2000000] [--consumer-env KEY=VALUE]...

`cluster`: one qris-consumer end to end over the same pre-published topic, alternately into
the single server and into the cluster `scripts/stack up --cluster` starts (UMKM_CLUSTER_URLS;
through node 1's Distributed tables), each run on a fresh database; events/s per run, the
medians and their ratio.

`scale`: end to end alternately into an empty database and into DB (scripts/perf-dataset's),
each run on a topic of its own: events/s and the dedup lookup's time per batch, medians and
ratios.

`memory`: the consumer's peak RSS end to end for each partition count (default
dedup.cache_keys), then for each cache size on --partitions partitions.";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    if matches!(cmd.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return Ok(());
    }
    let is_all = matches!(cmd.as_str(), "all" | "scale" | "memory");
    let (mut events, mut runs, mut batch) = (
        if is_all { 1_000_000usize } else { 200_000 },
        if is_all { 3usize } else { 5 },
        // The services' default batch.max_rows.
        30_000usize,
    );
    let mut core_events = 200_000usize;
    let mut database = None;
    let mut partition_counts = vec![1, 4, 16, 64];
    let mut cache_keys = vec![100_000, 2_000_000];
    let list = |v: String| -> Result<Vec<usize>> {
        v.split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .with_context(|| format!("not a number: {x}"))
            })
            .collect()
    };
    let mut a = AllArgs {
        events: 0,
        runs: 0,
        partitions: 4,
        latency_seconds: 15.0,
        latency_rate: None,
        python: Some(
            std::env::var_os("UMKM_BENCH_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| umkm_e2e::repo_root().join(".stack/bench-venv/bin/python")),
        ),
        native: std::env::var("UMKM_CLICKHOUSE_NATIVE")
            .unwrap_or_else(|_| "127.0.0.1:19000".into()),
        consumer_env: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut val = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--events" => events = val()?.parse()?,
            "--runs" => runs = val()?.parse()?,
            "--batch" => batch = val()?.parse()?,
            "--core-events" => core_events = val()?.parse()?,
            "--database" => database = Some(val()?),
            "--partition-counts" => {
                partition_counts = list(val()?)?.into_iter().map(|p| p as i32).collect()
            }
            "--cache-keys" => cache_keys = list(val()?)?,
            "--partitions" => a.partitions = val()?.parse()?,
            "--latency-seconds" => a.latency_seconds = val()?.parse()?,
            "--latency-rate" => a.latency_rate = Some(val()?.parse()?),
            "--python" => a.python = Some(PathBuf::from(val()?)),
            "--no-baseline" => a.python = None,
            "--clickhouse-native" => a.native = val()?,
            "--consumer-env" => {
                let kv = val()?;
                let (k, v) = kv
                    .split_once('=')
                    .context("--consumer-env needs KEY=VALUE")?;
                a.consumer_env.push((k.into(), v.into()));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    a.events = events;
    a.runs = runs.max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cmd.as_str() {
        "core" => rt
            .block_on(core(events, runs.max(1), batch.max(1)))
            .map(|_| ()),
        "all" => rt.block_on(all(core_events, a)),
        "cluster" => rt.block_on(cluster(a)),
        "scale" => {
            let db = database.context("scale needs --database DB")?;
            rt.block_on(scale(a, &db))
        }
        "memory" => rt.block_on(memory(a, &partition_counts, &cache_keys)),
        _ => bail!("{USAGE}"),
    }
}
