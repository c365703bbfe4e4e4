//! Dead letters: a bad record goes to the DLQ topic with its original key and value and
//! `dlq.*` headers saying why (README "Dead-letter topic"). It is sent at once; the batch that
//! holds its offset is committed only after the broker acknowledged it.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use umkm_core::{Invalid, join_reasons};

use crate::kafka::Received;
use crate::metrics::Metrics;

/// Where a record was found bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Framing, schema id or Avro.
    Decode,
    /// The family's rules.
    Validate,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Validate => "validate",
        }
    }
}

/// One record on its way to the DLQ topic.
pub struct DeadLetter {
    pub partition: i32,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
    stage: Stage,
    /// The first rule that failed (the metric's label).
    rule: &'static str,
    delivery: Option<DeliveryFuture>,
}

#[cfg(test)]
impl DeadLetter {
    pub fn for_test(partition: i32) -> DeadLetter {
        DeadLetter {
            partition,
            key: None,
            payload: vec![1],
            headers: OwnedHeaders::new(),
            stage: Stage::Decode,
            rule: "test",
            delivery: None,
        }
    }
}

/// The `dlq.*` headers of a record (`now_ms`: when it was dead-lettered). Reasons name fields
/// and rules, never a payer identifier.
pub fn headers(
    service: &str,
    m: &Received,
    schema_id: Option<u32>,
    stage: Stage,
    reasons: &[Invalid],
    now_ms: i64,
) -> Vec<(&'static str, String)> {
    let rules = reasons.iter().map(|r| r.rule).collect::<Vec<_>>().join(",");
    vec![
        ("dlq.reason", join_reasons(reasons)),
        ("dlq.rule", rules),
        ("dlq.stage", stage.as_str().to_string()),
        ("dlq.service", service.to_string()),
        ("dlq.source.topic", m.topic.to_string()),
        ("dlq.source.partition", m.partition.to_string()),
        ("dlq.source.offset", m.offset.to_string()),
        (
            "dlq.schema_id",
            schema_id.map(|s| s.to_string()).unwrap_or_default(),
        ),
        ("dlq.timestamp_ms", now_ms.to_string()),
    ]
}

#[derive(Debug, thiserror::Error)]
#[error("{unacknowledged} dead letter(s) not acknowledged: {last}")]
pub struct DeadLetterError {
    pub unacknowledged: usize,
    pub last: String,
}

/// The error of a dead letter the broker did not answer within the caller's bound.
const NOT_IN_TIME: &str = "not acknowledged in time";

/// The DLQ producer of one service.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    service: &'static str,
    metrics: Arc<Metrics>,
    /// `kafka.dlq_max_payload_bytes`: a larger payload is left out of its dead letter.
    max_payload: usize,
}

/// A payload the DLQ producer could never send (over the broker's message size) would be
/// retried until `retry.dlq` gave up and then again after every restart: a poison pill. It is
/// left out instead; the dead letter keeps its headers, the source coordinates to fetch the
/// original from, and `dlq.payload_omitted_bytes` with its size.
fn fitting_payload(payload: Vec<u8>, max: usize) -> (Vec<u8>, Option<usize>) {
    if payload.len() > max {
        (Vec::new(), Some(payload.len()))
    } else {
        (payload, None)
    }
}

impl DeadLetters {
    pub fn new(
        producer: FutureProducer,
        topic: String,
        service: &'static str,
        metrics: Arc<Metrics>,
        max_payload: usize,
    ) -> Self {
        DeadLetters {
            producer,
            topic,
            service,
            metrics,
            max_payload,
        }
    }

