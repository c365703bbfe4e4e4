//! Kafka clients: the consumer (manual commits after ClickHouse acknowledged, rebalance events
//! handed to the pipeline), the DLQ producer and the group's offsets read for the progress
//! watch, plus [`Received`], the one shape in which a message enters the pipeline.

mod group_lag;
mod rebalance;

use std::sync::Arc;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;

pub use group_lag::{ConnectError, GroupOffsets, PartitionOffsets};
pub use rebalance::{Assignment, ConsumerCtx, RebalanceEvent};

use crate::config::Validated;
use crate::metrics::Metrics;
use umkm_core::fields::Shared;

/// (topic, partition).
pub type TopicPartition = (String, i32);

pub type Consumer = StreamConsumer<ConsumerCtx>;

/// A consumed message, owned: the borrowed message would pin the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Shared with the pipeline's own topic name (no allocation per message).
    pub topic: Shared,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Received {
    /// The message, owned; `topic` is the subscribed topic's name, reused when it matches.
    pub fn of(m: &rdkafka::message::BorrowedMessage<'_>, topic: &Shared) -> Received {
        Received {
            topic: if m.topic() == topic.as_str() {
                topic.clone()
            } else {
                m.topic().into()
            },
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

/// A client error for people: a refused setting names its key and librdkafka's reason, without
/// repeating the value (`kafka.extra` may hold secrets).
pub fn describe(e: &rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, reason, key, _) => {
            format!("{key}: {reason}")
        }
        other => other.to_string(),
    }
}

/// What every client shares: the brokers and how the connections to them are secured
/// (`kafka.security`, `kafka.tls`; README "Security").
fn base(v: &Validated) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &v.settings.kafka.brokers);
    for (key, value) in &v.kafka_security.0 {
        c.set(*key, value);
    }
    c
}

/// `kafka.extra` last: it overrides what the runtime sets.
fn with_extra(mut c: ClientConfig, v: &Validated) -> ClientConfig {
    for (key, val) in &v.settings.kafka.extra {
        c.set(key, val);
    }
    c
}

pub fn consumer(
    v: &Validated,
    service: &str,
    metrics: Arc<Metrics>,
    assignment: Arc<Assignment>,
) -> KafkaResult<Consumer> {
    consumer_config(v, service).create_with_context(ConsumerCtx::new(metrics, assignment))
}

pub fn producer(v: &Validated, service: &str) -> KafkaResult<FutureProducer> {
    producer_config(v, service).create()
}

/// Has librdkafka check every property of the consumer and the producer (`kafka.extra`
/// included) without making a client, so nothing connects (`check-config`).
pub fn check(v: &Validated, service: &str) -> KafkaResult<()> {
    consumer_config(v, service).create_native_config()?;
    producer_config(v, service).create_native_config()?;
    Ok(())
}

fn consumer_config(v: &Validated, service: &str) -> ClientConfig {
    let k = &v.settings.kafka;
    let mut c = base(v);
    c.set("group.id", &k.group_id)
        .set("client.id", service)
        // Offsets are committed by the pipeline, only after ClickHouse (and the DLQ) have the data.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", &k.auto_offset_reset)
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", k.heartbeat_interval_ms.to_string())
        .set("max.poll.interval.ms", k.max_poll_interval_ms.to_string())
        .set("fetch.wait.max.ms", "100")
        // Prefetch at most 16 MiB (librdkafka's default is 64 MiB): about 40,000 QRIS events.
        // The pipeline keeps consuming while a batch is inserted, so a deep prefetch buys
        // nothing but memory (docs/benchmarks.md). `kafka.extra` may raise it.
        .set("queued.max.messages.kbytes", "16384");
    with_extra(c, v)
}

fn producer_config(v: &Validated, service: &str) -> ClientConfig {
    let mut c = base(v);
    c.set("client.id", format!("{service}-dlq"))
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5");
    with_extra(c, v)
}
