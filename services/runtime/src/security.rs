//! Securing the three connections (README "Security"): Kafka's protocol, TLS files and SASL
//! login as librdkafka properties; TLS for the HTTP endpoints (ClickHouse, the schema
//! registry) as one OpenSSL-backed connector each; the registry's credentials. Everything is
//! checked at start-up (and by `check-config`), so a bad setting stops the service before it
//! connects anywhere. Secrets never reach a log: [`KafkaProperties`] and [`Tls`] print names only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// `kafka.security` (README "Security"): the protocol and, for `sasl_*`, the SASL login.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    /// `plaintext` (unset), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: Option<String>,
    /// `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Secret,
    pub sasl_password_file: Option<PathBuf>,
}

/// TLS files of one connection (README "Security"). PEM files; the key PKCS#8 or PKCS#1,
/// unencrypted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The CA that signed the server's certificate; the only one trusted. Unset: the
    /// system's CA store.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (mutual TLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Empty paths (e.g. `UMKM__CLICKHOUSE__TLS__CA_FILE=`) mean unset.
    pub(crate) fn normalised(self) -> TlsSettings {
        let set = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        TlsSettings {
            ca_file: set(self.ca_file),
            cert_file: set(self.cert_file),
            key_file: set(self.key_file),
        }
    }

    pub fn is_set(&self) -> bool {
        self != &TlsSettings::default()
    }
}

/// The SASL mechanisms this build's librdkafka speaks.
pub const SASL_MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "plaintext" => Some(Protocol::Plaintext),
            "ssl" => Some(Protocol::Ssl),
            "sasl_plaintext" => Some(Protocol::SaslPlaintext),
            "sasl_ssl" => Some(Protocol::SaslSsl),
            _ => None,
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }

    fn librdkafka(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }
}

