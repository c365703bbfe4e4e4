//! Event time: UTC instant plus the WIB (UTC+7, Asia/Jakarta, no DST) calendar date that Banten
//! reports by.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use crate::Invalid;

pub const WIB_OFFSET_SECS: i64 = 7 * 3600;

/// QRIS launched on 17 Aug 2019: an earlier payment time is a publisher bug.
pub fn earliest_valid_ms() -> i64 {
    1_565_974_800_000 // 2019-08-17T00:00:00+07:00
}

/// How far in the future an event time may be (publisher clock skew).
pub const MAX_FUTURE_SKEW_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    pub utc_ms: i64,
}

impl EventTime {
    pub fn check(utc_ms: i64, now_ms: i64) -> Result<EventTime, Invalid> {
        if utc_ms < earliest_valid_ms() {
            return Err(Invalid::new(
                "event_time_range",
                format!("event_time {utc_ms} ms is before QRIS launch (2019-08-17 WIB)"),
            ));
        }
        if utc_ms > now_ms + MAX_FUTURE_SKEW_MS {
            return Err(Invalid::new(
                "event_time_range",
                format!(
                    "event_time {utc_ms} ms is more than 10 minutes in the future (now {now_ms} ms)"
                ),
            ));
        }
        Ok(EventTime { utc_ms })
    }

    pub fn utc_secs(self) -> u32 {
        // Checked range (2019..now) fits u32 seconds until 2106.
        u32::try_from(self.utc_ms.div_euclid(1000)).unwrap_or(u32::MAX)
    }

    /// The WIB calendar date.
    pub fn wib_date(self) -> NaiveDate {
        let wib = DateTime::<Utc>::from_timestamp_millis(self.utc_ms).unwrap_or_default()
            + Duration::seconds(WIB_OFFSET_SECS);
        wib.date_naive()
    }
}

/// Default bound on how far apart two parties' clocks may report one payment (README
/// "Deduplication keys": reports within this of the same WIB midnight are one payment).
pub const DEFAULT_MIDNIGHT_SKEW_MS: i64 = 5 * 60 * 1000;

const DAY_MS: i64 = 86_400_000;

impl EventTime {
    /// The neighbouring WIB date when this time lies within `skew_ms` of a WIB midnight: the
    /// previous date just after 00:00 WIB, the next one just before. Another party's report of
    /// the same payment may carry that date (its clock differs by up to the skew).
    pub fn midnight_neighbour(self, skew_ms: i64) -> Option<NaiveDate> {
        let into_day = (self.utc_ms + WIB_OFFSET_SECS * 1000).rem_euclid(DAY_MS);
        let date = self.wib_date();
        if into_day < skew_ms {
            date.pred_opt()
        } else if DAY_MS - into_day <= skew_ms {
            date.succ_opt()
        } else {
            None
        }
    }
}

/// 00:00 WIB at the start of a ClickHouse `Date` (days since 1970-01-01), in UTC seconds.
pub fn wib_midnight_utc_secs(days: u16) -> i64 {
    i64::from(days) * 86_400 - WIB_OFFSET_SECS
}

/// Days since 1970-01-01, ClickHouse's `Date` representation.
pub fn days_since_epoch(d: NaiveDate) -> u16 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    u16::try_from((d - epoch).num_days()).unwrap_or(0)
}

pub fn yyyymm(d: NaiveDate) -> u32 {
    d.year() as u32 * 100 + d.month()
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (any day chrono knows, before 1970 too).
pub fn days_of_date(s: &str) -> Option<i64> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((d - epoch).num_days())
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01; the inverse of [`days_of_date`]).
pub fn date_of_days(days: i64) -> String {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    iso_date(epoch + Duration::days(days))
}

/// `YYYY-MM-DD` of a ClickHouse `Date` (days since 1970-01-01).
pub fn date_string(days: u16) -> String {
    date_of_days(i64::from(days))
}

/// `YYYY-MM-DD` (years 0–9999), without chrono's format machinery (it was one of the larger
/// costs of normalising an event).
pub fn iso_date(d: NaiveDate) -> String {
    let b = iso_date_bytes(d);
    std::str::from_utf8(&b)
        .expect("ASCII digits and dashes")
        .to_string()
}

