//! One consumer service from start to stop: parse the command line, load and validate the
//! configuration, connect (ClickHouse with `retry.connect`), migrate, then run the pipeline
//! (or `migrate` / `refresh-metrics` / `check-config`) and map the outcome to an exit code.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, Producer};

use crate::admin::{self, Health};
use crate::cli::{self, Command, Parsed, USAGE};
use crate::clickhouse::ClickHouse;
use crate::config::{self, ServiceDefaults, Validated};
use crate::family::Family;
use crate::kafka;
use crate::metrics::Metrics;
use crate::pipeline::{Outcome, Parts, Pipeline};
use crate::progress;
use crate::registry::SchemaSource;
use crate::retry::with_retries;

/// Exit code when stopped with a batch that could not be written (nothing committed past it).
pub const EXIT_UNFLUSHED: u8 = 75;

/// Bound on one adoption snapshot rebuild (about 53 s for a year of 10M payments here,
/// docs/metrics.md).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The whole `main` of a consumer service.
pub fn main_for<F: Family>() -> ExitCode {
    let cli = match cli::parse(
        std::env::args().skip(1),
        std::env::var_os("UMKM_CONFIG").map(Into::into),
    ) {
        Parsed::Cli(c) => c,
        Parsed::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Parsed::Error(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let defaults = ServiceDefaults {
        topic: F::DEFAULT_TOPIC,
        group_id: F::DEFAULT_GROUP,
        dlq_topic: F::DEFAULT_DLQ_TOPIC,
    };
    let settings = match config::load(&defaults, cli.config.as_deref(), &env) {
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
        let r = match cli.command {
            Command::Migrate => migrate_only(&v).await,
            Command::RefreshMetrics => refresh_metrics(&v).await,
            Command::CheckConfig => Ok(check_config::<F>(&v)),
            Command::Run => run_service::<F>(v, shutdown_signal()).await,
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
    let filter = tracing_subscriber::EnvFilter::try_new(&v.settings.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if v.settings.log.format == "json" {
        b.json().flatten_event(true).try_init()
    } else {
        b.try_init()
    };
}

/// `check-config`: the settings validated (already), then librdkafka's check of its
/// properties (`kafka.extra` included) without connecting; prints the settings, secrets
/// redacted.
fn check_config<F: Family>(v: &Validated) -> ExitCode {
    if let Err(e) = kafka::check(v, F::SERVICE) {
        eprintln!(
            "{}: invalid configuration:\n  - kafka: {}",
            F::SERVICE,
            kafka::describe(&e)
        );
        return ExitCode::from(2);
    }
    println!("{:#?}", v.settings);
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled: a signal during start-up is a stop request, not the default
/// action (README "Operations").
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut t), Ok(mut i)) => {
                    tokio::select! {
                        _ = t.recv() => {},
                        _ = i.recv() => {},
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Connects to ClickHouse, retrying a server that is not reachable yet (`retry.connect`);
/// a fatal answer (authentication, …) fails at once.
async fn connect_clickhouse(v: &Validated) -> anyhow::Result<ClickHouse> {
    with_retries(
        v.settings.retry.connect,
        || ClickHouse::connect(v),
        |e| e.class == umkm_core::clickhouse_error::ErrorClass::Fatal,
        |e, attempt, d| {
            tracing::warn!(error = %e, attempt, retry_in = ?d, "ClickHouse not reachable yet");
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("ClickHouse not reachable: {e}"))
}

/// Asks the brokers for metadata, retrying brokers that do not answer yet (`retry.connect`);
/// a TLS handshake or SASL login they refuse fails at once.
async fn connect_kafka(v: &Validated, client: &kafka::GroupOffsets) -> anyhow::Result<()> {
    with_retries(
        v.settings.retry.connect,
        || async { tokio::task::block_in_place(|| client.connect()) },
        |e| matches!(e, kafka::ConnectError::Refused(_)),
        |e, attempt, d| {
            tracing::warn!(error = %e, attempt, retry_in = ?d, "Kafka not reachable yet");
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("Kafka: {e}"))
}

/// How often the probes read the adoption snapshot's `refreshed_at`.
const SNAPSHOT_PROBE_EVERY: Duration = Duration::from_secs(60);

/// Probes ClickHouse (`SELECT 1`) and the broker (a metadata request) every second for
/// `/health/ready` and the `*_up` gauges, and the adoption snapshot's age every minute.
fn spawn_probes(
    ch: ClickHouse,
    producer: FutureProducer,
    topic: String,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut snapshot_probed: Option<Instant> = None;
        loop {
            let ch_ok = ch.ping().await;
            if ch_ok && snapshot_probed.is_none_or(|t| t.elapsed() >= SNAPSHOT_PROBE_EVERY) {
                snapshot_probed = Some(Instant::now());
                match ch.snapshot_refreshed_at().await {
                    Ok(t) => metrics.snapshot_refreshed.set(t),
                    Err(e) => tracing::debug!(error = %e, "cannot read the snapshot's age"),
                }
            }
            let p = producer.clone();
            let t = topic.clone();
            let kafka_ok = tokio::task::spawn_blocking(move || {
                p.client()
                    .fetch_metadata(Some(&t), Duration::from_secs(2))
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            health.clickhouse_ok.store(ch_ok, Ordering::Relaxed);
            health.kafka_ok.store(kafka_ok, Ordering::Relaxed);
            metrics.clickhouse_up.set(i64::from(ch_ok));
            metrics.kafka_up.set(i64::from(kafka_ok));
            metrics.ready.set(i64::from(health.ready()));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn refresh_metrics(v: &Validated) -> anyhow::Result<ExitCode> {
    let ch = connect_clickhouse(v).await?;
    if v.settings.clickhouse.migrate_on_start {
        ch.migrate().await?;
    }
    let started = Instant::now();
    // Long enough for an insert between its facts' and its views' parts, and for a replica
    // within clickhouse.max_replica_delay_s, to catch up (docs/reliability.md).
    let settle = Duration::from_secs((2 * v.settings.clickhouse.max_replica_delay_s + 1).max(5));
    let repair = ch.repair_rollups(settle).await?;
    for (table, repaired, above, unsettled) in &repair.per_rollup {
        println!(
            "checked {}.{table} for {} suspect keys: {repaired} rows repaired, {above} groups above the facts, {unsettled} still changing",
            ch.database, repair.suspects
        );
    }
    for (table, rows) in ch.refresh_adoption(REFRESH_TIMEOUT).await? {
        println!("refreshed {}.{table}: {rows} rows", ch.database);
    }
    println!(
        "snapshots rebuilt in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Loads `reference.regions_file`, when configured, into `ref_regions`.
async fn load_reference(ch: &ClickHouse, v: &Validated) -> anyhow::Result<()> {
    if v.settings.reference.regions_file.is_some() {
        ch.load_regions(&v.regions).await?;
        tracing::info!(version = v.regions.version(), "region reference loaded");
    }
    Ok(())
}

async fn migrate_only(v: &Validated) -> anyhow::Result<ExitCode> {
    let ch = connect_clickhouse(v).await?;
    let (done, skipped) = ch.migrate().await?;
    load_reference(&ch, v).await?;
    println!(
        "ClickHouse {} at {}: database {}",
        ch.server_version_text, v.settings.clickhouse.url, ch.database
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

/// The service's three Kafka clients: the consumer, the DLQ producer and the reader of the
/// group's offsets, with the assignment the consumer's rebalance callbacks keep.
struct KafkaClients {
    consumer: kafka::Consumer,
    producer: FutureProducer,
    group_offsets: kafka::GroupOffsets,
    assignment: Arc<kafka::Assignment>,
}

impl KafkaClients {
    fn new(
        v: &Validated,
        service: &'static str,
        metrics: Arc<Metrics>,
    ) -> rdkafka::error::KafkaResult<KafkaClients> {
        let assignment = Arc::new(kafka::Assignment::default());
        Ok(KafkaClients {
            consumer: kafka::consumer(v, service, metrics, assignment.clone())?,
            producer: kafka::producer(v, service)?,
            group_offsets: kafka::GroupOffsets::new(v, service)?,
            assignment,
        })
    }
}

/// Runs one consumer service until `shutdown` resolves. A stop request during start-up
/// (connecting, migrating, loading the reference data) ends it there with exit 0: nothing is
/// held yet, and every start-up step is safe to cut short (a migration is re-checked at the
/// next start).
pub async fn run_service<F: Family>(
    v: Validated,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stop_requested = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which happens only after it sent.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let metrics = Arc::new(Metrics::new(F::SERVICE));
    let health = Arc::new(Health::default());
    let admin = admin::serve(v.admin_addr, metrics.clone(), health.clone()).await?;
    tracing::info!(admin = %admin, topic = %v.settings.kafka.topic, group = %v.settings.kafka.group_id, "{} starting", F::SERVICE);
    let started = tokio::select! {
        s = start_up::<F>(&v, &metrics, &health) => s?,
        _ = stop_requested(stop_rx.clone()) => {
            tracing::info!("stop requested during start-up; {} stopped", F::SERVICE);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let Some(started) = started else {
        return Ok(ExitCode::from(2));
    };
    let outcome = serve(v, started, metrics, health, stop_requested(stop_rx)).await;
    signal.abort();
    outcome
}

/// What start-up connected and loaded.
struct Started<F> {
    kafka: KafkaClients,
    schemas: SchemaSource,
    clickhouse: ClickHouse,
    family: F,
}

/// Connects to Kafka, the registry and ClickHouse, migrates and loads the reference data;
/// `None` when librdkafka refused a setting (logged; exit 2).
async fn start_up<F: Family>(
    v: &Validated,
    metrics: &Arc<Metrics>,
    health: &Health,
) -> anyhow::Result<Option<Started<F>>> {
    // The Kafka clients first: a setting librdkafka refuses stops the service before it waits
    // for ClickHouse or touches its schema.
    let kafka = match KafkaClients::new(v, F::SERVICE, metrics.clone()) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = kafka::describe(&e), "invalid configuration: kafka");
            return Ok(None);
        }
    };
    // Then the brokers and the registry, so that a certificate or a password they refuse
    // stops the service at once (README "Security").
    connect_kafka(v, &kafka.group_offsets).await?;
    let schemas = SchemaSource::from_settings(&v.settings.registry, &v.registry_access)
        .map_err(|e| anyhow::anyhow!(e))?;
    schemas.check().await?;
    let ch = connect_clickhouse(v).await?;
    health.clickhouse_ok.store(true, Ordering::Relaxed);
    tracing::info!(
        version = %ch.server_version_text,
        validation = ch.modern(),
        "connected to ClickHouse"
    );
    if v.settings.clickhouse.migrate_on_start {
        let (done, skipped) = ch.migrate().await?;
        tracing::info!(applied = ?done, skipped_for_server_version = ?skipped, "migrations checked");
    }
    load_reference(&ch, v).await?;
    let family = F::build(v).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(Started {
        kafka,
        schemas,
        clickhouse: ch,
        family,
    }))
}

/// Runs the pipeline (with the progress watch and the probes) until `shutdown` resolves.
async fn serve<F: Family>(
    v: Validated,
    started: Started<F>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    let Started {
        kafka:
            KafkaClients {
                consumer,
                producer,
                group_offsets,
                assignment,
            },
        schemas,
        clickhouse: ch,
        family,
    } = started;
    let watch = tokio::spawn(progress::watch(
        group_offsets,
        assignment,
        v.settings.kafka.topic.clone(),
        v.settings.progress.clone(),
        metrics.clone(),
        health.clone(),
    ));

    let probes = spawn_probes(
        ch.clone(),
        producer.clone(),
        v.settings.kafka.topic.clone(),
        health.clone(),
        metrics.clone(),
    );
    let pipeline = Pipeline::new(Parts {
        family,
        settings: v,
        consumer,
        producer: producer.clone(),
        clickhouse: ch,
        schemas,
        metrics,
        health,
    })?;
    let outcome = pipeline.run(shutdown).await;
    probes.abort();
    watch.abort();
    let _ = producer.flush(Duration::from_secs(5));
    match outcome? {
        Outcome::Clean => {
            tracing::info!("{} stopped cleanly", F::SERVICE);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Unflushed => Ok(ExitCode::from(EXIT_UNFLUSHED)),
    }
}
