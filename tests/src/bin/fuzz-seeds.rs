//! Writes the fuzz targets' seed corpora (README "Fuzzing") under `DIR/<target>/` (default
//! `fuzz/corpus`) from the traffic generators (good and bad records of every kind), the repo's
//! schemas and sample settings. `scripts/fuzz` runs it.

use std::path::Path;

fn write_all(dir: &Path, items: impl IntoIterator<Item = Vec<u8>>) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut n = 0;
    for (i, bytes) in items.into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:05}")), bytes)?;
        n += 1;
    }
    Ok(n)
}

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| umkm_e2e::repo_root().join("fuzz/corpus"));
    let root = root.as_path();
    let take = |msgs: Vec<(Option<Vec<u8>>, Vec<u8>)>| -> Vec<Vec<u8>> {
        msgs.into_iter()
            .map(|(_, v)| v)
            .step_by(7)
            .take(400)
            .collect()
    };
    let qris = umkm_traffic::qris::generate(&umkm_traffic::qris::Spec {
        payments: 2_000,
        bad_each: 10,
        ..Default::default()
    });
    let noncash = umkm_traffic::noncash::generate(&umkm_traffic::noncash::Spec {
        payments: 2_000,
        bad_each: 10,
        ..Default::default()
    });
    let merchants = umkm_traffic::merchants::generate(&umkm_traffic::merchants::Spec {
        merchants: 600,
        bad_each: 10,
        ..Default::default()
    });
    let mut counts = vec![
        (
            "family_qris",
            write_all(&root.join("family_qris"), take(qris.messages))?,
        ),
        (
            "family_noncash",
            write_all(&root.join("family_noncash"), take(noncash.messages))?,
        ),
        (
            "family_merchant",
            write_all(&root.join("family_merchant"), take(merchants.messages))?,
        ),
    ];
    let schemas = umkm_e2e::repo_root().join("schemas/avro");
    let mut answers = Vec::new();
    for entry in std::fs::read_dir(&schemas)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "avsc") {
            let schema = std::fs::read_to_string(&path)?;
            answers.push(serde_json_answer(&schema, None));
            answers.push(serde_json_answer(&schema, Some("AVRO")));
        }
    }
    answers.push(serde_json_answer("{\"type\":\"string\"}", Some("PROTOBUF")));
    counts.push((
        "registry_answer",
        write_all(&root.join("registry_answer"), answers)?,
    ));
    let configs = [
        "[batch]\nmax_rows = 50000\n",
        "[kafka]\nbrokers = \"k1:9092,k2:9092\"\n[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"u\"\nsasl_password = \"p\"\n[kafka.tls]\nca_file = \"/nonexistent/ca.pem\"\n",
        "[clickhouse]\nurl = \"https://ch:8443\"\ncluster = \"umkm\"\n[clickhouse.tls]\nca_file = \"/x.pem\"\n[registry]\nurl = \"https://r\"\nuser = \"k\"\npassword = \"s\"\n",
        "[retry.clickhouse]\ninitial_backoff_ms = 0\nmax_backoff_ms = 1\n[dedup]\nmidnight_skew_ms = -5\n[kafka.extra]\n\"linger.ms\" = \"5\"\n",
    ];
    counts.push((
        "config_loader",
        write_all(
            &root.join("config_loader"),
            configs.iter().map(|c| c.as_bytes().to_vec()),
        )?,
    ));
    for (target, n) in counts {
        println!("{target}: {n} seeds");
    }
    Ok(())
}

/// `{"schema": "<schema>", "schemaType": ...}` with the schema as a JSON string.
fn serde_json_answer(schema: &str, schema_type: Option<&str>) -> Vec<u8> {
    let escaped: String = schema
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            '\n' => vec!['\\', 'n'],
            c => vec![c],
        })
        .collect();
    match schema_type {
        Some(t) => format!("{{\"schema\": \"{escaped}\", \"schemaType\": \"{t}\"}}"),
        None => format!("{{\"schema\": \"{escaped}\"}}"),
    }
    .into_bytes()
}
