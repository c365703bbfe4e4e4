//! Decoding a payload into the family's event: the Confluent framing, the writer schema by id
//! (fetched once from the registry, retried with `retry.registry`), the pinned reader schema.
//! A registry that does not know an id makes the record bad; a registry that cannot be asked
//! is retried and, past its budget, stops the service (nothing is dead-lettered for it).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use umkm_core::avro::{DecodeError, Decoder};

use crate::metrics::Metrics;
use crate::registry::{FetchError, SchemaSource};
use crate::retry::{RetryPolicy, with_retries};

/// How long an id the registry did not know is answered from memory before asking again.
const UNKNOWN_ID_TTL: Duration = Duration::from_secs(60);

pub struct Decoding<E> {
    decoder: Decoder,
    source: SchemaSource,
    retry: RetryPolicy,
    unknown_ids: HashMap<u32, Instant>,
    /// Writer schemas that did not parse or resolve, with why: their records are refused
    /// from memory for `UNKNOWN_ID_TTL`, without fetching the schema again for each.
    refused_ids: HashMap<u32, (Instant, String)>,
    metrics: Arc<Metrics>,
    event: PhantomData<fn() -> E>,
}

impl<E: DeserializeOwned> Decoding<E> {
    pub fn new(
        reader_schema: &str,
        source: SchemaSource,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, apache_avro::Error> {
        Ok(Decoding {
            decoder: Decoder::new(reader_schema)?,
            source,
            retry,
            unknown_ids: HashMap::new(),
            refused_ids: HashMap::new(),
            metrics,
            event: PhantomData,
        })
    }

    /// The event and its writer schema id. The outer error is a registry that could not be
    /// asked within its retry budget; the inner one a bad record.
    pub async fn decode(
        &mut self,
        payload: &[u8],
    ) -> Result<Result<(u32, E), DecodeError>, FetchError> {
        let id = match Decoder::schema_id(payload) {
            Ok(id) => id,
            Err(e) => return Ok(Err(e.into())),
        };
        if !self.decoder.knows(id) {
            if let Some(t) = self.unknown_ids.get(&id)
                && t.elapsed() < UNKNOWN_ID_TTL
            {
                return Ok(Err(DecodeError::UnknownSchemaId(id)));
            }
            if let Some((t, message)) = self.refused_ids.get(&id)
                && t.elapsed() < UNKNOWN_ID_TTL
            {
                return Ok(Err(DecodeError::Incompatible {
                    id,
                    message: message.clone(),
                }));
            }
            let metrics = &self.metrics;
            let source = &self.source;
            let fetched = with_retries(
                self.retry,
                || source.fetch(id),
                |e| matches!(e, FetchError::NotFound(_) | FetchError::Refused(_)),
                |e, attempt, d| {
                    metrics
                        .retries
                        .with_label_values(&["registry", "retryable"])
                        .inc();
                    tracing::warn!(schema_id = id, error = %e, attempt, retry_in = ?d, "schema registry unavailable");
                },
            )
            .await;
            match fetched {
                Ok(json) => {
                    if let Err(e) = self.decoder.register(id, &json) {
                        if let DecodeError::Incompatible { message, .. } = &e {
                            self.refused_ids
                                .insert(id, (Instant::now(), message.clone()));
                        }
                        return Ok(Err(e));
                    }
                    tracing::info!(schema_id = id, "writer schema registered");
                }
                Err(FetchError::NotFound(_)) => {
                    self.unknown_ids.insert(id, Instant::now());
                    return Ok(Err(DecodeError::UnknownSchemaId(id)));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self.decoder.decode::<E>(payload).map(|e| (id, e)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const SCHEMA: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"}]}"#;

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct T {
        a: String,
    }

    fn files(ids: &str) -> (PathBuf, SchemaSource) {
        let dir = std::env::temp_dir().join(format!(
            "umkm-decode-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.avsc"), SCHEMA).unwrap();
        std::fs::write(dir.join("registry.json"), ids).unwrap();
        let s = SchemaSource::files(dir.clone()).unwrap();
        (dir, s)
    }

    fn framed(id: u32) -> Vec<u8> {
        let schema = apache_avro::Schema::parse_str(SCHEMA).unwrap();
        umkm_core::avro::encode(&schema, id, &T { a: "x".into() }).unwrap()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff_ms: 1,
            max_backoff_ms: 2,
            max_elapsed_s: 5,
            max_attempts: 3,
        }
    }

    #[tokio::test]
    async fn fetches_a_writer_schema_once_and_decodes() {
        let (dir, src) = files(r#"{"7": "t.avsc"}"#);
        let metrics = Arc::new(Metrics::new("test"));
        let mut d: Decoding<T> = Decoding::new(SCHEMA, src, policy(), metrics).unwrap();
        let (id, t) = d.decode(&framed(7)).await.unwrap().unwrap();
        assert_eq!((id, t), (7, T { a: "x".into() }));
        // Known now: decodes without the registry.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(d.decode(&framed(7)).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn an_unknown_id_is_a_bad_record_and_a_broken_registry_an_outage() {
        let (dir, src) = files(r#"{"7": "t.avsc", "8": "missing.avsc"}"#);
        let metrics = Arc::new(Metrics::new("test"));
        let mut d: Decoding<T> = Decoding::new(SCHEMA, src, policy(), metrics.clone()).unwrap();
        let e = d.decode(&framed(9)).await.unwrap().unwrap_err();
        assert_eq!(e.rule(), "unknown_schema_id");
        let e = d.decode(b"\x01xx").await.unwrap().unwrap_err();
        assert_eq!(e.rule(), "wire_short_buffer");
        // Id 8 is listed but its file cannot be read: the registry is "unavailable", retried
        // three times (retry.registry.max_attempts), then an error that stops the service.
        let e = d.decode(&framed(8)).await.unwrap_err();
        assert!(matches!(e, FetchError::Unavailable(_)), "{e}");
        assert!(
            metrics.render().contains(
                r#"umkm_retries_total{class="retryable",what="registry",service="test"} 2"#
            ),
            "{}",
            metrics.render()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
