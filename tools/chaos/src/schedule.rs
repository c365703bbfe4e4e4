//! The seeded fault schedule: which fault, at which consumer, one after the other. Faults do not
//! overlap, and each one lasts long enough for the group to notice (the session timeout), so a
//! schedule is the same on every machine for the same seed and a failure reproduces from the
//! seed printed with it.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every kind of fault, with the name `--faults` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// kill -9 of a consumer at a random moment, restarted after the session timeout.
    Kill,
    /// A consumer restarted to die at a named crash point (`UMKM_FAULT`): after an insert and
    /// before its commit, after a dead letter was sent and before its ack, or in a rebalance.
    CrashAfterInsert,
    CrashDuringDlqWrite,
    CrashInRebalance,
    /// SIGSTOP of a consumer at a random moment, past the session timeout, then SIGCONT.
    Freeze,
    /// A consumer that stops itself holding a looked-up batch (`before-insert-stop`), frozen
    /// past the session timeout, then continued: a zombie.
    Zombie,
    /// A consumer joins, or one leaves (SIGTERM).
    Churn,
    /// kill -9 of ClickHouse, started again a few seconds later.
    ClickHouseKill,
    /// SIGSTOP of ClickHouse longer than the insert timeout, then SIGCONT.
    ClickHouseFreeze,
    /// The DLQ topic refusing writes: absent at the start of the run, created 10-40 s in.
    DlqRefusal,
    /// The broker stopped and started again on its persistent (SQLite) storage.
    BrokerRestart,
}

pub const ALL: [Kind; 11] = [
    Kind::Kill,
    Kind::CrashAfterInsert,
    Kind::CrashDuringDlqWrite,
    Kind::CrashInRebalance,
    Kind::Freeze,
    Kind::Zombie,
    Kind::Churn,
    Kind::ClickHouseKill,
    Kind::ClickHouseFreeze,
    Kind::DlqRefusal,
    Kind::BrokerRestart,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::CrashAfterInsert => "crash-after-insert",
            Kind::CrashDuringDlqWrite => "crash-during-dlq-write",
            Kind::CrashInRebalance => "crash-in-rebalance",
            Kind::Freeze => "freeze",
            Kind::Zombie => "zombie",
            Kind::Churn => "churn",
            Kind::ClickHouseKill => "clickhouse-kill",
            Kind::ClickHouseFreeze => "clickhouse-freeze",
            Kind::DlqRefusal => "dlq-refusal",
            Kind::BrokerRestart => "broker-restart",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the fault is aimed at one consumer.
    pub fn targets_a_consumer(self) -> bool {
        !matches!(
            self,
            Kind::ClickHouseKill | Kind::ClickHouseFreeze | Kind::DlqRefusal | Kind::BrokerRestart
        )
    }

    /// The crash point `UMKM_FAULT` names, for the crash kinds.
    pub fn crash_point(self) -> Option<&'static str> {
        match self {
            Kind::CrashAfterInsert => Some("after-insert"),
            Kind::CrashDuringDlqWrite => Some("dlq-write"),
            Kind::CrashInRebalance => Some("rebalance"),
            Kind::Zombie => Some("before-insert-stop"),
            _ => None,
        }
    }
}

/// One scheduled fault: after waiting `gap_ms` since the previous one healed, `kind` at
/// consumer slot `slot` (when it targets one), its crash point reached for the `nth` time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub index: usize,
    pub kind: Kind,
    pub slot: usize,
    pub nth: u32,
    pub gap_ms: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} +{}ms {}", self.index, self.gap_ms, self.kind.name())?;
        if self.kind.targets_a_consumer() {
            write!(f, " slot={}", self.slot)?;
        }
        if self.kind.crash_point().is_some() {
            write!(f, " nth={}", self.nth)?;
        }
        Ok(())
    }
}

/// `count` faults drawn from `kinds` with `seed`, aimed at slots `0..slots`, each after a gap
/// of `gap_ms` (min, max).
pub fn plan(
    seed: u64,
    count: usize,
    kinds: &[Kind],
    slots: usize,
    gap_ms: (u64, u64),
) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    // The DLQ refusal is the run's start, not a draw (umkm-chaos's main says why).
    let kinds: Vec<Kind> = kinds
        .iter()
        .copied()
        .filter(|k| *k != Kind::DlqRefusal)
        .collect();
    if kinds.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|index| {
            let kind = kinds[rng.random_range(0..kinds.len())];
            Fault {
                index,
                kind,
                slot: rng.random_range(0..slots.max(1)),
                nth: rng.random_range(1..=3),
                gap_ms: rng.random_range(gap_ms.0..=gap_ms.1.max(gap_ms.0)),
            }
        })
        .collect()
}

/// Parses `--faults`: `all` or a comma-separated list of kind names.
pub fn parse_kinds(s: &str) -> Result<Vec<Kind>, String> {
    if s == "all" {
        return Ok(ALL.to_vec());
    }
    let kinds: Vec<Kind> = s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|n| {
            Kind::parse(n).ok_or_else(|| {
                let names: Vec<&str> = ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {n:?}; known: all, {}", names.join(", "))
            })
        })
        .collect::<Result<_, _>>()?;
    if kinds.is_empty() {
        return Err("--faults names no fault".into());
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a = plan(7, 50, &ALL, 3, (500, 3000));
        assert_eq!(a, plan(7, 50, &ALL, 3, (500, 3000)));
        assert_ne!(a, plan(8, 50, &ALL, 3, (500, 3000)));
        assert!(a.iter().all(|f| f.slot < 3 && (1..=3).contains(&f.nth)));
        assert!(a.iter().all(|f| (500..=3000).contains(&f.gap_ms)));
        assert!(a.iter().all(|f| f.kind != Kind::DlqRefusal));
        // 50 draws from 10 kinds: most kinds appear.
        let kinds: std::collections::BTreeSet<Kind> = a.iter().map(|f| f.kind).collect();
        assert!(kinds.len() >= 8, "{kinds:?}");
    }

    #[test]
    fn kinds_parse_by_name_and_unknown_ones_are_refused() {
        assert_eq!(parse_kinds("all").unwrap().len(), ALL.len());
        assert_eq!(
            parse_kinds("kill, zombie").unwrap(),
            [Kind::Kill, Kind::Zombie]
        );
        assert!(
            parse_kinds("kill,nope")
                .unwrap_err()
                .contains("unknown fault \"nope\"")
        );
        assert!(parse_kinds("").is_err());
        for k in ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
    }

    #[test]
    fn a_fault_prints_what_reproduces_it() {
        let f = Fault {
            index: 3,
            kind: Kind::Zombie,
            slot: 1,
            nth: 2,
            gap_ms: 900,
        };
        assert_eq!(f.to_string(), "#3 +900ms zombie slot=1 nth=2");
        let g = Fault {
            kind: Kind::BrokerRestart,
            ..f
        };
        assert_eq!(g.to_string(), "#3 +900ms broker-restart");
    }
}
