//! The shared consumer pipeline. One message goes through its parts in one direction:
//!
//! [`Received`] → [`decode`] (Confluent framing, writer schema by id, pinned reader schema) →
//! `Family::process` (validate, normalise) → [`batch`] (an event, or a dead letter sent at once
//! by [`dead_letters`]) → at flush: the dead letters' acks → [`dedup`] (in batch, memory,
//! ClickHouse lookup) → [`insert`] (one INSERT, running while the next batch is consumed) →
//! commit of the batch's offsets. A write that fails is retried as [`failures`] decides.
//!
//! Guarantees:
//! - an offset is committed only after every message before it is in ClickHouse, recognised as
//!   a duplicate of a row in ClickHouse, or acknowledged by the DLQ topic;
//! - a dedup key is inserted at most once: before every insert attempt the batch's keys are
//!   looked up in ClickHouse (which also covers a previous attempt that partly landed, a crash
//!   between insert and commit, and another consumer that had the partition before);
//!   a key is remembered in memory only after its insert succeeded;
//! - a failing insert keeps its batch, pauses the partitions and retries with bounded
//!   exponential backoff (`retry.clickhouse`, `retry.dlq`); before a retry (and before the
//!   first insert after an assignment) it waits until no insert of ours for those partitions
//!   is still running on the server;
//! - a consumer that lost a partition cannot insert its rows: each partition is claimed
//!   before its first lookup and every insert is fenced by its batch's claims
//!   (`crate::clickhouse::Fence`); a fenced batch is kept and its partitions are claimed again
//!   only after `kafka.session_timeout_ms`, by when a consumer that really lost them has been
//!   told so by the group.

mod batch;
pub mod dead_letters;
mod decode;
mod dedup;
mod failures;
mod insert;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use umkm_core::Invalid;
use umkm_core::avro::Decoder;
use umkm_core::batch::{BatchPolicy, FlushReason};
use umkm_core::dedup::{Candidate, KeySet};
use umkm_core::fields::Shared;

use self::batch::Batch;
use self::dead_letters::{DeadLetterError, DeadLetters, Stage};
use self::decode::Decoding;
use self::dedup::Dedup;
use self::failures::{Failures, WriteFailure};
use self::insert::{InFlight, Inserted};
use crate::admin::Health;
use crate::clickhouse::{ClickHouse, ClickHouseError, Fence, InsertId, dedup_token};
use crate::config::Validated;
use crate::family::{Family, MessageMeta};
use crate::faults::{Faults, Point};
use crate::kafka::{Consumer, RebalanceEvent, Received, TopicPartition};
use crate::metrics::{DupStage, Metrics};
use crate::registry::{FetchError, SchemaSource};

/// How long one flush waits for the broker to acknowledge its dead letters before it counts a
/// failed attempt (`retry.dlq`) and lets the loop poll, rebalance and stop again; the letters
/// not answered yet are awaited again at the next attempt, not sent twice (README
/// "Dead-letter topic").
const DLQ_ACK_WAIT: Duration = Duration::from_secs(5);

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
    #[error("giving up on ClickHouse ({what}) after {attempts} attempts over {elapsed:?}: {last}")]
    ClickHouse {
        what: &'static str,
        attempts: u32,
        elapsed: Duration,
        last: ClickHouseError,
    },
    #[error(
        "giving up on the dead-letter topic after {attempts} attempts over {elapsed:?}: {last}"
    )]
    DeadLetters {
        attempts: u32,
        elapsed: Duration,
        last: DeadLetterError,
    },
    #[error("schema registry unavailable: {0}")]
    Registry(#[from] FetchError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the insert task failed: {0}")]
    InsertTask(String),
    #[error("the reader schema does not parse: {0}")]
    ReaderSchema(String),
    #[error("{0}")]
    Fault(String),
}

/// What one message becomes once decoded: a row for the batch, or a dead letter with the stage
/// that refused it and every reason (never none).
#[derive(Debug)]
pub enum Verdict<R> {
    Keep(crate::family::Processed<R>),
    DeadLetter {
        stage: Stage,
        schema_id: Option<u32>,
        reasons: Vec<Invalid>,
    },
}

