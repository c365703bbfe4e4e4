//! Counts of dead letters by service, source topic, first rule, stage and WIB day.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::DeadLetter;

/// One group of the summary and how many records it holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Group {
    pub service: String,
    pub source_topic: String,
    /// The first failed rule (what `umkm_dlq_total{rule}` counts).
    pub rule: String,
    pub stage: String,
    /// WIB date on which it was dead-lettered.
    pub day: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub records: usize,
    /// Earliest and latest dead-lettering time, Unix ms.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub groups: Vec<(Group, usize)>,
    /// Records by their first rule, over all groups.
    pub by_rule: BTreeMap<String, usize>,
}

/// The counts as records are read, one at a time ([`Tally::summary`] gives the result).
#[derive(Debug, Default)]
pub struct Tally {
    groups: BTreeMap<Group, usize>,
    summary: Summary,
}

impl Tally {
    pub fn add(&mut self, r: &DeadLetter) {
        let s = &mut self.summary;
        s.records += 1;
        let t = r.dead_lettered_ms();
        if let Some(t) = t {
            s.first_ms = Some(s.first_ms.map_or(t, |f| f.min(t)));
            s.last_ms = Some(s.last_ms.map_or(t, |l| l.max(t)));
        }
        let day = t
            .map(|t| umkm_core::time::date_of_days(wib_day(t)))
            .unwrap_or_default();
        *self
            .groups
            .entry(Group {
                service: r.service().to_string(),
                source_topic: r.source_topic().to_string(),
                rule: r.first_rule().to_string(),
                stage: r.header("dlq.stage").to_string(),
                day,
            })
            .or_default() += 1;
        *s.by_rule.entry(r.first_rule().to_string()).or_default() += 1;
    }

    pub fn summary(self) -> Summary {
        Summary {
            groups: self.groups.into_iter().collect(),
            ..self.summary
        }
    }
}

impl Summary {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a DeadLetter>) -> Summary {
        let mut t = Tally::default();
        for r in records {
            t.add(r);
        }
        t.summary()
    }

    /// The table `umkm-dlq summary` prints.
    pub fn table(&self) -> String {
        let mut out = format!("{} dead letters", self.records);
        if let (Some(a), Some(b)) = (self.first_ms, self.last_ms) {
            out += &format!(", dead-lettered {} to {}", rfc3339(a), rfc3339(b));
        }
        out += "\n\n";
        let head = [
            "service",
            "source topic",
            "rule",
            "stage",
            "WIB day",
            "records",
        ];
        let rows: Vec<[String; 6]> = self
            .groups
            .iter()
            .map(|(g, n)| {
                [
                    g.service.clone(),
                    g.source_topic.clone(),
                    g.rule.clone(),
                    g.stage.clone(),
                    g.day.clone(),
                    n.to_string(),
                ]
            })
            .collect();
        let width = |i: usize| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        };
        let w: Vec<usize> = (0..6).map(width).collect();
        let line = |cells: [&str; 6]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i == 5 {
                    l += &format!("{c:>w$}", w = w[i]);
                } else {
                    l += &format!("{c:<w$}  ", w = w[i]);
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out += &line(head);
        for r in &rows {
            out += &line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
        }
        out += "\nby rule:\n";
        for (rule, n) in &self.by_rule {
            out += &format!("  {rule:<30} {n}\n");
        }
        out
    }
}

/// Days since 1970-01-01 of the WIB date at `ms`.
fn wib_day(ms: i64) -> i64 {
    (ms / 1000 + umkm_core::time::WIB_OFFSET_SECS).div_euclid(86_400)
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::sample;

    #[test]
    fn groups_by_service_topic_rule_stage_and_wib_day() {
        let mut rs = vec![
            sample(1, "region_unknown", 10),
            sample(2, "region_unknown,amount_format", 11),
            sample(3, "amount_not_positive", 12),
        ];
        rs[2]
            .headers
            .insert("dlq.service".into(), "noncash-consumer".into());
        let s = Summary::of(&rs);
        assert_eq!(s.records, 3);
        assert_eq!(
            s.by_rule,
            BTreeMap::from([
                ("amount_not_positive".to_string(), 1),
                ("region_unknown".to_string(), 2)
            ])
        );
        assert_eq!(s.groups.len(), 2);
        // 1_764_000_001_000 ms is 2025-11-24 16:00:01 UTC, 23:00 WIB.
        assert_eq!(s.groups[0].0.day, "2025-11-24");
        assert_eq!(s.first_ms, Some(1_764_000_001_000));
        assert_eq!(s.last_ms, Some(1_764_000_003_000));
        let t = s.table();
        assert!(
            t.starts_with("3 dead letters, dead-lettered 2025-11-24T16:00:01.000Z"),
            "{t}"
        );
        assert!(t.contains("noncash-consumer"), "{t}");
        assert!(t.contains("region_unknown                 2"), "{t}");
        // A day boundary in WIB: 17:00 UTC is the next WIB day.
        assert_eq!(wib_day(1_764_003_600_000), wib_day(1_764_000_001_000) + 1);
    }
}
