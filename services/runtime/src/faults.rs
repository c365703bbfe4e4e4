//! Fault injection at named points of the pipeline, for the restart tests and the chaos checker
//! (`tools/chaos`). Off unless `UMKM_FAULT` is set (README "Configuration reference", testing
//! only): a comma-separated list of `<point>@<n>`, each firing at the n-th time the pipeline
//! reaches the point.

use std::collections::BTreeMap;

/// Where the pipeline can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    /// After an insert succeeded, before its offsets are committed: abort.
    AfterInsert,
    /// After the lookup, right before the insert is sent: the process stops itself (SIGSTOP),
    /// holding its batch, until someone sends SIGCONT (a zombie once the group moved on).
    BeforeInsertStop,
    /// After a dead letter was handed to the producer, before it is acknowledged: abort.
    DlqWrite,
    /// While applying a rebalance (revocation or assignment): abort.
    Rebalance,
}

impl Point {
    const ALL: [(Point, &'static str); 4] = [
        (Point::AfterInsert, "after-insert"),
        (Point::BeforeInsertStop, "before-insert-stop"),
        (Point::DlqWrite, "dlq-write"),
        (Point::Rebalance, "rebalance"),
    ];

    pub fn name(self) -> &'static str {
        Point::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
            .unwrap_or_default()
    }
}

/// The armed points and how often each was reached.
#[derive(Debug, Default)]
pub struct Faults {
    armed: BTreeMap<Point, u64>,
    reached: BTreeMap<Point, u64>,
}

impl Faults {
    /// Parses `UMKM_FAULT`'s value.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut armed = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, n) = item
                .split_once('@')
                .ok_or_else(|| format!("UMKM_FAULT: {item:?} is not <point>@<n>"))?;
            let point = Point::ALL
                .iter()
                .find(|(_, pn)| *pn == name)
                .map(|(p, _)| *p)
                .ok_or_else(|| {
                    let names: Vec<&str> = Point::ALL.iter().map(|(_, n)| *n).collect();
                    format!("UMKM_FAULT: unknown point {name:?} (one of {names:?})")
                })?;
            let n: u64 = n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("UMKM_FAULT: {item:?}: n must be a positive integer"))?;
            armed.insert(point, n);
        }
        Ok(Faults {
            armed,
            reached: BTreeMap::new(),
        })
    }

    /// From the environment; a malformed value is an error (the service refuses to start).
    pub fn from_env() -> Result<Faults, String> {
        match std::env::var("UMKM_FAULT") {
            Ok(spec) => Faults::parse(&spec),
            Err(_) => Ok(Faults::default()),
        }
    }

    /// Counts reaching `point`; true when it must fire now.
    pub fn reached(&mut self, point: Point) -> bool {
        let Some(&at) = self.armed.get(&point) else {
            return false;
        };
        let n = self.reached.entry(point).or_default();
        *n += 1;
        *n == at
    }

    /// Fires `point`: aborts like kill -9, or stops the process until SIGCONT.
    pub fn fire(point: Point) {
        tracing::error!(point = point.name(), "UMKM_FAULT reached");
        if point == Point::BeforeInsertStop {
            let pid = std::process::id().to_string();
            // Returns once someone sends SIGCONT.
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &pid])
                .status();
            tracing::warn!("UMKM_FAULT: continued after SIGSTOP");
        } else {
            std::process::abort();
        }
    }

    /// [`Faults::reached`] then [`Faults::fire`].
    pub fn at(&mut self, point: Point) {
        if self.reached(point) {
            Faults::fire(point);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_point_fires_once_at_its_count() {
        let mut f = Faults::parse("after-insert@3, rebalance@1").unwrap();
        assert!(!f.reached(Point::AfterInsert));
        assert!(!f.reached(Point::AfterInsert));
        assert!(f.reached(Point::AfterInsert));
        assert!(!f.reached(Point::AfterInsert));
        assert!(f.reached(Point::Rebalance));
        assert!(!f.reached(Point::DlqWrite));
        assert!(!Faults::default().reached(Point::AfterInsert));
    }

    #[test]
    fn a_malformed_spec_is_refused_with_the_reason() {
        assert!(
            Faults::parse("after-insert")
                .unwrap_err()
                .contains("<point>@<n>")
        );
        assert!(
            Faults::parse("sideways@1")
                .unwrap_err()
                .contains("unknown point")
        );
        assert!(
            Faults::parse("dlq-write@0")
                .unwrap_err()
                .contains("positive")
        );
        assert!(Faults::parse("").unwrap().armed.is_empty());
        for (p, name) in Point::ALL {
            assert_eq!(p.name(), name);
            assert!(Faults::parse(&format!("{name}@2")).is_ok());
        }
    }
}
