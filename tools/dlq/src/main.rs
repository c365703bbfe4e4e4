//! umkm-dlq: list, summarise, show, export and replay the consumers' dead-letter topics
//! (docs/operations.md "The dead-letter topics"). `--help` prints [`USAGE`].

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};
use umkm_dlq::decode::Schemas;
use umkm_dlq::kafka::Connection;
use umkm_dlq::record::DeadLetter;
use umkm_dlq::replay;
use umkm_dlq::select::{self, Selection};
use umkm_dlq::summary::{Tally, rfc3339};
use umkm_runtime::config::{RegistrySettings, Secret, TlsSettings};
use umkm_runtime::registry::SchemaSource;
use umkm_runtime::security::RegistryAccess;

const USAGE: &str = "usage: umkm-dlq summary --topic DLQ [selection] [--json]
       umkm-dlq list    --topic DLQ [selection] [--limit N]
       umkm-dlq show    --topic DLQ --record PARTITION:OFFSET [registry]
       umkm-dlq export  --topic DLQ [selection] [--out FILE] [--raw] [registry]
       umkm-dlq replay  --topic DLQ (selection | --all) [--to TOPIC] [--id NAME]
                        [--rate N] [--dry-run]

  summary  counts by service, source topic, first rule, stage and WIB day, then by rule
  list     one line per record: DLQ coordinates, time, service, source, rules, reason
  show     one record: its headers and its value decoded (payer fields redacted)
  export   JSON lines, one per record: coordinates, key, headers, the decoded value;
           --raw adds the value's bytes as hex (they hold payer data as sent)
  replay   sends each selected record back to its source topic (dlq.source.topic, or --to)
           with its original key and value, and replay.* headers naming the replay (--id,
           default a new UUID) and the record's DLQ coordinates. The consumers deduplicate,
           so replaying a record twice lands it once. --rate paces it (records/s),
           --dry-run only says what would be sent. Without a selection it needs --all.

connection:
  --brokers HOST:PORT   bootstrap servers (default $UMKM_KAFKA_BROKERS or 127.0.0.1:19092)
  -X KEY=VALUE          a librdkafka setting, e.g. -X security.protocol=SASL_SSL (repeatable)
  --timeout-s N         bound on reading the topic and on each request (default 60)

selection (every condition given must hold):
  --rule R[,R...]       any of the record's rules is one of these
  --reason TEXT         dlq.reason contains TEXT (e.g. the region code a reference lacked)
  --service S           dlq.service (qris-consumer, noncash-consumer, merchant-consumer)
  --stage S             decode or validate
  --source-topic T      dlq.source.topic
  --source-partition P  dlq.source.partition
  --source-offsets A..B dlq.source.offset in A..B (inclusive), or one offset
  --since T  --until T  dead-lettered at or after / before T: RFC 3339, YYYY-MM-DD (00:00
                        WIB), Unix milliseconds, or an age like 90m, 6h, 2d
  --records FILE        DLQ coordinates, one PARTITION:OFFSET per line

registry (to decode values; default $UMKM__REGISTRY__URL or $UMKM__REGISTRY__DIR, else
./schemas/avro when it exists):
  --registry-url URL    Confluent-compatible registry ($UMKM__REGISTRY__USER and
                        $UMKM__REGISTRY__PASSWORD for basic auth)
  --registry-dir DIR    a directory with registry.json, as the services' file registry";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Summary,
    List,
    Show,
    Export,
    Replay,
}

