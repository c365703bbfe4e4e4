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
    pub fn hash(&self, raw: &str) -> String {
        let norm: String = raw
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .flat_map(char::to_uppercase)
            .collect();
        let mut mac = self.mac.clone();
        mac.update(norm.as_bytes());
        hex::encode(mac.finalize().into_bytes())
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
}
