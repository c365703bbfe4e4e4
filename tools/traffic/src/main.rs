//! umkm-traffic: plays Banten's banks, e-wallets, gateways and the UMKM registry. Publishes
//! deterministic (seeded) Avro events in the Confluent wire format to the project's three topics
//! (`umkm_traffic::banten` has the model), then prints a summary with the ground truth;
//! `--summary-json` writes the same as JSON for tests and the demo. `--help` prints [`USAGE`].

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: umkm-traffic [options]          publish
       umkm-traffic topics [--brokers B] [NAME:PARTITIONS ...]
                                       create topics that are missing (default: the
                                       project's topics, README \"The two commands\")

options:
  --brokers HOST:PORT      Kafka bootstrap servers (default $UMKM_KAFKA_BROKERS or 127.0.0.1:19092)
  --seed N                 (default 1)
  --merchants N            (default 2000)
  --payments N             payments over the range (default 50000)
  --from YYYY-MM-DD        first WIB day (default: --days before --to)
  --to YYYY-MM-DD          last WIB day (default: yesterday, WIB)
  --days N                 length of the range when --from is not given (default 90)
  --rate N                 pace publishing at N messages/s (default: as fast as possible)
  --double-report F        share of payments also reported by issuer/gateway (default 0.15)
  --redeliver F            share of messages sent twice (default 0.02)
  --late F                 share of payments published 1-5 days late (default 0.01)
  --bad-each N             bad records of each kind per topic (default 5)
  --refund F               share of successful payments refunded later (default 0.012)
  --partial-refund F       share of refunds that are partial (default 0.3)
  --cancel-after F         share of successful payments cancelled the same day (default 0.003)
  --unknown-refund F       refunds of payments not in the data, per payment (default 0.0005)
  --midnight F             share of double reports made at 00:00 WIB with the two clocks
                           1.5 s apart across midnight (default 0.01)
  --qris-topic T  --noncash-topic T  --merchant-topic T   (defaults: the project's topics)
  --summary-json FILE      write the ground truth as JSON
  --dry-run                generate and summarise without publishing
  -h, --help               this text

Otherwise the topics must exist (scripts/stack up creates the project's with `umkm-traffic
topics`; docker-compose's kafka-init too).";

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer};
use umkm_core::time::{date_of_days, days_of_date};
use umkm_traffic::banten::{Digest, Feed, Spec, Stream};
use umkm_traffic::kafka::{PROJECT_TOPICS, Publisher, create_topics, parse_topic};

struct Opts {
    brokers: String,
    spec: Spec,
    rate: Option<f64>,
    topics: [String; 3],
    summary_json: Option<String>,
    dry_run: bool,
}

fn parse_day(s: &str) -> Result<i64> {
    days_of_date(s).with_context(|| format!("date {s}: expected YYYY-MM-DD"))
}

fn day_str(d: i64) -> String {
    date_of_days(d)
}

fn opts() -> Result<Opts> {
    let mut spec = Spec::default();
    let mut brokers = default_brokers();
    let (mut from, mut to, mut days) = (None, None, 90i64);
    let mut rate = None;
    let mut topics = [
        "payments.qris.v1".to_string(),
        "payments.noncash.v1".to_string(),
        "merchants.registry.v1".to_string(),
    ];
    let (mut summary_json, mut dry_run) = (None, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--brokers" => brokers = val()?,
            "--seed" => spec.seed = val()?.parse()?,
            "--merchants" => spec.merchants = val()?.parse()?,
            "--payments" => spec.payments = val()?.parse()?,
            "--from" => from = Some(parse_day(&val()?)?),
            "--to" => to = Some(parse_day(&val()?)?),
            "--days" => days = val()?.parse()?,
            "--rate" => rate = Some(val()?.parse::<f64>()?),
            "--double-report" => spec.double_report = val()?.parse()?,
            "--redeliver" => spec.redeliver = val()?.parse()?,
            "--late" => spec.late = val()?.parse()?,
            "--bad-each" => spec.bad_each = val()?.parse()?,
            "--refund" => spec.refund = val()?.parse()?,
            "--partial-refund" => spec.partial_refund = val()?.parse()?,
            "--cancel-after" => spec.cancel_after = val()?.parse()?,
            "--unknown-refund" => spec.unknown_refund = val()?.parse()?,
            "--midnight" => spec.midnight = val()?.parse()?,
            "--qris-topic" => topics[0] = val()?,
            "--noncash-topic" => topics[1] = val()?,
            "--merchant-topic" => topics[2] = val()?,
            "--summary-json" => summary_json = Some(val()?),
            "--dry-run" => dry_run = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (--help)"),
        }
    }
    for (name, f) in [
        ("--double-report", spec.double_report),
        ("--redeliver", spec.redeliver),
        ("--late", spec.late),
        ("--refund", spec.refund),
        ("--partial-refund", spec.partial_refund),
        ("--cancel-after", spec.cancel_after),
        ("--unknown-refund", spec.unknown_refund),
        ("--midnight", spec.midnight),
    ] {
        if !(0.0..=1.0).contains(&f) {
            bail!("{name} must be between 0 and 1");
        }
    }
    if spec.merchants == 0 {
        bail!("--merchants must be at least 1");
    }
    let now_wib_day = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        + 7 * 3_600_000)
        .div_euclid(86_400_000);
    let last = to.unwrap_or(now_wib_day - 1);
    let first = from.unwrap_or(last - days + 1);
    if last < first {
        bail!("--from is after --to");
    }
    if last >= now_wib_day {
        bail!("--to must be before today (WIB): the consumers reject event times in the future");
    }
    spec.first_day = first;
    spec.last_day = last;
    if let Some(r) = rate
        && r <= 0.0
    {
        bail!("--rate must be positive");
    }
    Ok(Opts {
        brokers,
        spec,
        rate,
        topics,
        summary_json,
        dry_run,
    })
}

struct Progress {
    tty: bool,
    started: Instant,
    last: Instant,
    total_days: i64,
}

impl Progress {
    fn show(&mut self, sent: u64, days_done: i64, force: bool) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if !force && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = sent as f64 / secs;
        let frac = days_done as f64 / self.total_days.max(1) as f64;
        let eta = if frac > 0.0 { secs / frac - secs } else { 0.0 };
        if self.tty {
            let width = 30;
            let fill = (frac * width as f64) as usize;
            eprint!(
                "\r[{}{}] {:>3.0}%  {sent} messages  {rate:.0} msg/s  ETA {eta:.0} s   ",
                "#".repeat(fill),
                ".".repeat(width - fill),
                frac * 100.0
            );
            let _ = std::io::stderr().flush();
        } else {
            eprintln!(
                "umkm-traffic: day {days_done}/{}, {sent} messages, {rate:.0} msg/s, ETA {eta:.0} s",
                self.total_days
            );
        }
    }
}

fn default_brokers() -> String {
    std::env::var("UMKM_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// `umkm-traffic topics [--brokers B] [NAME:PARTITIONS ...]`.
async fn topics_command(mut args: impl Iterator<Item = String>) -> Result<()> {
    let mut brokers = default_brokers();
    let mut wanted = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--brokers" => brokers = args.next().context("--brokers needs a value")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            t => wanted.push(parse_topic(t)?),
        }
    }
    if wanted.is_empty() {
        wanted = PROJECT_TOPICS
            .iter()
            .map(|(t, p)| (t.to_string(), *p))
            .collect();
    }
    let refs: Vec<(&str, i32)> = wanted.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    create_topics(&umkm_traffic::kafka::client_config(&brokers, &[]), &refs).await?;
    for (t, p) in &wanted {
        println!("{t}:{p}");
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("topics") {
        return topics_command(std::env::args().skip(2)).await;
    }
    let o = opts()?;
    let producer: Option<FutureProducer> = if o.dry_run {
        None
    } else {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &o.brokers)
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("message.timeout.ms", "60000")
            .create()?;
        // Fail early and clearly when a topic is missing (tansu does not auto-create them).
        let md = p
            .client()
            .fetch_metadata(None, Duration::from_secs(15))
            .with_context(|| format!("cannot reach Kafka at {}", o.brokers))?;
        for t in &o.topics {
            if !md
                .topics()
                .iter()
                .any(|x| x.name() == t && !x.partitions().is_empty())
            {
                bail!(
                    "topic {t} does not exist on {}: create it first (scripts/stack topics)",
                    o.brokers
                );
            }
        }
        Some(p)
    };
    let mut stream = Stream::new(o.spec.clone());
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        started: Instant::now(),
        last: Instant::now(),
        total_days: stream.days_left(),
    };
    eprintln!(
        "umkm-traffic: seed {}, {} merchants, {} payments, {} .. {} (WIB){}",
        o.spec.seed,
        o.spec.merchants,
        o.spec.payments,
        day_str(o.spec.first_day),
        day_str(o.spec.last_day),
        if o.dry_run { ", dry run" } else { "" }
    );
    let mut sent = 0u64;
    let mut digest = Digest::default();
    let mut days_done = 0;
    let mut publisher = producer.as_ref().map(|p| Publisher::new(p, 50_000));
    let started = Instant::now();
    while let Some(msgs) = stream.next_day() {
        for m in msgs {
            digest.add(&m);
            if let Some(p) = &mut publisher {
                let topic = match m.family {
                    Feed::Qris => &o.topics[0],
                    Feed::Noncash => &o.topics[1],
                    Feed::Merchants => &o.topics[2],
                };
                p.send(topic, Some(&m.key), &m.payload).await?;
            }
            sent += 1;
            if let Some(r) = o.rate {
                let due = started + Duration::from_secs_f64(sent as f64 / r);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
            progress.show(sent, days_done, false);
        }
        days_done += 1;
        progress.show(sent, days_done, false);
    }
    if let Some(p) = publisher {
        p.finish().await?;
    }
    if let Some(p) = &producer {
        p.flush(Duration::from_secs(60))?;
    }
    progress.show(sent, days_done, true);
    if progress.tty {
        eprintln!();
    }
    let secs = started.elapsed().as_secs_f64();
    let t = &stream.truth;
    println!(
        "published {sent} messages in {secs:.1} s ({:.0} msg/s)",
        sent as f64 / secs.max(1e-3)
    );
    println!("ground truth (what must land):");
    println!(
        "  qris_payments      {:>9} rows  ({} double reports, {} redeliveries, {} bad)",
        t.qris_payments,
        t.double_reports.get(&Feed::Qris).unwrap_or(&0),
        t.redeliveries.get(&Feed::Qris).unwrap_or(&0),
        t.bad_total(Feed::Qris)
    );
    println!(
        "  noncash_payments   {:>9} rows  ({} double reports, {} redeliveries, {} bad)",
        t.noncash_payments,
        t.double_reports.get(&Feed::Noncash).unwrap_or(&0),
        t.redeliveries.get(&Feed::Noncash).unwrap_or(&0),
        t.bad_total(Feed::Noncash)
    );
    println!(
        "  merchant_events    {:>9} rows  ({} merchants registered, {} redeliveries, {} bad)",
        t.merchant_versions,
        t.merchants_registered,
        t.redeliveries.get(&Feed::Merchants).unwrap_or(&0),
        t.bad_total(Feed::Merchants)
    );
    println!("  late payments      {:>9}", t.late_payments);
    println!(
        "  refunds            {:>9} rows  ({} of payments not in the data); {} cancellations of paid payments",
        t.refunds, t.unlinked_refunds, t.voided
    );
    println!(
        "  midnight doubles   {:>9}  (issuer and acquirer 1.5 s apart across 00:00 WIB: one payment each)",
        t.midnight_doubles
    );
    println!(
        "  successful payments, gross and net of refunds and cancellations (docs/metrics.md):"
    );
    for (c, (n, v)) in &t.success_by_channel {
        let (nn, nv) = t.net_by_channel.get(c).copied().unwrap_or_default();
        println!("    {c:<9} gross {n:>9} Rp{v:>15}   net {nn:>9} Rp{nv:>15}");
    }
    for (kab, (n, v, nn, nv)) in &t.by_kab_kota {
        println!("    {kab:<9} gross {n:>9} Rp{v:>15}   net {nn:>9} Rp{nv:>15}");
    }
    println!("  stream digest      {}", digest.hex());
    for (f, rules) in &t.bad {
        println!("  DLQ {f:?}: {rules:?}");
    }
    if let Some(path) = &o.summary_json {
        let json = serde_json::json!({
            "spec": o.spec,
            "first_day": day_str(o.spec.first_day),
            "last_day": day_str(o.spec.last_day),
            "published": sent,
            "digest": digest.hex(),
            "seconds": secs,
            "truth": t,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("write {path}"))?;
    }
    Ok(())
}
