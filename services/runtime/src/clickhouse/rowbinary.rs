//! ClickHouse's RowBinary format for the rows the fenced INSERT sends as external data
//! (clickhouse-rs keeps its serializer private). Only what the fact rows use: integers,
//! floats, strings, `Option` (Nullable), sequences (Array), tuples and structs (their fields
//! in order). Anything else is refused with the type's name rather than written wrongly.

use serde::Serialize;
use serde::ser::{self, Impossible};

#[derive(Debug, thiserror::Error)]
#[error("RowBinary: {0}")]
pub struct RowBinaryError(String);

impl ser::Error for RowBinaryError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        RowBinaryError(msg.to_string())
    }
}

/// Appends `row` to `buf` in RowBinary.
pub fn write_row<R: Serialize>(buf: &mut Vec<u8>, row: &R) -> Result<(), RowBinaryError> {
    row.serialize(&mut RowBinary { buf })
}

fn write_varint(buf: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf.push(byte);
            return;
        }
        buf.push(byte | 0x80);
    }
}

struct RowBinary<'b> {
    buf: &'b mut Vec<u8>,
}

fn unsupported<T>(what: &str) -> Result<T, RowBinaryError> {
    Err(RowBinaryError(format!("{what} has no RowBinary form here")))
}

impl ser::Serializer for &mut RowBinary<'_> {
    type Ok = ();
    type Error = RowBinaryError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), RowBinaryError>;
    type SerializeMap = Impossible<(), RowBinaryError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), RowBinaryError>;

    fn serialize_bool(self, v: bool) -> Result<(), RowBinaryError> {
        self.buf.push(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), RowBinaryError> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), RowBinaryError> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), RowBinaryError> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), RowBinaryError> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), RowBinaryError> {
        self.buf.push(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), RowBinaryError> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), RowBinaryError> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), RowBinaryError> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), RowBinaryError> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), RowBinaryError> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, _: char) -> Result<(), RowBinaryError> {
        unsupported("char")
    }
    fn serialize_str(self, v: &str) -> Result<(), RowBinaryError> {
        self.serialize_bytes(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), RowBinaryError> {
        write_varint(self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), RowBinaryError> {
        self.buf.push(1);
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<(), RowBinaryError> {
        self.buf.push(0);
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), RowBinaryError> {
        unsupported("()")
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<(), RowBinaryError> {
        unsupported(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), RowBinaryError> {
        unsupported(name)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), RowBinaryError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), RowBinaryError> {
        unsupported(name)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, RowBinaryError> {
        let Some(len) = len else {
            return unsupported("a sequence of unknown length");
        };
        write_varint(self.buf, len as u64);
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, RowBinaryError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, RowBinaryError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, RowBinaryError> {
        unsupported(name)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, RowBinaryError> {
        unsupported("a map")
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, RowBinaryError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, RowBinaryError> {
        unsupported(name)
    }
}

macro_rules! elements {
    ($trait:ident, $method:ident) => {
        impl ser::$trait for &mut RowBinary<'_> {
            type Ok = ();
            type Error = RowBinaryError;
            fn $method<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), RowBinaryError> {
                v.serialize(&mut **self)
            }
            fn end(self) -> Result<(), RowBinaryError> {
                Ok(())
            }
        }
    };
}
elements!(SerializeSeq, serialize_element);
elements!(SerializeTuple, serialize_element);
elements!(SerializeTupleStruct, serialize_field);

impl ser::SerializeStruct for &mut RowBinary<'_> {
    type Ok = ();
    type Error = RowBinaryError;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        _: &'static str,
        v: &T,
    ) -> Result<(), RowBinaryError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), RowBinaryError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        a: u32,
        s: String,
        n: Option<u16>,
        some: Option<u16>,
        arr: Vec<String>,
        i: i64,
        d: u8,
    }

    #[test]
    fn rows_are_written_field_by_field_in_row_binary() {
        let mut buf = Vec::new();
        let row = Row {
            a: 7,
            s: "hi".into(),
            n: None,
            some: Some(0x0102),
            arr: vec!["x".into()],
            i: -2,
            d: 9,
        };
        write_row(&mut buf, &row).unwrap();
        let mut want = vec![7, 0, 0, 0, 2, b'h', b'i', 1, 0, 2, 1, 1, 1, b'x'];
        want.extend_from_slice(&(-2i64).to_le_bytes());
        want.push(9);
        assert_eq!(buf, want);
    }

    #[test]
    fn lengths_are_leb128_varints() {
        let mut buf = Vec::new();
        write_varint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]);
        let mut buf = Vec::new();
        write_row(&mut buf, &"a".repeat(200)).unwrap();
        assert_eq!(&buf[..2], &[0xc8, 0x01]);
        assert_eq!(buf.len(), 202);
    }

    #[test]
    fn what_has_no_row_binary_form_is_refused() {
        let mut buf = Vec::new();
        let e = write_row(&mut buf, &std::collections::HashMap::from([(1, 2)])).unwrap_err();
        assert!(e.to_string().contains("map"), "{e}");
    }
}
