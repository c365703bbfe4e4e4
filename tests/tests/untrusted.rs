//! Property tests over untrusted bytes (README "Fuzzing"), no services needed: whatever a topic
//! delivers, each family's decode and rules never panic and every refused record gets a DLQ
//! reason. The inputs are seeded: the traffic generators' good and bad records, mutated (bit
//! flips, truncation, insertion, splicing), framed random data and plain garbage. The fuzz
//! targets in `fuzz/` explore further; this runs in the normal suite.

use anyhow::{Result, ensure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use umkm_runtime::family::Family;
use umkm_runtime::pipeline::Verdict;
use umkm_runtime::untrusted::Examiner;

const CASES: usize = 60_000;

type Message = (Option<Vec<u8>>, Vec<u8>);

fn mutate(rng: &mut StdRng, seeds: &[Message]) -> Message {
    let (key, b) = &seeds[rng.random_range(0..seeds.len())];
    (key.clone(), mutate_bytes(rng, b, seeds))
}

fn mutate_bytes(rng: &mut StdRng, b: &[u8], seeds: &[Message]) -> Vec<u8> {
    let mut b = b.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..6) {
            0 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b.truncate(i);
            }
            2 => {
                let i = rng.random_range(0..=b.len());
                let n = rng.random_range(1..16);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(i..i, junk);
            }
            3 if !b.is_empty() => {
                // A varint length or count replaced by a huge one.
                let i = rng.random_range(0..b.len());
                b.splice(i..(i + 1).min(b.len()), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
            }
            4 => {
                let other = &seeds[rng.random_range(0..seeds.len())].1;
                let cut = rng.random_range(0..=other.len());
                let at = rng.random_range(0..=b.len());
                b.truncate(at);
                b.extend_from_slice(&other[cut..]);
            }
            _ => {}
        }
    }
    b
}

/// `CASES` inputs through `ex`; returns (kept, dead letters) and fails on a reasonless one.
fn run<F: Family>(ex: &Examiner<F>, seeds: &[Message], seed: u64) -> Result<(usize, usize)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut kept, mut dead) = (0, 0);
    for i in 0..CASES {
        let (key, input): Message = match i % 4 {
            0 | 1 => mutate(&mut rng, seeds),
            2 => {
                // A seed's key with a random datum framed with a known id: reaches the Avro
                // decoder and the rules.
                let key = seeds[rng.random_range(0..seeds.len())].0.clone();
                let id = ex.ids()[rng.random_range(0..ex.ids().len())];
                let n = rng.random_range(0..200);
                let datum: Vec<u8> = (0..n).map(|_| rng.random::<u8>()).collect();
                (key, umkm_core::wire::frame(id, &datum))
            }
            _ => (
                None,
                (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            ),
        };
        ex.examine_fuzzed(&umkm_runtime::untrusted::fuzz_input(key.as_deref(), &input));
        match ex.examine(key.as_deref(), &input) {
            Verdict::Keep(_) => kept += 1,
            Verdict::DeadLetter { reasons, .. } => {
                ensure!(
                    !reasons.is_empty() && reasons.iter().all(|r| !r.message.is_empty()),
                    "input {i} (seed {seed}): a dead letter without a reason"
                );
                dead += 1;
            }
        }
    }
    Ok((kept, dead))
}

fn seeds(messages: Vec<Message>) -> Vec<Message> {
    messages
}