/// librdkafka properties from `kafka.security` and `kafka.tls`, set on every client (consumer,
/// DLQ producer, group-offsets reader). Debug shows the keys, never the values.
#[derive(Clone, Default)]
pub struct KafkaProperties(pub Vec<(&'static str, String)>);

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

/// Checks `kafka.security`, `kafka.tls` and their overlap with `kafka.extra`; `sasl_password`
/// is the password already read from its env or file. Pure but for checking that the TLS files
/// can be read.
pub fn kafka_properties(
    s: &KafkaSecurity,
    tls: &TlsSettings,
    extra: &BTreeMap<String, String>,
    sasl_password: &Secret,
    problems: &mut Vec<String>,
) -> KafkaProperties {
    let protocol = match s.protocol.as_deref().filter(|p| !p.trim().is_empty()) {
        None => None,
        Some(p) => match Protocol::parse(p) {
            Some(p) => Some(p),
            None => {
                problems.push(format!(
                    "kafka.security.protocol: {p:?} is not plaintext, ssl, sasl_plaintext or sasl_ssl"
                ));
                return KafkaProperties::default();
            }
        },
    };
    let effective = protocol.unwrap_or(Protocol::Plaintext);
    let mut props = Vec::new();
    if let Some(p) = protocol {
        props.push(("security.protocol", p.librdkafka().to_string()));
    }
    if tls.is_set() && !effective.tls() {
        problems.push(format!(
            "kafka.tls: set, but kafka.security.protocol is {}: use ssl or sasl_ssl",
            effective.librdkafka()
        ));
    }
    check_tls_files("kafka.tls", tls, problems);
    // Without a CA file librdkafka would look where its own (vendored, static) OpenSSL was
    // configured, not in the system's store: `probe` searches the usual system paths.
    if effective.tls() && tls.ca_file.is_none() && !extra.contains_key("ssl.ca.location") {
        props.push(("ssl.ca.location", "probe".to_string()));
    }
    for (key, file) in [
        ("ssl.ca.location", &tls.ca_file),
        ("ssl.certificate.location", &tls.cert_file),
        ("ssl.key.location", &tls.key_file),
    ] {
        if let Some(f) = file {
            props.push((key, f.display().to_string()));
        }
    }
    let mechanism = s.sasl_mechanism.as_deref().filter(|m| !m.trim().is_empty());
    let username = s.sasl_username.as_deref().filter(|u| !u.is_empty());
    if effective.sasl() {
        match mechanism.map(str::to_ascii_uppercase) {
            None => problems.push(format!(
                "kafka.security.sasl_mechanism: required with {} ({})",
                effective.librdkafka(),
                SASL_MECHANISMS.join(", ")
            )),
            Some(m) if SASL_MECHANISMS.contains(&m.as_str()) => {
                props.push(("sasl.mechanism", m));
            }
            Some(m) if m == "OAUTHBEARER" || m == "GSSAPI" => problems.push(format!(
                "kafka.security.sasl_mechanism: {m} is not built into this librdkafka (README \"Security\"); use {}",
                SASL_MECHANISMS.join(", ")
            )),
            Some(m) => problems.push(format!(
                "kafka.security.sasl_mechanism: {m:?} is not one of {}",
                SASL_MECHANISMS.join(", ")
            )),
        }
        match username {
            Some(u) => props.push(("sasl.username", u.to_string())),
            None => problems.push("kafka.security.sasl_username: required with SASL".into()),
        }
        if sasl_password.0.is_empty() {
            problems.push(
                "kafka.security.sasl_password: required with SASL (env UMKM__KAFKA__SECURITY__SASL_PASSWORD or kafka.security.sasl_password_file)"
                    .into(),
            );
        } else {
            props.push(("sasl.password", sasl_password.0.clone()));
        }
    } else if mechanism.is_some() || username.is_some() || !sasl_password.0.is_empty() {
        problems.push(format!(
            "kafka.security.sasl_*: set, but kafka.security.protocol is {}: use sasl_plaintext or sasl_ssl",
            effective.librdkafka()
        ));
    }
    for (key, _) in &props {
        let aliases: &[&str] = if *key == "sasl.mechanism" {
            &["sasl.mechanism", "sasl.mechanisms"]
        } else {
            std::slice::from_ref(key)
        };
        for a in aliases.iter().filter(|a| extra.contains_key(**a)) {
            problems.push(format!(
                "kafka.extra.{a}: also set by kafka.security / kafka.tls; set it in one place"
            ));
        }
    }
    KafkaProperties(props)
}

/// Both halves of a client certificate or neither, and every named file readable PEM.
fn check_tls_files(what: &str, t: &TlsSettings, problems: &mut Vec<String>) {
    if t.cert_file.is_some() != t.key_file.is_some() {
        problems.push(format!(
            "{what}: cert_file and key_file go together (a client certificate and its key)"
        ));
    }
    for (name, file) in [
        ("ca_file", &t.ca_file),
        ("cert_file", &t.cert_file),
        ("key_file", &t.key_file),
    ] {
        if let Some(f) = file
            && let Err(e) = read_pem(f)
        {
            problems.push(format!("{what}.{name}: {e}"));
        }
    }
}

fn read_pem(f: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{} is not a PEM file", f.display()));
    }
    Ok(bytes)
}

/// TLS for one HTTP endpoint: the CA to trust only (or the system's CA store) and the client
/// certificate, if any, checked at start-up; the OpenSSL connector is built when connecting
/// ([`Tls::connector`]). Debug shows the file names.
#[derive(Clone)]
pub struct Tls {
    ca: Option<native_tls::Certificate>,
    identity: Option<native_tls::Identity>,
    files: TlsSettings,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({:?})", self.files)
    }
}

