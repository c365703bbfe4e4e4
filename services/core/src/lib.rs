//! Pure core of umkm-pulse. Everything here is deterministic and testable without a broker or a
//! database: the Confluent wire format, Avro decoding with a pinned reader schema, shared field checks,
//! reference data (regions, MCC → sector, KBLI → sector), the dedup keys,
//! the batching policy, ClickHouse error classification, migration rendering and the rollups'
//! definition and repair SQL.

pub mod adoption;
pub mod amount;
pub mod avro;
pub mod batch;
pub mod clickhouse_error;
pub mod cluster;
pub mod dedup;
pub mod fields;
pub mod migrations;
pub mod payment;
pub mod pii;
pub mod reference;
pub mod rollups;
pub mod time;
pub mod wire;

/// One reason a record was rejected. `rule` is a stable machine-readable name (used in the DLQ
/// header `dlq.rule` and in metrics), `message` is for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub rule: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

/// Joins several rejection reasons into one line for the DLQ `dlq.reason` header.
pub fn join_reasons(reasons: &[Invalid]) -> String {
    reasons
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
