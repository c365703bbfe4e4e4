//! The shared consumer pipeline:
//!
//! consume → decode (Confluent framing, writer schema by id, pinned reader schema) → validate
//! and normalise (the family) → batch → at flush: wait for DLQ acks → dedup (in batch, memory,
//! ClickHouse) → one INSERT → commit offsets.
//!
//! Guarantees:
//! - an offset is committed only after every message before it is in ClickHouse, recognised as
//!   a duplicate of a row in ClickHouse, or acknowledged by the DLQ topic;
//! - a dedup key is inserted at most once: before every insert attempt the batch's keys are
//!   looked up in ClickHouse (which also covers a previous attempt that partly landed, a crash
//!   between insert and commit, and another consumer that had the partition before);
//!   a key is remembered in memory only after its insert succeeded;
//! - a failing insert keeps its batch, pauses the partitions and retries with bounded
//!   exponential backoff; before a retry (and before the first insert after an assignment) it
//!   waits until no insert of ours for those partitions is still running on the server.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use umkm_core::avro::{DecodeError, Decoder};
use umkm_core::batch::{BatchMeter, BatchPolicy, FlushReason};
use umkm_core::chclass::ErrorClass;
use umkm_core::dedup::{Candidate, Key, KeySet, resolve_in_batch};
use umkm_core::{Invalid, join_reasons};

use crate::admin::Health;
use crate::config::Validated;
use crate::family::{Family, MessageMeta};
use crate::kafka::{Consumer, RebalanceEvent};
use crate::metrics::{DupStage, Metrics};
use crate::registry::{FetchError, SchemaSource};
use crate::sink::{Sink, SinkError};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request with everything flushed and committed.
    Clean,
    /// Stopped on request but the last batch could not be written within the shutdown timeout;
    /// nothing was committed past it, so it is consumed again at the next start.
    Unflushed,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("giving up on ClickHouse after {attempts} attempts over {elapsed:?}: {last}")]
    ClickHouse {
        attempts: u32,
        elapsed: Duration,
        last: SinkError,
    },
    #[error("giving up on the dead-letter topic after {attempts} attempts: {last}")]
    Dlq { attempts: u32, last: String },
    #[error("schema registry unavailable: {0}")]
    Registry(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the insert task failed: {0}")]
    InsertTask(String),
}

struct DlqItem {
    partition: i32,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
    stage: &'static str,
    rule: &'static str,
    delivery: Option<DeliveryFuture>,
}

/// The batch being built or retried.
struct Pending<R> {
    candidates: Vec<Candidate<R>>,
    dlq: Vec<DlqItem>,
    /// Next offset to commit per (topic, partition).
    offsets: BTreeMap<(String, i32), i64>,
    meter: BatchMeter,
}

impl<R> Default for Pending<R> {
    fn default() -> Self {
        Self {
            candidates: Vec::new(),
            dlq: Vec::new(),
            offsets: BTreeMap::new(),
            meter: BatchMeter::default(),
        }
    }
}