struct Opts {
    command: Command,
    conn: Connection,
    topic: String,
    selection: Selection,
    all: bool,
    json: bool,
    limit: Option<usize>,
    record: Option<(i32, i64)>,
    out: Option<PathBuf>,
    raw: bool,
    registry_url: Option<String>,
    registry_dir: Option<PathBuf>,
    to: Option<String>,
    id: Option<String>,
    rate: Option<f64>,
    dry_run: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn parse(args: Vec<String>) -> Result<Option<Opts>> {
    let mut it = args.into_iter();
    let command = match it.next().as_deref() {
        None | Some("-h" | "--help" | "help") => return Ok(None),
        Some("summary") => Command::Summary,
        Some("list") => Command::List,
        Some("show") => Command::Show,
        Some("export") => Command::Export,
        Some("replay") => Command::Replay,
        Some(other) => bail!("unknown command {other:?}"),
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let mut o = Opts {
        command,
        conn: Connection {
            brokers: env("UMKM_KAFKA_BROKERS").unwrap_or_else(|| "127.0.0.1:19092".into()),
            extra: kafka_security_from_env()?,
            timeout: Duration::from_secs(60),
        },
        topic: String::new(),
        selection: Selection::default(),
        all: false,
        json: false,
        limit: None,
        record: None,
        out: None,
        raw: false,
        registry_url: env("UMKM__REGISTRY__URL"),
        registry_dir: env("UMKM__REGISTRY__DIR").map(PathBuf::from),
        to: None,
        id: None,
        rate: None,
        dry_run: false,
    };
    let now = now_ms();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        let s = &mut o.selection;
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--brokers" => o.conn.brokers = val()?,
            "-X" => {
                let kv = val()?;
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("-X {kv:?}: expected KEY=VALUE"))?;
                o.conn.extra.push((k.to_string(), v.to_string()));
            }
            "--timeout-s" => {
                o.conn.timeout = Duration::from_secs(val()?.parse().context("--timeout-s")?)
            }
            "--topic" => o.topic = val()?,
            "--rule" => s
                .rules
                .extend(val()?.split(',').map(|r| r.trim().to_string())),
            "--reason" => s.reason = Some(val()?),
            "--service" => s.service = Some(val()?),
            "--stage" => s.stage = Some(val()?),
            "--source-topic" => s.source_topic = Some(val()?),
            "--source-partition" => {
                s.source_partition = Some(val()?.parse().context("--source-partition")?)
            }
            "--source-offsets" => s.source_offsets = Some(select::parse_offsets(&val()?)?),
            "--since" => s.since_ms = Some(select::parse_time(&val()?, now)?),
            "--until" => s.until_ms = Some(select::parse_time(&val()?, now)?),
            "--records" => {
                let f = val()?;
                let text = std::fs::read_to_string(&f).with_context(|| format!("--records {f}"))?;
                s.records = Some(select::parse_records(&text).with_context(|| f.clone())?);
            }
            "--all" => o.all = true,
            "--json" => o.json = true,
            "--limit" => o.limit = Some(val()?.parse().context("--limit")?),
            "--record" => {
                let r = val()?;
                let set = select::parse_records(&r).with_context(|| format!("--record {r}"))?;
                o.record = set.into_iter().next();
            }
            "--out" => o.out = Some(val()?.into()),
            "--raw" => o.raw = true,
            "--registry-url" => o.registry_url = Some(val()?),
            "--registry-dir" => o.registry_dir = Some(val()?.into()),
            "--to" => o.to = Some(val()?),
            "--id" => o.id = Some(val()?),
            "--rate" => {
                let r: f64 = val()?.parse().context("--rate")?;
                if r.is_nan() || r <= 0.0 {
                    bail!("--rate must be above 0");
                }
                o.rate = Some(r);
            }
            "--dry-run" => o.dry_run = true,
            other => bail!("unknown option {other:?}"),
        }
    }
    if o.topic.is_empty() {
        bail!("--topic (the DLQ topic) is required");
    }
    if command == Command::Show && o.record.is_none() {
        bail!("show needs --record PARTITION:OFFSET");
    }
    if command == Command::Replay && o.selection == Selection::default() && !o.all {
        bail!("replay needs a selection (--rule, --reason, …) or --all");
    }
    Ok(Some(o))
}

