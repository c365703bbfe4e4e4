//! What a consumer service provides: its Avro contract, its mapping to a ClickHouse row and its
//! table. Everything else (consume, decode, DLQ, dedup, batch, insert, commit, metrics, health,
//! shutdown) is the shared pipeline.

use serde::de::DeserializeOwned;
use umkm_core::Invalid;
use umkm_core::dedup::Key;
use umkm_core::fields::Shared;

use crate::config::Validated;

/// Where a message came from, for mapping and provenance columns.
#[derive(Debug, Clone, Copy)]
pub struct MessageMeta<'a> {
    pub topic: &'a Shared,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub schema_id: u32,
    /// Processing time, Unix epoch ms (for event-time plausibility rules).
    pub now_ms: i64,
    /// Insert time, Unix epoch seconds.
    pub now_secs: u32,
}

/// A valid, normalised event ready for dedup and insert.
#[derive(Debug, Clone)]
pub struct Processed<R> {
    /// The business dedup key; the row's `dedup_key` column must hold `key.hex()`.
    pub key: Key,
    /// The same fact's key on the neighbouring WIB date, with that date, for a report within
    /// the midnight skew of a WIB midnight (`umkm_core::payment::ReportKeys::alt`).
    pub alt: Option<(Key, u16)>,
    /// Within one batch the highest priority report of a key wins.
    pub priority: u8,
    /// The row's `event_date` (days since epoch): the lookup uses it to hit the primary index.
    pub event_date: u16,
    pub row: R,
}

/// One event family. Its table must have `dedup_key String` and `event_date Date` columns with
/// `(event_date, dedup_key)` as the sorting-key prefix.
pub trait Family: Sized + Send + Sync + 'static {
    type Event: DeserializeOwned + Send;
    type Row: clickhouse::RowOwned + clickhouse::RowWrite + serde::Serialize + Send + Sync + Clone;
    /// Service name: metrics `service` label, client ids, query ids.
    const SERVICE: &'static str;
    const TABLE: &'static str;
    const DEFAULT_TOPIC: &'static str;
    const DEFAULT_GROUP: &'static str;
    /// Dead-letter topic; the payment families share `payments.dlq` (records carry their
    /// service and source topic in headers).
    const DEFAULT_DLQ_TOPIC: &'static str = "payments.dlq";
    /// Whether equal dedup keys always have equal `event_date`s (true when the date is part of
    /// the key, as for payments). Then the ClickHouse dedup lookup reads only the batch's dates
    /// on the primary index; otherwise it checks the key at every date (fine for small tables
    /// such as the merchant registry).
    const KEY_DETERMINES_DATE: bool = true;
    /// The pinned reader schema (Avro JSON).
    const READER_SCHEMA: &'static str;

    fn build(settings: &Validated) -> Result<Self, String>;

    /// Validates and normalises one event; on failure, every rule that failed.
    fn process(
        &self,
        event: Self::Event,
        meta: &MessageMeta<'_>,
    ) -> Result<Processed<Self::Row>, Vec<Invalid>>;
}