/// The pure step from a decoded message to its [`Verdict`] (the pipeline's `intake`, and the
/// fuzz targets and property tests that feed it untrusted bytes). `now_ms` is processing time.
pub fn verdict<F: Family>(
    family: &F,
    m: &Received,
    decoded: Result<(u32, F::Event), umkm_core::avro::DecodeError>,
    now_ms: i64,
) -> Verdict<F::Row> {
    let (schema_id, event) = match decoded {
        Ok(x) => x,
        Err(e) => {
            return Verdict::DeadLetter {
                stage: Stage::Decode,
                schema_id: Decoder::schema_id(&m.payload).ok(),
                reasons: vec![Invalid::new(e.rule(), e.to_string())],
            };
        }
    };
    let meta = MessageMeta {
        topic: &m.topic,
        partition: m.partition,
        offset: m.offset,
        key: m.key.as_deref(),
        schema_id,
        now_ms,
        now_secs: (now_ms / 1000) as u32,
    };
    match family.process(event, &meta) {
        Ok(p) => Verdict::Keep(p),
        Err(reasons) => Verdict::DeadLetter {
            stage: Stage::Validate,
            schema_id: Some(schema_id),
            reasons: if reasons.is_empty() {
                // A family that refused without saying why is a bug; the record still gets a reason.
                vec![Invalid::new("invalid", "refused without a reason")]
            } else {
                reasons
            },
        },
    }
}

/// What woke the loop up.
enum Step<R> {
    Inserted(Result<Inserted<R>, tokio::task::JoinError>),
    Stop,
    Received(Received),
    ConsumerError(rdkafka::error::KafkaError),
    Tick,
}

