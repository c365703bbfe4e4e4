//! Which dead letters a command acts on: every condition given must hold (an empty selection
//! takes every record).

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};

use crate::record::DeadLetter;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Any of the record's rules is one of these.
    pub rules: Vec<String>,
    /// `dlq.reason` contains this text (e.g. the code a reference lacked).
    pub reason: Option<String>,
    pub service: Option<String>,
    pub stage: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    /// Inclusive range of source offsets.
    pub source_offsets: Option<(i64, i64)>,
    /// Dead-lettered at or after / before (Unix ms).
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// DLQ coordinates (partition, offset) listed one per line in a file.
    pub records: Option<BTreeSet<(i32, i64)>>,
}

impl Selection {
    pub fn matches(&self, r: &DeadLetter) -> bool {
        let eq = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        (self.rules.is_empty() || r.rules().any(|x| self.rules.iter().any(|w| w == x)))
            && self
                .reason
                .as_deref()
                .is_none_or(|t| r.header("dlq.reason").contains(t))
            && eq(&self.service, r.service())
            && eq(&self.stage, r.header("dlq.stage"))
            && eq(&self.source_topic, r.source_topic())
            && self
                .source_partition
                .is_none_or(|p| r.source_partition() == Some(p))
            && self
                .source_offsets
                .is_none_or(|(a, b)| r.source_offset().is_some_and(|o| (a..=b).contains(&o)))
            && self
                .since_ms
                .is_none_or(|t| r.dead_lettered_ms().is_some_and(|d| d >= t))
            && self
                .until_ms
                .is_none_or(|t| r.dead_lettered_ms().is_some_and(|d| d < t))
            && self
                .records
                .as_ref()
                .is_none_or(|set| set.contains(&(r.partition, r.offset)))
    }
}

/// `A..B` (inclusive) or a single offset `A`.
pub fn parse_offsets(s: &str) -> Result<(i64, i64)> {
    let parse = |x: &str| {
        x.trim()
            .parse::<i64>()
            .with_context(|| format!("offset {x:?} is not a number"))
    };
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let a = parse(s)?;
            (a, a)
        }
    };
    if a > b {
        bail!("offset range {s:?} is empty");
    }
    Ok((a, b))
}

/// A point in time: RFC 3339 (`2026-12-01T08:00:00+07:00`), a WIB date (`2026-12-01`, its
/// 00:00 WIB), Unix milliseconds, or an age before `now_ms` (`90m`, `6h`, `2d`).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Some(days) = umkm_core::time::days_of_date(s) {
        return Ok((days * 86_400 - umkm_core::time::WIB_OFFSET_SECS) * 1000);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().context("Unix milliseconds");
    }
    let unit = match s.chars().last() {
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => 0,
    };
    match s[..s.len().saturating_sub(1)].parse::<i64>() {
        Ok(n) if unit > 0 && n >= 0 => Ok(now_ms - n * unit),
        _ => bail!(
            "time {s:?}: expected RFC 3339, YYYY-MM-DD (WIB), Unix milliseconds or an age like 90m, 6h, 2d"
        ),
    }
}

/// A file of DLQ coordinates, one `PARTITION:OFFSET` per line (`#` starts a comment).
pub fn parse_records(text: &str) -> Result<BTreeSet<(i32, i64)>> {
    let mut set = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let parsed = l
            .split_once(':')
            .and_then(|(p, o)| Some((p.trim().parse().ok()?, o.trim().parse().ok()?)));
        match parsed {
            Some(po) => {
                set.insert(po);
            }
            None => bail!("line {}: {l:?} is not PARTITION:OFFSET", i + 1),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::sample;

    #[test]
    fn every_condition_must_hold() {
        let r = sample(3, "region_unknown", 42);
        assert!(Selection::default().matches(&r));
        let by = |f: fn(&mut Selection)| {
            let mut s = Selection::default();
            f(&mut s);
            s.matches(&r)
        };
        assert!(by(
            |s| s.rules = vec!["amount_format".into(), "region_unknown".into()]
        ));
        assert!(!by(|s| s.rules = vec!["amount_format".into()]));
        assert!(by(|s| s.reason = Some("something".into())));
        assert!(!by(|s| s.reason = Some("36.03.34".into())));
        assert!(by(|s| s.service = Some("qris-consumer".into())));
        assert!(!by(|s| s.service = Some("noncash-consumer".into())));
        assert!(by(|s| s.stage = Some("validate".into())));
        assert!(by(|s| s.source_topic = Some("payments.qris.v1".into())));
        assert!(by(|s| s.source_partition = Some(1)));
        assert!(!by(|s| s.source_partition = Some(0)));
        assert!(by(|s| s.source_offsets = Some((42, 42))));
        assert!(!by(|s| s.source_offsets = Some((43, 50))));
        assert!(by(|s| s.since_ms = Some(1_764_000_003_000)));
        assert!(!by(|s| s.until_ms = Some(1_764_000_003_000)));
        assert!(by(|s| s.records = Some(BTreeSet::from([(0, 3)]))));
        assert!(!by(|s| s.records = Some(BTreeSet::from([(0, 4)]))));
        let mut both = Selection {
            rules: vec!["region_unknown".into()],
            source_partition: Some(1),
            ..Selection::default()
        };
        assert!(both.matches(&r));
        both.source_partition = Some(2);
        assert!(!both.matches(&r));
    }

    #[test]
    fn offsets_times_and_record_lists_parse() {
        assert_eq!(parse_offsets("10..20").unwrap(), (10, 20));
        assert_eq!(parse_offsets("7").unwrap(), (7, 7));
        assert!(parse_offsets("20..10").is_err());
        assert!(parse_offsets("x").is_err());
        let now = 1_764_570_000_000;
        assert_eq!(parse_time("90m", now).unwrap(), now - 5_400_000);
        assert_eq!(parse_time("2d", now).unwrap(), now - 172_800_000);
        assert_eq!(parse_time("1764000000000", now).unwrap(), 1_764_000_000_000);
        // 2026-12-01 00:00 WIB is 2026-11-30 17:00 UTC.
        let wib = parse_time("2026-12-01", now).unwrap();
        assert_eq!(wib, parse_time("2026-11-30T17:00:00Z", now).unwrap());
        assert_eq!(wib, parse_time("2026-12-01T00:00:00+07:00", now).unwrap());
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("h", now).is_err());
        let set = parse_records("# replay these\n0:12\n 0:15 # and this\n\n2:7\n").unwrap();
        assert_eq!(set, BTreeSet::from([(0, 12), (0, 15), (2, 7)]));
        let e = parse_records("0:1\n0-2\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