impl<R> Pending<R> {
    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

/// Failure state of the sink, for backoff and give-up decisions.
#[derive(Default)]
struct Failing {
    since: Option<Instant>,
    attempts: u32,
    fatal_attempts: u32,
    retry_at: Option<Instant>,
}

/// Bounded set of keys known to be in ClickHouse (FIFO eviction).
struct SeenCache {
    cap: usize,
    set: KeySet,
    order: VecDeque<Key>,
}

impl SeenCache {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            set: KeySet::default(),
            order: VecDeque::new(),
        }
    }
    fn contains(&self, k: &Key) -> bool {
        self.set.contains(k)
    }
    fn insert(&mut self, k: Key) {
        if self.cap == 0 || !self.set.insert(k) {
            return;
        }
        self.order.push_back(k);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

pub struct Pipeline<F: Family> {
    family: F,
    v: Validated,
    policy: BatchPolicy,
    consumer: Consumer,
    producer: FutureProducer,
    sink: Sink,
    source: SchemaSource,
    decoder: Decoder,
    unknown_ids: HashMap<u32, Instant>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    pending: Pending<(u16, F::Row)>,
    seen: SeenCache,
    failing: Failing,
    paused: bool,
    /// Partitions gained since the last successful flush: guard against a previous owner's
    /// insert that may still be running.
    newly_assigned: BTreeSet<i32>,
    inserts_done: u64,
    abort_after_inserts: Option<u64>,
    /// While an insert runs: partitions revoked meanwhile (its batch must not commit them).
    revoked_in_flight: Option<HashSet<(String, i32)>>,
}

fn backoff(v: &Validated, attempt: u32) -> Duration {
    let r = &v.s.retry;
    let exp = r
        .initial_backoff_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(r.max_backoff_ms);
    // Full jitter in [exp/2, exp]: consumers that failed together do not retry together.
    let jitter = rand::random_range(exp / 2..=exp.max(1));
    Duration::from_millis(jitter.max(1))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl<F: Family> Pipeline<F> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        family: F,
        v: Validated,
        consumer: Consumer,
        producer: FutureProducer,
        sink: Sink,
        source: SchemaSource,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, String> {
        let decoder = Decoder::new(F::READER_SCHEMA).map_err(|e| e.to_string())?;
        let abort_after_inserts = std::env::var("UMKM_FAULT_ABORT_AFTER_INSERTS")
            .ok()
            .and_then(|s| s.parse().ok());
        Ok(Self {
            family,
            policy: v.batch_policy(),
            seen: SeenCache::new(v.s.dedup.cache_keys),
            v,
            consumer,
            producer,
            sink,
            source,
            decoder,
            unknown_ids: HashMap::new(),
            metrics,
            health,
            pending: Pending::default(),
            failing: Failing::default(),
            paused: false,
            newly_assigned: BTreeSet::new(),
            inserts_done: 0,
            abort_after_inserts,
            revoked_in_flight: None,
        })
    }

    /// Consumes until `shutdown` resolves, then flushes and commits within the shutdown timeout.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<Outcome, PipelineError> {
        self.consumer.subscribe(&[self.v.s.kafka.topic.as_str()])?;
        self.health.started.store(true, Ordering::Relaxed);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut stop_deadline: Option<Instant> = None;
        loop {
            self.apply_rebalance_events();
            let now = Instant::now();
            let due = if stop_deadline.is_some() {
                (!self.pending.is_empty()).then_some(FlushReason::Shutdown)
            } else {
                self.pending.meter.due(&self.policy, now)
            };
            let may_try = self.failing.retry_at.is_none_or(|t| now >= t);
            if let Some(reason) = due
                && may_try
            {
                self.flush_once(reason).await?;
                continue;
            }
            if let Some(deadline) = stop_deadline {
                if self.pending.is_empty() {
                    return Ok(Outcome::Clean);
                }
                if now >= deadline {
                    tracing::error!(
                        "shutdown timeout reached with an unwritten batch; its offsets are not committed"
                    );
                    return Ok(Outcome::Unflushed);
                }
            }
            let mut wake = now + Duration::from_millis(500);
            for t in [
                self.pending.meter.deadline(&self.policy),
                self.failing.retry_at,
                stop_deadline,
            ]
            .into_iter()
            .flatten()
            {
                wake = wake.min(t);
            }
            let stopping = stop_deadline.is_some();
            tokio::select! {
                biased;
                _ = &mut shutdown, if !stopping => {
                    tracing::info!("stop requested: no more fetching; flushing and committing");
                    stop_deadline = Some(Instant::now() + Duration::from_secs(self.v.s.shutdown.timeout_s));
                    // A retry in progress may run right away: the deadline bounds it.
                    self.failing.retry_at = None;
                }
                m = self.consumer.recv(), if !stopping => {
                    match m {
                        Ok(m) => {
                            let (topic, partition, offset, key, payload) = owned(&m);
                            drop(m);
                            // The rebalance callback runs inside `recv()`: a revocation and
                            // re-assignment may have happened during this very call, and this
                            // message already belongs to the new assignment. Apply the events
                            // first, or the revocation would drop this message from the batch
                            // while librdkafka has moved past it (it was lost in a test that
                            // re-assigned a partition to the same consumer).
                            self.apply_rebalance_events();
                            self.handle(topic, partition, offset, key, payload).await?;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka consumer error");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    fn apply_rebalance_events(&mut self) {
        let events: Vec<RebalanceEvent> = match self.consumer.context().events.lock() {
            Ok(mut ev) => std::mem::take(&mut *ev),
            Err(_) => return,
        };
        for e in events {
            match e {
                RebalanceEvent::Revoked(parts) => {
                    // Fence: drop what we hold for revoked partitions. Nothing of it was
                    // committed, so their next owner consumes it again and dedups.
                    let revoked: HashSet<(String, i32)> = parts.into_iter().collect();
                    if let Some(in_flight) = &mut self.revoked_in_flight {
                        in_flight.extend(revoked.iter().cloned());
                    }
                    let held = self.pending.offsets.len();
                    self.pending.offsets.retain(|k, _| !revoked.contains(k));
                    let revoked_p: HashSet<i32> = revoked.iter().map(|(_, p)| *p).collect();
                    self.pending
                        .candidates
                        .retain(|c| !revoked_p.contains(&c.partition));
                    // Kept partitions keep their DLQ deliveries: their offsets are committed only
                    // after those are acknowledged.
                    self.pending
                        .dlq
                        .retain(|d| !revoked_p.contains(&d.partition));
                    if self.pending.offsets.is_empty() {
                        self.pending = Pending::default();
                    }
                    tracing::info!(
                        revoked = revoked.len(),
                        dropped_partitions = held - self.pending.offsets.len(),
                        "partitions revoked"
                    );
                }
                RebalanceEvent::Assigned(parts) => {
                    tracing::info!(partitions = ?parts, "partitions assigned");
                    self.newly_assigned.extend(parts.iter().map(|(_, p)| *p));
                    if self.paused {
                        self.pause(true);
                    }
                }
            }
        }
    }

    fn pause(&mut self, on: bool) {
        let assignment = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment to pause/resume");
                return;
            }
        };
        let r = if on {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, pause = on, "pause/resume failed");
        }
        self.paused = on;
        self.metrics.paused.set(i64::from(on));
    }

    async fn handle(
        &mut self,
        topic: String,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
    ) -> Result<(), PipelineError> {
        if self.pending.candidates.capacity() == 0 {
            // One allocation per batch: growing by doubling would briefly hold the old and the
            // new buffer (1.5x the batch) and leave up to half of the last one unused.
            self.pending.candidates.reserve_exact(self.policy.max_rows);
        }
        self.pending.meter.add(payload.len(), Instant::now());
        self.pending
            .offsets
            .insert((topic.clone(), partition), offset + 1);
        let decoded = self.decode(&payload).await?;
        let (schema_id, event) = match decoded {
            Ok(x) => x,
            Err(e) => {
                let schema_id = Decoder::schema_id(&payload).ok();
                self.dead_letter(
                    &topic,
                    partition,
                    offset,
                    key,
                    payload,
                    schema_id,
                    "decode",
                    &[Invalid::new(e.rule(), e.to_string())],
                );
                return Ok(());
            }
        };
        let now = now_ms();
        let meta = MessageMeta {
            topic: &topic,
            partition,
            offset,
            key: key.as_deref(),
            schema_id,
            now_ms: now,
            now_secs: (now / 1000) as u32,
        };
        match self.family.process(event, &meta) {
            Ok(p) => self.pending.candidates.push(Candidate {
                key: p.key,
                alt: p.alt,
                priority: p.priority,
                partition,
                offset,
                row: (p.event_date, p.row),
            }),
            Err(reasons) => self.dead_letter(
                &topic,
                partition,
                offset,
                key,
                payload,
                Some(schema_id),
                "validate",
                &reasons,
            ),
        }
        Ok(())
    }

    /// Decodes, fetching unknown writer schemas. The outer error is a registry outage (retry
    /// exhausted), the inner one a bad record.
    async fn decode(
        &mut self,
        payload: &[u8],
    ) -> Result<Result<(u32, F::Event), DecodeError>, PipelineError> {
        let id = match Decoder::schema_id(payload) {
            Ok(id) => id,
            Err(e) => return Ok(Err(e.into())),
        };
        if !self.decoder.knows(id) {
            if let Some(t) = self.unknown_ids.get(&id)
                && t.elapsed() < Duration::from_secs(60)
            {
                return Ok(Err(DecodeError::UnknownSchemaId(id)));
            }
            let mut attempt = 0;
            loop {
                match self.source.fetch(id).await {
                    Ok(json) => {
                        if let Err(e) = self.decoder.register(id, &json) {
                            return Ok(Err(e));
                        }
                        tracing::info!(schema_id = id, "writer schema registered");
                        break;
                    }
                    Err(FetchError::NotFound(_)) => {
                        self.unknown_ids.insert(id, Instant::now());
                        return Ok(Err(DecodeError::UnknownSchemaId(id)));
                    }
                    Err(FetchError::Unavailable(msg)) => {
                        attempt += 1;
                        self.metrics
                            .retries
                            .with_label_values(&["registry", "retryable"])
                            .inc();
                        if attempt >= 8 {
                            return Err(PipelineError::Registry(msg));
                        }
                        let d = backoff(&self.v, attempt).min(Duration::from_secs(5));
                        tracing::warn!(schema_id = id, error = %msg, retry_in = ?d, "schema registry unavailable");
                        tokio::time::sleep(d).await;
                    }
                }
            }
        }
        Ok(self.decoder.decode::<F::Event>(payload).map(|e| (id, e)))
    }

    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        schema_id: Option<u32>,
        stage: &'static str,
        reasons: &[Invalid],
    ) {
        let rule = reasons.first().map(|r| r.rule).unwrap_or("unknown");
        let rules = reasons.iter().map(|r| r.rule).collect::<Vec<_>>().join(",");
        let reason = join_reasons(reasons);
        // Reasons name fields and rules, never the payer identifier (it is not validated).
        tracing::warn!(topic, partition, offset, stage, rules = %rules, reason = %reason, "record dead-lettered");
        let mut headers = OwnedHeaders::new();
        for (k, v) in [
            ("dlq.reason", reason.as_str()),
            ("dlq.rule", rules.as_str()),
            ("dlq.stage", stage),
            ("dlq.service", F::SERVICE),
            ("dlq.source.topic", topic),
            ("dlq.source.partition", &partition.to_string()),
            ("dlq.source.offset", &offset.to_string()),
            (
                "dlq.schema_id",
                &schema_id.map(|s| s.to_string()).unwrap_or_default(),
            ),
            ("dlq.timestamp_ms", &now_ms().to_string()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut item = DlqItem {
            partition,
            key,
            payload,
            headers,
            stage,
            rule,
            delivery: None,
        };
        self.send_dlq(&mut item);
        self.pending.dlq.push(item);
    }

    fn send_dlq(&self, item: &mut DlqItem) {
        let mut rec: FutureRecord<'_, Vec<u8>, Vec<u8>> =
            FutureRecord::to(&self.v.s.kafka.dlq_topic)
                .payload(&item.payload)
                .headers(item.headers.clone());
        if let Some(k) = &item.key {
            rec = rec.key(k);
        }
        item.delivery = match self.producer.send_result(rec) {
            Ok(f) => Some(f),
            Err((e, _)) => {
                tracing::warn!(error = %e, "DLQ enqueue failed; retried at flush");
                None
            }
        };
    }

    /// One flush attempt. Retryable failures set the backoff and return Ok; exhausting the
    /// retry budget returns the error (the service then exits non-zero).
    async fn flush_once(&mut self, reason: FlushReason) -> Result<(), PipelineError> {
        let started = Instant::now();
        match self
            .try_flush(!matches!(reason, FlushReason::Shutdown))
            .await
        {
            Ok(inserted) => {
                self.metrics
                    .flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(reason = reason.as_str(), inserted, "batch flushed");
                if self.failing.since.is_some() {
                    tracing::info!(
                        attempts = self.failing.attempts,
                        "ClickHouse/DLQ recovered; resuming"
                    );
                }
                self.failing = Failing::default();
                self.health.sink_failing.store(false, Ordering::Relaxed);
                if self.paused {
                    self.pause(false);
                }
                Ok(())
            }
            Err(FlushError::Sink(e)) => {
                let since = *self.failing.since.get_or_insert(Instant::now());
                self.failing.attempts += 1;
                if e.class == ErrorClass::Fatal {
                    self.failing.fatal_attempts += 1;
                }
                self.metrics
                    .retries
                    .with_label_values(&["insert", e.class_str()])
                    .inc();
                self.health.sink_failing.store(true, Ordering::Relaxed);
                if self.failing.fatal_attempts >= self.v.s.retry.fatal_attempts
                    || since.elapsed() >= Duration::from_secs(self.v.s.retry.max_elapsed_s)
                {
                    return Err(PipelineError::ClickHouse {
                        attempts: self.failing.attempts,
                        elapsed: since.elapsed(),
                        last: e,
                    });
                }
                let d = backoff(&self.v, self.failing.attempts - 1);
                tracing::warn!(error = %e, class = e.class_str(), code = ?e.code, attempt = self.failing.attempts, retry_in = ?d, "ClickHouse write failed; partitions paused, batch kept");
                self.failing.retry_at = Some(Instant::now() + d);
                if !self.paused {
                    self.pause(true);
                }
                Ok(())
            }
            Err(FlushError::Pipeline(e)) => Err(e),
            Err(FlushError::Dlq(msg)) => {
                self.failing.since.get_or_insert(Instant::now());
                self.failing.attempts += 1;
                self.metrics
                    .retries
                    .with_label_values(&["dlq", "retryable"])
                    .inc();
                self.health.sink_failing.store(true, Ordering::Relaxed);
                if self.failing.attempts >= 10 {
                    return Err(PipelineError::Dlq {
                        attempts: self.failing.attempts,
                        last: msg,
                    });
                }
                let d = backoff(&self.v, self.failing.attempts - 1);
                tracing::warn!(error = %msg, retry_in = ?d, "DLQ write failed; partitions paused");
                self.failing.retry_at = Some(Instant::now() + d);
                if !self.paused {
                    self.pause(true);
                }
                Ok(())
            }
        }
    }

    async fn try_flush(&mut self, overlap: bool) -> Result<usize, FlushError> {
        // 1. Every dead-lettered record of the batch must be acknowledged by the broker.
        let mut failed = None;
        for item in &mut self.pending.dlq {
            let ok = match item.delivery.take() {
                Some(f) => match f.await {
                    Ok(Ok(_)) => true,
                    Ok(Err((e, _))) => {
                        failed = Some(e.to_string());
                        false
                    }
                    Err(_) => {
                        failed = Some("DLQ delivery cancelled".into());
                        false
                    }
                },
                None => false,
            };
            if ok {
                self.metrics
                    .dlq
                    .with_label_values(&[item.stage, item.rule])
                    .inc();
                self.metrics.events.with_label_values(&["dlq"]).inc();
                item.payload.clear();
                item.key = None;
            } else {
                failed.get_or_insert_with(|| "DLQ record not enqueued".into());
            }
        }
        if let Some(msg) = failed {
            // Keep and resend only what was not acknowledged (acknowledged items were emptied).
            let mut items = std::mem::take(&mut self.pending.dlq);
            items.retain(|it| !it.payload.is_empty());
            for it in &mut items {
                self.send_dlq(it);
            }
            self.pending.dlq = items;
            return Err(FlushError::Dlq(msg));
        }
        self.pending.dlq.clear();

        // 2. Dedup within the batch, then against memory and ClickHouse, at every attempt:
        // messages that arrived while a retry was waiting joined the batch and may repeat a key
        // already held (resolving an already-resolved set changes nothing).
        let all = std::mem::take(&mut self.pending.candidates);
        let (winners, dups) = resolve_in_batch(all);
        self.metrics.duplicate(DupStage::Batch, dups);
        self.pending.candidates = winners;
        let before = self.pending.candidates.len();
        let seen = &self.seen;
        self.pending.candidates.retain(|c| !seen.contains(&c.key));
        let cache_dups = before - self.pending.candidates.len();
        self.metrics.duplicate(DupStage::Cache, cache_dups);

        let mut inserted = 0;
        if !self.pending.candidates.is_empty() {
            let parts: BTreeSet<i32> = self
                .pending
                .candidates
                .iter()
                .map(|c| c.partition)
                .collect();
            // 3. A previous attempt of ours (timed out on our side) or the partition's previous
            // owner may still be inserting: wait for it so the lookup sees its rows.
            if self.failing.attempts > 0 || parts.iter().any(|p| self.newly_assigned.contains(p)) {
                self.wait_for_running_inserts(&parts).await?;
            }
            let keys: Vec<(u16, String)> = self
                .pending
                .candidates
                .iter()
                .map(|c| (c.row.0, c.key.hex()))
                .collect();
            let existing = self
                .sink
                .existing_keys(
                    F::TABLE,
                    &keys,
                    self.v.s.dedup.lookup_chunk,
                    F::KEY_DETERMINES_DATE,
                )
                .await
                .map_err(FlushError::Sink)?;
            let mut existing: KeySet = existing.iter().filter_map(|h| Key::from_hex(h)).collect();
            // Reports near a WIB midnight: the neighbouring date's fact counts when it, too, lies
            // within the skew of that midnight (README "Deduplication keys").
            let near: Vec<(u16, String)> = self
                .pending
                .candidates
                .iter()
                .filter_map(|c| c.alt.map(|(k, d)| (d, k.hex())))
                .collect();
            if !near.is_empty() {
                let skew_s = (self.v.s.dedup.midnight_skew_ms + 999) / 1000;
                let found = self
                    .sink
                    .existing_keys_with_time(F::TABLE, &near, self.v.s.dedup.lookup_chunk)
                    .await
                    .map_err(FlushError::Sink)?;
                let found: std::collections::HashMap<Key, i64> = found
                    .iter()
                    .filter_map(|(h, t)| Some((Key::from_hex(h)?, *t)))
                    .collect();
                for c in &self.pending.candidates {
                    if let Some((alt, alt_date)) = c.alt
                        && let Some(&t) = found.get(&alt)
                    {
                        let midnight =
                            umkm_core::time::wib_midnight_utc_secs(alt_date.max(c.row.0));
                        if (t - midnight).abs() <= skew_s {
                            existing.insert(c.key);
                        }
                    }
                }
            }
            if !existing.is_empty() {
                let before = self.pending.candidates.len();
                self.pending
                    .candidates
                    .retain(|c| !existing.contains(&c.key));
                for k in existing {
                    self.seen.insert(k);
                }
                self.metrics
                    .duplicate(DupStage::ClickHouse, before - self.pending.candidates.len());
            }
            if !self.pending.candidates.is_empty() {
                // 4. One INSERT for the batch. It runs as its own task while the next batch is
                // consumed (`overlap`; never at shutdown), so the consumer does not idle while
                // ClickHouse writes; the rows are written straight from the batch (a copy
                // would double the batch's memory and cost ~20 allocations per row).
                let row_count = self.pending.candidates.len();
                // Only servers >= 22.8 use the token (see Sink::insert): skip the work on older ones.
                let token = if self.sink.modern() {
                    let mut sorted: Vec<Key> =
                        self.pending.candidates.iter().map(|c| c.key).collect();
                    sorted.sort();
                    let hexes: Vec<String> = sorted.iter().map(|k| k.hex()).collect();
                    let refs: Vec<&str> = hexes.iter().map(String::as_str).collect();
                    Key::of("insert", &refs).hex()
                } else {
                    String::new()
                };
                let query_id = format!(
                    "umkm-{}-p{}-{}",
                    F::TABLE,
                    parts
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("_"),
                    uuid::Uuid::new_v4().simple()
                );
                let t = Instant::now();
                let taken = std::mem::take(&mut self.pending);
                let (mut taken, result, consumer_error) = self
                    .insert_while_consuming(taken, query_id, token, overlap)
                    .await?;
                if let Err(e) = result {
                    // Keep the batch (minus partitions revoked meanwhile) ahead of what was
                    // consumed during the attempt; the retry flushes both.
                    self.merge_back(taken);
                    return Err(match consumer_error {
                        Some(pe) => FlushError::Pipeline(pe),
                        None => FlushError::Sink(e),
                    });
                }
                self.metrics
                    .insert_seconds
                    .observe(t.elapsed().as_secs_f64());
                self.metrics.batch_rows.observe(row_count as f64);
                inserted = row_count;
                self.metrics
                    .events
                    .with_label_values(&["inserted"])
                    .inc_by(inserted as u64);
                for c in &taken.candidates {
                    self.seen.insert(c.key);
                }
                taken.candidates = Vec::new();
                self.inserts_done += 1;
                if self.abort_after_inserts == Some(self.inserts_done) {
                    // Fault injection for the restart test: die like kill -9 between the
                    // insert and the offset commit.
                    tracing::error!(
                        "UMKM_FAULT_ABORT_AFTER_INSERTS reached: aborting before commit"
                    );
                    std::process::abort();
                }
                self.commit_batch(&taken);
                if let Some(pe) = consumer_error {
                    return Err(FlushError::Pipeline(pe));
                }
                return Ok(inserted);
            }
        }

        let taken = std::mem::take(&mut self.pending);
        self.commit_batch(&taken);
        Ok(inserted)
    }

    /// Commits every partition of a flushed batch (its data is in ClickHouse, its DLQ records
    /// acknowledged).
    fn commit_batch(&mut self, batch: &Pending<(u16, F::Row)>) {
        // 5. Commit every partition of the batch.
        self.metrics.batch_bytes.observe(batch.meter.bytes as f64);
        if batch.offsets.is_empty() {
            return; // every partition of it was revoked meanwhile
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), next) in &batch.offsets {
            if let Err(e) = tpl.add_partition_offset(t, *p, Offset::Offset(*next)) {
                tracing::warn!(error = %e, "cannot build commit list");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            // The data is in ClickHouse; a lost commit only means redelivery, which dedup absorbs.
            self.metrics
                .retries
                .with_label_values(&["commit", "retryable"])
                .inc();
            tracing::warn!(error = %e, "offset commit failed; the batch will be redelivered and deduplicated");
        }
        for (_, p) in batch.offsets.keys() {
            self.newly_assigned.remove(p);
        }
    }

    /// Runs the insert of `batch` as a task and, with `overlap`, keeps consuming into the next
    /// batch until it finishes (up to the next batch's own limits). Returns the batch (for the
    /// commit, or to keep it on failure) without the partitions revoked meanwhile, the insert's
    /// result, and an error of the consuming side if one stopped it.
    async fn insert_while_consuming(
        &mut self,
        batch: Pending<(u16, F::Row)>,
        query_id: String,
        token: String,
        overlap: bool,
    ) -> Result<
        (
            Pending<(u16, F::Row)>,
            Result<(), SinkError>,
            Option<PipelineError>,
        ),
        FlushError,
    > {
        let sink = self.sink.clone();
        let mut task = tokio::spawn(async move {
            let rows = batch.candidates.iter().map(row_of);
            let r = sink.insert(F::TABLE, rows, &query_id, &token).await;
            (batch, r)
        });
        self.revoked_in_flight = Some(HashSet::new());
        let mut consumer_error = None;
        let joined = loop {
            let room = overlap
                && consumer_error.is_none()
                && self
                    .pending
                    .meter
                    .due(&self.policy, Instant::now())
                    .is_none();
            tokio::select! {
                biased;
                j = &mut task => break j,
                m = self.consumer.recv(), if room => match m {
                    Ok(m) => {
                        let (topic, partition, offset, key, payload) = owned(&m);
                        drop(m);
                        // As in `run`: rebalance events first (see there).
                        self.apply_rebalance_events();
                        if let Err(e) = self.handle(topic, partition, offset, key, payload).await {
                            consumer_error = Some(e);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        };
        self.apply_rebalance_events();
        let revoked = self.revoked_in_flight.take().unwrap_or_default();
        let (mut batch, result) = joined.map_err(|e| {
            // The batch went down with the task: nothing of it is committed, so it is
            // consumed again after the restart and deduplicated.
            FlushError::Pipeline(PipelineError::InsertTask(e.to_string()))
        })?;
        if !revoked.is_empty() {
            batch.offsets.retain(|k, _| !revoked.contains(k));
            let revoked_p: HashSet<i32> = revoked.iter().map(|(_, p)| *p).collect();
            batch
                .candidates
                .retain(|c| !revoked_p.contains(&c.partition));
        }
        Ok((batch, result, consumer_error))
    }

    /// Puts a batch whose insert failed back in front of what was consumed since.
    fn merge_back(&mut self, mut batch: Pending<(u16, F::Row)>) {
        let newer = std::mem::take(&mut self.pending);
        batch.candidates.extend(newer.candidates);
        batch.dlq.extend(newer.dlq);
        for (k, next) in newer.offsets {
            let e = batch.offsets.entry(k).or_insert(next);
            *e = (*e).max(next);
        }
        batch.meter.merge(&newer.meter);
        if !batch.offsets.is_empty() {
            self.pending = batch;
        }
    }

    async fn wait_for_running_inserts(&self, parts: &BTreeSet<i32>) -> Result<(), FlushError> {
        let limit = Instant::now()
            + Duration::from_millis(self.v.s.clickhouse.insert_timeout_ms)
            + Duration::from_secs(5);
        let prefix = format!("umkm-{}-p", F::TABLE);
        loop {
            let ids = self
                .sink
                .running_ids(&prefix)
                .await
                .map_err(FlushError::Sink)?;
            let busy = ids.iter().any(|id| {
                id.strip_prefix(&prefix)
                    .and_then(|rest| rest.split('-').next())
                    .is_some_and(|ps| {
                        ps.split('_')
                            .filter_map(|p| p.parse::<i32>().ok())
                            .any(|p| parts.contains(&p))
                    })
            });
            if !busy {
                return Ok(());
            }
            if Instant::now() >= limit {
                return Err(FlushError::Sink(SinkError {
                    class: ErrorClass::Retryable,
                    code: None,
                    message: "an earlier insert for these partitions is still running".into(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

enum FlushError {
    Sink(SinkError),
    Dlq(String),
    /// The consuming side failed while an insert ran (the insert itself was waited for).
    Pipeline(PipelineError),
}

/// The row of a candidate (a function, not a closure: the insert task's future must be `Send`
/// for every lifetime, which a closure's inferred signature is not).
fn row_of<R>(c: &Candidate<(u16, R)>) -> &R {
    &c.row.1
}

/// An owned copy of what the pipeline needs from a message (the borrowed message pins the
/// consumer).
fn owned(
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> (String, i32, i64, Option<Vec<u8>>, Vec<u8>) {
    (
        m.topic().to_string(),
        m.partition(),
        m.offset(),
        m.key().map(<[u8]>::to_vec),
        m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    )
}