    /// Builds the dead letter of `m` and sends it.
    pub fn send(
        &self,
        m: Received,
        schema_id: Option<u32>,
        stage: Stage,
        reasons: &[Invalid],
    ) -> DeadLetter {
        let mut hs = headers(self.service, &m, schema_id, stage, reasons, super::now_ms());
        let (payload, omitted) = fitting_payload(m.payload, self.max_payload);
        if let Some(n) = omitted {
            hs.push(("dlq.payload_omitted_bytes", n.to_string()));
        }
        tracing::warn!(
            topic = %m.topic,
            partition = m.partition,
            offset = m.offset,
            stage = stage.as_str(),
            rules = %hs[1].1,
            reason = %hs[0].1,
            payload_omitted_bytes = omitted,
            "record dead-lettered"
        );
        let mut headers = OwnedHeaders::new_with_capacity(hs.len());
        for (k, v) in &hs {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut d = DeadLetter {
            partition: m.partition,
            key: m.key,
            payload,
            headers,
            stage,
            rule: reasons.first().map(|r| r.rule).unwrap_or("unknown"),
            delivery: None,
        };
        self.enqueue(&mut d);
        d
    }

    fn enqueue(&self, d: &mut DeadLetter) {
        let mut rec: FutureRecord<'_, Vec<u8>, Vec<u8>> = FutureRecord::to(&self.topic)
            .payload(&d.payload)
            .headers(d.headers.clone());
        if let Some(k) = &d.key {
            rec = rec.key(k);
        }
        d.delivery = match self.producer.send_result(rec) {
            Ok(f) => Some(f),
            Err((e, _)) => {
                tracing::warn!(error = %e, "DLQ enqueue failed; retried at flush");
                None
            }
        };
    }

    /// Waits until `until` for the broker to acknowledge every one of `letters`; acknowledged
    /// ones are counted and removed. Otherwise the rest are kept for the next attempt (a
    /// refused one sent again, an unanswered one still awaiting its answer) and the error says
    /// how many are left. The bound keeps a broker that does not answer (a DLQ topic that
    /// does not exist yet: librdkafka waits `message.timeout.ms` for it) from holding the
    /// consumer loop, and with it a stop request and the rebalance callbacks.
    pub async fn confirm(
        &self,
        letters: &mut Vec<DeadLetter>,
        until: Instant,
    ) -> Result<(), DeadLetterError> {
        let mut last = None;
        let mut left = Vec::new();
        for mut d in letters.drain(..) {
            let acked = match d.delivery.as_mut() {
                Some(f) => match tokio::time::timeout_at(until.into(), f).await {
                    Err(_) => Err(NOT_IN_TIME.to_string()),
                    Ok(answer) => {
                        d.delivery = None;
                        match answer {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(e.to_string()),
                            Err(_) => Err("DLQ delivery cancelled".to_string()),
                        }
                    }
                },
                None => Err("DLQ record not enqueued".to_string()),
            };
            match acked {
                Ok(()) => {
                    self.metrics
                        .dlq
                        .with_label_values(&[d.stage.as_str(), d.rule])
                        .inc();
                    self.metrics.events.with_label_values(&["dlq"]).inc();
                }
                Err(e) => {
                    last = Some(e);
                    left.push(d);
                }
            }
        }
        let Some(last) = last else {
            return Ok(());
        };
        for d in left.iter_mut().filter(|d| d.delivery.is_none()) {
            self.enqueue(d);
        }
        let unacknowledged = left.len();
        *letters = left;
        Err(DeadLetterError {
            unacknowledged,
            last,
        })
    }
}

#[cfg(test)]
mod payload_tests {
    #[test]
    fn an_oversized_payload_is_left_out_and_its_size_kept() {
        assert_eq!(super::fitting_payload(vec![1; 10], 10), (vec![1; 10], None));
        assert_eq!(super::fitting_payload(vec![1; 11], 10), (vec![], Some(11)));
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;
    use rdkafka::mocking::MockCluster;
    use std::time::Duration;

    use super::*;

    fn received() -> Received {
        Received {
            topic: "payments.qris.v1".into(),
            partition: 3,
            offset: 77,
            key: Some(b"ID1".to_vec()),
            payload: vec![0, 0, 0, 0, 4, 1],
        }
    }

    fn reasons() -> Vec<Invalid> {
        vec![
            Invalid::new("amount_not_positive", "amount -5 is not positive"),
            Invalid::new("region_unknown", "kecamatan 36.99.99 is not in Banten"),
        ]
    }

    #[test]
    fn headers_name_the_source_rules_and_reason() {
        let h = headers(
            "qris-consumer",
            &received(),
            Some(4),
            Stage::Validate,
            &reasons(),
            1_700_000_000_000,
        );
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("dlq.rule"), Some("amount_not_positive,region_unknown"));
        assert_eq!(
            get("dlq.reason"),
            Some(
                "amount_not_positive: amount -5 is not positive; region_unknown: kecamatan 36.99.99 is not in Banten"
            )
        );
        assert_eq!(get("dlq.stage"), Some("validate"));
        assert_eq!(get("dlq.service"), Some("qris-consumer"));
        assert_eq!(get("dlq.source.topic"), Some("payments.qris.v1"));
        assert_eq!(get("dlq.source.partition"), Some("3"));
        assert_eq!(get("dlq.source.offset"), Some("77"));
        assert_eq!(get("dlq.schema_id"), Some("4"));
        assert_eq!(get("dlq.timestamp_ms"), Some("1700000000000"));
        let undecodable = headers("s", &received(), None, Stage::Decode, &reasons(), 0);
        assert!(undecodable.contains(&("dlq.schema_id", String::new())));
    }

