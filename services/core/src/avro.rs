//! Avro decoding with a pinned reader schema. Writer schemas are registered by their registry id
//! (fetched by the runtime from a Confluent-compatible registry or from files); every datum is
//! decoded with its writer schema and resolved to the reader schema the service was built with,
//! so a writer that added an optional field (with a default) still decodes.
//!
//! One `GenericDatumReader` is cached per schema id: building it resolves the schemas, which is
//! the expensive part (docs/benchmarks.md, "How the defaults were chosen").
//!
//! Fast path: when a writer schema has the same Parsing Canonical Form as the reader schema (the
//! usual case: publishers on the current contract), there is nothing to resolve, and the datum is
//! deserialized straight from the bytes into the event type (apache-avro's schema-aware serde
//! deserializer) instead of through a `Value` tree. The same holds for a writer on an earlier
//! revision of the contract whose fields are the reader's first fields, when every later reader
//! field is optional with a `null` default (revision 1 of the payment contracts against
//! revision 2): the missing fields deserialize as `None`. Other writers go through the resolving
//! reader. docs/benchmarks.md has the measured difference.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Schema, types::Value};
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::wire::{self, WireError};

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
    #[error("schema id {id}: writer schema cannot be resolved to the reader schema: {message}")]
    Incompatible { id: u32, message: String },
    #[error("schema id {id}: Avro datum does not decode: {message}")]
    Datum { id: u32, message: String },
    #[error("schema id {id}: decoded record does not map to the event type: {message}")]
    Mapping { id: u32, message: String },
}

impl DecodeError {
    /// Stable rule name for the DLQ and metrics.
    pub fn rule(&self) -> &'static str {
        match self {
            DecodeError::Wire(WireError::ShortBuffer(_)) => "wire_short_buffer",
            DecodeError::Wire(WireError::BadMagic(_)) => "wire_bad_magic",
            DecodeError::UnknownSchemaId(_) => "unknown_schema_id",
            DecodeError::Incompatible { .. } => "schema_incompatible",
            DecodeError::Datum { .. } => "avro_datum",
            DecodeError::Mapping { .. } => "avro_mapping",
        }
    }
}

struct Entry {
    reader: GenericDatumReader<'static>,
    /// Set when the writer schema equals the reader schema (canonical forms): a reader without
    /// resolution, for `read_deser`.
    direct: Option<GenericDatumReader<'static>>,
}

/// Decodes Confluent-framed Avro into `T` through a pinned reader schema.
pub struct Decoder {
    reader_schema: &'static Schema,
    entries: HashMap<u32, Arc<Entry>>,
}

/// The largest single allocation decoding may make (a string, bytes or array length read from
/// the datum). apache-avro allocates what a length says before reading it, and its default cap
/// is 512 MiB: a 20-byte garbage message could ask for that. A datum cannot hold more than its
/// message, and a broker's messages are 1 MiB by default (README "Fuzzing").
pub const MAX_ALLOCATION_BYTES: usize = 16 << 20;

impl Decoder {
    /// Also caps apache-avro's allocations process-wide at [`MAX_ALLOCATION_BYTES`] (the first
    /// cap set in a process stays).
    pub fn new(reader_schema_json: &str) -> Result<Self, apache_avro::Error> {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        let schema = Schema::parse_str(reader_schema_json)?;
        Ok(Self {
            // Schemas live as long as the process: a handful per service.
            reader_schema: Box::leak(Box::new(schema)),
            entries: HashMap::new(),
        })
    }

    pub fn reader_schema(&self) -> &Schema {
        self.reader_schema
    }

    pub fn knows(&self, id: u32) -> bool {
        self.entries.contains_key(&id)
    }

    /// Parses the writer schema of `id` and checks that it resolves to the reader schema,
    /// without keeping anything (the registry-answer fuzz target calls this).
    pub fn check_writer(&self, id: u32, writer_schema_json: &str) -> Result<Schema, DecodeError> {
        let incompatible = |e: apache_avro::Error| DecodeError::Incompatible {
            id,
            message: e.to_string(),
        };
        let writer = Schema::parse_str(writer_schema_json).map_err(incompatible)?;
        GenericDatumReader::builder(&writer)
            .reader_schema(self.reader_schema)
            .build()
            .map_err(incompatible)?;
        Ok(writer)
    }

    /// Registers the writer schema for `id`. Fails if it does not parse or cannot be resolved
    /// against the reader schema. Only a schema that resolves is kept, for the life of the
    /// process (one per schema id; a refused one is freed).
    pub fn register(&mut self, id: u32, writer_schema_json: &str) -> Result<(), DecodeError> {
        let incompatible = |e: apache_avro::Error| DecodeError::Incompatible {
            id,
            message: e.to_string(),
        };
        let writer = self.check_writer(id, writer_schema_json)?;
        let writer: &'static Schema = Box::leak(Box::new(writer));
        let reader = GenericDatumReader::builder(writer)
            .reader_schema(self.reader_schema)
            .build()
            .map_err(incompatible)?;
        let direct = if writer.canonical_form() == self.reader_schema.canonical_form()
            || is_earlier_revision(writer, self.reader_schema)
        {
            Some(
                GenericDatumReader::builder(writer)
                    .build()
                    .map_err(incompatible)?,
            )
        } else {
            None
        };
        self.entries.insert(id, Arc::new(Entry { reader, direct }));
        Ok(())
    }

