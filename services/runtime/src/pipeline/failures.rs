//! The state of failing writes: the ClickHouse writes (lookup and insert, `retry.clickhouse`
//! with `retry.fatal_attempts` for errors a retry rarely fixes) and the dead letters' acks
//! (`retry.dlq`), each with its own budget. It decides when the next attempt may run and when
//! to give up; the pipeline pauses, logs and counts.

use std::time::{Duration, Instant};

use umkm_core::clickhouse_error::ErrorClass;

use super::PipelineError;
use super::dead_letters::DeadLetterError;
use crate::clickhouse::ClickHouseError;
use crate::retry::{Next, RetryPolicy, Retrying};

/// A write that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    #[error("dedup lookup: {0}")]
    Lookup(ClickHouseError),
    #[error("insert: {0}")]
    Insert(ClickHouseError),
    #[error("dead letters: {0}")]
    DeadLetters(DeadLetterError),
}

impl WriteFailure {
    /// The `what` label of `umkm_retries_total`.
    pub fn what(&self) -> &'static str {
        match self {
            WriteFailure::Lookup(_) => "lookup",
            WriteFailure::Insert(_) => "insert",
            WriteFailure::DeadLetters(_) => "dlq",
        }
    }

    /// The `class` label of `umkm_retries_total`.
    pub fn class(&self) -> &'static str {
        match self {
            WriteFailure::Lookup(e) | WriteFailure::Insert(e) => e.class_str(),
            WriteFailure::DeadLetters(_) => "retryable",
        }
    }
}

/// The next attempt of a failed write: after `wait`; `attempt` failures so far in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub wait: Duration,
    pub attempt: u32,
}

pub struct Failures {
    clickhouse: Retrying,
    /// ClickHouse failures of the current run classed fatal.
    fatal: u32,
    fatal_attempts: u32,
    dlq: Retrying,
}

impl Failures {
    pub fn new(clickhouse: RetryPolicy, fatal_attempts: u32, dlq: RetryPolicy) -> Self {
        Failures {
            clickhouse: Retrying::new(clickhouse),
            fatal: 0,
            fatal_attempts,
            dlq: Retrying::new(dlq),
        }
    }

    /// Records `failure` at `now`: when to attempt again, or the error to stop with when its
    /// budget is spent.
    pub fn failed(&mut self, failure: WriteFailure, now: Instant) -> Result<Retry, PipelineError> {
        let (next, r) = match &failure {
            WriteFailure::Lookup(e) | WriteFailure::Insert(e) => {
                let mut next = self.clickhouse.failed(now);
                if e.class == ErrorClass::Fatal {
                    self.fatal += 1;
                    if self.fatal >= self.fatal_attempts {
                        next = Next::GiveUp;
                    }
                }
                (next, &self.clickhouse)
            }
            WriteFailure::DeadLetters(_) => (self.dlq.failed(now), &self.dlq),
        };
        let (attempts, elapsed) = (r.attempts(), r.elapsed(now));
        match (next, failure) {
            (Next::RetryIn(wait), _) => Ok(Retry {
                wait,
                attempt: attempts,
            }),
            (Next::GiveUp, WriteFailure::DeadLetters(last)) => Err(PipelineError::DeadLetters {
                attempts,
                elapsed,
                last,
            }),
            (Next::GiveUp, f) => {
                let what = f.what();
                let (WriteFailure::Lookup(last) | WriteFailure::Insert(last)) = f else {
                    unreachable!("dead letters are handled above")
                };
                Err(PipelineError::ClickHouse {
                    what,
                    attempts,
                    elapsed,
                    last,
                })
            }
        }
    }

    /// The dead letters were acknowledged; returns how many attempts had failed.
    pub fn dlq_recovered(&mut self) -> u32 {
        self.dlq.succeeded()
    }

    /// ClickHouse took a batch; returns how many attempts had failed.
    pub fn clickhouse_recovered(&mut self) -> u32 {
        self.fatal = 0;
        self.clickhouse.succeeded()
    }

    pub fn clickhouse_failing(&self) -> bool {
        self.clickhouse.is_failing()
    }

    pub fn any_failing(&self) -> bool {
        self.clickhouse.is_failing() || self.dlq.is_failing()
    }

    /// Whether a flush may start now (no retry is waiting).
    pub fn may_try(&self, now: Instant) -> bool {
        self.clickhouse.may_try(now) && self.dlq.may_try(now)
    }

    /// When the waiting retry may run.
    pub fn retry_at(&self) -> Option<Instant> {
        [self.clickhouse.retry_at(), self.dlq.retry_at()]
            .into_iter()
            .flatten()
            .max()
    }

