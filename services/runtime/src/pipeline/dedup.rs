//! Dedup of a batch in three stages (README "Delivery guarantees"): within the batch (one
//! winner per key), against the keys this process inserted (the seen cache), and against
//! ClickHouse (the lookup). This part decides; the pipeline does the lookup's IO between
//! [`Dedup::lookup`] and [`Dedup::drop_existing`].

use std::collections::{HashMap, VecDeque};

use umkm_core::dedup::{Key, KeySet, resolve_in_batch};

use super::batch::Event;
use crate::clickhouse::FoundAt;

/// Bounded set of keys known to be in ClickHouse (FIFO eviction).
pub struct SeenCache {
    cap: usize,
    set: KeySet,
    order: VecDeque<Key>,
}

impl SeenCache {
    pub fn new(cap: usize) -> Self {
        SeenCache {
            cap,
            set: KeySet::default(),
            order: VecDeque::new(),
        }
    }

    pub fn contains(&self, k: &Key) -> bool {
        self.set.contains(k)
    }

    pub fn insert(&mut self, k: Key) {
        if self.cap == 0 || !self.set.insert(k) {
            return;
        }
        self.order.push_back(k);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// What to ask ClickHouse about a batch: every key on its date, and for reports near a WIB
/// midnight the neighbouring date's key of the same fact.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lookup {
    pub keys: Vec<(u16, Key)>,
    pub near_midnight: Vec<(u16, Key)>,
}

/// Duplicates dropped per stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub batch: usize,
    pub cache: usize,
}

pub struct Dedup {
    seen: SeenCache,
    /// `dedup.midnight_skew_ms`, rounded up to seconds (event times are stored in seconds).
    skew_s: i64,
}

impl Dedup {
    pub fn new(cache_keys: usize, midnight_skew_ms: i64) -> Self {
        Dedup {
            seen: SeenCache::new(cache_keys),
            skew_s: (midnight_skew_ms + 999) / 1000,
        }
    }

    /// Stages 1 and 2: one winner per key in the batch, then no key this process inserted.
    /// Runs at every attempt: messages that arrived while a retry waited joined the batch and
    /// may repeat a key already held (resolving a resolved set changes nothing).
    pub fn drop_known<R>(&self, events: &mut Vec<Event<R>>) -> Dropped {
        let (winners, batch) = resolve_in_batch(std::mem::take(events));
        *events = winners;
        let before = events.len();
        events.retain(|e| !self.seen.contains(&e.key));
        Dropped {
            batch,
            cache: before - events.len(),
        }
    }

    /// Stage 3, the question.
    pub fn lookup<R>(&self, events: &[Event<R>]) -> Lookup {
        Lookup {
            keys: events.iter().map(|e| (e.row.0, e.key)).collect(),
            near_midnight: events
                .iter()
                .filter_map(|e| e.alt.map(|(k, d)| (d, k)))
                .collect(),
        }
    }

    /// Stage 3, the answer: drops the events whose key ClickHouse has (`existing`), and those
    /// near a WIB midnight whose neighbouring date's fact ClickHouse has (`near_found`: key →
    /// the found row's `event_time` in UTC seconds), but only when that row, too, lies within
    /// the skew of that midnight (README "Deduplication keys"). Returns how many it dropped;
    /// their keys are remembered.
    pub fn drop_existing<R>(
        &mut self,
        events: &mut Vec<Event<R>>,
        mut existing: KeySet,
        near_found: &HashMap<Key, i64>,
    ) -> usize {
        if !near_found.is_empty() {
            for e in events.iter() {
                if let Some((alt, alt_date)) = e.alt
                    && let Some(&t) = near_found.get(&alt)
                {
                    let midnight = umkm_core::time::wib_midnight_utc_secs(alt_date.max(e.row.0));
                    if (t - midnight).abs() <= self.skew_s {
                        existing.insert(e.key);
                    }
                }
            }
        }
        if existing.is_empty() {
            return 0;
        }
        let before = events.len();
        events.retain(|e| !existing.contains(&e.key));
        for k in existing {
            self.seen.insert(k);
        }
        before - events.len()
    }

    /// Remembers keys that are now in ClickHouse (after a successful insert).
    pub fn remember(&mut self, keys: impl Iterator<Item = Key>) {
        for k in keys {
            self.seen.insert(k);
        }
    }
}

/// The events whose key ClickHouse has in a row that came from this batch's own uncommitted
/// range (`found`: the lookup's answer with each row's source): the same messages, inserted by
/// an attempt whose commit never came. A publisher's duplicate of a committed message has an
/// earlier offset and is not among them. Returns each one's (`event_date`, key).
pub fn inserted_before<R>(
    events: &[Event<R>],
    found: &HashMap<Key, FoundAt>,
    topic: &str,
) -> Vec<(u16, Key)> {
    if found.is_empty() {
        return Vec::new();
    }
    let mut first: HashMap<i32, i64> = HashMap::new();
    for e in events {
        let o = first.entry(e.partition).or_insert(e.offset);
        *o = (*o).min(e.offset);
    }
    events
        .iter()
        .filter(|e| {
            found.get(&e.key).is_some_and(|at| {
                at.topic == topic && first.get(&at.partition).is_some_and(|f| at.offset >= *f)
            })
        })
        .map(|e| (e.row.0, e.key))
        .collect()
}

