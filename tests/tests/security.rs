//! Secured connections for real (README "Security"), against the endpoints `scripts/stack up`
//! starts with throwaway certificates (scripts/tls-certs): a tansu broker requiring SASL/SCRAM
//! behind stunnel requiring a client certificate (SASL_SSL + mTLS), ClickHouse 18.16 on its own
//! `https_port` and behind stunnel requiring a client certificate, the same broker and
//! ClickHouse behind an expired certificate, and the stand-in registry over HTTPS with basic
//! auth or a bearer token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use umkm_e2e::{
    ConsumerProc, ConsumerSetup, Ends, Env, RegistryOptions, ch_u64, offsets_at_end,
    publish_tracked, read_dlq_exactly, serve_registry_with, wait_committed, wait_until,
};
use umkm_runtime::config::{RegistrySettings, Secret, TlsSettings};
use umkm_runtime::registry::{FetchError, SchemaSource};
use umkm_runtime::security::RegistryAccess;
use umkm_traffic::qris::{Spec, generate};

const PARTITIONS: i32 = 3;
const REGISTRY_USER: &str = "registry-api-key";
const REGISTRY_SECRET: &str = "registry-api-secret-never-logged";

/// The secured endpoints, from `scripts/stack env`.
struct Secured {
    tls: PathBuf,
    brokers: String,
    expired_brokers: String,
    user: String,
    password: String,
    ch_https: String,
    ch_mtls: String,
    ch_expired: String,
}

fn var(k: &str) -> Result<String> {
    std::env::var(k).with_context(|| {
        format!("{k} is not set: scripts/stack up starts the secured endpoints and scripts/stack env names them")
    })
}

impl Secured {
    fn from_env() -> Result<Secured> {
        Ok(Secured {
            tls: var("UMKM_TLS_DIR")?.into(),
            brokers: var("UMKM_SECURE_KAFKA_BROKERS")?,
            expired_brokers: var("UMKM_EXPIRED_KAFKA_BROKERS")?,
            user: var("UMKM_SECURE_KAFKA_USER")?,
            password: var("UMKM_SECURE_KAFKA_PASSWORD")?,
            ch_https: var("UMKM_CLICKHOUSE_HTTPS_URL")?,
            ch_mtls: var("UMKM_CLICKHOUSE_MTLS_URL")?,
            ch_expired: var("UMKM_CLICKHOUSE_EXPIRED_URL")?,
        })
    }

    fn file(&self, name: &str) -> String {
        self.tls.join(name).display().to_string()
    }

    /// The tests' clients speak SCRAM-SHA-256 with the client certificate; the services
    /// SCRAM-SHA-512 with their password from a file, ClickHouse over its https_port and the
    /// registry over HTTPS with basic auth (secret from a file). Test queries keep the plain
    /// HTTP URL of the same ClickHouse.
    fn env(&self, base: &Env, dir: &Path, registry: &str) -> Result<Env> {
        let kafka_password = dir.join("kafka-password");
        std::fs::write(&kafka_password, format!("{}\n", self.password))?;
        let registry_secret = dir.join("registry-secret");
        std::fs::write(&registry_secret, REGISTRY_SECRET)?;
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        Ok(Env {
            brokers: self.brokers.clone(),
            kafka_props: vec![
                kv("security.protocol", "sasl_ssl"),
                kv("sasl.mechanism", "SCRAM-SHA-256"),
                kv("sasl.username", &self.user),
                kv("sasl.password", &self.password),
                kv("ssl.ca.location", &self.file("ca.pem")),
                kv("ssl.certificate.location", &self.file("client.pem")),
                kv("ssl.key.location", &self.file("client.key")),
            ],
            service_env: vec![
                kv("UMKM__KAFKA__SECURITY__PROTOCOL", "sasl_ssl"),
                kv("UMKM__KAFKA__SECURITY__SASL_MECHANISM", "SCRAM-SHA-512"),
                kv("UMKM__KAFKA__SECURITY__SASL_USERNAME", &self.user),
                kv(
                    "UMKM__KAFKA__SECURITY__SASL_PASSWORD_FILE",
                    &kafka_password.display().to_string(),
                ),
                kv("UMKM__KAFKA__TLS__CA_FILE", &self.file("ca.pem")),
                kv("UMKM__KAFKA__TLS__CERT_FILE", &self.file("client.pem")),
                kv("UMKM__KAFKA__TLS__KEY_FILE", &self.file("client.key")),
                kv("UMKM_CLICKHOUSE_URL", &self.ch_https),
                kv("UMKM__CLICKHOUSE__TLS__CA_FILE", &self.file("ca.pem")),
                kv("UMKM__REGISTRY__DIR", ""),
                kv("UMKM__REGISTRY__URL", registry),
                kv("UMKM__REGISTRY__USER", REGISTRY_USER),
                kv(
                    "UMKM__REGISTRY__PASSWORD_FILE",
                    &registry_secret.display().to_string(),
                ),
                kv("UMKM__REGISTRY__TLS__CA_FILE", &self.file("ca.pem")),
            ],
            ..base.clone()
        })
    }

