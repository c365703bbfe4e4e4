//! Untrusted bytes through the pure part of the pipeline, without a broker, a registry or
//! ClickHouse: the Confluent frame, the Avro decode with every writer schema registered, and
//! the family's rules, to a [`Verdict`]. The fuzz targets (`fuzz/`, README "Fuzzing") and the
//! property tests use it; the pipeline's `intake` runs the same [`verdict`].

use std::collections::BTreeMap;
use std::path::Path;

use umkm_core::avro::Decoder;

use crate::config::{self, ServiceDefaults, Validated};
use crate::family::Family;
use crate::kafka::Received;
use crate::pipeline::{Verdict, verdict};

/// Settings as a service would validate them: a test PII key and the file registry in
/// `registry_dir`.
pub fn offline_settings(registry_dir: &Path) -> Result<Validated, String> {
    let env = BTreeMap::from([
        (
            "UMKM_PII_HASH_KEY".to_string(),
            "untrusted-bytes-test-key".to_string(),
        ),
        (
            "UMKM__REGISTRY__DIR".to_string(),
            registry_dir.display().to_string(),
        ),
    ]);
    let defaults = ServiceDefaults {
        topic: "untrusted",
        group_id: "untrusted",
        dlq_topic: "untrusted.dlq",
    };
    config::validate(config::load(&defaults, None, &env)?).map_err(|p| p.join("; "))
}

/// One family with every writer schema of `registry_dir/registry.json` registered.
pub struct Examiner<F: Family> {
    family: F,
    decoder: Decoder,
    ids: Vec<u32>,
    /// Processing time of every examined message: when the examiner was made, so generated
    /// events are recent and one examiner's verdicts do not drift.
    now_ms: i64,
}

impl<F: Family> Examiner<F> {
    pub fn new(registry_dir: &Path) -> Result<Self, String> {
        let v = offline_settings(registry_dir)?;
        let family = F::build(&v)?;
        let mut decoder = Decoder::new(F::READER_SCHEMA).map_err(|e| e.to_string())?;
        let index = std::fs::read_to_string(registry_dir.join("registry.json"))
            .map_err(|e| e.to_string())?;
        let index: BTreeMap<String, String> =
            serde_json::from_str(&index).map_err(|e| e.to_string())?;
        let mut ids = Vec::new();
        for (id, file) in index {
            let id: u32 = id.parse().map_err(|_| format!("id {id:?}"))?;
            let schema =
                std::fs::read_to_string(registry_dir.join(&file)).map_err(|e| e.to_string())?;
            // Schemas of other families do not resolve to this reader: they stay unknown here,
            // as a real registry's would decode to a refusal.
            if decoder.register(id, &schema).is_ok() {
                ids.push(id);
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(Examiner {
            family,
            decoder,
            ids,
            now_ms,
        })
    }

    /// The writer schema ids this family decodes.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// What a message with `key` and `payload`, consumed from a topic, becomes.
    pub fn examine(&self, key: Option<&[u8]>, payload: &[u8]) -> Verdict<F::Row> {
        let m = Received {
            topic: "untrusted".into(),
            partition: 0,
            offset: 0,
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        };
        let decoded = Decoder::schema_id(payload)
            .map_err(Into::into)
            .and_then(|id| self.decoder.decode::<F::Event>(payload).map(|e| (id, e)));
        verdict(&self.family, &m, decoded, self.now_ms)
    }

    /// For fuzzers, one input as `[mode, id, key length, key…, bytes…]`: the bytes are the
    /// whole message when `mode` is even, otherwise an Avro datum framed with the known schema
    /// id `id` selects, so that most inputs reach the decoder and the rules instead of failing
    /// at the frame; a key length of 0 means no key. [`fuzz_input`] writes seeds in this form.
    /// Panics if a dead letter has no reason.
    pub fn examine_fuzzed(&self, data: &[u8]) {
        let (mode, id, rest) = match data {
            [m, i, rest @ ..] => (*m, *i, rest),
            _ => (0, 0, data),
        };
        let (key, bytes) = match rest.split_first() {
            Some((&n, tail)) if n > 0 && tail.len() >= usize::from(n) => {
                let (k, b) = tail.split_at(usize::from(n));
                (Some(k), b)
            }
            Some((_, tail)) => (None, tail),
            None => (None, rest),
        };
        let verdict = if mode % 2 == 1 && !self.ids.is_empty() {
            let id = self.ids[usize::from(id) % self.ids.len()];
            self.examine(key, &umkm_core::wire::frame(id, bytes))
        } else {
            self.examine(key, bytes)
        };
        if let Verdict::DeadLetter { reasons, .. } = &verdict {
            assert!(
                !reasons.is_empty()
                    && reasons
                        .iter()
                        .all(|r| !r.rule.is_empty() && !r.message.is_empty()),
                "a dead letter without a reason: {reasons:?}"
            );
        }
    }
}

/// A whole message as one input of [`Examiner::examine_fuzzed`] (keys over 255 bytes are cut).
pub fn fuzz_input(key: Option<&[u8]>, message: &[u8]) -> Vec<u8> {
    let key = key.unwrap_or_default();
    let key = &key[..key.len().min(255)];
    let mut v = vec![0, 0, key.len() as u8];
    v.extend_from_slice(key);
    v.extend_from_slice(message);
    v
}