impl Tls {
    /// For `url`: TLS when it is `https://`, None for `http://`; a problem when TLS files are
    /// set for an `http://` URL or cannot be used.
    pub fn for_url(
        what: &str,
        url: &str,
        files: &TlsSettings,
        problems: &mut Vec<String>,
    ) -> Option<Tls> {
        if !url.starts_with("https://") {
            if files.is_set() {
                problems.push(format!("{what}: set, but the URL {url:?} is not https://"));
            }
            return None;
        }
        let before = problems.len();
        check_tls_files(what, files, problems);
        if problems.len() > before {
            return None;
        }
        match Self::load(files) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                None
            }
        }
    }

    fn load(files: &TlsSettings) -> Result<Tls, String> {
        let ca = match &files.ca_file {
            Some(ca) => Some(
                native_tls::Certificate::from_pem(&read_pem(ca)?)
                    .map_err(|e| format!("ca_file {}: {e}", ca.display()))?,
            ),
            None => None,
        };
        let identity = match (&files.cert_file, &files.key_file) {
            (Some(cert), Some(key)) => {
                Some(identity(&read_pem(cert)?, &read_pem(key)?).map_err(|e| {
                    format!(
                        "cert_file {} / key_file {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?)
            }
            _ => None,
        };
        Ok(Tls {
            ca,
            identity,
            files: files.clone(),
        })
    }

    /// The OpenSSL connector: TLS 1.2 or later, `ca_file` the only CA trusted when set.
    pub fn connector(&self) -> Result<native_tls::TlsConnector, String> {
        let mut b = native_tls::TlsConnector::builder();
        b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        if let Some(ca) = &self.ca {
            b.add_root_certificate(ca.clone())
                .disable_built_in_roots(true);
        }
        if let Some(id) = &self.identity {
            b.identity(id.clone());
        }
        b.build().map_err(|e| format!("TLS: {e}"))
    }
}

/// native-tls wants PKCS#8; a PKCS#1 (`BEGIN RSA PRIVATE KEY`) key is converted.
fn identity(cert: &[u8], key: &[u8]) -> Result<native_tls::Identity, String> {
    let key = if key.windows(15).any(|w| w == b"RSA PRIVATE KEY") {
        openssl::rsa::Rsa::private_key_from_pem(key)
            .and_then(openssl::pkey::PKey::from_rsa)
            .and_then(|k| k.private_key_to_pem_pkcs8())
            .map_err(|e| format!("key: {e}"))?
    } else {
        key.to_vec()
    };
    native_tls::Identity::from_pkcs8(cert, &key).map_err(|e| e.to_string())
}

/// A TLS failure somewhere in an error's chain (an untrusted or expired certificate, a
/// handshake refused), described for people: no retry fixes it.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<native_tls::Error>()
            && refusal(&t.to_string())
        {
            return Some(format!("TLS handshake failed: {t}"));
        }
        // A TLS 1.3 server refuses a client certificate after the handshake: the refusal
        // arrives as the first read's error, an OpenSSL error inside an io::Error.
        if let Some(t) = err.downcast_ref::<openssl::ssl::Error>()
            && refusal(&t.to_string())
        {
            return Some(format!("TLS refused by the server: {t}"));
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && let Some(t) = tls_failure(inner)
        {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// What only a configuration change fixes: an untrusted or expired certificate, an alert the
/// peer sent (client certificate required or refused), TLS spoken to a plaintext port. A
/// connection reset during a handshake (a server restarting) is not one.
fn refusal(openssl_text: &str) -> bool {
    [
        "certificate verify failed",
        " alert ",
        "wrong version number",
    ]
    .iter()
    .any(|m| openssl_text.contains(m))
}

/// librdkafka says only that a broker's certificate "could not be verified": this connects
/// once more to the broker named in `reason` (`…://host:port/…`), verifies as librdkafka does
/// (`kafka.tls.ca_file`, or the system's store) and says what OpenSSL found, e.g. "certificate
/// has expired". None when the reason is not a verification failure or the check cannot run.
pub fn diagnose_broker_tls(reason: &str, tls: &TlsSettings) -> Option<String> {
    use openssl::ssl::{HandshakeError, SslConnector, SslMethod};
    if !reason.contains("certificate verify failed") {
        return None;
    }
    let addr = reason.split("://").nth(1)?.split('/').next()?;
    let host = addr.rsplit_once(':')?.0.trim_matches(['[', ']']);
    let mut b = SslConnector::builder(SslMethod::tls_client()).ok()?;
    if let Some(ca) = &tls.ca_file {
        b.set_ca_file(ca).ok()?;
    }
    let sock = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .ok()?
        .find_map(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    match b.build().connect(host, sock) {
        Err(HandshakeError::Failure(mid)) => Some(format!(
            "the certificate {addr} presents: {}",
            mid.ssl().verify_result().error_string()
        )),
        _ => None,
    }
}

/// How the service authenticates to the schema registry.
#[derive(Clone, Default)]
pub enum RegistryAuth {
    #[default]
    None,
    Basic {
        user: String,
        password: Secret,
    },
    Bearer(Secret),
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::None => f.write_str("None"),
            RegistryAuth::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            RegistryAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// The registry's credentials and TLS, from `registry.*` with secrets read from env or file.
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    pub auth: RegistryAuth,
    pub tls: Option<Tls>,
}

/// A secret given inline (env) or in a file (trailing newline dropped), never both.
pub fn read_secret(
    inline: &Secret,
    file: &Option<PathBuf>,
    what: &str,
    problems: &mut Vec<String>,
) -> Secret {
    match file.as_ref().filter(|f| !f.as_os_str().is_empty()) {
        Some(path) if !inline.0.is_empty() => {
            problems.push(format!(
                "{what}: set either the value or the file ({}), not both",
                path.display()
            ));
            Secret::default()
        }
        Some(path) => match std::fs::read_to_string(path) {
            Ok(s) => Secret(s.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                problems.push(format!("{what}: cannot read {}: {e}", path.display()));
                Secret::default()
            }
        },
        None => inline.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three parts of `kafka.*` these checks read.
    #[derive(Default)]
    struct KafkaSettings {
        security: KafkaSecurity,
        tls: TlsSettings,
        extra: BTreeMap<String, String>,
    }

    fn kafka(protocol: Option<&str>, mechanism: Option<&str>, user: Option<&str>) -> KafkaSettings {
        KafkaSettings {
            security: KafkaSecurity {
                protocol: protocol.map(Into::into),
                sasl_mechanism: mechanism.map(Into::into),
                sasl_username: user.map(Into::into),
                ..KafkaSecurity::default()
            },
            ..KafkaSettings::default()
        }
    }

    fn props(
        k: &KafkaSettings,
        password: &str,
    ) -> Result<Vec<(&'static str, String)>, Vec<String>> {
        let mut p = Vec::new();
        let props = kafka_properties(
            &k.security,
            &k.tls,
            &k.extra,
            &Secret(password.into()),
            &mut p,
        );
        if p.is_empty() { Ok(props.0) } else { Err(p) }
    }

    #[test]
    fn unset_is_plaintext_and_sets_nothing() {
        assert_eq!(props(&KafkaSettings::default(), "").unwrap(), vec![]);
    }

    #[test]
    fn sasl_ssl_with_scram_becomes_librdkafka_properties() {
        let mut k = kafka(Some("SASL_SSL"), Some("scram-sha-512"), Some("umkm"));
        k.tls.ca_file = Some("Cargo.toml".into());
        let e = props(&k, "pw").unwrap_err();
        assert!(e[0].contains("Cargo.toml is not a PEM file"), "{e:?}");
        k.tls.ca_file = None;
        let p = props(&k, "pw").unwrap();
        assert_eq!(
            p,
            vec![
                ("security.protocol", "sasl_ssl".to_string()),
                ("ssl.ca.location", "probe".to_string()),
                ("sasl.mechanism", "SCRAM-SHA-512".to_string()),
                ("sasl.username", "umkm".to_string()),
                ("sasl.password", "pw".to_string()),
            ]
        );
        let shown = format!(
            "{:?}",
            kafka_properties(
                &k.security,
                &k.tls,
                &k.extra,
                &Secret("pw".into()),
                &mut Vec::new()
            )
        );
        assert!(
            !shown.contains("pw\"") && shown.contains("sasl.password"),
            "{shown}"
        );
    }

    #[test]
    fn inconsistent_settings_are_named() {
        let cases: [(KafkaSettings, &str, &str); 6] = [
            (
                kafka(Some("tls"), None, None),
                "",
                "kafka.security.protocol: \"tls\"",
            ),
            (
                kafka(Some("sasl_ssl"), None, Some("u")),
                "pw",
                "sasl_mechanism: required",
            ),
            (
                kafka(Some("sasl_ssl"), Some("GSSAPI"), Some("u")),
                "pw",
                "GSSAPI is not built",
            ),
            (
                kafka(Some("sasl_ssl"), Some("SCRAM-SHA-1"), Some("u")),
                "pw",
                "is not one of",
            ),
            (
                kafka(Some("sasl_plaintext"), Some("PLAIN"), Some("u")),
                "",
                "sasl_password: required",
            ),
            (
                kafka(Some("ssl"), Some("PLAIN"), None),
                "",
                "use sasl_plaintext or sasl_ssl",
            ),
        ];
        for (k, pw, needle) in cases {
            let e = props(&k, pw).unwrap_err();
            assert!(e.iter().any(|p| p.contains(needle)), "{needle}: {e:?}");
        }
        let mut k = kafka(None, None, None);
        k.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let e = props(&k, "").unwrap_err();
        assert!(
            e[0].contains("kafka.tls: set, but kafka.security.protocol is plaintext"),
            "{e:?}"
        );
        assert!(e[1].contains("kafka.tls.ca_file: cannot read"), "{e:?}");
        let mut k = kafka(Some("ssl"), None, None);
        k.tls.cert_file = Some("/nonexistent/c.pem".into());
        let e = props(&k, "").unwrap_err();
        assert!(e[0].contains("cert_file and key_file go together"), "{e:?}");
    }

    #[test]
    fn extra_may_not_set_what_security_sets() {
        let mut k = kafka(Some("sasl_ssl"), Some("PLAIN"), Some("u"));
        k.extra
            .insert("sasl.mechanisms".into(), "SCRAM-SHA-256".into());
        k.extra.insert("security.protocol".into(), "ssl".into());
        k.extra.insert(
            "ssl.endpoint.identification.algorithm".into(),
            "none".into(),
        );
        let e = props(&k, "pw").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("kafka.extra.security.protocol: also set"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("kafka.extra.sasl.mechanisms: also set"),
            "{e:?}"
        );
        // Without first-class settings, extra stays the passthrough it was.
        let mut k = kafka(None, None, None);
        k.extra.insert("security.protocol".into(), "ssl".into());
        assert!(props(&k, "").is_ok());
    }
}
