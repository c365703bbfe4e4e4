//! The insert in flight: a batch's INSERT runs as its own task while the pipeline consumes the
//! next batch (the rows are written straight from the batch: a copy would double its memory
//! and cost ~20 allocations per row). Partitions revoked meanwhile are remembered and dropped
//! from the batch when the task hands it back, so its offsets are never committed for a
//! partition this consumer no longer owns.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::{JoinError, JoinHandle};

use super::batch::{Batch, Event};
use crate::clickhouse::{ClickHouse, ClickHouseError};
use crate::kafka::TopicPartition;

type Outcome<R> = (Batch<R>, Result<(), ClickHouseError>);

pub struct InFlight<R> {
    task: JoinHandle<Outcome<R>>,
    revoked: HashSet<TopicPartition>,
    /// When the flush that started this insert began (for the flush duration).
    flush_started: Instant,
    started: Instant,
    rows: usize,
}

/// A finished insert: the batch (without partitions revoked meanwhile) and the result.
pub struct Inserted<R> {
    pub batch: Batch<R>,
    pub result: Result<(), ClickHouseError>,
    pub rows: usize,
    pub insert_time: Duration,
    pub flush_time: Duration,
}

impl<R: Send + 'static> InFlight<R> {
    /// Runs `insert(batch)` as a task; it hands the batch back with its result.
    pub fn start<Fut>(
        batch: Batch<R>,
        flush_started: Instant,
        insert: impl FnOnce(Batch<R>) -> Fut,
    ) -> InFlight<R>
    where
        Fut: Future<Output = Outcome<R>> + Send + 'static,
    {
        let rows = batch.events.len();
        InFlight {
            task: tokio::spawn(insert(batch)),
            revoked: HashSet::new(),
            flush_started,
            started: Instant::now(),
            rows,
        }
    }

    /// The partitions were revoked while the insert ran: the batch must not commit them.
    pub fn revoke(&mut self, partitions: &HashSet<TopicPartition>) {
        self.revoked.extend(partitions.iter().cloned());
    }
}

/// Resolves when the insert in `flight` finishes (never, without one) and takes it out. Cancel
/// safe: dropping the future leaves the insert running and in `flight`.
pub async fn finished<R>(flight: &mut Option<InFlight<R>>) -> Result<Inserted<R>, JoinError> {
    let Some(f) = flight else {
        return std::future::pending().await;
    };
    let joined = (&mut f.task).await;
    let f = flight.take().expect("the insert in flight");
    let (mut batch, result) = joined?;
    if !f.revoked.is_empty() {
        batch.revoke(&f.revoked);
    }
    Ok(Inserted {
        batch,
        result,
        rows: f.rows,
        insert_time: f.started.elapsed(),
        flush_time: f.flush_started.elapsed(),
    })
}

/// The row of an event (a function, not a closure: the insert task's future must be `Send`
/// for every lifetime, which a closure's inferred signature is not).
pub fn row_of<R>(e: &Event<R>) -> &R {
    &e.row.1
}

/// Waits until no insert of ours into `table` for any of `partitions` runs on the server: one
/// that timed out on our side, or the previous owner's, may still be writing, and the lookup
/// must see its rows. Gives up (retryable) after `limit`.
pub async fn wait_for_running(
    ch: &ClickHouse,
    table: &str,
    partitions: &BTreeSet<i32>,
    limit: Duration,
) -> Result<(), ClickHouseError> {
    let until = Instant::now() + limit;
    loop {
        let running = ch.running_inserts(table).await?;
        if !running.iter().any(|id| id.touches(partitions)) {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(ClickHouseError::retryable(
                "an earlier insert for these partitions is still running",
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use umkm_core::dedup::{Candidate, Key};

    use super::*;
    use crate::kafka::Received;

    fn batch(partitions: &[i32]) -> Batch<u8> {
        let mut b = Batch::default();
        for (i, &p) in partitions.iter().enumerate() {
            let m = Received {
                topic: "t".into(),
                partition: p,
                offset: i as i64,
                key: None,
                payload: vec![],
            };
            b.count(&m, Instant::now(), 8);
            b.push(Candidate {
                key: Key(i as u128),
                alt: None,
                priority: 0,
                partition: p,
                offset: i as i64,
                row: (1, i as u8),
            });
        }
        b
    }

    #[tokio::test]
    async fn an_insert_runs_as_a_task_and_hands_its_batch_back() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut flight = Some(InFlight::start(
            batch(&[0, 1]),
            Instant::now(),
            |b| async move {
                let _ = rx.await;
                let rows: Vec<u8> = b.events.iter().map(|e| *row_of(e)).collect();
                assert_eq!(rows, [0, 1]);
                (b, Ok(()))
            },
        ));
        // Not finished while the insert waits.
        let waited = tokio::time::timeout(Duration::from_millis(50), finished(&mut flight)).await;
        assert!(waited.is_err());
        assert!(
            flight.is_some(),
            "a cancelled wait leaves the insert in flight"
        );
        tx.send(()).unwrap();
        let done = finished(&mut flight).await.unwrap();
        assert!(flight.is_none());
        assert!(done.result.is_ok());
        assert_eq!(done.rows, 2);
        assert_eq!(done.batch.offsets().count(), 2);
        // Without an insert in flight, `finished` never resolves.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), finished::<u8>(&mut None))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn partitions_revoked_during_the_insert_leave_its_batch() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut f = InFlight::start(batch(&[0, 1, 1, 2]), Instant::now(), |b| async move {
            let _ = rx.await;
            (b, Err(ClickHouseError::retryable("timed out")))
        });
        f.revoke(&HashSet::from([("t".to_string(), 1)]));
        let mut flight = Some(f);
        tx.send(()).unwrap();
        let done = finished(&mut flight).await.unwrap();
        assert!(done.result.is_err());
        assert_eq!(done.batch.event_partitions(), BTreeSet::from([0, 2]));
        assert_eq!(done.batch.offset_of("t", 1), None);
    }

    #[tokio::test]
    async fn a_panicking_insert_is_an_error_not_a_commit() {
        let mut flight = Some(InFlight::start(
            batch(&[0]),
            Instant::now(),
            |_b| async move { panic!("insert task died") },
        ));
        assert!(finished(&mut flight).await.is_err());
    }
}