    fn letters(producer: FutureProducer, n: usize) -> (DeadLetters, Vec<DeadLetter>) {
        let metrics = Arc::new(Metrics::new("test"));
        let dl = DeadLetters::new(producer, "payments.dlq".into(), "test", metrics, 1 << 20);
        let sent = (0..n)
            .map(|_| dl.send(received(), Some(4), Stage::Validate, &reasons()))
            .collect();
        (dl, sent)
    }

    #[tokio::test]
    async fn confirm_waits_for_every_ack_and_counts_them() {
        let cluster = dlq_cluster();
        let producer = producer_of(&cluster, "30000");
        let (dl, mut sent) = letters(producer, 3);
        dl.confirm(&mut sent, in_secs(10)).await.unwrap();
        assert!(sent.is_empty());
        assert_counted(&dl, 3);
    }

    #[tokio::test]
    async fn unacknowledged_letters_stay_and_are_sent_again() {
        // No broker answers: every delivery times out.
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "200")
            .create()
            .unwrap();
        let (dl, mut sent) = letters(producer, 2);
        let e = dl.confirm(&mut sent, in_secs(20)).await.unwrap_err();
        assert_ne!(
            e.last, NOT_IN_TIME,
            "refused by librdkafka, not timed out here"
        );
        assert_eq!(e.unacknowledged, 2);
        assert_eq!(sent.len(), 2, "kept for the next attempt");
        assert!(sent.iter().all(|d| d.delivery.is_some()), "re-sent");
        assert!(!dl.metrics.render().contains("umkm_dlq_total{"));
    }

    #[tokio::test]
    async fn a_broker_that_does_not_answer_holds_the_caller_only_until_the_bound() {
        let cluster = dlq_cluster();
        let producer = producer_of(&cluster, "60000");
        cluster.broker_down(1).unwrap();
        let (dl, mut sent) = letters(producer, 2);
        let started = Instant::now();
        let e = dl
            .confirm(&mut sent, Instant::now() + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!((e.unacknowledged, e.last.as_str()), (2, NOT_IN_TIME));
        assert_eq!(sent.len(), 2, "kept for the next attempt");
        // The broker comes back: the same deliveries are answered, each once.
        cluster.broker_up(1).unwrap();
        dl.confirm(&mut sent, in_secs(30)).await.unwrap();
        assert!(sent.is_empty());
        assert_counted(&dl, 2);
    }

    /// A mock broker holding the DLQ topic.
    fn dlq_cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("payments.dlq", 1, 1).unwrap();
        cluster
    }

    fn producer_of<C: rdkafka::ClientContext>(
        cluster: &MockCluster<'_, C>,
        message_timeout_ms: &str,
    ) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.timeout.ms", message_timeout_ms)
            .create()
            .unwrap()
    }

    /// The dead letters counted as acknowledged, by their rule.
    fn assert_counted(dl: &DeadLetters, n: u32) {
        let page = dl.metrics.render();
        let line = format!(
            r#"umkm_dlq_total{{rule="amount_not_positive",stage="validate",service="test"}} {n}"#
        );
        assert!(page.contains(&line), "{page}");
    }

    fn in_secs(s: u64) -> Instant {
        Instant::now() + Duration::from_secs(s)
    }
}
