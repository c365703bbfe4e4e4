//! One dead letter as read from a DLQ topic: where it is on the DLQ, its original key and
//! value, and its headers (README "Dead-letter topic").

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Partition and offset on the DLQ topic.
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// The rules that failed (`dlq.rule`, comma-separated).
    pub fn rules(&self) -> impl Iterator<Item = &str> {
        self.header("dlq.rule").split(',').filter(|r| !r.is_empty())
    }

    /// The first failed rule: the one the metrics count (`umkm_dlq_total{rule}`).
    pub fn first_rule(&self) -> &str {
        self.rules().next().unwrap_or("")
    }

    pub fn service(&self) -> &str {
        self.header("dlq.service")
    }

    pub fn source_topic(&self) -> &str {
        self.header("dlq.source.topic")
    }

    pub fn source_partition(&self) -> Option<i32> {
        self.header("dlq.source.partition").parse().ok()
    }

    pub fn source_offset(&self) -> Option<i64> {
        self.header("dlq.source.offset").parse().ok()
    }

    /// When it was dead-lettered (Unix ms).
    pub fn dead_lettered_ms(&self) -> Option<i64> {
        self.header("dlq.timestamp_ms").parse().ok()
    }

    /// Whether the headers say where the record came from: only such a record can be replayed.
    pub fn has_source(&self) -> bool {
        !self.source_topic().is_empty()
    }
}

#[cfg(test)]
pub fn sample(offset: i64, rule: &str, source_offset: i64) -> DeadLetter {
    let h = [
        ("dlq.rule", rule.to_string()),
        ("dlq.reason", format!("{rule}: something")),
        ("dlq.stage", "validate".to_string()),
        ("dlq.service", "qris-consumer".to_string()),
        ("dlq.source.topic", "payments.qris.v1".to_string()),
        ("dlq.source.partition", "1".to_string()),
        ("dlq.source.offset", source_offset.to_string()),
        ("dlq.schema_id", "4".to_string()),
        (
            "dlq.timestamp_ms",
            (1_764_000_000_000 + offset * 1000).to_string(),
        ),
    ];
    DeadLetter {
        partition: 0,
        offset,
        key: Some(b"ID1020000000001".to_vec()),
        value: vec![0, 0, 0, 0, 4, 2],
        headers: h.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_as_fields() {
        let mut r = sample(7, "region_unknown,amount_format", 42);
        assert_eq!(r.first_rule(), "region_unknown");
        assert_eq!(r.rules().count(), 2);
        assert_eq!(
            (r.source_partition(), r.source_offset()),
            (Some(1), Some(42))
        );
        assert_eq!(r.dead_lettered_ms(), Some(1_764_000_007_000));
        assert!(r.has_source());
        r.headers.clear();
        assert_eq!(r.first_rule(), "");
        assert!(!r.has_source());
        assert_eq!(r.source_offset(), None);
    }
}
