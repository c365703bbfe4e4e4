//! Rupiah amounts. Providers send decimal strings (`"150000"`, `"150000.00"`, `"150000."`);
//! we keep whole rupiah as `i64` plus the sen remainder (ISO 4217 minor unit 2), never floats.

use crate::Invalid;

/// Largest amount accepted, in rupiah: far above any QRIS limit (Rp10 juta per transaction in
/// 2022), it only guards against garbage and overflow.
pub const MAX_RUPIAH: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rupiah {
    pub whole: i64,
    pub sen: u8,
}

impl Rupiah {
    /// The amount in sen (1/100 rupiah): exact, for keys and sums.
    pub fn total_sen(self) -> i64 {
        self.whole * 100 + i64::from(self.sen)
    }
}

/// Parses a positive decimal amount with '.' as decimal separator and at most two decimals.
pub fn parse_idr(raw: &str) -> Result<Rupiah, Invalid> {
    let s = raw.trim();
    let bad = |why: &str| Invalid::new("amount_format", format!("amount {raw:?} {why}"));
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    if s.starts_with('-') {
        return Err(Invalid::new(
            "amount_not_positive",
            format!("amount {raw:?} is negative"),
        ));
    }
    let (int_part, frac_part) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "is not a decimal number (digits, optional '.' and at most 2 decimals)",
        ));
    }
    if frac_part.len() > 2 || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("has more than 2 decimals or a non-digit after '.'"));
    }
    if int_part.len() > 13 {
        return Err(bad("is out of range"));
    }
    let whole: i64 = int_part.parse().map_err(|_| bad("is out of range"))?;
    let sen: u8 = match frac_part.len() {
        0 => 0,
        1 => frac_part.parse::<u8>().map_err(|_| bad("is malformed"))? * 10,
        _ => frac_part.parse::<u8>().map_err(|_| bad("is malformed"))?,
    };
    if whole > MAX_RUPIAH {
        return Err(bad("is above the sanity limit of Rp1 trillion"));
    }
    if whole == 0 && sen == 0 {
        return Err(Invalid::new(
            "amount_not_positive",
            format!("amount {raw:?} is zero"),
        ));
    }
    Ok(Rupiah { whole, sen })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_provider_styles() {
        for s in ["150000", "150000.", "150000.0", "150000.00", " 150000 "] {
            assert_eq!(
                parse_idr(s),
                Ok(Rupiah {
                    whole: 150_000,
                    sen: 0
                }),
                "{s}"
            );
        }
        assert_eq!(
            parse_idr("100003.5"),
            Ok(Rupiah {
                whole: 100_003,
                sen: 50
            })
        );
        assert_eq!(parse_idr("0.01").map(Rupiah::total_sen), Ok(1));
    }

    #[test]
    fn rejects_display_formats_and_negatives() {
        assert_eq!(parse_idr("-5").unwrap_err().rule, "amount_not_positive");
        assert_eq!(parse_idr("0").unwrap_err().rule, "amount_not_positive");
        assert_eq!(parse_idr("0.00").unwrap_err().rule, "amount_not_positive");
        for s in [
            "1.000.000",
            "1,000",
            "1 000",
            "Rp1000",
            "",
            "1.001",
            "1e5",
            ".5",
        ] {
            assert_eq!(parse_idr(s).unwrap_err().rule, "amount_format", "{s}");
        }
        assert_eq!(
            parse_idr("99999999999999").unwrap_err().rule,
            "amount_format"
        );
    }
}