/// The services' `kafka.security` and `kafka.tls` from the same environment variables
/// (`UMKM__KAFKA__SECURITY__*`, `UMKM__KAFKA__TLS__*`; README "Security"), checked the same
/// way, so the SASL password need not go on the command line.
fn kafka_security_from_env() -> Result<Vec<(String, String)>> {
    use umkm_runtime::config::{KafkaSecurity, KafkaSettings};
    let var = |k: &str| {
        std::env::var(format!("UMKM__KAFKA__{k}"))
            .ok()
            .filter(|v| !v.is_empty())
    };
    let path = |k: &str| var(k).map(PathBuf::from);
    let k = KafkaSettings {
        security: KafkaSecurity {
            protocol: var("SECURITY__PROTOCOL"),
            sasl_mechanism: var("SECURITY__SASL_MECHANISM"),
            sasl_username: var("SECURITY__SASL_USERNAME"),
            sasl_password: Secret(var("SECURITY__SASL_PASSWORD").unwrap_or_default()),
            sasl_password_file: path("SECURITY__SASL_PASSWORD_FILE"),
        },
        tls: TlsSettings {
            ca_file: path("TLS__CA_FILE"),
            cert_file: path("TLS__CERT_FILE"),
            key_file: path("TLS__KEY_FILE"),
        },
        ..KafkaSettings::default()
    };
    let mut problems = Vec::new();
    let password = umkm_runtime::security::read_secret(
        &k.security.sasl_password,
        &k.security.sasl_password_file,
        "kafka.security.sasl_password",
        &mut problems,
    );
    let props = umkm_runtime::security::kafka_properties(
        &k.security,
        &k.tls,
        &k.extra,
        &password,
        &mut problems,
    );
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(props
        .0
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
}

/// The registry values are decoded with, when one is configured or `./schemas/avro` exists.
fn schemas(o: &Opts) -> Result<Option<Schemas>> {
    let dir = o.registry_dir.clone().or_else(|| {
        let d = PathBuf::from("schemas/avro");
        (o.registry_url.is_none() && d.join("registry.json").is_file()).then_some(d)
    });
    if o.registry_url.is_none() && dir.is_none() {
        return Ok(None);
    }
    // The services' registry settings from the environment (README "Security").
    let var = |k: &str| std::env::var(format!("UMKM__REGISTRY__{k}")).ok();
    let path = |k: &str| var(k).map(PathBuf::from);
    let settings = RegistrySettings {
        url: o.registry_url.clone(),
        dir: if o.registry_url.is_some() { None } else { dir },
        timeout_ms: 5_000,
        user: var("USER"),
        password: Secret(var("PASSWORD").unwrap_or_default()),
        password_file: path("PASSWORD_FILE"),
        bearer_token: Secret(var("BEARER_TOKEN").unwrap_or_default()),
        bearer_token_file: path("BEARER_TOKEN_FILE"),
        tls: TlsSettings {
            ca_file: path("TLS__CA_FILE"),
            cert_file: path("TLS__CERT_FILE"),
            key_file: path("TLS__KEY_FILE"),
        },
    };
    let mut problems = Vec::new();
    let access = RegistryAccess::from_settings(&settings, &mut problems);
    anyhow::ensure!(problems.is_empty(), "registry: {}", problems.join("; "));
    let source = SchemaSource::from_settings(&settings, &access).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(Schemas::new(source)))
}

fn key_json(key: &Option<Vec<u8>>) -> (&'static str, serde_json::Value) {
    match key {
        None => ("key", serde_json::Value::Null),
        Some(k) => match std::str::from_utf8(k) {
            Ok(s) => ("key", s.into()),
            Err(_) => (
                "key_hex",
                k.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into(),
            ),
        },
    }
}

async fn record_json(o: &Opts, r: &DeadLetter, schemas: &mut Option<Schemas>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("dlq_topic".into(), o.topic.clone().into());
    m.insert("dlq_partition".into(), r.partition.into());
    m.insert("dlq_offset".into(), r.offset.into());
    let (k, v) = key_json(&r.key);
    m.insert(k.into(), v);
    m.insert(
        "headers".into(),
        serde_json::to_value(&r.headers).unwrap_or_default(),
    );
    match schemas {
        None => {
            m.insert("value".into(), serde_json::Value::Null);
            m.insert("decode_error".into(), "no registry given".into());
        }
        Some(s) => match s.decode(&r.value).await {
            Ok(v) => {
                m.insert("value".into(), v);
            }
            Err(e) => {
                m.insert("value".into(), serde_json::Value::Null);
                m.insert("decode_error".into(), e.into());
            }
        },
    }
    if o.raw {
        let hex: String = r.value.iter().map(|b| format!("{b:02x}")).collect();
        m.insert("value_hex".into(), hex.into());
    }
    serde_json::Value::Object(m)
}

