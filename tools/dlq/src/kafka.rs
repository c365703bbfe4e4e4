//! Reading a DLQ topic from its beginning to its end, and the producer replays go through.
//! Client settings beyond the brokers (`security.protocol`, `sasl.*`, `ssl.*`) come as
//! `-X key=value`, as librdkafka's own tools take them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::record::DeadLetter;

#[derive(Debug, Clone)]
pub struct Connection {
    pub brokers: String,
    pub extra: Vec<(String, String)>,
    /// Bound on reading a whole topic, and on each broker request.
    pub timeout: Duration,
}

impl Connection {
    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// The producer replays use: every record acknowledged by all in-sync replicas, without
    /// duplicates from the producer's own retries.
    pub fn producer(&self) -> Result<FutureProducer> {
        let mut c = self.config();
        c.set("client.id", "umkm-dlq-replay")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000");
        c.create().context("Kafka producer")
    }

    /// Reads `topic` from the beginning of each partition to its end when the read started,
    /// and returns the records `keep` wants, in (partition, offset) order: the others are
    /// dropped as they are read, so a large DLQ is summarised without being held. The read
    /// goes on past the reported ends while records follow within `quiet` of each other (some
    /// brokers report ends below what they deliver); a partition whose position has passed its
    /// end (a transaction marker last) is done without a record there.
    pub fn read_all(
        &self,
        topic: &str,
        quiet: Duration,
        mut keep: impl FnMut(&DeadLetter) -> bool,
    ) -> Result<Vec<DeadLetter>> {
        let mut c = self.config();
        c.set("group.id", format!("umkm-dlq-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer = c.create().context("Kafka consumer")?;
        let md = consumer
            .fetch_metadata(Some(topic), self.timeout)
            .with_context(|| format!("metadata of {topic}"))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .with_context(|| format!("topic {topic} not found"))?;
        if let Some(e) = t.error() {
            bail!("topic {topic}: {e:?}");
        }
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), self.timeout)
                .with_context(|| format!("offsets of {topic}/{}", p.id()))?;
            if high > low {
                ends.insert(p.id(), high);
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + self.timeout;
        let mut last = Instant::now();
        let mut reached: BTreeMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
        loop {
            if reached.values().all(|r| *r) && last.elapsed() >= quiet {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "reading {topic}: {} records after {:?}, partitions not read to their end: {:?}",
                    out.len(),
                    self.timeout,
                    reached
                        .iter()
                        .filter(|(_, r)| !**r)
                        .map(|(p, _)| p)
                        .collect::<Vec<_>>()
                );
            }
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements() {
                        if let (Offset::Offset(at), Some(end)) =
                            (e.offset(), ends.get(&e.partition()))
                            && at >= *end
                        {
                            reached.insert(e.partition(), true);
                        }
                    }
                }
                continue;
            };
            let m = m.with_context(|| format!("reading {topic}"))?;
            last = Instant::now();
            if m.offset() + 1 >= ends.get(&m.partition()).copied().unwrap_or(0) {
                reached.insert(m.partition(), true);
            }
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for i in 0..h.count() {
                    let hd = h.get(i);
                    headers.insert(
                        hd.key.to_string(),
                        String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            let r = DeadLetter {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers,
            };
            if keep(&r) {
                out.push(r);
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        Ok(out)
    }
}
