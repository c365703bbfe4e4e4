//! The consumer's librdkafka context: rebalance callbacks queue [`RebalanceEvent`]s for the
//! pipeline (which applies them in one place, `Pipeline::run`) and keep the [`Assignment`]
//! that the progress watch reads.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

use super::TopicPartition;
use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
}

/// The partitions this instance holds, as the rebalance callbacks last left them (eager and
/// incremental assignments alike: an assignment adds, a revocation removes).
#[derive(Debug, Default)]
pub struct Assignment(Mutex<BTreeSet<TopicPartition>>);

impl Assignment {
    /// The partitions of `topic` held now.
    pub fn held(&self, topic: &str) -> BTreeSet<i32> {
        self.0
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(t, _)| t == topic)
                    .map(|(_, p)| *p)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn change(&self, added: &[TopicPartition], removed: &[TopicPartition]) -> usize {
        match self.0.lock() {
            Ok(mut s) => {
                for tp in removed {
                    s.remove(tp);
                }
                s.extend(added.iter().cloned());
                s.len()
            }
            Err(_) => 0,
        }
    }
}

pub struct ConsumerCtx {
    metrics: Arc<Metrics>,
    assignment: Arc<Assignment>,
    events: Mutex<Vec<RebalanceEvent>>,
}

impl ConsumerCtx {
    pub fn new(metrics: Arc<Metrics>, assignment: Arc<Assignment>) -> Self {
        ConsumerCtx {
            metrics,
            assignment,
            events: Mutex::new(Vec::new()),
        }
    }

    /// The rebalance events since the last call, oldest first.
    pub fn take_events(&self) -> Vec<RebalanceEvent> {
        match self.events.lock() {
            Ok(mut ev) => std::mem::take(&mut *ev),
            Err(_) => Vec::new(),
        }
    }

    fn push(&self, e: RebalanceEvent) {
        if let Ok(mut ev) = self.events.lock() {
            ev.push(e);
        }
    }
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for ConsumerCtx {}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let revoked = partitions(tpl);
            let held = self.assignment.change(&[], &revoked);
            self.metrics.assigned_partitions.set(held as i64);
            self.metrics.rebalances.with_label_values(&["revoke"]).inc();
            self.push(RebalanceEvent::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(tpl) => {
                let assigned = partitions(tpl);
                let held = self.assignment.change(&assigned, &[]);
                self.metrics.assigned_partitions.set(held as i64);
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                self.push(RebalanceEvent::Assigned(assigned));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_adds_and_removes_per_topic() {
        let a = Assignment::default();
        let tp = |t: &str, p| (t.to_string(), p);
        assert_eq!(a.change(&[tp("t", 0), tp("t", 1), tp("u", 0)], &[]), 3);
        assert_eq!(a.held("t"), BTreeSet::from([0, 1]));
        // Incremental: a revocation of one partition keeps the others.
        assert_eq!(a.change(&[], &[tp("t", 0)]), 2);
        assert_eq!(a.held("t"), BTreeSet::from([1]));
        assert_eq!(a.change(&[], &[tp("t", 1), tp("u", 0)]), 0);
        assert!(a.held("t").is_empty());
    }
}
