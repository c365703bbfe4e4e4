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

use crate::Invalid;
use crate::amount::{self, Rupiah};
use crate::fields::all_digits;
use crate::reference::{self, Region};
use crate::time::EventTime;

/// The fields every payment contract carries and checks the same way.
#[derive(Debug, Clone, Copy)]
pub struct CommonFields<'a> {
    pub mcc: &'a str,
    pub merchant_name: &'a str,
    pub region_code: &'a str,
    pub amount: &'a str,
    pub currency: &'a str,
    pub event_time_ms: i64,
}

/// What the common checks produce for the row.
#[derive(Debug, Clone)]
pub struct CommonChecked {
    pub region: Region,
    pub amount: Rupiah,
    pub time: EventTime,
}

/// The rules shared by the payment families: MCC (4 digits), merchant name (non-empty),
/// region (Kemendagri, Banten codes in the reference), amount (> 0, ≤ 2 decimals), currency
/// (IDR) and event time (plausible). Every failure is pushed to `bad`; the parsed values are
/// returned when all of these pass.
pub fn check_common(
    f: &CommonFields<'_>,
    now_ms: i64,
    bad: &mut Vec<Invalid>,
) -> Option<CommonChecked> {
    if !(f.mcc.len() == 4 && all_digits(f.mcc)) {
        bad.push(Invalid::new(
            "mcc_format",
            format!("mcc {:?} is not 4 digits", f.mcc),
        ));
    }
    if f.merchant_name.trim().is_empty() {
        bad.push(Invalid::new("merchant_name", "merchant_name is empty"));
    }
    let region = reference::check_region(f.region_code).map_err(|i| bad.push(i));
    let amount = amount::parse_idr(f.amount).map_err(|i| bad.push(i));
    if !matches!(f.currency.trim(), "IDR" | "360") {
        bad.push(Invalid::new(
            "currency",
            format!("currency {:?} is not IDR (360)", f.currency),
        ));
    }
    let time = EventTime::check(f.event_time_ms, now_ms).map_err(|i| bad.push(i));
    match (region, amount, time) {
        (Ok(region), Ok(amount), Ok(time)) => Some(CommonChecked {
            region,
            amount,
            time,
        }),
        _ => None,
    }
}
