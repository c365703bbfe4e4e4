//! What every payment family shares: the normalised status vocabulary.

use serde::{Deserialize, Serialize};

/// Normalised payment status (SNAP latestTransactionStatus 00 → SUCCESS, 04 → REFUNDED,
/// 05 → CANCELLED, 06 → FAILED). The Avro enum `PaymentStatus` of every payment contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Success,
    Refunded,
    Cancelled,
    Failed,
}

impl PaymentStatus {
    /// The `status` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Success => "success",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::Failed => "failed",
        }
    }
}
