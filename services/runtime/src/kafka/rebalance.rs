//! The consumer's librdkafka context: rebalance callbacks queue [`RebalanceEvent`]s for the
//! pipeline (which applies them in one place, `Pipeline::run`), and statistics feed the
//! consumer-lag gauge.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;

use super::TopicPartition;
use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
}

pub struct ConsumerCtx {
    metrics: Arc<Metrics>,
    events: Mutex<Vec<RebalanceEvent>>,
}

impl ConsumerCtx {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ConsumerCtx {
            metrics,
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

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                // -1 is librdkafka's internal UA partition; lag is -1 when unknown.
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let revoked = partitions(tpl);
            for (t, p) in &revoked {
                let _ = self
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[t.as_str(), &p.to_string()]);
            }
            self.metrics.rebalances.with_label_values(&["revoke"]).inc();
            self.push(RebalanceEvent::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(tpl) => {
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                self.push(RebalanceEvent::Assigned(partitions(tpl)));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}
