//! Talking to the broker as a publisher: creating topics (the one way the stack script, the
//! publisher, the tests and the benchmark create them) and the one publish loop.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

/// The project's topics and their partitions; docker-compose.yml's kafka-init creates the
/// same on Apache Kafka.
pub const PROJECT_TOPICS: &[(&str, i32)] = &[
    ("payments.qris.v1", 3),
    ("payments.noncash.v1", 3),
    ("merchants.registry.v1", 3),
    ("payments.dlq", 1),
    ("merchants.dlq", 1),
];

/// A client configuration for `brokers` with `props` (librdkafka properties such as
/// `security.protocol`, `sasl.*`, `ssl.*`: README "Security"), the base of every client here.
pub fn client_config(brokers: &str, props: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in props {
        c.set(k, v);
    }
    c
}

/// Creates the topics that do not exist yet (an existing topic is fine), replication 1.
pub async fn create_topics(base: &ClientConfig, topics: &[(&str, i32)]) -> Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = base.create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let res = tokio::time::timeout(Duration::from_secs(30), admin.create_topics(&new, &opts))
        .await
        .context("creating topics timed out")??;
    for r in res {
        if let Err((t, e)) = r
            && e != RDKafkaErrorCode::TopicAlreadyExists
        {
            bail!("create topic {t}: {e}");
        }
    }
    Ok(())
}

/// Parses `name:partitions` (the stack script's and `umkm-traffic topics`' notation).
pub fn parse_topic(s: &str) -> Result<(String, i32)> {
    let (name, parts) = s
        .rsplit_once(':')
        .with_context(|| format!("topic {s:?}: expected NAME:PARTITIONS"))?;
    let parts: i32 = parts
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .with_context(|| format!("topic {s:?}: partitions must be a positive number"))?;
    if name.is_empty() {
        bail!("topic {s:?}: empty name");
    }
    Ok((name.to_string(), parts))
}

/// Partition → end offset (last acknowledged offset + 1), from the delivery reports. tansu 0.6
/// answers ListOffsets with values below what it has delivered, so these are what to wait for.
pub type Ends = BTreeMap<i32, i64>;

/// One record per batch. tansu 0.6 (memory storage) answers a fetch that starts inside a
/// multi-record batch with no data, so a consumer restarting at a committed offset in the
/// middle of a producer batch would stall there. Apache Kafka returns the containing batch;
/// users' producers need no such setting.
pub fn single_record_producer(base: &ClientConfig) -> Result<FutureProducer> {
    Ok(base
        .clone()
        .set("acks", "all")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .create()?)
}

/// Large batches, for publishing fast where nothing restarts inside a batch.
pub fn batching_producer(base: &ClientConfig, linger_ms: u32) -> Result<FutureProducer> {
    Ok(base
        .clone()
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "60000")
        .create()?)
}

/// The publish loop: sends records, keeps at most `max_in_flight` unacknowledged, records the
/// partition ends (deliveries name no topic: [`Publisher::finish`]'s ends are those of a
/// single topic when only one is published to). When the producer's local queue is full it
/// waits for the oldest half of what is in flight and tries again; any other error, and any
/// failed delivery, fails.
pub struct Publisher<'p> {
    producer: &'p FutureProducer,
    in_flight: VecDeque<DeliveryFuture>,
    max_in_flight: usize,
    ends: Ends,
    /// (partition, offset) of every delivery in send order, when asked for.
    deliveries: Option<Vec<(i32, i64)>>,
}

impl<'p> Publisher<'p> {
    pub fn new(producer: &'p FutureProducer, max_in_flight: usize) -> Self {
        Publisher {
            producer,
            in_flight: VecDeque::new(),
            max_in_flight: max_in_flight.max(1),
            ends: Ends::new(),
            deliveries: None,
        }
    }

    /// Also keeps every delivery's (partition, offset), in send order ([`Publisher::finish`]
    /// returns them).
    pub fn recording_deliveries(mut self) -> Self {
        self.deliveries = Some(Vec::new());
        self
    }

    pub async fn send(&mut self, topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        loop {
            match self.producer.send_result(rec) {
                Ok(f) => {
                    self.in_flight.push_back(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    let n = self.in_flight.len().div_ceil(2);
                    self.settle(n).await?;
                    if n == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((e, _)) => bail!("publish to {topic}: {e}"),
            }
        }
        if self.in_flight.len() >= self.max_in_flight {
            let n = self.in_flight.len() / 2;
            self.settle(n).await?;
        }
        Ok(())
    }

    /// Waits for the oldest `n` deliveries.
    async fn settle(&mut self, n: usize) -> Result<()> {
        for f in self.in_flight.drain(..n.min(self.in_flight.len())) {
            let d = f
                .await
                .context("delivery cancelled")?
                .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
            let end = self.ends.entry(d.partition).or_insert(0);
            *end = (*end).max(d.offset + 1);
            if let Some(r) = &mut self.deliveries {
                r.push((d.partition, d.offset));
            }
        }
        Ok(())
    }

    /// Waits for every delivery; returns the partition ends of what was published and, with
    /// [`Publisher::recording_deliveries`], every delivery in send order.
    pub async fn finish(mut self) -> Result<(Ends, Vec<(i32, i64)>)> {
        let n = self.in_flight.len();
        self.settle(n).await?;
        Ok((self.ends, self.deliveries.unwrap_or_default()))
    }
}
