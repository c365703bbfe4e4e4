//! The one retry policy of the runtime: exponential backoff with jitter, bounded by time and
//! optionally by attempts. ClickHouse writes, the DLQ producer, the schema registry and the
//! start-up connects each get their own budget (README "Configuration reference",
//! `retry.<what>.*`); this module only decides *how long to wait* and *when to give up*.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How one kind of operation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Wait before the first retry; doubles per attempt …
    pub initial_backoff_ms: u64,
    /// … up to this.
    pub max_backoff_ms: u64,
    /// Give up once the first failure is this old.
    pub max_elapsed_s: u64,
    /// Give up after this many failed attempts (0: no limit, only `max_elapsed_s`).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            max_elapsed_s: 900,
            max_attempts: 0,
        }
    }
}

impl RetryPolicy {
    /// Problems with this policy, prefixed with `name` (for `config::validate`).
    pub fn problems(&self, name: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.initial_backoff_ms == 0 || self.initial_backoff_ms > self.max_backoff_ms {
            p.push(format!(
                "{name}: need 0 < initial_backoff_ms <= max_backoff_ms"
            ));
        }
        if self.max_elapsed_s == 0 {
            p.push(format!("{name}.max_elapsed_s: must be > 0"));
        }
        p
    }

    /// The un-jittered wait after failure number `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
            .min(self.max_backoff_ms);
        Duration::from_millis(exp)
    }

    /// The wait after failure number `attempt`: uniform in [ceiling/2, ceiling], so consumers
    /// that failed together do not retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rand::random_range(exp / 2..=exp.max(1)).max(1))
    }

    pub fn max_elapsed(&self) -> Duration {
        Duration::from_secs(self.max_elapsed_s)
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryIn(Duration),
    GiveUp,
}

/// One run of failures of one operation, from the first failure to the next success.
#[derive(Debug, Clone)]
pub struct Retrying {
    policy: RetryPolicy,
    since: Option<Instant>,
    attempts: u32,
    retry_at: Option<Instant>,
}

impl Retrying {
    pub fn new(policy: RetryPolicy) -> Self {
        Retrying {
            policy,
            since: None,
            attempts: 0,
            retry_at: None,
        }
    }

    /// Records a failure at `now` and says whether to retry.
    pub fn failed(&mut self, now: Instant) -> Next {
        let since = *self.since.get_or_insert(now);
        self.attempts += 1;
        let over_attempts =
            self.policy.max_attempts > 0 && self.attempts >= self.policy.max_attempts;
        if over_attempts || now.duration_since(since) >= self.policy.max_elapsed() {
            self.retry_at = None;
            return Next::GiveUp;
        }
        let d = self.policy.delay(self.attempts);
        self.retry_at = Some(now + d);
        Next::RetryIn(d)
    }

    /// Back to the healthy state; returns how many attempts had failed.
    pub fn succeeded(&mut self) -> u32 {
        let n = self.attempts;
        *self = Retrying::new(self.policy);
        n
    }

    pub fn is_failing(&self) -> bool {
        self.since.is_some()
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn elapsed(&self, now: Instant) -> Duration {
        self.since
            .map(|s| now.duration_since(s))
            .unwrap_or_default()
    }

    /// When the next attempt may run (None: now).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn may_try(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    /// Lets the next attempt run right away (the shutdown deadline bounds it).
    pub fn retry_now(&mut self) {
        self.retry_at = None;
    }
}

/// Runs `op` until it succeeds, its error is final (`is_final`) or the policy gives up;
/// `on_retry(error, attempt, wait)` runs before each wait (log and count there). Returns the
/// last error on giving up.
pub async fn with_retries<T, E, Fut>(
    policy: RetryPolicy,
    mut op: impl FnMut() -> Fut,
    is_final: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, u32, Duration),
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut r = Retrying::new(policy);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if is_final(&e) => return Err(e),
            Err(e) => match r.failed(Instant::now()) {
                Next::GiveUp => return Err(e),
                Next::RetryIn(d) => {
                    on_retry(&e, r.attempts(), d);
                    tokio::time::sleep(d).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            max_elapsed_s: 60,
            max_attempts,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let p = policy(0);
        let ceilings: Vec<u64> = (1..=6).map(|a| p.ceiling(a).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.ceiling(200).as_millis(), 1000, "no overflow on long runs");
        for a in 1..=6 {
            for _ in 0..50 {
                let d = p.delay(a);
                assert!(d >= p.ceiling(a) / 2 && d <= p.ceiling(a), "{d:?} at {a}");
            }
        }
    }

    #[test]
    fn gives_up_on_attempts_or_elapsed_whichever_first() {
        let t0 = Instant::now();
        let mut r = Retrying::new(policy(3));
        assert!(matches!(r.failed(t0), Next::RetryIn(_)));
        assert!(r.is_failing());
        assert!(!r.may_try(t0));
        assert!(matches!(r.failed(t0), Next::RetryIn(_)));
        assert_eq!(r.failed(t0), Next::GiveUp);
        assert_eq!(r.attempts(), 3);

        let mut r = Retrying::new(policy(0));
        assert!(matches!(r.failed(t0), Next::RetryIn(_)));
        assert!(matches!(
            r.failed(t0 + Duration::from_secs(59)),
            Next::RetryIn(_)
        ));
        assert_eq!(r.failed(t0 + Duration::from_secs(60)), Next::GiveUp);
    }

    #[test]
    fn success_resets_and_retry_now_clears_the_wait() {
        let t0 = Instant::now();
        let mut r = Retrying::new(policy(0));
        r.failed(t0);
        r.failed(t0);
        assert!(r.retry_at().is_some());
        r.retry_now();
        assert!(r.may_try(t0));
        assert_eq!(r.succeeded(), 2);
        assert!(!r.is_failing());
        assert_eq!(r.attempts(), 0);
        assert_eq!(r.elapsed(t0), Duration::ZERO);
    }

    #[tokio::test]
    async fn with_retries_stops_on_final_errors_and_on_the_budget() {
        let fast = |max_attempts| RetryPolicy {
            initial_backoff_ms: 1,
            max_backoff_ms: 2,
            ..policy(max_attempts)
        };
        let mut calls = 0;
        let r: Result<(), String> = with_retries(
            fast(4),
            || {
                calls += 1;
                async { Err("down".to_string()) }
            },
            |_| false,
            |_, _, _| {},
        )
        .await;
        assert_eq!(r.unwrap_err(), "down");
        assert_eq!(calls, 4);

        let mut calls = 0;
        let r: Result<(), String> = with_retries(
            fast(0),
            || {
                calls += 1;
                async { Err("401".to_string()) }
            },
            |e| e == "401",
            |_, _, _| {},
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "a final error is not retried");

        let mut calls = 0;
        let r = with_retries(
            fast(0),
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err("x".to_string()) } else { Ok(n) } }
            },
            |_| false,
            |_, _, _| {},
        )
        .await;
        assert_eq!(r.unwrap(), 3);
    }
}
