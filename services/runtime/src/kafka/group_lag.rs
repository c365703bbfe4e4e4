//! The group's offsets as the broker holds them: committed offset, low and high watermark of
//! every partition of the topic, whether or not this instance holds it (README "Metrics and
//! health"). A client of its own, never subscribed: it reads the group, it does not join it.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Validated;

/// One partition's offsets as the broker reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
    /// None while the group has committed nothing on the partition.
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// Messages the group has not committed yet: from the committed offset (or the low
    /// watermark, before the first commit) to the end. Never negative: some brokers report an
    /// end below what they delivered (tansu, README "Metrics and health").
    pub fn lag(&self) -> i64 {
        let from = self.committed.unwrap_or(self.low).max(self.low);
        (self.high - from).max(0)
    }
}

pub struct GroupOffsets {
    consumer: BaseConsumer,
    topic: String,
    timeout: Duration,
}

impl GroupOffsets {
    pub fn new(v: &Validated, service: &str) -> KafkaResult<GroupOffsets> {
        let mut c = super::base(v);
        c.set("group.id", &v.settings.kafka.group_id)
            .set("client.id", format!("{service}-lag"))
            .set("enable.auto.commit", "false");
        Ok(GroupOffsets {
            consumer: super::with_extra(c, v).create()?,
            topic: v.settings.kafka.topic.clone(),
            timeout: Duration::from_millis(v.settings.progress.request_timeout_ms),
        })
    }

    /// One read of every partition (blocking: run it on a blocking thread).
    pub fn read(&self) -> KafkaResult<Vec<PartitionOffsets>> {
        // Nothing is consumed here; this drains the client's own events (errors, logs).
        let _ = self.consumer.poll(Duration::ZERO);
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), self.timeout)?;
        let t = md.topics().iter().find(|t| t.name() == self.topic).ok_or(
            KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopic),
        )?;
        if let Some(e) = t.error() {
            return Err(KafkaError::MetadataFetch(e.into()));
        }
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            tpl.add_partition(&self.topic, p.id());
        }
        let committed = self.consumer.committed_offsets(tpl, self.timeout)?;
        let mut out = Vec::with_capacity(committed.count());
        for e in committed.elements() {
            let (low, high) =
                self.consumer
                    .fetch_watermarks(&self.topic, e.partition(), self.timeout)?;
            out.push(PartitionOffsets {
                partition: e.partition(),
                low,
                high,
                committed: match e.offset() {
                    Offset::Offset(n) => Some(n),
                    _ => None,
                },
            });
        }
        out.sort_by_key(|p| p.partition);
        Ok(out)
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

    #[test]
    fn lag_counts_from_the_commit_or_the_start_and_is_never_negative() {
        assert_eq!(at(0, Some(40), 100).lag(), 60);
        assert_eq!(at(0, None, 100).lag(), 100);
        let trimmed = PartitionOffsets {
            low: 70,
            ..at(0, Some(40), 100)
        };
        assert_eq!(trimmed.lag(), 30, "retention deleted what was never read");
        assert_eq!(
            at(0, Some(105), 100).lag(),
            0,
            "end reported below the commit"
        );
    }
}
