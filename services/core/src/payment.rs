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
use crate::dedup::Key;
use crate::fields::all_digits;
use crate::reference::{Region, Regions};
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
    regions: &Regions,
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
    let region = regions.check(f.region_code).map_err(|i| bad.push(i));
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

/// What a refund or cancellation report says about the payment it undoes (contract revision 2,
/// README "Refunds and cancellations"). All optional: a revision-1 writer sends none of them.
#[derive(Debug, Clone, Copy, Default)]
pub struct UndoFields<'a> {
    /// The original payment's own reference in the family's identity (QRIS `original_rrn`,
    /// non-cash `original_reference_number`); without it the report's own reference is taken
    /// as the payment's, as revision 1 did.
    pub original_reference: Option<&'a str>,
    pub original_event_time: Option<i64>,
    pub refund_reference: Option<&'a str>,
    pub refund_amount: Option<&'a str>,
}

/// What the undo checks produce for the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UndoChecked {
    /// The amount this row stands for: the payment's amount, except for a partial refund.
    pub fact_amount: Rupiah,
}

fn present(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The refund rules: refund fields only on refunds and cancellations (`undo_fields_on_payment`),
/// a refunded amount only on refunds (`refund_amount_status`), `0 < refund_amount ≤ amount`
/// (`refund_amount_format`, `refund_amount_not_positive`, `refund_amount_exceeds`), a partial
/// refund carries its own `refund_reference` (`refund_reference_missing`: several partial
/// refunds of one payment are told apart by it), and the original payment happened before the
/// refund (`original_time_after_refund`, within the midnight skew).
pub fn check_undo(
    status: PaymentStatus,
    amount: Option<Rupiah>,
    event_time_ms: i64,
    f: &UndoFields<'_>,
    skew_ms: i64,
    bad: &mut Vec<Invalid>,
) -> Option<UndoChecked> {
    let undo = matches!(status, PaymentStatus::Refunded | PaymentStatus::Cancelled);
    let any = present(f.original_reference).is_some()
        || f.original_event_time.is_some()
        || present(f.refund_reference).is_some()
        || present(f.refund_amount).is_some();
    if !undo && any {
        bad.push(Invalid::new(
            "undo_fields_on_payment",
            format!(
                "original_*/refund_* fields describe a refund or cancellation, not a {} report",
                status.as_str()
            ),
        ));
        return None;
    }
    let mut fact_amount = amount;
    if let Some(raw) = present(f.refund_amount) {
        if status != PaymentStatus::Refunded {
            bad.push(Invalid::new(
                "refund_amount_status",
                "refund_amount is only for REFUNDED reports (a cancellation undoes the whole payment)",
            ));
        }
        match amount::parse_idr(raw) {
            Ok(r) => {
                if let Some(a) = amount {
                    if r.total_sen() > a.total_sen() {
                        bad.push(Invalid::new(
                            "refund_amount_exceeds",
                            format!("refund_amount {raw:?} exceeds the payment amount"),
                        ));
                    } else if r.total_sen() < a.total_sen() && present(f.refund_reference).is_none()
                    {
                        bad.push(Invalid::new(
                            "refund_reference_missing",
                            "a partial refund must carry refund_reference (it tells several partial refunds of one payment apart)",
                        ));
                    }
                }
                fact_amount = Some(r);
            }
            Err(i) => bad.push(Invalid::new(
                if i.rule == "amount_not_positive" {
                    "refund_amount_not_positive"
                } else {
                    "refund_amount_format"
                },
                format!("refund_{}", i.message),
            )),
        }
    }
    if let Some(ot) = f.original_event_time
        && ot > event_time_ms + skew_ms
    {
        bad.push(Invalid::new(
            "original_time_after_refund",
            format!(
                "original_event_time {ot} ms is after the report's event_time {event_time_ms} ms"
            ),
        ));
    }
    if let Some(r) = present(f.refund_reference)
        && !crate::fields::id_like(r, 64)
    {
        bad.push(Invalid::new(
            "refund_reference_format",
            "refund_reference is not 1-64 of [A-Za-z0-9-_.:/]",
        ));
    }
    Some(UndoChecked {
        fact_amount: fact_amount?,
    })
}

/// The keys of one payment report (README "Deduplication keys").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportKeys {
    /// The payment, whatever its status and date: a refund made weeks later, a cancellation
    /// and every party's report of the payment carry the same one.
    pub payment: Key,
    /// One fact: the payment in one status (for a refund, one refund), on one WIB date.
    pub dedup: Key,
    /// The same fact on the neighbouring WIB date, when the report lies within the midnight
    /// skew of a WIB midnight, with that date (days since epoch).
    pub alt: Option<(Key, u16)>,
}

/// The hash domains of one family's keys, fixed strings so that computing keys allocates
/// nothing for them (the hot path): `<family>-payment-v2` and `<family>-v2`.
#[derive(Debug, Clone, Copy)]
pub struct KeyDomains {
    pub payment: &'static str,
    pub fact: &'static str,
}