    fn registry(&self, cert: &str, auth: bool) -> RegistryOptions {
        RegistryOptions {
            tls: Some((
                self.tls.join(format!("{cert}.pem")),
                self.tls.join(format!("{cert}.key")),
            )),
            basic: auth.then(|| (REGISTRY_USER.to_string(), REGISTRY_SECRET.to_string())),
            ..RegistryOptions::default()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_with_mtls_https_clickhouse_and_an_https_registry_land_exactly() -> Result<()> {
    let sec = Secured::from_env()?;
    let base = Env::from_env();
    let s = ConsumerSetup::prepare("tls_e2e")?;
    let (registry, log) =
        serve_registry_with(s.registry_schemas()?, sec.registry("server", true)).await?;
    let env = sec.env(&base, &s.work_dir, &registry)?;
    umkm_e2e::create_topic(&env, &s.topic, PARTITIONS).await?;
    umkm_e2e::create_topic(&env, &s.dlq_topic, 1).await?;
    let plan = generate(&Spec {
        payments: 2_000,
        bad_each: 5,
        seed: 1212,
        ..Spec::default()
    });
    let mut ends = Ends::new();
    publish_tracked(&env, &s.topic, &plan.messages, &mut ends).await?;

    let mut c = ConsumerProc::start(&env, &s, "c1")?;
    wait_committed(&env, &s, PARTITIONS, &ends, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(c.log_tail()))?;
    let landed = ch_u64(
        &base,
        &format!("SELECT count() FROM {}.qris_payments", s.database),
    )
    .await?;
    ensure!(
        landed == plan.unique.len() as u64,
        "plain count() is {landed}, expected {} unique payments",
        plan.unique.len()
    );
    let distinct = ch_u64(
        &base,
        &format!(
            "SELECT uniqExact(dedup_key) FROM {}.qris_payments",
            s.database
        ),
    )
    .await?;
    ensure!(
        distinct == landed,
        "{landed} rows but {distinct} dedup keys"
    );
    offsets_at_end(&env, &s, PARTITIONS, &ends)?;
    read_dlq_exactly(&env, &s.dlq_topic, plan.bad_total())?;
    // umkm-dlq reads the same security settings from the same variables.
    let out = std::process::Command::new(umkm_e2e::service_bin("umkm-dlq"))
        .args(["summary", "--topic", &s.dlq_topic, "--json"])
        .args(["--brokers", &env.brokers, "--timeout-s", "60"])
        .env_clear()
        .envs(
            env.service_env
                .iter()
                .filter(|(k, _)| k.starts_with("UMKM__KAFKA__"))
                .cloned(),
        )
        .output()?;
    ensure!(
        out.status.success(),
        "umkm-dlq over SASL_SSL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        summary["records"] == plan.bad_total(),
        "umkm-dlq summary: {summary}"
    );
    let paths = log.lock().map(|l| l.clone()).unwrap_or_default();
    ensure!(
        paths.iter().any(|p| p.starts_with("/schemas/ids/")),
        "the schemas did not come from the HTTPS registry: {paths:?}"
    );
    ensure!(
        c.terminate(Duration::from_secs(30))? == 0,
        "{}",
        c.log_tail()
    );
    let text = std::fs::read_to_string(&c.log)?;
    for secret in [sec.password.as_str(), REGISTRY_SECRET] {
        ensure!(!text.contains(secret), "a secret is in the log");
    }
    println!(
        "over SASL_SSL (SCRAM-SHA-512, client certificate), HTTPS ClickHouse and an HTTPS registry with basic auth: {landed} payments exactly, {} dead letters",
        plan.bad_total()
    );
    Ok(())
}

/// A case: its name, the settings that differ from the secured ones, what the log must say.
type Refusal<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

/// Starts a qris-consumer with `overrides` on top of the secured settings and expects it to
/// stop on its own with a non-zero code and `expect` in its log; returns how long it took.
async fn refused(
    env: &Env,
    s: &ConsumerSetup,
    name: &str,
    overrides: &[(&str, &str)],
    expect: &str,
) -> Result<Duration> {
    let mut s = s.clone();
    for (k, v) in overrides {
        s = s.with_env(k, v);
    }
    let started = Instant::now();
    let mut c = ConsumerProc::start(env, &s, name)?;
    // Well inside retry.connect's 15-minute budget: a retry loop would not stop here.
    let limit = Duration::from_secs(45);
    let code = loop {
        if let Some(code) = c.exited() {
            break code;
        }
        if started.elapsed() > limit {
            c.kill9();
            anyhow::bail!("{name}: still running after {limit:?}:\n{}", c.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    let text = std::fs::read_to_string(&c.log)?;
    ensure!(code != 0, "{name}: exit 0:\n{text}");
    ensure!(
        text.contains(expect),
        "{name}: {expect:?} not in the log:\n{}",
        c.log_tail()
    );
    ensure!(
        !text.contains(REGISTRY_SECRET),
        "{name}: the registry secret is in the log"
    );
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains("stopped") || l.contains("ERROR"))
        .unwrap_or_default();
    println!(
        "{name}: exit {code} after {:.1} s: {}",
        took.as_secs_f64(),
        last.trim()
    );
    Ok(took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_an_expired_certificate_or_a_wrong_password_fail_fast_and_say_so() -> Result<()>
{
    let sec = Secured::from_env()?;
    let base = Env::from_env();
    let s = ConsumerSetup::prepare("tls_refused")?;
    let schemas = s.registry_schemas()?;
    let (registry, _) = serve_registry_with(schemas.clone(), sec.registry("server", true)).await?;
    let (expired_registry, _) = serve_registry_with(schemas, sec.registry("expired", true)).await?;
    let env = sec.env(&base, &s.work_dir, &registry)?;
    let other_ca = sec.file("other-ca.pem");
    let cases: Vec<Refusal> = vec![
        (
            "kafka wrong CA",
            vec![("UMKM__KAFKA__TLS__CA_FILE", &other_ca)],
            "certificate verify failed",
        ),
        (
            "kafka expired certificate",
            vec![("UMKM_KAFKA_BROKERS", &sec.expired_brokers)],
            "certificate has expired",
        ),
        (
            "kafka wrong password",
            vec![
                ("UMKM__KAFKA__SECURITY__SASL_PASSWORD_FILE", ""),
                ("UMKM__KAFKA__SECURITY__SASL_PASSWORD", "wrong"),
            ],
            "SASL SCRAM authentication failed",
        ),
        (
            "kafka no client certificate",
            vec![
                ("UMKM__KAFKA__TLS__CERT_FILE", ""),
                ("UMKM__KAFKA__TLS__KEY_FILE", ""),
            ],
            "certificate required",
        ),
        (
            "clickhouse wrong CA",
            vec![("UMKM__CLICKHOUSE__TLS__CA_FILE", &other_ca)],
            "unable to get local issuer certificate",
        ),
        (
            "clickhouse expired certificate",
            vec![("UMKM_CLICKHOUSE_URL", &sec.ch_expired)],
            "certificate has expired",
        ),
        (
            "clickhouse no client certificate",
            vec![("UMKM_CLICKHOUSE_URL", &sec.ch_mtls)],
            "certificate required",
        ),
        (
            "clickhouse wrong password",
            vec![
                ("UMKM__CLICKHOUSE__USER", "umkm_writer"),
                ("UMKM_CLICKHOUSE_PASSWORD", "wrong"),
            ],
            "password",
        ),
        (
            "registry wrong CA",
            vec![("UMKM__REGISTRY__TLS__CA_FILE", &other_ca)],
            "unable to get local issuer certificate",
        ),
        (
            "registry expired certificate",
            vec![("UMKM__REGISTRY__URL", &expired_registry)],
            "certificate has expired",
        ),
        (
            "registry wrong password",
            vec![
                ("UMKM__REGISTRY__PASSWORD_FILE", ""),
                ("UMKM__REGISTRY__PASSWORD", "wrong"),
            ],
            "HTTP 401",
        ),
    ];
    let mut slowest = Duration::ZERO;
    for (i, (name, overrides, expect)) in cases.iter().enumerate() {
        let took = refused(&env, &s, &format!("case{i}"), overrides, expect)
            .await
            .with_context(|| name.to_string())?;
        println!("  ({name})");
        slowest = slowest.max(took);
    }
    println!(
        "{} refusals, each stopped the service within {:.1} s",
        cases.len(),
        slowest.as_secs_f64()
    );

    // The client certificate ClickHouse's stunnel front requires opens it.
    let s2 = s
        .clone()
        .with_env("UMKM_CLICKHOUSE_URL", &sec.ch_mtls)
        .with_env("UMKM__CLICKHOUSE__TLS__CERT_FILE", &sec.file("client.pem"))
        .with_env("UMKM__CLICKHOUSE__TLS__KEY_FILE", &sec.file("client.key"));
    let mut c = ConsumerProc::start(&env, &s2, "mtls")?;
    let log = c.log.clone();
    wait_until(Duration::from_secs(60), "connected over mTLS", || {
        let log = log.clone();
        async move { Ok(std::fs::read_to_string(&log)?.contains("connected to ClickHouse")) }
    })
    .await
    .map_err(|e| e.context(c.log_tail()))?;
    c.kill9();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_client_sends_a_bearer_token_and_stops_on_401() -> Result<()> {
    let sec = Secured::from_env()?;
    let schemas = BTreeMap::from([(7u32, r#"{"type":"string"}"#.to_string())]);
    let (url, log) = serve_registry_with(
        schemas,
        RegistryOptions {
            bearer: Some("token-1".into()),
            ..sec.registry("server", false)
        },
    )
    .await?;
    let source = |token: &str| -> Result<SchemaSource> {
        let settings = RegistrySettings {
            url: Some(url.clone()),
            bearer_token: Secret(token.into()),
            tls: TlsSettings {
                ca_file: Some(sec.tls.join("ca.pem")),
                ..TlsSettings::default()
            },
            ..RegistrySettings::default()
        };
        let mut problems = Vec::new();
        let access = RegistryAccess::from_settings(&settings, &mut problems);
        ensure!(problems.is_empty(), "{problems:?}");
        SchemaSource::from_settings(&settings, &access).map_err(anyhow::Error::msg)
    };
    let good = source("token-1")?;
    good.check().await?;
    ensure!(good.fetch(7).await? == r#"{"type":"string"}"#);
    ensure!(matches!(good.fetch(8).await, Err(FetchError::NotFound(8))));
    let bad = source("token-2")?;
    let e = bad
        .fetch(7)
        .await
        .expect_err("a wrong token must be refused");
    ensure!(
        matches!(e, FetchError::Refused(_)) && e.to_string().contains("HTTP 401"),
        "{e}"
    );
    ensure!(matches!(bad.check().await, Err(FetchError::Refused(_))));
    let seen = log.lock().map(|l| l.len()).unwrap_or(0);
    ensure!(seen == 5, "{seen} requests reached the registry");
    Ok(())
}