fn list_line(r: &DeadLetter) -> String {
    format!(
        "{}:{}  {}  {}  {}/{}@{}  {}  {}",
        r.partition,
        r.offset,
        r.dead_lettered_ms().map(rfc3339).unwrap_or_default(),
        r.service(),
        r.source_topic(),
        r.header("dlq.source.partition"),
        r.header("dlq.source.offset"),
        r.header("dlq.rule"),
        r.header("dlq.reason")
    )
}

async fn replay_records(o: &Opts, selected: &[DeadLetter]) -> Result<bool> {
    let id =
        o.id.clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (sendable, skipped): (Vec<&DeadLetter>, Vec<&DeadLetter>) = selected
        .iter()
        .partition(|r| r.has_source() || o.to.is_some());
    let mut plan: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &sendable {
        let to = o.to.clone().unwrap_or_else(|| r.source_topic().to_string());
        *plan.entry((to, r.first_rule().to_string())).or_default() += 1;
    }
    let total = sendable.len() as u64;
    let mut sent = 0u64;
    let mut failed = 0u64;
    if !o.dry_run && total > 0 {
        let producer = o.conn.producer()?;
        let started = Instant::now();
        let mut last_progress = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let mut in_flight = VecDeque::new();
        for (n, r) in sendable.iter().enumerate() {
            tokio::time::sleep(replay::wait_before(n as u64, o.rate, started.elapsed())).await;
            let to = o.to.as_deref().unwrap_or(r.source_topic());
            let mut headers = OwnedHeaders::new();
            for (k, v) in replay::headers(r, &o.topic, &id, now_ms()) {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut rec = FutureRecord::to(to).payload(&r.value).headers(headers);
            if let Some(k) = &r.key {
                rec = rec.key(k);
            }
            match producer.send_result(rec) {
                Ok(f) => in_flight.push_back(f),
                Err((e, _)) => {
                    failed += 1;
                    eprintln!("{}:{}: not sent: {e}", r.partition, r.offset);
                }
            }
            while in_flight.len() > 1_000 || (n + 1 == sendable.len() && !in_flight.is_empty()) {
                let Some(f) = in_flight.pop_front() else {
                    break;
                };
                match tokio::time::timeout(o.conn.timeout, f).await {
                    Ok(Ok(Ok(_))) => sent += 1,
                    Ok(Ok(Err((e, _)))) => {
                        failed += 1;
                        eprintln!("a replayed record was not acknowledged: {e}");
                    }
                    _ => {
                        failed += 1;
                        eprintln!(
                            "a replayed record was not acknowledged in {:?}",
                            o.conn.timeout
                        );
                    }
                }
            }
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                let line = replay::progress_line(n as u64 + 1, total, started.elapsed());
                if tty {
                    eprint!("\r{line}");
                } else {
                    eprintln!("{line}");
                }
            }
        }
        let _ = producer.flush(o.conn.timeout);
        eprintln!("{}", replay::progress_line(sent, total, started.elapsed()));
    }
    let verb = if o.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    println!(
        "replay {id}: {} selected, {verb} {}, {} without a source topic (skipped), {} failed",
        selected.len(),
        if o.dry_run { total } else { sent },
        skipped.len(),
        failed
    );
    for ((to, rule), n) in &plan {
        println!("  {to:<40} {rule:<30} {n}");
    }
    Ok(failed == 0)
}