#[test]
fn arbitrary_bytes_never_panic_and_always_get_a_reason() -> Result<()> {
    let dir = umkm_e2e::repo_root().join("schemas/avro");
    let qris = Examiner::<qris_consumer::Qris>::new(&dir).map_err(anyhow::Error::msg)?;
    let noncash = Examiner::<noncash_consumer::Noncash>::new(&dir).map_err(anyhow::Error::msg)?;
    let merchants =
        Examiner::<merchant_consumer::Merchants>::new(&dir).map_err(anyhow::Error::msg)?;
    let q = seeds(
        umkm_traffic::qris::generate(&umkm_traffic::qris::Spec {
            payments: 500,
            bad_each: 5,
            ..Default::default()
        })
        .messages,
    );
    let n = seeds(
        umkm_traffic::noncash::generate(&umkm_traffic::noncash::Spec {
            payments: 500,
            bad_each: 5,
            ..Default::default()
        })
        .messages,
    );
    let m = seeds(
        umkm_traffic::merchants::generate(&umkm_traffic::merchants::Spec {
            merchants: 200,
            bad_each: 5,
            ..Default::default()
        })
        .messages,
    );
    // The unmutated seeds: most land (the property is not vacuous).
    let landed = q
        .iter()
        .filter(|(k, b)| matches!(qris.examine(k.as_deref(), b), Verdict::Keep(_)))
        .count();
    ensure!(
        landed * 2 > q.len(),
        "only {landed} of {} QRIS seeds land; the first: {:?}",
        q.len(),
        q.first().map(|(k, b)| match qris.examine(k.as_deref(), b) {
            Verdict::Keep(_) => "kept".to_string(),
            Verdict::DeadLetter { reasons, .. } => format!("{reasons:?}"),
        })
    );
    for (name, (kept, dead)) in [
        ("qris", run(&qris, &q, 1)?),
        ("noncash", run(&noncash, &n, 2)?),
        ("merchants", run(&merchants, &m, 3)?),
    ] {
        println!("{name}: {CASES} inputs, {kept} kept, {dead} dead letters with reasons");
        ensure!(
            dead > CASES / 2,
            "{name}: only {dead} refused: the mutations are too mild"
        );
    }
    Ok(())
}

#[test]
fn a_huge_declared_length_is_refused_without_allocating_it() -> Result<()> {
    let dir = umkm_e2e::repo_root().join("schemas/avro");
    let qris = Examiner::<qris_consumer::Qris>::new(&dir).map_err(anyhow::Error::msg)?;
    // A first field (a string) declaring 2^40 bytes: refused by the allocation cap.
    for id in qris.ids() {
        let mut datum = vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
        datum.extend_from_slice(b"short");
        let v = qris.examine(
            Some(b"ID1020000000001"),
            &umkm_core::wire::frame(*id, &datum),
        );
        let Verdict::DeadLetter { reasons, .. } = v else {
            anyhow::bail!("schema {id}: a 2^40-byte string was kept");
        };
        ensure!(reasons[0].rule == "avro_datum", "{reasons:?}");
    }
    // A 10 MB message: decoded as far as it goes, then refused.
    let mut big = umkm_core::wire::frame(qris.ids()[0], &[]);
    big.resize(10 << 20, b'x');
    ensure!(matches!(
        qris.examine(None, &big),
        Verdict::DeadLetter { .. }
    ));
    Ok(())
}

#[test]
fn a_deeply_nested_writer_schema_is_refused_not_a_stack_overflow() -> Result<()> {
    let mut d = umkm_core::avro::Decoder::new(qris_consumer::Qris::READER_SCHEMA)?;
    let depth = 100_000;
    let nested = format!(
        "{}\"string\"{}",
        "{\"type\":\"array\",\"items\":".repeat(depth),
        "}".repeat(depth)
    );
    let e = d
        .register(9, &nested)
        .expect_err("a schema nested 100,000 deep must be refused");
    println!("nested writer schema: {e}");
    ensure!(e.rule() == "schema_incompatible", "{e}");
    Ok(())
}

