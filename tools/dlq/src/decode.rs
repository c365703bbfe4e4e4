//! A dead letter's value shown as JSON where it can be: the Confluent framing gives the schema
//! id, the registry (REST or a `registry.json` directory, as the services use) gives the writer
//! schema. Payer identifiers are redacted: the DLQ holds them as sent, the tool never prints
//! them.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::types::Value;
use umkm_runtime::registry::SchemaSource;

/// Fields that identify a payer (README "PII"): shown as `<redacted>`.
pub const PAYER_FIELDS: &[&str] = &["payer_id", "masked_account"];

pub struct Schemas {
    source: SchemaSource,
    parsed: HashMap<u32, Schema>,
}

impl Schemas {
    pub fn new(source: SchemaSource) -> Schemas {
        Schemas {
            source,
            parsed: HashMap::new(),
        }
    }

    /// The value decoded with its writer schema, as JSON with payer fields redacted; or why it
    /// cannot be decoded.
    pub async fn decode(&mut self, value: &[u8]) -> Result<serde_json::Value, String> {
        let (id, mut datum) = umkm_core::wire::parse(value).map_err(|e| e.to_string())?;
        if !self.parsed.contains_key(&id) {
            let text = self.source.fetch(id).await.map_err(|e| e.to_string())?;
            let schema = Schema::parse_str(&text).map_err(|e| format!("schema {id}: {e}"))?;
            self.parsed.insert(id, schema);
        }
        let schema = &self.parsed[&id];
        let v = apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .and_then(|r| r.read_value(&mut datum))
            .map_err(|e| format!("schema {id}: {e}"))?;
        let mut json = to_json(v);
        redact(&mut json);
        Ok(json)
    }
}

/// Avro to JSON: records as objects, unions as their value, bytes as hex.
fn to_json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::Int(n) | Value::Date(n) | Value::TimeMillis(n) => J::from(n),
        Value::Long(n)
        | Value::TimestampMillis(n)
        | Value::TimestampMicros(n)
        | Value::TimeMicros(n)
        | Value::LocalTimestampMillis(n)
        | Value::LocalTimestampMicros(n) => J::from(n),
        Value::Float(f) => J::from(f),
        Value::Double(f) => J::from(f),
        Value::String(s) | Value::Enum(_, s) => J::String(s),
        Value::Uuid(u) => J::String(u.to_string()),
        Value::Bytes(b) | Value::Fixed(_, b) => J::String(hex(&b)),
        Value::Union(_, inner) => to_json(*inner),
        Value::Array(items) => J::Array(items.into_iter().map(to_json).collect()),
        Value::Map(m) => J::Object(m.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        Value::Record(fields) => {
            J::Object(fields.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
        other => J::String(format!("{other:?}")),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Replaces every payer field (at any depth) that holds a value with `<redacted>`.
pub fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if PAYER_FIELDS.contains(&k.as_str()) && !x.is_null() {
                    *x = serde_json::Value::String("<redacted>".into());
                } else {
                    redact(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payer_fields_are_redacted_at_any_depth() {
        let mut v = serde_json::json!({
            "payer_id": "081234567890",
            "nmid": "ID1020000000001",
            "masked_account": null,
            "nested": [{"payer_id": "4111111111111111"}]
        });
        redact(&mut v);
        assert_eq!(v["payer_id"], "<redacted>");
        assert_eq!(v["nmid"], "ID1020000000001");
        assert!(v["masked_account"].is_null());
        assert_eq!(v["nested"][0]["payer_id"], "<redacted>");
    }

    #[tokio::test]
    async fn decodes_with_the_writer_schema_from_the_file_registry() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/avro");
        let mut s = Schemas::new(SchemaSource::files(dir).unwrap());
        let schema =
            Schema::parse_str(include_str!("../../../schemas/avro/merchant_event.avsc")).unwrap();
        let fields = match &schema {
            Schema::Record(r) => r.fields.clone(),
            _ => panic!("record"),
        };
        // Every field at its first union branch or a plain default.
        let record = Value::Record(
            fields
                .iter()
                .map(|f| {
                    let v = match &f.schema {
                        Schema::Union(_) => Value::Union(0, Box::new(Value::Null)),
                        Schema::String => Value::String(format!("{}-x", f.name)),
                        Schema::Long => Value::Long(1),
                        Schema::Int => Value::Int(1),
                        Schema::TimestampMillis => Value::TimestampMillis(1),
                        Schema::Date => Value::Date(1),
                        Schema::Boolean => Value::Boolean(true),
                        Schema::Enum(e) => Value::Enum(0, e.symbols[0].clone()),
                        Schema::Array(_) => Value::Array(vec![]),
                        other => panic!("{}: {other:?}", f.name),
                    };
                    (f.name.clone(), v)
                })
                .collect(),
        );
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(record)
            .unwrap();
        let json = s.decode(&umkm_core::wire::frame(3, &datum)).await.unwrap();
        assert_eq!(json["merchant_id"], "merchant_id-x");
        assert!(
            s.decode(&umkm_core::wire::frame(77, &datum))
                .await
                .unwrap_err()
                .contains("77")
        );
        assert!(s.decode(b"\x01junk").await.is_err());
    }
}