/// [`iso_date`] on the stack, for the key hashes (no allocation per event).
pub fn iso_date_bytes(d: NaiveDate) -> [u8; 10] {
    let (y, m, day) = (d.year().clamp(0, 9999) as u32, d.month(), d.day());
    let digit = |x: u32| b'0' + x as u8;
    [
        digit(y / 1000),
        digit(y / 100 % 10),
        digit(y / 10 % 10),
        digit(y % 10),
        b'-',
        digit(m / 10),
        digit(m % 10),
        b'-',
        digit(day / 10),
        digit(day % 10),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_and_dates_round_trip() {
        assert_eq!(days_of_date("1970-01-01"), Some(0));
        assert_eq!(days_of_date("2026-01-01"), Some(20454));
        assert_eq!(days_of_date("2024-02-29"), Some(19782));
        assert_eq!(days_of_date("2023-02-29"), None);
        assert_eq!(days_of_date("2026-1-1x"), None);
        for d in [0, 19782, 20454, 20821] {
            assert_eq!(days_of_date(&date_of_days(d)), Some(d));
        }
        assert_eq!(date_of_days(20454), "2026-01-01");
    }

    #[test]
    fn iso_date_matches_chrono() {
        for days in [0u16, 1, 59, 365, 11_016, 20_241, 20_454, 29_220, 65_535] {
            let d = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + Duration::days(i64::from(days));
            assert_eq!(iso_date(d), d.format("%Y-%m-%d").to_string(), "{days}");
            assert_eq!(date_string(days), d.format("%Y-%m-%d").to_string());
        }
    }

    #[test]
    fn wib_date_rolls_at_17_utc() {
        // 2025-06-01T16:59:59.999Z = 23:59:59.999 WIB on 1 June
        let t = EventTime {
            utc_ms: 1_748_797_199_999,
        };
        assert_eq!(t.wib_date(), NaiveDate::from_ymd_opt(2025, 6, 1).unwrap());
        // 17:00Z = 00:00 WIB on 2 June
        let t = EventTime {
            utc_ms: 1_748_797_200_000,
        };
        assert_eq!(t.wib_date(), NaiveDate::from_ymd_opt(2025, 6, 2).unwrap());
        assert_eq!(t.utc_secs(), 1_748_797_200);
        assert_eq!(days_since_epoch(t.wib_date()), 20_241);
    }

    #[test]
    fn midnight_neighbour_within_the_skew_only() {
        let midnight = 1_748_797_200_000; // 2025-06-02T00:00:00+07:00
        let skew = 300_000;
        let at = |ms| EventTime { utc_ms: ms };
        let june = |d| NaiveDate::from_ymd_opt(2025, 6, d).unwrap();
        assert_eq!(at(midnight - 1).midnight_neighbour(skew), Some(june(2)));
        assert_eq!(at(midnight - skew).midnight_neighbour(skew), Some(june(2)));
        assert_eq!(at(midnight - skew - 1).midnight_neighbour(skew), None);
        assert_eq!(at(midnight).midnight_neighbour(skew), Some(june(1)));
        assert_eq!(
            at(midnight + skew - 1).midnight_neighbour(skew),
            Some(june(1))
        );
        assert_eq!(at(midnight + skew).midnight_neighbour(skew), None);
        assert_eq!(at(midnight + 43_200_000).midnight_neighbour(skew), None);
        assert_eq!(at(midnight).midnight_neighbour(0), None);
        assert_eq!(
            wib_midnight_utc_secs(days_since_epoch(june(2))),
            midnight / 1000
        );
    }

    #[test]
    fn range() {
        let now = 1_800_000_000_000;
        assert!(EventTime::check(earliest_valid_ms() - 1, now).is_err());
        assert!(EventTime::check(earliest_valid_ms(), now).is_ok());
        assert!(EventTime::check(now + MAX_FUTURE_SKEW_MS, now).is_ok());
        assert_eq!(
            EventTime::check(now + MAX_FUTURE_SKEW_MS + 1, now)
                .unwrap_err()
                .rule,
            "event_time_range"
        );
    }
}
