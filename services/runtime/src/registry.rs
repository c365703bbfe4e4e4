//! Writer-schema lookup by id: a Confluent-compatible registry over REST
//! (`GET {url}/schemas/ids/{id}`), or a file registry (`registry.json` mapping ids to `.avsc`
//! files) where no registry runs. Found schemas are registered in the service's `Decoder`,
//! which caches them by id for the life of the process (ids are immutable in a registry).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::RegistrySettings;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The registry answered that it does not know the id: a bad record.
    #[error("unknown schema id {0}")]
    NotFound(u32),
    /// The registry could not be asked: retry, never dead-letter.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

pub enum SchemaSource {
    Files {
        dir: PathBuf,
        ids: HashMap<u32, String>,
    },
    Rest {
        client: reqwest::Client,
        base: String,
        auth: Option<(String, String)>,
    },
}

impl SchemaSource {
    pub fn from_settings(s: &RegistrySettings) -> Result<Self, String> {
        if let Some(url) = &s.url {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(s.timeout_ms))
                .connect_timeout(Duration::from_millis(s.timeout_ms))
                .tcp_nodelay(true)
                .build()
                .map_err(|e| e.to_string())?;
            let auth = s.user.clone().map(|u| (u, s.password.0.clone()));
            return Ok(SchemaSource::Rest {
                client,
                base: url.trim_end_matches('/').to_string(),
                auth,
            });
        }
        let dir = s.dir.clone().ok_or("no registry configured")?;
        Self::files(dir)
    }

    pub fn files(dir: PathBuf) -> Result<Self, String> {
        let index = dir.join("registry.json");
        let text = std::fs::read_to_string(&index)
            .map_err(|e| format!("cannot read {}: {e}", index.display()))?;
        let raw: HashMap<String, String> = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not {{\"<id>\": \"<file>\"}}: {e}", index.display()))?;
        let mut ids = HashMap::new();
        for (k, v) in raw {
            let id: u32 = k
                .parse()
                .map_err(|_| format!("{}: id {k:?} is not a number", index.display()))?;
            ids.insert(id, v);
        }
        Ok(SchemaSource::Files { dir, ids })
    }

    pub async fn fetch(&self, id: u32) -> Result<String, FetchError> {
        match self {
            SchemaSource::Files { dir, ids } => {
                let file = ids.get(&id).ok_or(FetchError::NotFound(id))?;
                std::fs::read_to_string(dir.join(file))
                    .map_err(|e| FetchError::Unavailable(format!("{file}: {e}")))
            }
            SchemaSource::Rest { client, base, auth } => {
                let mut req = client.get(format!("{base}/schemas/ids/{id}"));
                if let Some((u, p)) = auth {
                    req = req.basic_auth(u, Some(p));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| FetchError::Unavailable(e.to_string()))?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    return Err(FetchError::NotFound(id));
                }
                if !resp.status().is_success() {
                    return Err(FetchError::Unavailable(format!(
                        "GET /schemas/ids/{id}: HTTP {}",
                        resp.status()
                    )));
                }
                #[derive(serde::Deserialize)]
                struct Body {
                    schema: String,
                    #[serde(rename = "schemaType")]
                    schema_type: Option<String>,
                }
                let body: Body = resp
                    .json()
                    .await
                    .map_err(|e| FetchError::Unavailable(format!("registry answer: {e}")))?;
                match body.schema_type.as_deref() {
                    None | Some("AVRO") => Ok(body.schema),
                    Some(other) => Err(FetchError::NotFound(id)).inspect_err(|_| {
                        tracing::warn!(schema_id = id, schema_type = other, "schema is not Avro")
                    }),
                }
            }
        }
    }
}