/// The consumer process against hostile traffic (README "Fuzzing"): a 10 MB message, a flood of
/// garbage, strings declaring 15 MiB, and a writer schema nested 100,000 deep served by the
/// registry, among good payments. The good ones land exactly, every bad one is in the DLQ (the
/// 10 MB one without its payload), and the peak RSS stays within the 256 MiB budget
/// (docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_traffic_keeps_the_consumer_within_its_memory_budget() -> Result<()> {
    use std::time::Duration;
    use umkm_e2e::{ConsumerProc, ConsumerSetup, Ends, Env, ch_u64, publish_via, wait_committed};
    let env = Env::from_env();
    let s = ConsumerSetup::new(&env, "hostile", 3).await?;
    let mut schemas = s.registry_schemas()?;
    let depth = 100_000;
    schemas.insert(
        77,
        format!(
            "{}\"string\"{}",
            "{\"type\":\"array\",\"items\":".repeat(depth),
            "}".repeat(depth)
        ),
    );
    let (registry, fetches) = umkm_e2e::serve_registry(schemas, 0).await?;
    let s = s
        .with_env("UMKM__REGISTRY__DIR", "")
        .with_env("UMKM__REGISTRY__URL", &registry);

    let plan = umkm_traffic::qris::generate(&umkm_traffic::qris::Spec {
        payments: 1_000,
        bad_each: 0,
        ..Default::default()
    });
    let mut rng = StdRng::seed_from_u64(1010);
    let mut bad: Vec<Vec<u8>> = Vec::new();
    let mut huge = umkm_core::wire::frame(4, &[]);
    huge.resize(10 << 20, b'x');
    bad.push(huge);
    for _ in 0..20_000 {
        bad.push(
            (0..rng.random_range(1..200))
                .map(|_| rng.random())
                .collect(),
        );
    }
    for _ in 0..500 {
        // A first string field declaring 15 MiB (zigzag varint), then a few bytes.
        let mut d = Vec::new();
        let mut n: u64 = (15u64 << 20) << 1;
        while n >= 0x80 {
            d.push((n as u8) | 0x80);
            n >>= 7;
        }
        d.push(n as u8);
        d.extend_from_slice(b"abc");
        bad.push(umkm_core::wire::frame(4, &d));
    }
    for _ in 0..200 {
        bad.push(umkm_core::wire::frame(77, b"\x02\x00"));
    }
    let producer: rdkafka::producer::FutureProducer = env
        .kafka_config()
        .set("acks", "all")
        .set("message.max.bytes", "16000000")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()?;
    let mut ends = Ends::new();
    let good = plan
        .messages
        .iter()
        .map(|(k, v)| (k.as_deref(), v.as_slice()));
    let bads = bad.iter().map(|v| (None, v.as_slice()));
    publish_via(&producer, &s.topic, good.chain(bads), &mut ends).await?;

    let mut c = ConsumerProc::start(&env, &s, "c1")?;
    wait_committed(&env, &s, 3, &ends, Duration::from_secs(300))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    let pid = c.child.id();
    let peak_mib = umkm_e2e::procfs::peak_rss_kib(pid).unwrap_or(0) / 1024;
    let landed = ch_u64(
        &env,
        &format!("SELECT count() FROM {}.qris_payments", s.database),
    )
    .await?;
    ensure!(
        landed == plan.unique.len() as u64,
        "{landed} rows, expected {}",
        plan.unique.len()
    );
    let dlq = umkm_e2e::read_all(
        &env,
        &s.dlq_topic,
        1,
        bad.len(),
        Duration::from_secs(3),
        Duration::from_secs(120),
    )?;
    let omitted: Vec<_> = dlq
        .iter()
        .filter_map(|r| r.headers.get("dlq.payload_omitted_bytes"))
        .collect();
    ensure!(
        omitted == [&(10usize << 20).to_string()] && dlq.len() >= bad.len(),
        "DLQ: {} records for {} bad, omitted payloads {omitted:?}",
        dlq.len(),
        bad.len()
    );
    ensure!(
        dlq.iter()
            .any(|r| r.headers.get("dlq.schema_id").map(String::as_str) == Some("77")),
        "no dead letter for the nested writer schema"
    );
    let nested_fetches = fetches
        .lock()
        .map(|l| l.iter().filter(|p| p.as_str() == "/schemas/ids/77").count())
        .unwrap_or(0);
    ensure!(
        nested_fetches == 1,
        "the refused writer schema was fetched {nested_fetches} times for 200 records"
    );
    println!(
        "hostile traffic: {} bad records (10 MB, garbage, 15 MiB lengths, nested schema) dead-lettered, {landed} payments exact, peak RSS {peak_mib} MiB",
        bad.len()
    );
    ensure!(
        peak_mib > 0 && peak_mib <= 256,
        "peak RSS {peak_mib} MiB over the 256 MiB budget"
    );
    c.kill9();
    Ok(())
}