#[cfg(test)]
mod tests {
    use umkm_core::dedup::Candidate;

    use super::*;

    const DAY: u16 = 20454; // 2026-01-01 (WIB date)

    fn event(key: u128, priority: u8, offset: i64) -> Event<&'static str> {
        Candidate {
            key: Key(key),
            alt: None,
            priority,
            partition: 0,
            offset,
            row: (DAY, "row"),
        }
    }

    fn keys(events: &[Event<&str>]) -> Vec<u128> {
        events.iter().map(|e| e.key.0).collect()
    }

    #[test]
    fn the_seen_cache_is_bounded_and_forgets_the_oldest() {
        let mut c = SeenCache::new(2);
        for k in 1..=3 {
            c.insert(Key(k));
        }
        c.insert(Key(3));
        assert!(!c.contains(&Key(1)));
        assert!(c.contains(&Key(2)) && c.contains(&Key(3)));
        let mut off = SeenCache::new(0);
        off.insert(Key(1));
        assert!(!off.contains(&Key(1)));
    }

    #[test]
    fn one_winner_per_key_then_nothing_already_inserted() {
        let mut d = Dedup::new(100, 300_000);
        d.remember([Key(9)].into_iter());
        let mut events = vec![
            event(1, 0, 1),
            event(1, 5, 2),
            event(2, 0, 3),
            event(9, 0, 4),
        ];
        let dropped = d.drop_known(&mut events);
        assert_eq!(dropped, Dropped { batch: 1, cache: 1 });
        assert_eq!(keys(&events), [1, 2]);
        assert_eq!(events[0].priority, 5, "the higher priority report wins");
        // A second attempt over the same events changes nothing.
        assert_eq!(d.drop_known(&mut events), Dropped::default());
    }

    #[test]
    fn the_lookup_asks_for_each_key_on_its_date_and_the_neighbours() {
        let d = Dedup::new(10, 300_000);
        let mut near = event(3, 0, 1);
        near.alt = Some((Key(30), DAY - 1));
        let l = d.lookup(&[event(1, 0, 0), near]);
        assert_eq!(l.keys, [(DAY, Key(1)), (DAY, Key(3))]);
        assert_eq!(l.near_midnight, [(DAY - 1, Key(30))]);
    }

    #[test]
    fn rows_from_this_batchs_own_range_were_inserted_before() {
        let at = |partition: i32, offset: i64| FoundAt {
            topic: "t".into(),
            partition,
            offset,
        };
        let mut on_1 = event(4, 0, 12);
        on_1.partition = 1;
        let events = vec![event(1, 0, 10), event(2, 0, 11), event(3, 0, 15), on_1];
        let found = HashMap::from([
            (Key(1), at(0, 10)), // this very message: inserted, never committed
            (Key(2), at(0, 3)),  // a duplicate of a message committed long ago
            (Key(3), at(0, 12)), // a duplicate within the uncommitted range
            (Key(4), at(1, 5)),  // before partition 1's range: committed
        ]);
        let again = inserted_before(&events, &found, "t");
        assert_eq!(again, [(DAY, Key(1)), (DAY, Key(3))]);
        assert!(inserted_before(&events, &found, "other").is_empty());
    }

    #[test]
    fn existing_keys_are_dropped_and_remembered() {
        let mut d = Dedup::new(10, 300_000);
        let mut events = vec![event(1, 0, 1), event(2, 0, 2)];
        let n = d.drop_existing(&mut events, KeySet::from_iter([Key(2)]), &HashMap::new());
        assert_eq!(n, 1);
        assert_eq!(keys(&events), [1]);
        let mut again = vec![event(2, 0, 9)];
        assert_eq!(d.drop_known(&mut again).cache, 1);
    }

    #[test]
    fn a_neighbouring_dates_fact_counts_only_within_the_skew_of_that_midnight() {
        let mut d = Dedup::new(10, 300_000);
        // A report at 00:00:01 WIB on DAY, whose fact on DAY - 1 ClickHouse has.
        let midnight = umkm_core::time::wib_midnight_utc_secs(DAY);
        let mut e = event(1, 0, 1);
        e.alt = Some((Key(10), DAY - 1));
        let found_at = |t: i64| HashMap::from([(Key(10), t)]);

        let mut events = vec![e.clone()];
        assert_eq!(
            d.drop_existing(&mut events, KeySet::default(), &found_at(midnight - 2)),
            1
        );

        let mut events = vec![e.clone()];
        assert_eq!(
            d.drop_existing(&mut events, KeySet::default(), &found_at(midnight - 301)),
            0,
            "the other report is 301 s before midnight: two payments"
        );
        assert_eq!(keys(&events), [1]);

        // The mirror case: a report late on DAY - 1, the fact found on DAY.
        let mut late = event(2, 0, 2);
        late.row.0 = DAY - 1;
        late.alt = Some((Key(20), DAY));
        let mut events = vec![late];
        let found = HashMap::from([(Key(20), midnight + 299)]);
        assert_eq!(d.drop_existing(&mut events, KeySet::default(), &found), 1);
    }
}
