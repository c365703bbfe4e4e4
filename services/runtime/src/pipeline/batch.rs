//! The batch being built or retried: the valid events (dedup candidates), the dead letters of
//! the same messages, and per partition the next offset to commit once both are safe. Offsets
//! ride with the batch: whatever happens to the batch (flushed, revoked, merged back after a
//! failed insert) happens to its offsets.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use umkm_core::batch::{BatchMeter, BatchPolicy, FlushReason};
use umkm_core::dedup::Candidate;

use super::dead_letters::DeadLetter;
use crate::kafka::{Received, TopicPartition};

/// A valid event of the batch: its dedup key, priority and provenance, and `(event_date, row)`.
pub type Event<R> = Candidate<(u16, R)>;

pub struct Batch<R> {
    pub events: Vec<Event<R>>,
    pub dead_letters: Vec<DeadLetter>,
    /// Next offset to commit per topic and partition (by topic first: counting a message
    /// looks its topic up without allocating).
    offsets: BTreeMap<String, BTreeMap<i32, i64>>,
    meter: BatchMeter,
}

impl<R> Default for Batch<R> {
    fn default() -> Self {
        Batch {
            events: Vec::new(),
            dead_letters: Vec::new(),
            offsets: BTreeMap::new(),
            meter: BatchMeter::default(),
        }
    }
}

impl<R> Batch<R> {
    /// Counts `m` into the batch: its offset is committed with it, whatever becomes of `m`
    /// (event, dead letter or nothing). `capacity` is reserved once per batch: growing by
    /// doubling would briefly hold the old and the new buffer (1.5x the batch) and leave up
    /// to half of the last one unused.
    pub fn count(&mut self, m: &Received, now: Instant, capacity: usize) {
        if self.events.capacity() == 0 {
            self.events.reserve_exact(capacity);
        }
        self.meter.add(m.payload.len(), now);
        let partitions = match self.offsets.get_mut(m.topic.as_str()) {
            Some(p) => p,
            None => self.offsets.entry(m.topic.to_string()).or_default(),
        };
        let next = partitions.entry(m.partition).or_insert(0);
        *next = (*next).max(m.offset + 1);
    }

    pub fn push(&mut self, e: Event<R>) {
        self.events.push(e);
    }

    pub fn push_dead_letter(&mut self, d: DeadLetter) {
        self.dead_letters.push(d);
    }

