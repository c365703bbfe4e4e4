//! Is the group getting anywhere? Every `progress.interval_ms` the watch reads the group's
//! offsets from the broker ([`GroupOffsets`]), exports them (`umkm_group_lag_messages`,
//! `umkm_group_committed_offset`, `umkm_group_end_offset`) and asks [`Progress`] whether this
//! instance should report a stall: a partition has lag and its committed offset has not moved
//! for `progress.stall_after_s`, and it is one of this instance's partitions, or this instance
//! holds none at all (an idle member cannot be the one doing the work). A stall makes
//! `/health/ready` answer 503 and is described on `/health/progress` (README "Metrics and
//! health").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admin::Health;
use crate::config::ProgressSettings;
use crate::kafka::{Assignment, GroupOffsets, PartitionOffsets};
use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Progressing,
    Stalled {
        /// The stalled partitions this instance answers for.
        partitions: Vec<i32>,
        /// Their lag, summed.
        lag: i64,
        /// Whether this instance holds partitions (false: an idle member sees the group stuck).
        holding: bool,
        /// How long the oldest of them has not moved.
        stalled_for: Duration,
    },
}

impl Verdict {
    pub fn stalled_partitions(&self) -> &[i32] {
        match self {
            Verdict::Progressing => &[],
            Verdict::Stalled { partitions, .. } => partitions,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Verdict::Progressing => "progressing".into(),
            Verdict::Stalled {
                partitions,
                lag,
                holding,
                stalled_for,
            } => format!(
                "stalled: partitions {partitions:?} of {} hold {lag} uncommitted messages and their committed offsets have not moved for {} s{}",
                if *holding {
                    "this instance"
                } else {
                    "the group"
                },
                stalled_for.as_secs(),
                if *holding {
                    ""
                } else {
                    " while this instance holds no partitions"
                }
            ),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    committed: Option<i64>,
    /// The first read that found lag at this committed offset (None: no lag then).
    lagging_since: Option<Instant>,
}

/// The stall decision, fed one read of the group's offsets at a time.
#[derive(Debug)]
pub struct Progress {
    stall_after: Duration,
    seen: BTreeMap<i32, Seen>,
}

impl Progress {
    pub fn new(stall_after: Duration) -> Progress {
        Progress {
            stall_after,
            seen: BTreeMap::new(),
        }
    }

    pub fn observe(
        &mut self,
        now: Instant,
        offsets: &[PartitionOffsets],
        held: &BTreeSet<i32>,
    ) -> Verdict {
        let mut stalled = Vec::new();
        let mut lag = 0;
        let mut oldest = Duration::ZERO;
        let present: BTreeSet<i32> = offsets.iter().map(|o| o.partition).collect();
        self.seen.retain(|p, _| present.contains(p));
        for o in offsets {
            let s = self.seen.entry(o.partition).or_insert(Seen {
                committed: o.committed,
                lagging_since: None,
            });
            if o.lag() == 0 || s.committed != o.committed {
                *s = Seen {
                    committed: o.committed,
                    lagging_since: (o.lag() > 0).then_some(now),
                };
                continue;
            }
            let since = *s.lagging_since.get_or_insert(now);
            let still = now.saturating_duration_since(since);
            let answers_for = held.is_empty() || held.contains(&o.partition);
            if still >= self.stall_after && answers_for {
                stalled.push(o.partition);
                lag += o.lag();
                oldest = oldest.max(still);
            }
        }
        if stalled.is_empty() {
            Verdict::Progressing
        } else {
            Verdict::Stalled {
                partitions: stalled,
                lag,
                holding: !held.is_empty(),
                stalled_for: oldest,
            }
        }
    }
}

/// Runs the watch until the task is aborted. A failed read is logged and counted
/// (`umkm_group_lag_errors_total`) and leaves the last verdict standing.
pub async fn watch(
    offsets: GroupOffsets,
    assignment: Arc<Assignment>,
    topic: String,
    settings: ProgressSettings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    let offsets = Arc::new(offsets);
    let mut progress = Progress::new(Duration::from_secs(settings.stall_after_s));
    let mut reported = Verdict::Progressing;
    let mut interval = tokio::time::interval(Duration::from_millis(settings.interval_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let o = offsets.clone();
        let read = tokio::task::spawn_blocking(move || o.read()).await;
        let parts = match read {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                metrics.group_lag_errors.inc();
                tracing::warn!(error = %e, "cannot read the group's offsets from the broker");
                continue;
            }
            Err(e) => {
                metrics.group_lag_errors.inc();
                tracing::warn!(error = %e, "group offsets task failed");
                continue;
            }
        };
        for p in &parts {
            let labels = [topic.as_str(), &p.partition.to_string()];
            metrics.group_lag.with_label_values(&labels).set(p.lag());
            metrics
                .group_committed
                .with_label_values(&labels)
                .set(p.committed.unwrap_or(-1));
            metrics.group_end.with_label_values(&labels).set(p.high);
        }
        let verdict = progress.observe(Instant::now(), &parts, &assignment.held(&topic));
        // Logged when it changes (which partitions, or back to progressing), not every read.
        if verdict.stalled_partitions() != reported.stalled_partitions() {
            match &verdict {
                Verdict::Progressing => tracing::info!("progress resumed"),
                v => tracing::warn!(verdict = %v.describe(), "no progress"),
            }
        }
        metrics
            .stalled
            .set(i64::from(verdict != Verdict::Progressing));
        health.set_progress(match &verdict {
            Verdict::Progressing => None,
            v => Some(v.describe()),
        });
        metrics.ready.set(i64::from(health.ready()));
        reported = verdict;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, committed: Option<i64>, high: i64) -> PartitionOffsets {
        PartitionOffsets {
            partition,
            low: 0,
            high,
            committed,
        }
    }

    const STALL: Duration = Duration::from_secs(60);

    #[test]
    fn an_idle_member_reports_a_group_that_has_lag_and_no_progress() {
        let t0 = Instant::now();
        let mut p = Progress::new(STALL);
        let none = BTreeSet::new();
        let stuck = [at(0, None, 100), at(1, Some(10), 10)];
        assert_eq!(p.observe(t0, &stuck, &none), Verdict::Progressing);
        assert_eq!(
            p.observe(t0 + STALL - Duration::from_secs(1), &stuck, &none),
            Verdict::Progressing,
            "not before the threshold"
        );
        match p.observe(t0 + STALL, &stuck, &none) {
            Verdict::Stalled {
                partitions,
                lag,
                holding,
                ..
            } => {
                assert_eq!(partitions, vec![0], "partition 1 has no lag");
                assert_eq!(lag, 100);
                assert!(!holding);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_moving_commit_or_zero_lag_is_progress() {
        let t0 = Instant::now();
        let mut p = Progress::new(STALL);
        let none = BTreeSet::new();
        p.observe(t0, &[at(0, Some(10), 100)], &none);
        // Lag stays above zero under steady traffic, but the commit moves.
        for i in 1..10 {
            let now = t0 + STALL * i;
            let o = [at(0, Some(10 + i64::from(i)), 100 + i64::from(i))];
            assert_eq!(p.observe(now, &o, &none), Verdict::Progressing);
        }
        // Caught up, then idle for a long time: no lag, no stall.
        let idle = [at(0, Some(200), 200)];
        p.observe(t0 + STALL * 20, &idle, &none);
        assert_eq!(
            p.observe(t0 + STALL * 40, &idle, &none),
            Verdict::Progressing
        );
        // New messages after the idle time: the clock starts when the lag appears.
        let fresh = [at(0, Some(200), 210)];
        assert_eq!(
            p.observe(t0 + STALL * 41, &fresh, &none),
            Verdict::Progressing
        );
        assert!(matches!(
            p.observe(t0 + STALL * 42, &fresh, &none),
            Verdict::Stalled { .. }
        ));
    }

    #[test]
    fn a_holding_member_answers_only_for_its_own_partitions() {
        let t0 = Instant::now();
        let mut p = Progress::new(STALL);
        let mine = BTreeSet::from([1]);
        let o = [at(0, Some(0), 50), at(1, Some(5), 5)];
        p.observe(t0, &o, &mine);
        assert_eq!(
            p.observe(t0 + STALL * 2, &o, &mine),
            Verdict::Progressing,
            "partition 0 is someone else's"
        );
        let mine_stuck = [at(0, Some(0), 50), at(1, Some(5), 9)];
        p.observe(t0 + STALL * 3, &mine_stuck, &mine);
        match p.observe(t0 + STALL * 4, &mine_stuck, &mine) {
            Verdict::Stalled {
                partitions,
                holding,
                ..
            } => {
                assert_eq!(partitions, vec![1]);
                assert!(holding);
            }
            v => panic!("{v:?}"),
        }
    }
}