/// `identity` is the family's payment identity without a date (e.g. NMID, RRN, amount in sen);
/// `refund_reference` tells several refunds of one payment apart (empty otherwise).
pub fn report_keys(
    domains: KeyDomains,
    identity: &[&str],
    status: PaymentStatus,
    refund_reference: &str,
    time: EventTime,
    skew_ms: i64,
) -> ReportKeys {
    let payment = Key::of(domains.payment, identity);
    let payment_hex = payment.hex_inline();
    let fact = |date: chrono::NaiveDate| {
        let iso = crate::time::iso_date_bytes(date);
        Key::of(
            domains.fact,
            &[
                payment_hex.as_str(),
                status.as_str(),
                refund_reference,
                std::str::from_utf8(&iso).expect("ASCII digits and dashes"),
            ],
        )
    };
    ReportKeys {
        payment,
        dedup: fact(time.wib_date()),
        alt: time
            .midnight_neighbour(skew_ms)
            .map(|d| (fact(d), crate::time::days_since_epoch(d))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undo(f: UndoFields<'_>, status: PaymentStatus) -> (Option<UndoChecked>, Vec<&'static str>) {
        let mut bad = Vec::new();
        let amount = amount::parse_idr("50000").ok();
        let r = check_undo(status, amount, 2_000_000_000_000, &f, 300_000, &mut bad);
        (r, bad.iter().map(|i| i.rule).collect())
    }

    #[test]
    fn refunds_name_their_payment_and_amount() {
        use PaymentStatus::*;
        let (r, bad) = undo(UndoFields::default(), Refunded);
        assert!(bad.is_empty());
        assert_eq!(r.unwrap().fact_amount.whole, 50_000);
        let partial = UndoFields {
            original_reference: Some("000000000001"),
            refund_reference: Some("RF-1"),
            refund_amount: Some("20000.50"),
            original_event_time: Some(1_999_000_000_000),
        };
        let (r, bad) = undo(partial, Refunded);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(r.unwrap().fact_amount.total_sen(), 2_000_050);
        let no_ref = UndoFields {
            refund_reference: None,
            ..partial
        };
        assert_eq!(undo(no_ref, Refunded).1, vec!["refund_reference_missing"]);
        let full_no_ref = UndoFields {
            refund_amount: Some("50000.00"),
            ..no_ref
        };
        assert!(undo(full_no_ref, Refunded).1.is_empty());
        let too_much = UndoFields {
            refund_amount: Some("50000.01"),
            ..partial
        };
        assert_eq!(undo(too_much, Refunded).1, vec!["refund_amount_exceeds"]);
        let zero = UndoFields {
            refund_amount: Some("0"),
            ..partial
        };
        assert_eq!(undo(zero, Refunded).1, vec!["refund_amount_not_positive"]);
        assert_eq!(undo(partial, Cancelled).1, vec!["refund_amount_status"]);
        assert_eq!(undo(partial, Success).1, vec!["undo_fields_on_payment"]);
        assert!(undo(UndoFields::default(), Success).1.is_empty());
        let later = UndoFields {
            original_event_time: Some(2_000_000_300_001),
            ..partial
        };
        assert_eq!(undo(later, Refunded).1, vec!["original_time_after_refund"]);
    }

    const QRIS: KeyDomains = KeyDomains {
        payment: "qris-payment-v2",
        fact: "qris-v2",
    };

    #[test]
    fn the_payment_key_has_no_date_and_the_fact_key_has_one() {
        use PaymentStatus::*;
        let id = ["ID1020000000001", "000000000001", "5000000"];
        let noon = EventTime {
            utc_ms: 1_748_757_600_000, // 2025-06-01 13:00 WIB
        };
        let week_later = EventTime {
            utc_ms: noon.utc_ms + 7 * 86_400_000,
        };
        let pay = report_keys(QRIS, &id, Success, "", noon, 300_000);
        let refund = report_keys(QRIS, &id, Refunded, "", week_later, 300_000);
        assert_eq!(pay.payment, refund.payment);
        assert_ne!(pay.dedup, refund.dedup);
        assert_eq!(pay.alt, None);
        let two = report_keys(QRIS, &id, Refunded, "RF-2", week_later, 300_000);
        assert_ne!(two.dedup, refund.dedup);
        // 23:59:59.3 and 00:00:00.8 WIB: each one's alt is the other's key.
        let before = EventTime {
            utc_ms: 1_748_797_199_300,
        };
        let after = EventTime {
            utc_ms: 1_748_797_200_800,
        };
        let a = report_keys(QRIS, &id, Success, "", before, 300_000);
        let b = report_keys(QRIS, &id, Success, "", after, 300_000);
        assert_ne!(a.dedup, b.dedup);
        assert_eq!(a.alt.map(|x| x.0), Some(b.dedup));
        assert_eq!(b.alt.map(|x| x.0), Some(a.dedup));
        assert_eq!(a.alt.map(|x| x.1), Some(20_241));
        assert_ne!(
            report_keys(
                KeyDomains {
                    payment: "noncash-payment-v2",
                    fact: "noncash-v2"
                },
                &id,
                Success,
                "",
                noon,
                0
            )
            .payment,
            pay.payment
        );
    }
}
