//! Putting dead letters back on their source topic: the original key and value, so the normal
//! pipeline takes them again and its dedup keeps the result exact however often a record is
//! replayed; and `replay.*` headers that name the replay and where the record sat on the DLQ.

use std::time::Duration;

use crate::record::DeadLetter;

/// The headers a replayed record carries (docs/operations.md "The dead-letter topics").
pub fn headers(
    r: &DeadLetter,
    dlq_topic: &str,
    replay_id: &str,
    now_ms: i64,
) -> Vec<(&'static str, String)> {
    vec![
        ("replay.id", replay_id.to_string()),
        ("replay.at_ms", now_ms.to_string()),
        ("replay.dlq.topic", dlq_topic.to_string()),
        ("replay.dlq.partition", r.partition.to_string()),
        ("replay.dlq.offset", r.offset.to_string()),
        ("replay.dlq.rule", r.header("dlq.rule").to_string()),
        ("replay.dlq.service", r.service().to_string()),
    ]
}

/// Paces sending at `rate` records per second: how long to wait before record `n` (0-based)
/// when `elapsed` has passed since the first.
pub fn wait_before(n: u64, rate: Option<f64>, elapsed: Duration) -> Duration {
    match rate {
        Some(r) if r > 0.0 => Duration::from_secs_f64(n as f64 / r).saturating_sub(elapsed),
        _ => Duration::ZERO,
    }
}

/// One progress line with its bar: `[#####...............] replayed 1200 of 5000 (24%), 600/s`.
pub fn progress_line(done: u64, total: u64, elapsed: Duration) -> String {
    let pct = (done * 100).checked_div(total).unwrap_or(100).min(100);
    let filled = (pct / 5) as usize;
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    format!(
        "[{}{}] replayed {done} of {total} ({pct}%), {rate:.0}/s",
        "#".repeat(filled),
        ".".repeat(20 - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::sample;

    #[test]
    fn replay_headers_name_the_replay_and_the_dlq_coordinates() {
        let r = sample(12, "region_unknown", 42);
        let h = headers(&r, "payments.dlq", "fix-36.03.34", 1_764_600_000_000);
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("replay.id"), Some("fix-36.03.34"));
        assert_eq!(get("replay.dlq.topic"), Some("payments.dlq"));
        assert_eq!(get("replay.dlq.partition"), Some("0"));
        assert_eq!(get("replay.dlq.offset"), Some("12"));
        assert_eq!(get("replay.dlq.rule"), Some("region_unknown"));
        assert_eq!(get("replay.at_ms"), Some("1764600000000"));
    }

    #[test]
    fn pacing_and_progress() {
        let s = Duration::from_secs;
        assert_eq!(wait_before(0, Some(100.0), s(0)), s(0));
        assert_eq!(
            wait_before(100, Some(100.0), Duration::from_millis(400)),
            Duration::from_millis(600)
        );
        assert_eq!(wait_before(100, Some(100.0), s(2)), s(0), "behind: no wait");
        assert_eq!(wait_before(5_000, None, s(0)), s(0));
        assert_eq!(
            progress_line(1200, 5000, s(2)),
            "[####................] replayed 1200 of 5000 (24%), 600/s"
        );
        assert_eq!(
            progress_line(0, 0, s(0)),
            "[####################] replayed 0 of 0 (100%), 0/s"
        );
    }
}