    /// Reads the schema id from the Confluent header without decoding.
    pub fn schema_id(buf: &[u8]) -> Result<u32, WireError> {
        wire::parse(buf).map(|(id, _)| id)
    }

    /// The schema id, its cached readers and the datum bytes of a framed message.
    fn entry_for<'b>(&self, buf: &'b [u8]) -> Result<(u32, &Entry, &'b [u8]), DecodeError> {
        let (id, payload) = wire::parse(buf)?;
        let entry = self
            .entries
            .get(&id)
            .ok_or(DecodeError::UnknownSchemaId(id))?;
        Ok((id, entry.as_ref(), payload))
    }

    pub fn decode_value(&self, buf: &[u8]) -> Result<(u32, Value), DecodeError> {
        let (id, entry, mut payload) = self.entry_for(buf)?;
        let read = entry.reader.read_value(&mut payload);
        Ok((id, datum(id, read, payload)?))
    }

    pub fn decode<T: DeserializeOwned>(&self, buf: &[u8]) -> Result<T, DecodeError> {
        let (id, entry, mut payload) = self.entry_for(buf)?;
        if let Some(direct) = &entry.direct {
            let read = direct.read_deser::<T>(&mut payload);
            return datum(id, read, payload);
        }
        let read = entry.reader.read_value(&mut payload);
        let value = datum(id, read, payload)?;
        apache_avro::from_value::<T>(&value).map_err(|e| DecodeError::Mapping {
            id,
            message: e.to_string(),
        })
    }
}

/// Whether `writer` is `reader` without its trailing optional fields: the same record with the
/// reader's first fields (same names and schemas, in order), every later reader field
/// defaulting to `null`. Such a datum deserializes straight into the reader's type.
fn is_earlier_revision(writer: &Schema, reader: &Schema) -> bool {
    let (Schema::Record(w), Schema::Record(r)) = (writer, reader) else {
        return false;
    };
    w.name == r.name
        && w.fields.len() < r.fields.len()
        && w.fields
            .iter()
            .zip(&r.fields)
            .all(|(a, b)| a.name == b.name && a.schema == b.schema)
        && r.fields[w.fields.len()..]
            .iter()
            .all(|f| f.default == Some(serde_json::Value::Null))
}

/// A datum read by a reader of schema `id`: its error as [`DecodeError::Datum`], and an error
/// too when bytes are left after it.
fn datum<V>(id: u32, read: apache_avro::AvroResult<V>, rest: &[u8]) -> Result<V, DecodeError> {
    let v = read.map_err(|e| DecodeError::Datum {
        id,
        message: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::Datum {
            id,
            message: format!("{} trailing bytes after the datum", rest.len()),
        });
    }
    Ok(v)
}

/// Encodes a serde value with `schema` and frames it (used by publishers and tests).
pub fn encode<T: serde::Serialize>(
    schema: &Schema,
    schema_id: u32,
    value: &T,
) -> Result<Vec<u8>, apache_avro::Error> {
    let v = apache_avro::to_value(value)?.resolve(schema)?;
    let datum = GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(v)?;
    Ok(wire::frame(schema_id, &datum))
}

#[cfg(test)]
mod revision_tests {
    use super::*;

    const REV1: &str = r#"{"type": "record", "name": "P", "fields": [
        {"name": "a", "type": "string"},
        {"name": "b", "type": ["null", "string"], "default": null}]}"#;
    const REV2: &str = r#"{"type": "record", "name": "P", "fields": [
        {"name": "a", "type": "string"},
        {"name": "b", "type": ["null", "string"], "default": null},
        {"name": "c", "type": ["null", "long"], "default": null}]}"#;
    const REORDERED: &str = r#"{"type": "record", "name": "P", "fields": [
        {"name": "b", "type": ["null", "string"], "default": null},
        {"name": "a", "type": "string"}]}"#;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct P {
        a: String,
        b: Option<String>,
        #[serde(default)]
        c: Option<i64>,
    }

    #[test]
    fn an_earlier_revision_takes_the_direct_path_and_decodes() {
        let (r1, r2) = (
            Schema::parse_str(REV1).unwrap(),
            Schema::parse_str(REV2).unwrap(),
        );
        assert!(is_earlier_revision(&r1, &r2));
        assert!(!is_earlier_revision(&r2, &r1));
        assert!(!is_earlier_revision(&r2, &r2));
        assert!(!is_earlier_revision(
            &Schema::parse_str(REORDERED).unwrap(),
            &r2
        ));
        let mut d = Decoder::new(REV2).unwrap();
        d.register(1, REV1).unwrap();
        d.register(2, REORDERED).unwrap();
        assert!(d.entries[&1].direct.is_some());
        assert!(d.entries[&2].direct.is_none());
        let old = P {
            a: "x".into(),
            b: Some("y".into()),
            c: None,
        };
        let bytes = encode(&r1, 1, &old).unwrap();
        assert_eq!(d.decode::<P>(&bytes).unwrap(), old);
        let bytes = encode(&Schema::parse_str(REORDERED).unwrap(), 2, &old).unwrap();
        assert_eq!(d.decode::<P>(&bytes).unwrap(), old);
        let new = P { c: Some(7), ..old };
        d.register(3, REV2).unwrap();
        assert_eq!(d.decode::<P>(&encode(&r2, 3, &new).unwrap()).unwrap(), new);
    }
}
