//! Every metric of a consumer, in one place. Names are `umkm_*`; every series carries
//! `service`; labels are low-cardinality (outcome, rule, stage, topic, partition): never a
//! payment, merchant or payer id.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Where a duplicate was recognised.
#[derive(Debug, Clone, Copy)]
pub enum DupStage {
    /// Another report of the same key in the same batch.
    Batch,
    /// A key this process inserted earlier.
    Cache,
    /// A key found in ClickHouse by the lookup before the insert.
    ClickHouse,
}

pub struct Metrics {
    pub registry: Registry,
    /// outcome = inserted | duplicate | dlq
    pub events: IntCounterVec,
    /// stage = batch | cache | clickhouse
    pub duplicates: IntCounterVec,
    /// stage = decode | validate; rule = the first rule that failed
    pub dlq: IntCounterVec,
    pub batch_rows: Histogram,
    pub batch_bytes: Histogram,
    pub insert_seconds: Histogram,
    /// The dedup lookup of one batch in ClickHouse (every chunk of keys).
    pub lookup_seconds: Histogram,
    pub flush_seconds: Histogram,
    /// class = retryable | fatal; what = lookup | insert | dlq | registry | commit
    pub retries: IntCounterVec,
    /// The group's lag on every partition of the topic, from the broker (committed offset and
    /// end offset), whether or not this instance holds the partition.
    pub group_lag: IntGaugeVec,
    pub group_committed: IntGaugeVec,
    pub group_end: IntGaugeVec,
    /// Failed reads of the group's offsets from the broker.
    pub group_lag_errors: IntCounter,
    pub assigned_partitions: IntGauge,
    /// 1 while this instance reports a stall (`progress::Progress`).
    pub stalled: IntGauge,
    pub rebalances: IntCounterVec,
    /// When this process started (Unix seconds): restarts show as changes.
    pub start_time: Gauge,
    /// `refreshed_at` of the adoption snapshot (Unix seconds; 0 before the first refresh).
    pub snapshot_refreshed: IntGauge,
    pub ready: IntGauge,
    pub clickhouse_up: IntGauge,
    pub kafka_up: IntGauge,
    pub paused: IntGauge,
    /// Inserts refused because another consumer claimed a partition of the batch.
    pub fenced: IntCounter,
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        let labels =
            std::collections::HashMap::from([("service".to_string(), service.to_string())]);
        let registry = Registry::new_custom(Some("umkm".into()), Some(labels)).expect("registry");
        let counter = |name: &str, help: &str, l: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), l).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("metric");
            registry.register(Box::new(h.clone())).expect("register");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let partition_gauge = |name: &str, help: &str| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), &["topic", "partition"]).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let start_time = Gauge::new(
            "start_time_seconds",
            "When this process started, Unix seconds",
        )
        .expect("metric");
        registry
            .register(Box::new(start_time.clone()))
            .expect("register");
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
        );
        let group_lag_errors = IntCounter::new(
            "group_lag_errors_total",
            "Failed reads of the group's committed and end offsets from the broker",
        )
        .expect("metric");
        registry
            .register(Box::new(group_lag_errors.clone()))
            .expect("register");
        let fenced = IntCounter::new(
            "fenced_inserts_total",
            "Inserts refused because another consumer had claimed a partition of the batch (nothing of them was inserted)",
        )
        .expect("metric");
        registry
            .register(Box::new(fenced.clone()))
            .expect("register");
        let m = Self {
            events: counter("events_total", "Consumed events by outcome", &["outcome"]),
            duplicates: counter(
                "duplicates_total",
                "Duplicate events dropped, by where they were recognised",
                &["stage"],
            ),
            dlq: counter(
                "dlq_total",
                "Events written to the dead-letter topic, by stage and rule",
                &["stage", "rule"],
            ),
            batch_rows: hist(
                "batch_rows",
                "Rows inserted per ClickHouse INSERT",
                prometheus::exponential_buckets(1.0, 4.0, 10).expect("buckets"),
            ),
            batch_bytes: hist(
                "batch_bytes",
                "Kafka payload bytes per flushed batch",
                prometheus::exponential_buckets(1024.0, 4.0, 10).expect("buckets"),
            ),
            insert_seconds: hist(
                "insert_duration_seconds",
                "Duration of one successful ClickHouse INSERT",
                prometheus::exponential_buckets(0.001, 2.5, 14).expect("buckets"),
            ),
            lookup_seconds: hist(
                "lookup_duration_seconds",
                "Duration of one batch's successful dedup lookup in ClickHouse, every chunk of keys",
                prometheus::exponential_buckets(0.001, 2.5, 14).expect("buckets"),
            ),
            flush_seconds: hist(
                "flush_duration_seconds",
                "Duration of one batch flush: DLQ acks, dedup lookups, insert and commit",
                prometheus::exponential_buckets(0.001, 2.5, 14).expect("buckets"),
            ),
            retries: counter(
                "retries_total",
                "Retried operations by what failed and its class",
                &["what", "class"],
            ),
            group_lag: partition_gauge(
                "group_lag_messages",
                "The group's lag per partition of its topic: end offset minus committed offset (from the broker)",
            ),
            group_committed: partition_gauge(
                "group_committed_offset",
                "The group's committed offset per partition (-1: none yet)",
            ),
            group_end: partition_gauge(
                "group_end_offset",
                "End offset (high watermark) per partition of the topic",
            ),
            group_lag_errors,
            assigned_partitions: gauge(
                "assigned_partitions",
                "Partitions of the topic this instance holds",
            ),
            stalled: gauge(
                "stalled",
                "1 while the group has lag and no progress for progress.stall_after_s on this instance's partitions (or on any, when it holds none)",
            ),
            start_time,
            snapshot_refreshed: gauge(
                "adoption_snapshot_refreshed_timestamp_seconds",
                "When refresh-metrics last rebuilt adoption_merchant_monthly, Unix seconds (0: never)",
            ),
            rebalances: counter(
                "rebalances_total",
                "Partition assignment changes",
                &["kind"],
            ),
            ready: gauge("ready", "1 when /health/ready answers 200"),
            clickhouse_up: gauge("clickhouse_up", "1 when ClickHouse answered the last probe"),
            kafka_up: gauge("kafka_up", "1 when the broker answered the last probe"),
            paused: gauge(
                "partitions_paused",
                "1 while consumption is paused because ClickHouse or the DLQ is failing",
            ),
            fenced,
            registry,
        };
        m.initialise_series();
        m
    }

    /// Creates every series with a fixed label set at 0, so that alerts and panels see a
    /// counter before its first increment (`rate()` needs the zero).
    fn initialise_series(&self) {
        for outcome in ["inserted", "duplicate", "dlq"] {
            self.events.with_label_values(&[outcome]);
        }
        for stage in ["batch", "cache", "clickhouse"] {
            self.duplicates.with_label_values(&[stage]);
        }
        for what in ["lookup", "insert", "dlq", "registry", "commit"] {
            for class in ["retryable", "fatal"] {
                self.retries.with_label_values(&[what, class]);
            }
        }
        for kind in ["assign", "revoke"] {
            self.rebalances.with_label_values(&[kind]);
        }
    }

    /// Counts `n` duplicates dropped at `stage` (both `duplicates_total` and the event outcome).
    pub fn duplicate(&self, stage: DupStage, n: usize) {
        let label = match stage {
            DupStage::Batch => "batch",
            DupStage::Cache => "cache",
            DupStage::ClickHouse => "clickhouse",
        };
        self.duplicates.with_label_values(&[label]).inc_by(n as u64);
        self.events
            .with_label_values(&["duplicate"])
            .inc_by(n as u64);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