/// What the pipeline is built from (`service::run_service` connects them).
pub struct Parts<F> {
    pub family: F,
    pub settings: Validated,
    pub consumer: Consumer,
    pub producer: FutureProducer,
    pub clickhouse: ClickHouse,
    pub schemas: SchemaSource,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

pub struct Pipeline<F: Family> {
    family: F,
    topic: Shared,
    policy: BatchPolicy,
    consumer: Arc<Consumer>,
    decoding: Decoding<F::Event>,
    dead_letters: DeadLetters,
    dedup: Dedup,
    clickhouse: ClickHouse,
    lookup_chunk: usize,
    /// Bound on waiting for an earlier insert still running on the server.
    running_insert_limit: Duration,
    shutdown_timeout: Duration,
    batch: Batch<F::Row>,
    in_flight: Option<InFlight<F::Row>>,
    failures: Failures,
    paused: bool,
    /// Partitions gained since their last commit: guard against a previous owner's insert
    /// that may still be running.
    newly_assigned: BTreeSet<i32>,
    /// This consumer's claim id of each partition it holds (`crate::clickhouse::Fence`).
    claims: BTreeMap<i32, String>,
    /// After an insert was fenced, partitions are claimed again only from then on.
    reclaim_at: Option<Instant>,
    session_timeout: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// `UMKM_FAULT` (README "Configuration reference", testing only).
    faults: Faults,
}

/// When the loop must wake up without a message: when the next flush can start (the batch is
/// old enough and no retry waits; never while an insert runs, whose end wakes the loop), at the
/// stop deadline, and at least every 500 ms. Never in the past while nothing can happen, which
/// would spin the loop.
fn wake_at(
    now: Instant,
    inserting: bool,
    batch_deadline: Option<Instant>,
    retry_at: Option<Instant>,
    stop_at: Option<Instant>,
) -> Instant {
    let flush_at = if inserting {
        None
    } else {
        batch_deadline.map(|d| retry_at.map_or(d, |r| r.max(d)))
    };
    [flush_at, stop_at]
        .into_iter()
        .flatten()
        .fold(now + Duration::from_millis(500), Instant::min)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl<F: Family> Pipeline<F> {
    pub fn new(p: Parts<F>) -> Result<Self, PipelineError> {
        let s = &p.settings.settings;
        let decoding = Decoding::new(
            F::READER_SCHEMA,
            p.schemas,
            s.retry.registry,
            p.metrics.clone(),
        )
        .map_err(|e| PipelineError::ReaderSchema(e.to_string()))?;
        Ok(Pipeline {
            family: p.family,
            topic: s.kafka.topic.as_str().into(),
            policy: p.settings.batch_policy(),
            consumer: Arc::new(p.consumer),
            decoding,
            dead_letters: DeadLetters::new(
                p.producer,
                s.kafka.dlq_topic.clone(),
                F::SERVICE,
                p.metrics.clone(),
                s.kafka.dlq_max_payload_bytes,
            ),
            dedup: Dedup::new(s.dedup.cache_keys, s.dedup.midnight_skew_ms),
            clickhouse: p.clickhouse,
            lookup_chunk: s.dedup.lookup_chunk,
            running_insert_limit: Duration::from_millis(s.clickhouse.insert_timeout_ms)
                + Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(s.shutdown.timeout_s),
            batch: Batch::default(),
            in_flight: None,
            failures: Failures::new(s.retry.clickhouse, s.retry.fatal_attempts, s.retry.dlq),
            paused: false,
            newly_assigned: BTreeSet::new(),
            claims: BTreeMap::new(),
            reclaim_at: None,
            session_timeout: Duration::from_millis(s.kafka.session_timeout_ms),
            metrics: p.metrics,
            health: p.health,
            faults: Faults::from_env().map_err(PipelineError::Fault)?,
        })
    }

    /// Consumes until `shutdown` resolves, then flushes and commits within the shutdown timeout.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Outcome, PipelineError> {
        self.consumer.subscribe(&[self.topic.as_str()])?;
        self.health.started.store(true, Ordering::Relaxed);
        // The stop request arrives on a channel: polling a oneshot receiver per loop turn is an
        // atomic load, polling the signal futures themselves is not.
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(());
        });
        let outcome = self.consume(&mut stop_rx).await;
        signal.abort();
        outcome
    }

    async fn consume(
        &mut self,
        stop_rx: &mut tokio::sync::oneshot::Receiver<()>,
    ) -> Result<Outcome, PipelineError> {
        let mut stop_at: Option<Instant> = None;
        // One timer for the loop, moved only when it must ring earlier or has rung: a new
        // timer per message would cost a timer-wheel registration each.
        let mut timer_at = Instant::now() + Duration::from_millis(500);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(timer_at.into()));
        loop {
            let now = Instant::now();
            let stopping = stop_at.is_some();
            if let Some(reason) = self.flush_due(now, stopping) {
                self.flush(reason, stop_at).await?;
                continue;
            }
            if let Some(deadline) = stop_at {
                if self.batch.is_empty() && self.in_flight.is_none() {
                    return Ok(Outcome::Clean);
                }
                if now >= deadline {
                    tracing::error!(
                        "shutdown timeout reached with an unwritten batch; its offsets are not committed"
                    );
                    return Ok(Outcome::Unflushed);
                }
            }
            // While an insert runs the next batch fills up to its own limits; never at shutdown.
            let receiving = !stopping
                && (self.in_flight.is_none() || self.batch.due(&self.policy, now).is_none());
            let wake = wake_at(
                now,
                self.in_flight.is_some(),
                self.batch.deadline(&self.policy),
                self.failures.retry_at(),
                stop_at,
            );
            if wake < timer_at || timer_at <= now {
                timer_at = wake;
                timer.as_mut().reset(wake.into());
            }
            let mut step = tokio::select! {
                biased;
                done = insert::finished(&mut self.in_flight) => Step::Inserted(done),
                _ = &mut *stop_rx, if !stopping => Step::Stop,
                m = self.consumer.recv(), if receiving => match m {
                    Ok(m) => Step::Received(Received::of(&m, &self.topic)),
                    Err(e) => Step::ConsumerError(e),
                },
                _ = &mut timer => Step::Tick,
            };
            // The rebalance callbacks run inside `recv()`: a revocation and re-assignment may
            // have happened during this very call, and a message it returned already belongs
            // to the new assignment. So the events are applied here, before the message joins
            // the batch, or the revocation would drop it while librdkafka has moved past it.
            // An insert that finished in this very step is out of `in_flight` already: its
            // batch gets the revocation here, or it would be retried (and claimed, and
            // committed) for partitions that are another consumer's now.
            let revoked = self.apply_rebalance_events();
            if let Step::Inserted(Ok(done)) = &mut step
                && !revoked.is_empty()
            {
                done.batch.revoke(&revoked);
            }
            match step {
                Step::Inserted(done) => self.inserted(done).await?,
                Step::Stop => {
                    tracing::info!("stop requested: no more fetching; flushing and committing");
                    stop_at = Some(Instant::now() + self.shutdown_timeout);
                    // A retry in progress may run right away: the deadline bounds it.
                    self.failures.retry_now();
                }
                Step::Received(m) => {
                    if let Err(e) = self.intake(m).await {
                        self.finish_in_flight().await;
                        return Err(e);
                    }
                }
                Step::ConsumerError(e) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Step::Tick => {}
            }
        }
    }

    /// One message into the batch: an event, a dead letter, or only its offset.
    async fn intake(&mut self, m: Received) -> Result<(), PipelineError> {
        self.batch.count(&m, Instant::now(), self.policy.max_rows);
        let decoded = self.decoding.decode(&m.payload).await?;
        match verdict(&self.family, &m, decoded, now_ms()) {
            Verdict::Keep(p) => self.batch.push(Candidate {
                key: p.key,
                alt: p.alt,
                priority: p.priority,
                partition: m.partition,
                offset: m.offset,
                row: (p.event_date, p.row),
            }),
            Verdict::DeadLetter {
                stage,
                schema_id,
                reasons,
            } => {
                let d = self.dead_letters.send(m, schema_id, stage, &reasons);
                self.batch.push_dead_letter(d);
                self.faults.at(Point::DlqWrite);
            }
        }
        Ok(())
    }

    /// Applies the rebalances since the last call; returns every partition they revoked.
    fn apply_rebalance_events(&mut self) -> HashSet<TopicPartition> {
        let mut all_revoked = HashSet::new();
        for e in self.consumer.context().take_events() {
            self.faults.at(Point::Rebalance);
            match e {
                RebalanceEvent::Revoked(parts) => {
                    let revoked: HashSet<TopicPartition> = parts.into_iter().collect();
                    if let Some(f) = &mut self.in_flight {
                        f.revoke(&revoked);
                    }
                    let dropped = self.batch.revoke(&revoked);
                    let ours: HashSet<i32> = revoked
                        .iter()
                        .filter(|(t, _)| *t == self.topic.as_str())
                        .map(|(_, p)| *p)
                        .collect();
                    self.claims.retain(|p, _| !ours.contains(p));
                    tracing::info!(
                        revoked = revoked.len(),
                        dropped_partitions = dropped,
                        "partitions revoked"
                    );
                    all_revoked.extend(revoked);
                }
                RebalanceEvent::Assigned(parts) => {
                    tracing::info!(partitions = ?parts, "partitions assigned");
                    self.newly_assigned.extend(parts.iter().map(|(_, p)| *p));
                    // librdkafka keeps an application pause on a partition through its
                    // revocation and re-assignment, and a resume reaches only the partitions
                    // held at the time: a partition paused by a failing write and revoked
                    // before the recovery would come back paused for good. So every
                    // assignment gets the state this consumer is in now.
                    self.pause(self.paused);
                }
            }
        }
        // A failing write whose whole batch was revoked has nothing left to retry: waiting
        // for it with the partitions paused would stall this consumer for good.
        if self.batch.is_empty() && self.in_flight.is_none() && self.failures.any_failing() {
            tracing::info!("the failing batch was revoked; nothing left to retry");
            self.failures.dlq_recovered();
            self.recovered();
        }
        all_revoked
    }

    /// Whether to start a flush now: a batch is due (any batch at shutdown), no insert is in
    /// flight and no retry is waiting.
    fn flush_due(&self, now: Instant, stopping: bool) -> Option<FlushReason> {
        if self.in_flight.is_some() || !self.failures.may_try(now) {
            return None;
        }
        if stopping {
            (!self.batch.is_empty()).then_some(FlushReason::Shutdown)
        } else {
            self.batch.due(&self.policy, now)
        }
    }

    /// Starts a flush: the dead letters' acks, dedup, then the insert as a task (or, when
    /// nothing is left to insert, the commit right away). The wait for the acks is bounded by
    /// [`DLQ_ACK_WAIT`] and by the stop deadline.
    async fn flush(
        &mut self,
        reason: FlushReason,
        stop_at: Option<Instant>,
    ) -> Result<(), PipelineError> {
        let started = Instant::now();
        if !self.batch.dead_letters.is_empty() {
            let bound = started + DLQ_ACK_WAIT;
            let until = stop_at.map_or(bound, |stop| stop.min(bound));
            if let Err(e) = self
                .dead_letters
                .confirm(&mut self.batch.dead_letters, until)
                .await
            {
                return self.write_failed(WriteFailure::DeadLetters(e));
            }
            let attempts = self.failures.dlq_recovered();
            if attempts > 0 {
                tracing::info!(attempts, "DLQ recovered");
            }
        }
        let dropped = self.dedup.drop_known(&mut self.batch.events);
        self.metrics.duplicate(DupStage::Batch, dropped.batch);
        self.metrics.duplicate(DupStage::Cache, dropped.cache);
        if !self.batch.events.is_empty()
            && let Err(e) = self.drop_existing().await
        {
            return self.write_failed(WriteFailure::Lookup(e));
        }
        if self.batch.events.is_empty() {
            self.recovered();
            let batch = std::mem::take(&mut self.batch);
            self.commit(&batch).await;
            tracing::debug!(reason = reason.as_str(), "batch flushed without insert");
            self.metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let ch = self.clickhouse.clone();
        let partitions = batch.event_partitions();
        let fence = Fence {
            topic: self.topic.to_string(),
            claims: self
                .claims
                .iter()
                .filter(|(p, _)| partitions.contains(p))
                .map(|(p, id)| (*p, id.clone()))
                .collect(),
        };
        let id = InsertId::new(F::TABLE, partitions);
        // Only servers >= 22.8 use the token: skip the work on older ones.
        let token = if ch.modern() {
            dedup_token(batch.events.iter().map(|e| e.key))
        } else {
            String::new()
        };
        tracing::debug!(
            reason = reason.as_str(),
            rows = batch.events.len(),
            "insert started"
        );
        self.faults.at(Point::BeforeInsertStop);
        self.in_flight = Some(InFlight::start(batch, started, move |batch| async move {
            let columns = <F::Row as clickhouse::Row>::COLUMN_NAMES;
            let r = ch
                .insert(
                    &id,
                    columns,
                    batch.events.iter().map(insert::row_of),
                    &token,
                    &fence,
                )
                .await;
            (batch, r)
        }));
        Ok(())
    }

    /// Claims the batch's partitions this consumer has no claim on yet (gained, or fenced
    /// earlier): before the wait for running inserts and the lookup, so that an insert of the
    /// previous holder either runs before the claim (and is waited for) or is fenced.
    async fn claim_partitions(
        &mut self,
        partitions: &BTreeSet<i32>,
    ) -> Result<bool, ClickHouseError> {
        let unclaimed: BTreeSet<i32> = partitions
            .iter()
            .filter(|p| !self.claims.contains_key(p))
            .copied()
            .collect();
        if unclaimed.is_empty() {
            return Ok(false);
        }
        if let Some(at) = self.reclaim_at
            && Instant::now() < at
        {
            return Err(ClickHouseError::retryable(format!(
                "partitions {unclaimed:?} were claimed by another consumer; claiming them again \
                 once the group had kafka.session_timeout_ms to settle"
            )));
        }
        let claimed = self
            .clickhouse
            .claim(F::TABLE, &self.topic, &unclaimed)
            .await?;
        tracing::info!(partitions = ?unclaimed, "partitions claimed");
        self.claims.extend(claimed);
        Ok(true)
    }

    /// Stage 3 of dedup: the batch's keys that ClickHouse already has leave the batch.
    async fn drop_existing(&mut self) -> Result<(), ClickHouseError> {
        let partitions = self.batch.event_partitions();
        let claimed = self.claim_partitions(&partitions).await?;
        // A previous attempt of ours (failed or timed out on our side) or the partition's
        // previous owner may still be inserting: wait for it so the lookup sees its rows.
        let an_insert_may_be_running = claimed
            || self.failures.clickhouse_failing()
            || partitions.iter().any(|p| self.newly_assigned.contains(p));
        if an_insert_may_be_running {
            insert::wait_for_running(
                &self.clickhouse,
                F::TABLE,
                &partitions,
                self.running_insert_limit,
            )
            .await?;
        }
        let ask = self.dedup.lookup(&self.batch.events);
        let looked_up = Instant::now();
        let existing = self
            .clickhouse
            .existing_keys(
                F::TABLE,
                &ask.keys,
                self.lookup_chunk,
                F::KEY_DETERMINES_DATE,
            )
            .await?;
        let near_found = if ask.near_midnight.is_empty() {
            HashMap::new()
        } else {
            self.clickhouse
                .existing_keys_with_time(F::TABLE, &ask.near_midnight, self.lookup_chunk)
                .await?
        };
        self.metrics
            .lookup_seconds
            .observe(looked_up.elapsed().as_secs_f64());
        // Rows found that came from this batch's own messages were inserted by an attempt
        // whose commit never came, which may have been cut short between the facts' part and
        // the rollups' parts (a server killed between them): noted for refresh-metrics.
        if umkm_core::rollups::fed_by(F::TABLE) {
            let again = dedup::inserted_before(&self.batch.events, &existing, &self.topic);
            self.clickhouse.note_suspects(F::TABLE, &again).await?;
        }
        let existing: KeySet = existing.into_keys().collect();
        let n = self
            .dedup
            .drop_existing(&mut self.batch.events, existing, &near_found);
        self.metrics.duplicate(DupStage::ClickHouse, n);
        Ok(())
    }

    /// The insert in flight finished: commit its batch, or keep it for the retry.
    async fn inserted(
        &mut self,
        done: Result<Inserted<F::Row>, tokio::task::JoinError>,
    ) -> Result<(), PipelineError> {
        // The batch went down with a failed task: nothing of it is committed, so it is
        // consumed again after the restart and deduplicated.
        let done = done.map_err(|e| PipelineError::InsertTask(e.to_string()))?;
        if let Err(e) = done.result {
            if e.is_fenced() {
                // Another consumer claimed some of these partitions: nothing was inserted. The
                // group tells us within the session timeout if they are no longer ours;
                // otherwise they are claimed again then, waited for and looked up anew.
                let partitions = done.batch.event_partitions();
                tracing::warn!(
                    ?partitions,
                    "insert fenced: another consumer claimed these partitions; nothing inserted"
                );
                self.metrics.fenced.inc();
                self.claims.retain(|p, _| !partitions.contains(p));
                self.newly_assigned.extend(partitions);
                self.reclaim_at = Some(Instant::now() + self.session_timeout);
            }
            // Keep the batch (minus partitions revoked meanwhile) ahead of what was consumed
            // during the attempt; the retry flushes both.
            let newer = std::mem::take(&mut self.batch);
            self.batch = done.batch.merge(newer);
            return self.write_failed(WriteFailure::Insert(e));
        }
        self.metrics
            .insert_seconds
            .observe(done.insert_time.as_secs_f64());
        self.metrics.batch_rows.observe(done.rows as f64);
        self.metrics
            .events
            .with_label_values(&["inserted"])
            .inc_by(done.rows as u64);
        // The write succeeded: healthy again before the commit (a reader of the committed
        // offsets must not find the service still reporting a failing sink).
        self.recovered();
        let mut batch = done.batch;
        self.dedup.remember(batch.events.iter().map(|e| e.key));
        batch.events = Vec::new();
        self.faults.at(Point::AfterInsert);
        self.commit(&batch).await;
        self.metrics
            .flush_seconds
            .observe(done.flush_time.as_secs_f64());
        Ok(())
    }

    /// Waits for an insert still in flight and commits it if it landed (on the way out after
    /// an error, so that what is in ClickHouse is not consumed again).
    async fn finish_in_flight(&mut self) {
        if let Ok(done) = insert::finished(&mut self.in_flight).await
            && done.result.is_ok()
        {
            self.commit(&done.batch).await;
        }
    }

    /// ClickHouse took the batch (or had all of it): back to healthy, partitions resumed.
    fn recovered(&mut self) {
        let attempts = self.failures.clickhouse_recovered();
        if attempts > 0 {
            tracing::info!(attempts, "ClickHouse recovered; resuming");
        }
        self.health.sink_failing.store(false, Ordering::Relaxed);
        if self.paused {
            self.pause(false);
        }
    }

    /// A write failed: count it, then retry after a backoff with the partitions paused, or
    /// give up when its retry budget is spent (the service then exits non-zero).
    fn write_failed(&mut self, failure: WriteFailure) -> Result<(), PipelineError> {
        self.health.sink_failing.store(true, Ordering::Relaxed);
        let (what, class) = (failure.what(), failure.class());
        self.metrics.retries.with_label_values(&[what, class]).inc();
        let error = failure.to_string();
        let retry = self.failures.failed(failure, Instant::now())?;
        tracing::warn!(%error, what, class, attempt = retry.attempt, retry_in = ?retry.wait, "write failed; partitions paused, batch kept");
        if !self.paused {
            self.pause(true);
        }
        Ok(())
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

    /// Commits every partition of a flushed batch (its data is in ClickHouse, its dead letters
    /// acknowledged), on a blocking thread: a synchronous commit waits for the broker.
    async fn commit(&mut self, batch: &Batch<F::Row>) {
        self.metrics.batch_bytes.observe(batch.bytes() as f64);
        if batch.is_empty() {
            return; // every partition of it was revoked meanwhile
        }
        // Only partitions assigned right now: the group accepts a member's commit for any
        // partition, and an old offset committed for a partition another consumer holds now
        // would rewind that consumer's progress. What is left out is consumed again by the
        // partition's owner and deduplicated.
        let assigned = match self.consumer.assignment() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment; not committing this batch");
                return;
            }
        };
        let mut tpl = TopicPartitionList::new();
        let mut not_assigned = 0;
        for (t, p, next) in batch.offsets() {
            if assigned.find_partition(t, p).is_none() {
                not_assigned += 1;
                continue;
            }
            if let Err(e) = tpl.add_partition_offset(t, p, Offset::Offset(next)) {
                tracing::warn!(error = %e, "cannot build commit list");
            }
        }
        if not_assigned > 0 {
            tracing::info!(
                partitions = not_assigned,
                "not committing partitions this consumer no longer holds"
            );
        }
        if tpl.count() == 0 {
            return;
        }
        let consumer = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        let failed = match committed {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            // The data is in ClickHouse; a lost commit only means redelivery, which dedup absorbs.
            self.metrics
                .retries
                .with_label_values(&["commit", "retryable"])
                .inc();
            tracing::warn!(error = %e, "offset commit failed; the batch will be redelivered and deduplicated");
        }
        for (_, p, _) in batch.offsets() {
            self.newly_assigned.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_wakes_for_the_next_possible_flush_only() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        // Nothing held: the heartbeat.
        assert_eq!(wake_at(t, false, None, None, None), t + ms(500));
        // A batch ages out in 200 ms.
        assert_eq!(
            wake_at(t, false, Some(t + ms(200)), None, None),
            t + ms(200)
        );
        // Overdue but a retry waits 300 ms: wake for the retry, not now (no spinning).
        assert_eq!(
            wake_at(t, false, Some(t - ms(50)), Some(t + ms(300)), None),
            t + ms(300)
        );
        // Overdue while an insert runs: only its end (or the heartbeat) matters.
        assert_eq!(wake_at(t, true, Some(t - ms(50)), None, None), t + ms(500));
        // The stop deadline comes first.
        assert_eq!(wake_at(t, true, None, None, Some(t + ms(100))), t + ms(100));
    }
}