    /// Lets a waiting retry run now (at shutdown: the deadline bounds it).
    pub fn retry_now(&mut self) {
        self.clickhouse.retry_now();
        self.dlq.retry_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_elapsed_s: u64, max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            max_elapsed_s,
            max_attempts,
        }
    }

    fn ch(class: ErrorClass) -> ClickHouseError {
        ClickHouseError {
            class,
            code: None,
            message: "down".into(),
        }
    }

    fn dlq() -> DeadLetterError {
        DeadLetterError {
            unacknowledged: 1,
            last: "timed out".into(),
        }
    }

    #[test]
    fn a_retryable_clickhouse_failure_waits_and_blocks_the_next_flush() {
        let t0 = Instant::now();
        let mut f = Failures::new(policy(60, 0), 5, policy(60, 0));
        let r = f
            .failed(WriteFailure::Insert(ch(ErrorClass::Retryable)), t0)
            .unwrap();
        assert_eq!(r.attempt, 1);
        let d = r.wait;
        assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        assert!(f.clickhouse_failing() && f.any_failing());
        assert!(!f.may_try(t0));
        assert!(f.may_try(t0 + d));
        assert_eq!(f.retry_at(), Some(t0 + d));
        f.retry_now();
        assert!(f.may_try(t0));
        assert_eq!(f.clickhouse_recovered(), 1);
        assert!(!f.any_failing());
    }

    #[test]
    fn fatal_errors_give_up_after_fatal_attempts_and_name_what_failed() {
        let t0 = Instant::now();
        let mut f = Failures::new(policy(900, 0), 3, policy(900, 0));
        for _ in 0..4 {
            f.failed(WriteFailure::Lookup(ch(ErrorClass::Retryable)), t0)
                .unwrap();
        }
        f.failed(WriteFailure::Insert(ch(ErrorClass::Fatal)), t0)
            .unwrap();
        f.failed(WriteFailure::Lookup(ch(ErrorClass::Fatal)), t0)
            .unwrap();
        let e = f
            .failed(WriteFailure::Lookup(ch(ErrorClass::Fatal)), t0)
            .unwrap_err();
        assert!(
            matches!(
                e,
                PipelineError::ClickHouse {
                    what: "lookup",
                    attempts: 7,
                    ..
                }
            ),
            "{e:?}"
        );
        // A success resets the fatal count too.
        let mut f = Failures::new(policy(900, 0), 2, policy(900, 0));
        f.failed(WriteFailure::Insert(ch(ErrorClass::Fatal)), t0)
            .unwrap();
        f.clickhouse_recovered();
        assert!(
            f.failed(WriteFailure::Insert(ch(ErrorClass::Fatal)), t0)
                .is_ok()
        );
    }

    #[test]
    fn retryable_clickhouse_failures_give_up_after_max_elapsed() {
        let t0 = Instant::now();
        let mut f = Failures::new(policy(10, 0), 5, policy(900, 0));
        f.failed(WriteFailure::Insert(ch(ErrorClass::Retryable)), t0)
            .unwrap();
        let e = f
            .failed(
                WriteFailure::Insert(ch(ErrorClass::Retryable)),
                t0 + Duration::from_secs(10),
            )
            .unwrap_err();
        assert!(
            matches!(e, PipelineError::ClickHouse { what: "insert", attempts: 2, elapsed, .. } if elapsed == Duration::from_secs(10)),
            "{e:?}"
        );
    }

    #[test]
    fn dead_letters_have_their_own_budget() {
        let t0 = Instant::now();
        let mut f = Failures::new(policy(900, 0), 5, policy(900, 3));
        // ClickHouse failures do not spend the DLQ's attempts, and the other way round.
        f.failed(WriteFailure::Insert(ch(ErrorClass::Retryable)), t0)
            .unwrap();
        f.failed(WriteFailure::DeadLetters(dlq()), t0).unwrap();
        let r = f.failed(WriteFailure::DeadLetters(dlq()), t0).unwrap();
        assert_eq!(r.attempt, 2);
        let r = f
            .failed(WriteFailure::Lookup(ch(ErrorClass::Retryable)), t0)
            .unwrap();
        assert_eq!(r.attempt, 2, "the ClickHouse run counts its own");
        let e = f.failed(WriteFailure::DeadLetters(dlq()), t0).unwrap_err();
        assert!(
            matches!(e, PipelineError::DeadLetters { attempts: 3, .. }),
            "{e:?}"
        );
        assert_eq!(f.dlq_recovered(), 3);
        assert!(f.clickhouse_failing());
    }

    #[test]
    fn labels() {
        assert_eq!(WriteFailure::Lookup(ch(ErrorClass::Fatal)).what(), "lookup");
        assert_eq!(WriteFailure::Lookup(ch(ErrorClass::Fatal)).class(), "fatal");
        assert_eq!(WriteFailure::DeadLetters(dlq()).what(), "dlq");
        assert_eq!(WriteFailure::DeadLetters(dlq()).class(), "retryable");
    }
}
