//! Batch policy: flush on rows, bytes or age, whichever comes first.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    Rows,
    Bytes,
    Age,
    Shutdown,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Rows => "rows",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

/// Accounting for the batch being built: how many messages and bytes, since when.
#[derive(Debug, Default, Clone)]
pub struct BatchMeter {
    pub rows: usize,
    pub bytes: usize,
    pub opened: Option<Instant>,
}

impl BatchMeter {
    /// Counts one consumed message (every message counts, good or bad: the batch also holds
    /// offsets that can only be committed with it).
    pub fn add(&mut self, bytes: usize, now: Instant) {
        self.rows += 1;
        self.bytes += bytes;
        self.opened.get_or_insert(now);
    }

    pub fn is_empty(&self) -> bool {
        self.opened.is_none()
    }

    pub fn due(&self, p: &BatchPolicy, now: Instant) -> Option<FlushReason> {
        let opened = self.opened?;
        if self.rows >= p.max_rows {
            Some(FlushReason::Rows)
        } else if self.bytes >= p.max_bytes {
            Some(FlushReason::Bytes)
        } else if now.duration_since(opened) >= p.max_age {
            Some(FlushReason::Age)
        } else {
            None
        }
    }

    /// When the age limit will be reached, if a batch is open.
    pub fn deadline(&self, p: &BatchPolicy) -> Option<Instant> {
        self.opened.map(|o| o + p.max_age)
    }

    /// Adds `other` (a later batch) to this one: counts add up, the older opening time stays.
    pub fn merge(&mut self, other: &BatchMeter) {
        self.rows += other.rows;
        self.bytes += other.bytes;
        self.opened = match (self.opened, other.opened) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    pub fn reset(&mut self) {
        *self = BatchMeter::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whichever_comes_first() {
        let p = BatchPolicy {
            max_rows: 3,
            max_bytes: 100,
            max_age: Duration::from_secs(2),
        };
        let t0 = Instant::now();
        let mut m = BatchMeter::default();
        assert_eq!(m.due(&p, t0), None);
        assert_eq!(m.deadline(&p), None);
        m.add(10, t0);
        m.add(10, t0 + Duration::from_millis(500));
        assert_eq!(m.due(&p, t0 + Duration::from_secs(1)), None);
        assert_eq!(m.deadline(&p), Some(t0 + Duration::from_secs(2)));
        assert_eq!(
            m.due(&p, t0 + Duration::from_secs(2)),
            Some(FlushReason::Age)
        );
        m.add(10, t0);
        assert_eq!(m.due(&p, t0), Some(FlushReason::Rows));
        m.reset();
        m.add(150, t0);
        assert_eq!(m.due(&p, t0), Some(FlushReason::Bytes));
    }
}
