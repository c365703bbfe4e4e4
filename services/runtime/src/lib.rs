//! Shared runtime of the umkm-pulse consumers. A service implements [`family::Family`] and
//! calls [`main_for`]; this crate does the rest.

pub mod admin;
pub mod config;
pub mod family;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod sink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

use crate::admin::Health;
use crate::config::{ServiceDefaults, Validated};
use crate::family::Family;
use crate::metrics::Metrics;
use crate::pipeline::{Outcome, Pipeline};
use crate::registry::SchemaSource;
use crate::sink::Sink;

/// Exit code when stopped with a batch that could not be written (nothing committed past it).
pub const EXIT_UNFLUSHED: u8 = 75;

const USAGE: &str =
    "usage: SERVICE [--config FILE] [run | migrate | refresh-metrics | check-config]

  run              consume until SIGTERM/SIGINT (default)
  migrate          apply the ClickHouse migrations and exit
  refresh-metrics  rebuild the adoption snapshots (adoption_merchant_monthly, _daily) and exit
  check-config     validate the configuration, print it (secrets redacted) and exit

Configuration: defaults, then FILE (or $UMKM_CONFIG), then UMKM__SECTION__KEY environment
variables; see the README's configuration reference.";

/// The whole `main` of a consumer service.
pub fn main_for<F: Family>() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut file: Option<PathBuf> = std::env::var_os("UMKM_CONFIG").map(PathBuf::from);
    let mut cmd = String::from("run");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => match args.next() {
                Some(f) => file = Some(PathBuf::from(f)),
                None => {
                    eprintln!("--config needs a file\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "run" | "migrate" | "refresh-metrics" | "check-config" => cmd = a,
            other => {
                eprintln!("unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let defaults = ServiceDefaults {
        topic: F::DEFAULT_TOPIC,
        group_id: F::DEFAULT_GROUP,
        dlq_topic: F::DEFAULT_DLQ_TOPIC,
    };
    let settings = match config::load(&defaults, file.as_deref(), &env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", F::SERVICE);
            return ExitCode::from(2);
        }
    };
    let v = match config::validate(settings) {
        Ok(v) => v,
        Err(problems) => {
            eprintln!("{}: invalid configuration:", F::SERVICE);
            for p in problems {
                eprintln!("  - {p}");
            }
            return ExitCode::from(2);
        }
    };
    init_tracing(&v);
    if cmd == "check-config" {
        println!("{:#?}", v.s);
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let r = if cmd == "migrate" {
            migrate_only(&v).await
        } else if cmd == "refresh-metrics" {
            refresh_metrics(&v).await
        } else {
            run_service::<F>(v, shutdown_signal()).await
        };
        match r {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "{} stopped", F::SERVICE);
                ExitCode::FAILURE
            }
        }
    })
}

fn init_tracing(v: &Validated) {
    let filter = tracing_subscriber::EnvFilter::try_new(&v.s.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if v.s.log.format == "json" {
        b.json().flatten_event(true).try_init()
    } else {
        b.try_init()
    };
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Connects to ClickHouse, retrying with backoff up to `retry.max_elapsed_s`.
async fn connect_sink(v: &Validated, health: &Health) -> anyhow::Result<Sink> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        match Sink::connect(v).await {
            Ok(s) => {
                health.clickhouse_ok.store(true, Ordering::Relaxed);
                return Ok(s);
            }
            Err(e) if started.elapsed() < Duration::from_secs(v.s.retry.max_elapsed_s) => {
                attempt += 1;
                let d = Duration::from_millis(
                    (v.s.retry.initial_backoff_ms << attempt.min(10)).min(v.s.retry.max_backoff_ms),
                );
                tracing::warn!(error = %e, retry_in = ?d, "ClickHouse not reachable yet");
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(anyhow::anyhow!("ClickHouse not reachable: {e}")),
        }
    }
}

/// Bound on one adoption snapshot rebuild (about 25 s for a year of 10M payments here).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(1800);

async fn refresh_metrics(v: &Validated) -> anyhow::Result<ExitCode> {
    let health = Health::default();
    let sink = connect_sink(v, &health).await?;
    if v.s.clickhouse.migrate_on_start {
        sink.migrate().await?;
    }
    let started = Instant::now();
    for (table, rows) in sink.refresh_adoption(REFRESH_TIMEOUT).await? {
        println!("refreshed {}.{table}: {rows} rows", sink.database);
    }
    println!(
        "snapshots rebuilt in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

async fn migrate_only(v: &Validated) -> anyhow::Result<ExitCode> {
    let health = Health::default();
    let sink = connect_sink(v, &health).await?;
    let (done, skipped) = sink.migrate().await?;
    println!(
        "ClickHouse {} at {}: database {}",
        sink.server_version_text, v.s.clickhouse.url, sink.database
    );
    println!(
        "applied: {}",
        if done.is_empty() {
            "none".into()
        } else {
            done.join(", ")
        }
    );
    if !skipped.is_empty() {
        println!("skipped (need a newer server): {}", skipped.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one consumer service until `shutdown` resolves.
pub async fn run_service<F: Family>(
    v: Validated,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new(F::SERVICE));
    let health = Arc::new(Health::default());
    let admin = admin::serve(v.admin_addr, metrics.clone(), health.clone()).await?;
    tracing::info!(admin = %admin, topic = %v.s.kafka.topic, group = %v.s.kafka.group_id, "{} starting", F::SERVICE);

    let sink = connect_sink(&v, &health).await?;
    tracing::info!(
        version = %sink.server_version_text,
        validation = sink.modern(),
        "connected to ClickHouse"
    );
    if v.s.clickhouse.migrate_on_start {
        let (done, skipped) = sink.migrate().await?;
        tracing::info!(applied = ?done, skipped_for_server_version = ?skipped, "migrations checked");
    }
    let family = F::build(&v).map_err(|e| anyhow::anyhow!(e))?;
    let source = SchemaSource::from_settings(&v.s.registry).map_err(|e| anyhow::anyhow!(e))?;
    let consumer = kafka::consumer(&v, F::SERVICE, metrics.clone())?;
    let producer = kafka::producer(&v, F::SERVICE)?;

    // Readiness probes: ClickHouse answers SELECT 1, the broker answers a metadata request.
    let probe = {
        let (sink, producer, health, metrics) = (
            sink.clone(),
            producer.clone(),
            health.clone(),
            metrics.clone(),
        );
        let topic = v.s.kafka.topic.clone();
        tokio::spawn(async move {
            loop {
                let ch = sink.ping().await;
                let p = producer.clone();
                let t = topic.clone();
                let kafka = tokio::task::spawn_blocking(move || {
                    p.client()
                        .fetch_metadata(Some(&t), Duration::from_secs(2))
                        .is_ok()
                })
                .await
                .unwrap_or(false);
                health.clickhouse_ok.store(ch, Ordering::Relaxed);
                health.kafka_ok.store(kafka, Ordering::Relaxed);
                metrics.clickhouse_up.set(i64::from(ch));
                metrics.kafka_up.set(i64::from(kafka));
                metrics.ready.set(i64::from(health.ready()));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let pipeline = Pipeline::new(
        family,
        v.clone(),
        consumer,
        producer.clone(),
        sink,
        source,
        metrics,
        health,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let outcome = pipeline.run(shutdown).await;
    probe.abort();
    let _ = producer.flush(Duration::from_secs(5));
    match outcome? {
        Outcome::Clean => {
            tracing::info!("{} stopped cleanly", F::SERVICE);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Unflushed => Ok(ExitCode::from(EXIT_UNFLUSHED)),
    }
}
