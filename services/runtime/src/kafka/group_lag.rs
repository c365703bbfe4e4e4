//! The group's offsets as the broker holds them: committed offset, low and high watermark of
//! every partition of the topic, whether or not this instance holds it (README "Metrics and
//! health"). A client of its own, never subscribed: it reads the group, it does not join it.
//! At start-up it is also the client that proves the brokers can be reached with the
//! configured security ([`GroupOffsets::connect`]).

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
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

/// Remembers the first error librdkafka reports that no reconnect fixes: a TLS handshake that
/// failed (untrusted or expired certificate, TLS spoken to a plaintext port) or SASL
/// credentials the broker refused.
#[derive(Default)]
pub struct WatchCtx {
    refused: Mutex<Option<String>>,
}

/// A TLS or SASL refusal, from librdkafka's error code and reason: an SSL or authentication
/// error, or a TLS alert the broker sent (e.g. "certificate required" to a client without a
/// client certificate, which librdkafka reports as a transport failure).
pub fn is_refusal(code: Option<RDKafkaErrorCode>, reason: &str) -> bool {
    match code {
        Some(RDKafkaErrorCode::SSL | RDKafkaErrorCode::Authentication) => true,
        Some(RDKafkaErrorCode::BrokerTransportFailure) => {
            reason.contains("SSL routines") && reason.contains(" alert ")
        }
        _ => false,
    }
}

impl ClientContext for WatchCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_refusal(error.rdkafka_error_code(), reason) {
            if let Ok(mut r) = self.refused.lock() {
                r.get_or_insert_with(|| reason.to_string());
            }
            tracing::error!(error = %error, reason, "kafka connection refused");
        } else {
            // The consumer's own client logs the same broker errors.
            tracing::debug!(error = %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for WatchCtx {}

/// Why the brokers could not be used at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TLS or SASL refused: fatal.
    #[error("the brokers refused the connection's security (kafka.security / kafka.tls): {0}")]
    Refused(String),
    /// No answer yet: retried within `retry.connect`.
    #[error("no metadata from the brokers: {0}")]
    NotYet(String),
}

pub struct GroupOffsets {
    consumer: BaseConsumer<WatchCtx>,
    topic: String,
    timeout: Duration,
    /// `kafka.tls`, to say why a certificate was refused.
    tls: crate::config::TlsSettings,
}

impl GroupOffsets {
    pub fn new(v: &Validated, service: &str) -> KafkaResult<GroupOffsets> {
        let mut c = super::base(v);
        c.set("group.id", &v.settings.kafka.group_id)
            .set("client.id", format!("{service}-lag"))
            .set("enable.auto.commit", "false");
        Ok(GroupOffsets {
            consumer: super::with_extra(c, v).create_with_context(WatchCtx::default())?,
            topic: v.settings.kafka.topic.clone(),
            timeout: Duration::from_millis(v.settings.progress.request_timeout_ms),
            tls: v.settings.kafka.tls.clone(),
        })
    }

    /// One metadata request, answered, or failed by a TLS or SASL refusal seen meanwhile
    /// (blocking).
    pub fn connect(&self) -> Result<(), ConnectError> {
        let refused = || {
            // Each poll serves at most one queued event (errors reach `WatchCtx::error` this
            // way); librdkafka queues a few per reconnect, so drain a bounded number.
            for _ in 0..256 {
                let _ = self.consumer.poll(Duration::ZERO);
            }
            self.consumer
                .context()
                .refused
                .lock()
                .ok()
                .and_then(|r| r.clone())
        };
        // Short requests, so that a refusal is noticed within a second or so.
        let step = self.timeout.min(Duration::from_secs(1));
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let answer = self.consumer.fetch_metadata(Some(&self.topic), step);
            if let Some(reason) = refused() {
                return Err(ConnectError::Refused(
                    match crate::security::diagnose_broker_tls(&reason, &self.tls) {
                        Some(why) => format!("{reason}; {why}"),
                        None => reason,
                    },
                ));
            }
            match answer {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(ConnectError::NotYet(e.to_string()));
                }
                Err(_) => {}
            }
        }
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
    fn refusals_are_tls_and_sasl_failures_not_outages() {
        use RDKafkaErrorCode as C;
        assert!(is_refusal(
            Some(C::Authentication),
            "SASL SCRAM authentication failed"
        ));
        assert!(is_refusal(Some(C::SSL), "SSL handshake failed"));
        assert!(is_refusal(
            Some(C::BrokerTransportFailure),
            "Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required"
        ));
        assert!(!is_refusal(
            Some(C::BrokerTransportFailure),
            "Connection refused"
        ));
        assert!(!is_refusal(Some(C::AllBrokersDown), "1/1 brokers are down"));
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
