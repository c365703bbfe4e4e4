//! Payer identifiers (customer PAN, phone, wallet account) never leave the consumer in clear:
//! they are replaced by HMAC-SHA256 under a secret key from configuration. The same payer
//! hashes to the same value (so analysts can count distinct payers) but the value cannot be
//! reversed or recomputed without the key.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MIN_KEY_BYTES: usize = 16;

#[derive(Clone)]
pub struct PiiHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for PiiHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiiHasher(<redacted>)")
    }
}

impl PiiHasher {
    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the PII hash key must be at least {MIN_KEY_BYTES} bytes, got {}",
                key.len()
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
        Ok(Self { mac })
    }

    /// Normalises (trims, drops spaces and dashes, upper-cases) and hashes; 64 hex characters.
    pub fn hash(&self, raw: &str) -> PayerHash {
        // The normalised characters go straight into the MAC (no intermediate string).
        let mut mac = self.mac.clone();
        let mut utf8 = [0u8; 4];
        for c in raw
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .flat_map(char::to_uppercase)
        {
            mac.update(c.encode_utf8(&mut utf8).as_bytes());
        }
        let mut hex = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex).expect("64 hex digits");
        PayerHash(Some(hex))
    }
}

/// A payer hash's 64 lower-case hex characters, stored inline (no allocation per event), or
/// empty when the event named no payer: the rows' `payer_hash` column. Serialized as a string;
/// read back from an empty or a 64-hex-digit string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PayerHash(Option<[u8; 64]>);

impl PayerHash {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever built from hex digits (`PiiHasher::hash`, or checked in deserialize).
            Some(hex) => std::str::from_utf8(hex).expect("hex digits are ASCII"),
            None => "",
        }
    }
}

crate::fields::string_column!(PayerHash);

impl<'de> serde::Deserialize<'de> for PayerHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(PayerHash(None));
        }
        let mut hex = [0u8; 64];
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(serde::de::Error::custom(
                "a payer hash is empty or 64 lower-case hex digits",
            ));
        }
        hex.copy_from_slice(s.as_bytes());
        Ok(PayerHash(Some(hex)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_normalised() {
        let a = PiiHasher::new(b"0123456789abcdef").unwrap();
        let b = PiiHasher::new(b"fedcba9876543210").unwrap();
        let h = a.hash("0812-3456-7890");
        assert_eq!(h.len(), 64);
        assert_eq!(h, a.hash(" 081234567890 "));
        assert_ne!(h, b.hash("081234567890"));
        assert!(!h.contains("0812"));
        assert!(PiiHasher::new(b"short").is_err());
        assert!(!format!("{a:?}").contains("0123"));
    }

    #[test]
    fn a_payer_hash_reads_back_what_it_wrote() {
        let h = PiiHasher::new(b"0123456789abcdef").unwrap().hash("0812");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<PayerHash>(&json).unwrap(), h);
        let empty: PayerHash = serde_json::from_str("\"\"").unwrap();
        assert_eq!(empty, PayerHash::default());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "\"\"");
        assert!(serde_json::from_str::<PayerHash>("\"0812\"").is_err());
    }

    #[test]
    fn hashes_stay_what_they_were() {
        // HMAC-SHA256 of the normalised identifier under the key, computed independently
        // (Python's hmac): stored payer hashes must not change between versions.
        let a = PiiHasher::new(b"0123456789abcdef").unwrap();
        assert_eq!(
            a.hash("0812-3456-7890"),
            "2362d07e7f4e8ae677b58540c734c1f8f0e2e2a8b9af986ff9edd716998cc88e"
        );
        assert_eq!(
            a.hash("straße-é 12"), // upper-cased to STRASSEÉ12
            "149f9b17fb964003153d670657d4f0ccfdb0c70f9ab1e403bc93b94d2314c5d0"
        );
    }
}
