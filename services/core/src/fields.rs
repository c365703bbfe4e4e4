//! Small field checks and normalisers shared by the event contracts.

/// Non-empty and ASCII digits only.
pub fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Non-empty, at most `max` bytes, ASCII letters, digits and `-`, `_`, `.`, `:`, `/` only
/// (identifiers that end up in keys and joins).
pub fn id_like(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

/// National Merchant ID: `ID` followed by 13 digits.
pub fn is_nmid(s: &str) -> bool {
    s.len() == 15 && s.starts_with("ID") && all_digits(&s[2..])
}

/// A row column that is usually one of a few fixed values (role, sector, status, currency…):
/// borrowed from a `&'static str` when it is, so the hot path allocates nothing for it; owned
/// when read back from ClickHouse.
pub type Label = std::borrow::Cow<'static, str>;

/// The string side of a row column type that holds its text in its own way (inline, shared):
/// `Deref` to `str`, `AsRef<str>`, `Debug` and `Display` as the text, equality with `&str`, and
/// serialized as a string. The type provides `as_str`; reading back stays its own.
macro_rules! string_column {
    ($t:ty) => {
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_column;

/// A row column drawn from reference data loaded once (a region code and its levels): the
/// reference holds each value once and every row shares it, so the hot path allocates nothing
/// for it. Serialized as a string; read back from any string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Shared(std::sync::Arc<str>);

impl Shared {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_column!(Shared);

impl From<&str> for Shared {
    fn from(s: &str) -> Self {
        Shared(s.into())
    }
}

impl From<String> for Shared {
    fn from(s: String) -> Self {
        Shared(s.into())
    }
}

impl<'de> serde::Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Shared::from)
    }
}

/// An integer's decimal digits on the stack, for the key hashes (no allocation per event).
pub struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn of(n: i64) -> Decimal {
        let mut buf = [0u8; 20]; // i64::MIN is a sign and 19 digits
        let (mut i, mut v) = (buf.len(), n.unsigned_abs());
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            i -= 1;
            buf[i] = b'-';
        }
        Decimal { buf, start: i }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).expect("ASCII digits and sign")
    }
}

/// An optional string, trimmed; empty when absent. Reuses the string when it needs no trimming
/// (the common case: no allocation per field on the hot path).
pub fn opt(s: Option<String>) -> String {
    s.map(trimmed).unwrap_or_default()
}

/// The string trimmed, reusing its buffer when nothing needs trimming.
pub fn trimmed(s: String) -> String {
    if s.trim().len() == s.len() {
        s
    } else {
        s.trim().to_string()
    }
}

/// The canonical merchant reference a payment carries, before the registry resolves it to a
/// merchant id (see `v_payments`): `NMID:<nmid>` for QRIS (and for non-cash payments that
/// report the NMID), `MID:<acquirer id>:<acquirer merchant id>` otherwise.
pub fn nmid_ref(nmid: &str) -> String {
    format!("NMID:{nmid}")
}

pub fn mid_ref(acquirer_id: &str, merchant_id: &str) -> String {
    format!("MID:{acquirer_id}:{merchant_id}")
}

/// The publisher's event id: 1-128 characters (a redelivery carries the same one).
pub fn check_event_id(event_id: &str, bad: &mut Vec<crate::Invalid>) {
    if event_id.trim().is_empty() || event_id.len() > 128 {
        bad.push(crate::Invalid::new(
            "event_id",
            "event_id must be 1-128 characters",
        ));
    }
}

/// The Kafka message key must be `want` (described as `what`, e.g. "the nmid"), so that every
/// report of one merchant shares a partition and dedup never races across consumers.
pub fn check_message_key(
    key: Option<&[u8]>,
    want: &str,
    what: &str,
    bad: &mut Vec<crate::Invalid>,
) {
    match key {
        Some(k) if k == want.as_bytes() => {}
        Some(k) => bad.push(crate::Invalid::new(
            "key_mismatch",
            format!(
                "message key {:?} is not {what} {want:?} (all reports of a merchant must share a partition)",
                String::from_utf8_lossy(k)
            ),
        )),
        None => bad.push(crate::Invalid::new(
            "key_missing",
            format!("message has no key; the key must be {what}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits_match_to_string() {
        for n in [
            0,
            1,
            -1,
            9,
            10,
            99,
            100,
            5_000_000,
            -123_456,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(Decimal::of(n).as_str(), n.to_string());
        }
    }

    #[test]
    fn checks() {
        assert!(all_digits("0123") && !all_digits("") && !all_digits("12a"));
        assert!(id_like("UMKM-3604-000001", 64) && !id_like("a b", 64) && !id_like("", 4));
        assert!(!id_like("abcde", 4));
        assert!(
            is_nmid("ID1020000000001") && !is_nmid("ID102000000000") && !is_nmid("XX1020000000001")
        );
        assert_eq!(opt(Some(" x ".into())), "x");
        assert_eq!(opt(Some("y".into())), "y");
        assert_eq!(opt(None), "");
        assert_eq!(trimmed("\tz \n".into()), "z");
        assert_eq!(mid_ref("93600008", "M1"), "MID:93600008:M1");
        let mut bad = Vec::new();
        check_message_key(Some(b"a"), "a", "the id", &mut bad);
        check_event_id("e-1", &mut bad);
        assert!(bad.is_empty());
        check_message_key(Some(b"b"), "a", "the id", &mut bad);
        check_message_key(None, "a", "the id", &mut bad);
        check_event_id(" ", &mut bad);
        let rules: Vec<_> = bad.iter().map(|i| i.rule).collect();
        assert_eq!(rules, vec!["key_mismatch", "key_missing", "event_id"]);
    }
}
