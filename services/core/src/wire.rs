//! Confluent wire format: one magic byte `0`, a 4-byte big-endian schema id, then the Avro
//! binary datum. <https://docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/index.html#wire-format>

use thiserror::Error;

pub const MAGIC: u8 = 0;
pub const HEADER_LEN: usize = 5;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message is {0} bytes, shorter than the 5-byte Confluent header")]
    ShortBuffer(usize),
    #[error("wrong magic byte {0:#04x}, expected 0x00 (not Confluent wire format)")]
    BadMagic(u8),
}

/// Splits a Confluent-framed message into its schema id and Avro payload.
pub fn parse(buf: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::ShortBuffer(buf.len()));
    }
    if buf[0] != MAGIC {
        return Err(WireError::BadMagic(buf[0]));
    }
    let id = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    Ok((id, &buf[HEADER_LEN..]))
}

/// Frames an Avro datum with the Confluent header.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let framed = frame(0x0102_0304, b"abc");
        assert_eq!(framed[..5], [0, 1, 2, 3, 4]);
        assert_eq!(parse(&framed), Ok((0x0102_0304, &b"abc"[..])));
    }

    #[test]
    fn short_buffer() {
        assert_eq!(parse(&[]), Err(WireError::ShortBuffer(0)));
        assert_eq!(parse(&[0, 0, 0, 1]), Err(WireError::ShortBuffer(4)));
    }

    #[test]
    fn wrong_magic() {
        assert_eq!(parse(b"{\"json\":1}"), Err(WireError::BadMagic(b'{')));
    }

    #[test]
    fn header_only_is_an_empty_payload() {
        assert_eq!(parse(&[0, 0, 0, 0, 7]), Ok((7, &b""[..])));
    }
}
