//! Kafka clients: the consumer (manual commits after ClickHouse acknowledged, rebalance events
//! handed to the pipeline, consumer lag from librdkafka statistics) and the DLQ producer.

use std::sync::{Arc, Mutex};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;

use crate::config::Validated;
use crate::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

pub struct ConsumerCtx {
    pub metrics: Arc<Metrics>,
    pub events: Mutex<Vec<RebalanceEvent>>,
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<(String, i32)> {
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
            if let Ok(mut ev) = self.events.lock() {
                ev.push(RebalanceEvent::Revoked(revoked));
            }
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(tpl) => {
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                if let Ok(mut ev) = self.events.lock() {
                    ev.push(RebalanceEvent::Assigned(partitions(tpl)));
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

pub type Consumer = StreamConsumer<ConsumerCtx>;

fn base(v: &Validated) -> ClientConfig {
    let k = &v.s.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, val) in &k.extra {
        c.set(key, val);
    }
    c
}

pub fn consumer(v: &Validated, service: &str, metrics: Arc<Metrics>) -> KafkaResult<Consumer> {
    let k = &v.s.kafka;
    let mut c = base(v);
    c.set("group.id", &k.group_id)
        .set("client.id", service)
        // Offsets are committed by the pipeline, only after ClickHouse (and the DLQ) have the data.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &k.auto_offset_reset)
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("max.poll.interval.ms", k.max_poll_interval_ms.to_string())
        .set(
            "statistics.interval.ms",
            k.statistics_interval_ms.to_string(),
        )
        .set("fetch.wait.max.ms", "100")
        // Prefetch at most 16 MiB (librdkafka's default is 64 MiB): about 40,000 QRIS events.
        // The pipeline keeps consuming while a batch is inserted, so a deep prefetch buys
        // nothing but memory (docs/benchmarks.md). `kafka.extra` may raise it.
        .set("queued.max.messages.kbytes", "16384");
    for (key, val) in &k.extra {
        c.set(key, val);
    }
    c.create_with_context(ConsumerCtx {
        metrics,
        events: Mutex::new(Vec::new()),
    })
}

pub fn producer(v: &Validated, service: &str) -> KafkaResult<FutureProducer> {
    let mut c = base(v);
    c.set("client.id", format!("{service}-dlq"))
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5");
    for (key, val) in &v.s.kafka.extra {
        c.set(key, val);
    }
    c.create()
}
