//! Dedup keys and in-batch resolution.
//!
//! A *dedup key* identifies one business fact (for QRIS: one payment in one status). Every
//! report of that fact, whether a redelivery of the same event or the same payment reported by
//! its issuer and by its acquirer, yields the same key. The runtime inserts a key into
//! ClickHouse at most once; this module only computes keys and picks one winner per key within
//! a batch.

use sha2::{Digest, Sha256};

/// 128-bit key: the first 16 bytes of SHA-256 over the key's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub u128);

impl Key {
    /// Hashes `parts` joined by an unambiguous separator (0x1f, never in the fields).
    pub fn of(domain: &str, parts: &[&str]) -> Key {
        let mut h = Sha256::new();
        h.update(domain.as_bytes());
        for p in parts {
            h.update([0x1f]);
            h.update(p.as_bytes());
        }
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        Key(u128::from_be_bytes(b))
    }

    /// 32 lower-case hex characters, as stored in ClickHouse.
    pub fn hex(self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(32);
        for b in self.0.to_be_bytes() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// The same 32 characters inline (no allocation): the rows' key columns use it.
    pub fn hex_inline(self) -> KeyHex {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, b) in self.0.to_be_bytes().into_iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        KeyHex(out)
    }

    pub fn from_hex(s: &str) -> Option<Key> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Key)
    }
}

/// A key's 32 lower-case hex characters, stored inline: a `String` column of a row
/// (serialized as a string; read back from any 32-hex-digit string).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHex([u8; 32]);

impl KeyHex {
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII hex digits (hex_inline, or checked in deserialize).
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

crate::fields::string_column!(KeyHex);

impl<'de> serde::Deserialize<'de> for KeyHex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Key::from_hex(&s)
            .filter(|k| k.hex_inline() == s.to_ascii_lowercase())
            .map(Key::hex_inline)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a 32-digit hex key")))
    }
}

/// A row waiting to be inserted, with what dedup needs to know about it.
#[derive(Debug, Clone)]
pub struct Candidate<R> {
    pub key: Key,
    /// The same fact's key on the neighbouring WIB date, with that date, when the report lies
    /// within the midnight skew of a WIB midnight (README "Deduplication keys"): another party's
    /// report of the payment, its clock a little off, may carry it.
    pub alt: Option<(Key, u16)>,
    /// Higher wins within a batch (e.g. acquirer over issuer); ties go to the earlier message.
    pub priority: u8,
    pub partition: i32,
    pub offset: i64,
    pub row: R,
}

/// Hashes a [`Key`] by folding its 128 bits: keys are SHA-256 prefixes, already uniform, so
/// SipHash (std's default) would only cost time (it was 3% of the consumer's CPU).
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u128 input; fold it in (FNV-1a) to stay correct.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
}

pub type KeyBuildHasher = std::hash::BuildHasherDefault<KeyHasher>;
/// A set of dedup keys.
pub type KeySet = std::collections::HashSet<Key, KeyBuildHasher>;