    /// Nothing consumed since the batch was opened.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn due(&self, policy: &BatchPolicy, now: Instant) -> Option<FlushReason> {
        self.meter.due(policy, now)
    }

    /// When the age limit will be reached, if a batch is open.
    pub fn deadline(&self, policy: &BatchPolicy) -> Option<Instant> {
        self.meter.deadline(policy)
    }

    pub fn bytes(&self) -> usize {
        self.meter.bytes
    }

    /// The partitions the batch's events come from.
    pub fn event_partitions(&self) -> BTreeSet<i32> {
        self.events.iter().map(|e| e.partition).collect()
    }

    /// What to commit: (topic, partition, next offset) of every partition the batch consumed
    /// from.
    pub fn offsets(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.offsets
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |(p, next)| (t.as_str(), *p, *next)))
    }

    /// The next offset to commit of one partition.
    #[cfg(test)]
    pub fn offset_of(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets.get(topic)?.get(&partition).copied()
    }

    fn partitions_held(&self) -> usize {
        self.offsets.values().map(BTreeMap::len).sum()
    }

    /// Drops everything of the `revoked` partitions (fence: nothing of it was committed, so
    /// their next owner consumes it again and deduplicates). Kept partitions keep their dead
    /// letters: their offsets are committed only after those are acknowledged. Returns how
    /// many partitions the batch held of them.
    pub fn revoke(&mut self, revoked: &HashSet<TopicPartition>) -> usize {
        let held = self.partitions_held();
        for (t, p) in revoked {
            if let Some(ps) = self.offsets.get_mut(t) {
                ps.remove(p);
            }
        }
        self.offsets.retain(|_, ps| !ps.is_empty());
        let gone: HashSet<i32> = revoked.iter().map(|(_, p)| *p).collect();
        self.events.retain(|e| !gone.contains(&e.partition));
        self.dead_letters.retain(|d| !gone.contains(&d.partition));
        if self.offsets.is_empty() {
            *self = Batch::default();
        }
        held - self.partitions_held()
    }

    /// Puts `newer` (consumed while this batch's insert failed) behind this batch: the retry
    /// flushes both. The offsets are the later of the two per partition.
    pub fn merge(mut self, newer: Batch<R>) -> Batch<R> {
        self.events.extend(newer.events);
        self.dead_letters.extend(newer.dead_letters);
        for (t, ps) in newer.offsets {
            let mine = self.offsets.entry(t).or_default();
            for (p, next) in ps {
                let e = mine.entry(p).or_insert(next);
                *e = (*e).max(next);
            }
        }
        self.meter.merge(&newer.meter);
        if self.offsets.is_empty() {
            Batch::default()
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use umkm_core::dedup::Key;

    use super::*;

    fn msg(partition: i32, offset: i64) -> Received {
        Received {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            payload: vec![0; 10],
        }
    }

    fn event(partition: i32, offset: i64) -> Event<u32> {
        Candidate {
            key: Key(offset as u128),
            alt: None,
            priority: 0,
            partition,
            offset,
            row: (1, offset as u32),
        }
    }

    fn batch_of(msgs: &[(i32, i64)], t: Instant) -> Batch<u32> {
        let mut b = Batch::default();
        for &(p, o) in msgs {
            b.count(&msg(p, o), t, 16);
            b.push(event(p, o));
        }
        b
    }

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn offsets_to_commit_are_the_next_offset_per_partition() {
        let b = batch_of(&[(0, 5), (1, 9), (0, 6)], Instant::now());
        assert_eq!(b.offsets().collect::<Vec<_>>(), [("t", 0, 7), ("t", 1, 10)]);
        assert_eq!(b.event_partitions(), BTreeSet::from([0, 1]));
        assert_eq!(b.bytes(), 30);
        assert_eq!(b.events.capacity(), 16, "reserved once");
        assert!(!b.is_empty());
    }

    #[test]
    fn a_message_without_event_still_moves_the_offset() {
        let mut b: Batch<u32> = Batch::default();
        b.count(&msg(2, 41), Instant::now(), 4);
        assert!(b.events.is_empty());
        assert_eq!(b.offset_of("t", 2), Some(42));
        assert_eq!(b.offset_of("other", 2), None);
    }

    #[test]
    fn revoking_drops_the_partitions_events_dead_letters_and_offsets() {
        let t = Instant::now();
        let mut b = batch_of(&[(0, 1), (1, 1), (1, 2), (2, 1)], t);
        b.push_dead_letter(DeadLetter::for_test(1));
        b.push_dead_letter(DeadLetter::for_test(2));
        let dropped = b.revoke(&HashSet::from([tp(1), tp(7)]));
        assert_eq!(dropped, 1);
        assert_eq!(b.event_partitions(), BTreeSet::from([0, 2]));
        assert_eq!(b.dead_letters.len(), 1);
        assert_eq!(b.dead_letters[0].partition, 2);
        assert_eq!(b.offset_of("t", 1), None);
        // Revoking the rest empties the batch, meter included: nothing is due.
        b.revoke(&HashSet::from([tp(0), tp(2)]));
        assert!(b.is_empty());
        let policy = BatchPolicy {
            max_rows: 1,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(1),
        };
        assert_eq!(b.due(&policy, t + Duration::from_secs(5)), None);
    }

    #[test]
    fn merging_back_keeps_the_failed_batch_first_and_the_later_offsets() {
        let t = Instant::now();
        let failed = batch_of(&[(0, 1), (1, 4)], t);
        let newer = batch_of(&[(0, 2), (2, 8)], t + Duration::from_millis(300));
        let m = failed.merge(newer);
        let order: Vec<i64> = m.events.iter().map(|e| e.offset).collect();
        assert_eq!(order, [1, 4, 2, 8]);
        assert_eq!(
            m.offsets()
                .map(|(_, p, next)| (p, next))
                .collect::<Vec<_>>(),
            [(0, 3), (1, 5), (2, 9)]
        );
        // The older opening time stays: the merged batch is as old as the failed one.
        let policy = BatchPolicy {
            max_rows: 100,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(1),
        };
        assert_eq!(m.deadline(&policy), Some(t + Duration::from_secs(1)));
        assert_eq!(m.bytes(), 40);
    }

    #[test]
    fn merging_a_fully_revoked_batch_leaves_what_came_after() {
        let t = Instant::now();
        let mut failed = batch_of(&[(0, 1)], t);
        failed.revoke(&HashSet::from([tp(0)]));
        let m = failed.merge(batch_of(&[(3, 1)], t));
        assert_eq!(m.event_partitions(), BTreeSet::from([3]));
        let empty: Batch<u32> = Batch::default().merge(Batch::default());
        assert!(empty.is_empty());
    }
}
