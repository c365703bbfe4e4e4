//! Writer-schema lookup by id: a Confluent-compatible registry over REST
//! (`GET {url}/schemas/ids/{id}`), or a file registry (`registry.json` mapping ids to `.avsc`
//! files) where no registry runs. Found schemas are registered in the service's `Decoder`,
//! which caches them by id for the life of the process (ids are immutable in a registry).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::RegistrySettings;
use crate::security::{RegistryAccess, RegistryAuth, tls_failure};

fn authorised(req: reqwest::RequestBuilder, auth: &RegistryAuth) -> reqwest::RequestBuilder {
    match auth {
        RegistryAuth::None => req,
        RegistryAuth::Basic { user, password } => req.basic_auth(user, Some(&password.0)),
        RegistryAuth::Bearer(token) => req.bearer_auth(&token.0),
    }
}

/// A request that got no answer: a TLS failure is final, anything else may pass.
fn unreachable(e: reqwest::Error) -> FetchError {
    match tls_failure(&e) {
        Some(t) => FetchError::Refused(t),
        None => FetchError::Unavailable(e.to_string()),
    }
}

/// Bound on a registry answer: a writer schema is a few KiB; a larger answer is a registry
/// fault, not a schema (README "Fuzzing").
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::Unavailable(format!(
                "registry answer larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The writer schema in a registry's answer to `GET /schemas/ids/{id}`
/// (`{"schema": "...", "schemaType": "AVRO"}`; no `schemaType` means Avro). A schema of
/// another type is an unknown id for an Avro consumer.
pub fn schema_of_answer(id: u32, body: &[u8]) -> Result<String, FetchError> {
    #[derive(serde::Deserialize)]
    struct Body {
        schema: String,
        #[serde(rename = "schemaType")]
        schema_type: Option<String>,
    }
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| FetchError::Unavailable(format!("registry answer: {e}")))?;
    match body.schema_type.as_deref() {
        None | Some("AVRO") => Ok(body.schema),
        Some(other) => Err(FetchError::NotFound(id)).inspect_err(|_| {
            tracing::warn!(schema_id = id, schema_type = other, "schema is not Avro")
        }),
    }
}

/// 401 and 403 are final: the credentials (`registry.user`/`password` or `bearer_token`) are
/// wrong or lack the right to read schemas.
fn refused(status: reqwest::StatusCode) -> Result<(), FetchError> {
    match status.as_u16() {
        401 => Err(FetchError::Refused(
            "HTTP 401: the registry did not accept the credentials (registry.user and registry.password, or registry.bearer_token)".into(),
        )),
        403 => Err(FetchError::Refused(
            "HTTP 403: the credentials are not allowed to read schemas".into(),
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The registry answered that it does not know the id: a bad record.
    #[error("unknown schema id {0}")]
    NotFound(u32),
    /// The registry could not be asked: retry, never dead-letter.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry refused this service (HTTP 401/403) or its TLS certificate is not one to
    /// trust: no retry fixes it, the service stops.
    #[error("schema registry: {0}")]
    Refused(String),
}

pub enum SchemaSource {
    Files {
        dir: PathBuf,
        ids: HashMap<u32, String>,
    },
    Rest {
        client: reqwest::Client,
        base: String,
        auth: RegistryAuth,
    },
}

impl SchemaSource {
    /// The REST registry at `registry.url` with `access` (from the validated settings), or the
    /// file registry at `registry.dir`.
    pub fn from_settings(s: &RegistrySettings, access: &RegistryAccess) -> Result<Self, String> {
        if let Some(url) = &s.url {
            let mut b = reqwest::Client::builder()
                .timeout(Duration::from_millis(s.timeout_ms))
                .connect_timeout(Duration::from_millis(s.timeout_ms))
                .tcp_nodelay(true);
            if let Some(tls) = &access.tls {
                b = b.use_preconfigured_tls(tls.connector()?);
            }
            let client = b.build().map_err(|e| e.to_string())?;
            return Ok(SchemaSource::Rest {
                client,
                base: url.trim_end_matches('/').to_string(),
                auth: access.auth.clone(),
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

    /// Start-up check of a REST registry (`GET /subjects`): refused credentials or an
    /// untrusted certificate stop the service before it consumes; a registry that does not
    /// answer yet is only logged (each schema fetch retries on its own).
    pub async fn check(&self) -> Result<(), FetchError> {
        let SchemaSource::Rest { client, base, auth } = self else {
            return Ok(());
        };
        match authorised(client.get(format!("{base}/subjects")), auth)
            .send()
            .await
            .map_err(unreachable)
        {
            Ok(resp) => refused(resp.status()),
            Err(FetchError::Unavailable(e)) => {
                tracing::warn!(error = %e, "schema registry not reachable yet");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub async fn fetch(&self, id: u32) -> Result<String, FetchError> {
        match self {
            SchemaSource::Files { dir, ids } => {
                let file = ids.get(&id).ok_or(FetchError::NotFound(id))?;
                std::fs::read_to_string(dir.join(file))
                    .map_err(|e| FetchError::Unavailable(format!("{file}: {e}")))
            }
            SchemaSource::Rest { client, base, auth } => {
                let resp = authorised(client.get(format!("{base}/schemas/ids/{id}")), auth)
                    .send()
                    .await
                    .map_err(unreachable)?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    return Err(FetchError::NotFound(id));
                }
                refused(resp.status())?;
                if !resp.status().is_success() {
                    return Err(FetchError::Unavailable(format!(
                        "GET /schemas/ids/{id}: HTTP {}",
                        resp.status()
                    )));
                }
                let body = read_limited(resp, MAX_ANSWER_BYTES).await?;
                schema_of_answer(id, &body)
            }
        }
    }
}