/// Keeps one candidate per fact: the highest priority, then the lowest (partition, offset).
/// Two candidates are one fact when they share a key, or when both lie within the skew of one
/// WIB midnight and each one's `alt` is the other's key (two parties' reports of one payment
/// whose clocks put it on two dates). Returns the winners in arrival order and the number of
/// duplicates dropped. Works in place: a batch is never copied (it can hold 100,000 rows).
pub fn resolve_in_batch<R>(mut candidates: Vec<Candidate<R>>) -> (Vec<Candidate<R>>, usize) {
    use std::collections::HashMap;
    let total = candidates.len();
    // Union-find over the candidates: `parent[i] == i` for a group's root; `best[root]` is the
    // group's winner so far.
    let mut parent: Vec<usize> = (0..total).collect();
    let mut best: Vec<usize> = (0..total).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let union = |parent: &mut Vec<usize>, best: &mut Vec<usize>, a: usize, b: usize| {
        let (ra, rb) = (root(parent, a), root(parent, b));
        if ra == rb {
            return;
        }
        let (wa, wb) = (best[ra], best[rb]);
        // The higher priority wins; between equals the earlier message (lower index).
        let w = match candidates[wa].priority.cmp(&candidates[wb].priority) {
            std::cmp::Ordering::Greater => wa,
            std::cmp::Ordering::Less => wb,
            std::cmp::Ordering::Equal => wa.min(wb),
        };
        parent[rb] = ra;
        best[ra] = w;
    };
    let mut by_key: HashMap<Key, usize, KeyBuildHasher> =
        HashMap::with_capacity_and_hasher(total, KeyBuildHasher::default());
    // Near-midnight candidates by their own key, for the others' `alt` to find.
    let mut near: HashMap<Key, usize, KeyBuildHasher> = HashMap::default();
    for (i, c) in candidates.iter().enumerate() {
        let (key, alt) = (c.key, c.alt);
        match by_key.get(&key) {
            Some(&j) => union(&mut parent, &mut best, j, i),
            None => {
                by_key.insert(key, i);
            }
        }
        if let Some((alt_key, _)) = alt {
            if let Some(&j) = near.get(&alt_key) {
                union(&mut parent, &mut best, j, i);
            }
            near.entry(key).or_insert(i);
        }
    }
    drop((by_key, near));
    let mut keep = vec![false; total];
    for i in 0..total {
        if parent[i] == i {
            keep[best[i]] = true;
        }
    }
    let mut i = 0;
    candidates.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let dropped = total - candidates.len();
    (candidates, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: u128, priority: u8, offset: i64) -> Candidate<&'static str> {
        Candidate {
            key: Key(key),
            alt: None,
            priority,
            partition: 0,
            offset,
            row: "",
        }
    }

    #[test]
    fn key_is_stable_and_separated() {
        let a = Key::of("qris", &["ab", "c"]);
        assert_eq!(a, Key::of("qris", &["ab", "c"]));
        assert_ne!(a, Key::of("qris", &["a", "bc"]));
        assert_ne!(a, Key::of("card", &["ab", "c"]));
        assert_eq!(Key::from_hex(&a.hex()), Some(a));
        assert_eq!(a.hex().len(), 32);
        assert_eq!(a.hex(), format!("{:032x}", a.0));
        assert_eq!(Key(1).hex(), format!("{:032x}", 1u128));
        assert_eq!(a.hex_inline(), a.hex());
        assert_eq!(Key(1).hex_inline().as_str(), format!("{:032x}", 1u128));
        let back: KeyHex =
            serde_json::from_str(&serde_json::to_string(&a.hex_inline()).unwrap()).unwrap();
        assert_eq!(back, a.hex_inline());
        assert!(serde_json::from_str::<KeyHex>("\"xyz\"").is_err());
    }

    #[test]
    fn higher_priority_then_earliest_wins() {
        let (w, d) = resolve_in_batch(vec![c(1, 1, 10), c(1, 2, 11), c(1, 2, 12), c(2, 1, 13)]);
        assert_eq!(d, 2);
        let got: Vec<(u128, i64)> = w.iter().map(|c| (c.key.0, c.offset)).collect();
        assert_eq!(got, vec![(1, 11), (2, 13)]);
    }

    fn near(key: u128, alt: u128, priority: u8, offset: i64) -> Candidate<&'static str> {
        Candidate {
            alt: Some((Key(alt), 0)),
            ..c(key, priority, offset)
        }
    }

    #[test]
    fn reports_on_either_side_of_midnight_are_one_fact() {
        // Issuer at 23:59:59 (key 10, alt 20) and acquirer at 00:00:01 (key 20, alt 10).
        let (w, d) = resolve_in_batch(vec![near(10, 20, 1, 1), near(20, 10, 2, 2)]);
        assert_eq!((d, w.len(), w[0].offset), (1, 1, 2));
        // Either order.
        let (w, d) = resolve_in_batch(vec![near(20, 10, 2, 1), near(10, 20, 1, 2)]);
        assert_eq!((d, w[0].offset), (1, 1));
        // A report far from midnight that happens to carry the neighbour's key is not it.
        let (w, d) = resolve_in_batch(vec![near(10, 20, 1, 1), c(20, 2, 2)]);
        assert_eq!((d, w.len()), (0, 2));
        // Three reports of one payment: a far one sharing the near one's key joins its group.
        let (w, d) = resolve_in_batch(vec![c(10, 1, 1), near(20, 10, 1, 2), near(10, 20, 2, 3)]);
        assert_eq!((d, w.len(), w[0].offset), (2, 1, 3));
        // Unrelated near-midnight facts stay apart.
        let (w, d) = resolve_in_batch(vec![near(10, 20, 1, 1), near(30, 40, 1, 2)]);
        assert_eq!((d, w.len()), (0, 2));
    }
}