/// Reads the DLQ topic and keeps what the command needs: the selected records, or for `show`
/// the one record asked for.
async fn read(o: &Opts) -> Result<Vec<DeadLetter>> {
    let (conn, topic, selection) = (o.conn.clone(), o.topic.clone(), o.selection.clone());
    let record = o.record.filter(|_| o.command == Command::Show);
    tokio::task::spawn_blocking(move || {
        conn.read_all(&topic, READ_QUIET, |r| match record {
            Some(at) => (r.partition, r.offset) == at,
            None => selection.matches(r),
        })
    })
    .await?
}

/// How long the read goes on past the reported ends while records still arrive.
const READ_QUIET: Duration = Duration::from_secs(1);

async fn run(o: Opts) -> Result<bool> {
    match o.command {
        Command::Summary => {
            // Counted as read: nothing is held, however large the topic.
            let (conn, topic, selection) = (o.conn.clone(), o.topic.clone(), o.selection.clone());
            let s = tokio::task::spawn_blocking(move || {
                let mut tally = Tally::default();
                conn.read_all(&topic, READ_QUIET, |r| {
                    if selection.matches(r) {
                        tally.add(r);
                    }
                    false
                })
                .map(|_| tally.summary())
            })
            .await??;
            if o.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", s.table());
            }
        }
        Command::List => {
            for r in read(&o).await?.iter().take(o.limit.unwrap_or(usize::MAX)) {
                println!("{}", list_line(r));
            }
        }
        Command::Show => {
            let want = o.record.unwrap_or_default();
            let held = read(&o).await?;
            let r = held
                .first()
                .with_context(|| format!("{}: no record at {}:{}", o.topic, want.0, want.1))?;
            let mut schemas = schemas(&o)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&record_json(&o, r, &mut schemas).await)?
            );
        }
        Command::Export => {
            let selected = read(&o).await?;
            let mut schemas = schemas(&o)?;
            let mut out: Box<dyn Write> = match &o.out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).with_context(|| p.display().to_string())?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            for r in &selected {
                writeln!(out, "{}", record_json(&o, r, &mut schemas).await)?;
            }
            out.flush()?;
            if let Some(p) = &o.out {
                eprintln!("exported {} records to {}", selected.len(), p.display());
            }
        }
        Command::Replay => {
            let selected = read(&o).await?;
            return replay_records(&o, &selected).await;
        }
    }
    Ok(true)
}

fn main() -> std::process::ExitCode {
    let opts = match parse(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("umkm-dlq: {e:#}\n\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("umkm-dlq: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("umkm-dlq: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_lines() {
        let o = parse(args(
            "replay --topic payments.dlq --rule region_unknown --reason 36.03.34 --rate 50 --id fix -X security.protocol=SASL_SSL",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(o.command, Command::Replay);
        assert_eq!(o.selection.rules, vec!["region_unknown"]);
        assert_eq!(o.selection.reason.as_deref(), Some("36.03.34"));
        assert_eq!(o.rate, Some(50.0));
        assert_eq!(
            o.conn.extra,
            vec![("security.protocol".into(), "SASL_SSL".into())]
        );
        assert!(parse(args("--help")).unwrap().is_none());
        let err = |s: &str| {
            parse(args(s))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("replay --topic d").contains("--all"));
        assert!(parse(args("replay --topic d --all")).unwrap().is_some());
        assert!(err("summary").contains("--topic"));
        assert!(err("show --topic d").contains("--record"));
        assert!(err("frobnicate").contains("unknown command"));
        assert!(err("list --topic d --bogus").contains("unknown option"));
        assert!(err("replay --topic d --all --rate 0").contains("above 0"));
        assert!(err("list --topic d -X novalue").contains("KEY=VALUE"));
        let s = parse(args("show --topic d --record 0:12"))
            .unwrap()
            .unwrap();
        assert_eq!(s.record, Some((0, 12)));
    }

    #[test]
    fn usage_names_every_option_the_parser_takes() {
        let src = include_str!("main.rs");
        for opt in src
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"'))
            .filter_map(|l| l.split('"').next())
            .filter(|o| o.starts_with("--") || *o == "-X")
        {
            assert!(USAGE.contains(opt), "USAGE does not mention {opt}");
        }
    }
}
