//! ClickHouse error classification. Nothing is ever dropped on a ClickHouse error: the batch
//! stays, the partitions pause and the insert is retried with backoff. The class only decides
//! how long to keep trying before the service gives up and exits (so an operator sees it):
//! `Retryable` for up to `retry.max_elapsed`, `Fatal` (schema or permission problems a retry
//! cannot fix) for a few attempts only.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Retryable,
    Fatal,
}

/// Codes a retry can fix. Starts from clickhouse-kafka-connect's list (`Utils.java`) plus
/// QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING (216), TOO_MANY_SIMULTANEOUS_QUERIES (202),
/// TOO_MANY_PARTS (252), MEMORY_LIMIT_EXCEEDED (241), TABLE_IS_READ_ONLY (242), TIMEOUT_EXCEEDED (159)…
pub const RETRYABLE_CODES: &[i32] = &[
    3, 107, 159, 164, 202, 203, 209, 210, 216, 241, 242, 252, 285, 319, 394, 425, 999,
];

/// Codes that mean the deployment is wrong: unknown table/column/database, type mismatch,
/// syntax, authentication and access. Retrying briefly still helps while DDL propagates.
pub const FATAL_CODES: &[i32] = &[
    16, 27, 33, 36, 47, 53, 60, 62, 81, 117, 192, 193, 194, 497, 516,
];

/// Extracts `N` from a ClickHouse exception text `Code: N. DB::Exception: …`.
pub fn code_of(message: &str) -> Option<i32> {
    let rest = &message[message.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Classifies a server exception by its code; transport errors (no code) and unknown codes are
/// retryable.
pub fn classify(code: Option<i32>) -> ErrorClass {
    match code {
        Some(c) if FATAL_CODES.contains(&c) => ErrorClass::Fatal,
        _ => ErrorClass::Retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            code_of("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"),
            Some(60)
        );
        assert_eq!(
            code_of("Code: 252. DB::Exception: Too many parts"),
            Some(252)
        );
        assert_eq!(code_of("connection refused"), None);
        assert_eq!(classify(Some(60)), ErrorClass::Fatal);
        assert_eq!(classify(Some(252)), ErrorClass::Retryable);
        assert_eq!(classify(Some(216)), ErrorClass::Retryable);
        assert_eq!(classify(None), ErrorClass::Retryable);
        assert_eq!(classify(Some(12345)), ErrorClass::Retryable);
        for c in RETRYABLE_CODES {
            assert!(!FATAL_CODES.contains(c));
        }
    }
}
