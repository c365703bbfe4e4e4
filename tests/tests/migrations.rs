//! Every migration must run on current ClickHouse (chDB, ClickHouse 26.x in-process) and on the
//! test server (Debian's 18.16), idempotently.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use umkm_core::migrations::{self, RenderContext};
use umkm_e2e::{Env, ch, ch_u64, consumer_bin, repo_root, unique};

/// Columns of the analysts' views (`v_*`) that `column_docs` does not describe (database `DB`).
const UNDESCRIBED: &str = "SELECT count() FROM system.columns WHERE database = 'DB' \
     AND startsWith(table, 'v_') AND (table, name) NOT IN (SELECT object, column FROM DB.column_docs)";
/// Descriptions in `column_docs` of columns that do not exist.
const STALE_DOCS: &str = "SELECT count() FROM DB.column_docs WHERE (object, column) NOT IN \
     (SELECT table, name FROM system.columns WHERE database = 'DB')";

#[test]
fn every_migration_runs_in_chdb_26() -> Result<()> {
    let ctx = RenderContext {
        database: "umkm_chdb".into(),
        ..Default::default()
    };
    let mut statements = Vec::new();
    for b in migrations::BOOTSTRAP {
        statements.extend(migrations::render(b, &ctx));
    }
    for m in migrations::ALL {
        // All of them, including those gated to newer servers: chDB is one.
        statements.extend(migrations::render(m.sql, &ctx));
    }
    // Twice: applying again must be harmless. ADD COLUMN has no IF NOT EXISTS on 18.16; the
    // runner takes "column already exists" as done (sink.rs), so the second pass leaves them out.
    let once: Vec<String> = statements
        .iter()
        .filter(|s| !migrations::is_add_column(s))
        .cloned()
        .collect();
    statements.extend(once);
    let migration_statements = statements.len();
    // The canonical views on current ClickHouse: a merchant whose versions arrive out of order,
    // registered with an NMID and an acquirer merchant id; one QRIS and one card payment that
    // report other regions and MCCs; and one payment of an unregistered merchant.
    statements.extend(
        [
            "INSERT INTO umkm_chdb.merchant_events (dedup_key, merchant_id, version, event_time, event_date, merchant_refs, sector, region_code, province_code, kab_kota_code, kecamatan_code) VALUES \
             ('k2', 'NIB-1', 2, '2025-06-02 00:00:00', '2025-06-02', ['NMID:ID1024000012345', 'MID:93600008:BJB1'], 'fashion', '36.04.19', '36', '36.04', '36.04.19')",
            "INSERT INTO umkm_chdb.merchant_events (dedup_key, merchant_id, version, event_time, event_date, merchant_refs, sector, region_code, province_code, kab_kota_code, kecamatan_code) VALUES \
             ('k1', 'NIB-1', 1, '2025-06-01 00:00:00', '2025-06-01', ['NMID:ID1024000012345'], 'crafts', '36.04', '36', '36.04', '')",
            "INSERT INTO umkm_chdb.qris_payments (dedup_key, nmid, qr_mode, sector, region_code, kab_kota_code, amount_idr, status, event_date) VALUES \
             ('q1', 'ID1024000012345', 'mpm_static', 'retail_general', '36.74', '36.74', 25000, 'success', '2025-06-03'), \
             ('q2', 'ID1099999999999', 'cpm', 'food_beverage', '36.71', '36.71', 10000, 'success', '2025-06-03')",
            "INSERT INTO umkm_chdb.noncash_payments (dedup_key, instrument, merchant_ref, sector, region_code, kab_kota_code, amount_idr, status, event_date) VALUES \
             ('c1', 'debit_card', 'MID:93600008:BJB1', 'retail_food', '36.03', '36.03', 450000, 'success', '2025-06-03')",
        ]
        .map(String::from),
    );
    // The fenced insert (README "Delivery guarantees") on current ClickHouse, into a table of
    // its own (the views' checks below read the facts): a table stands in for the external one. Partition 0's latest claim is "new"; with it the row lands, with the
    // stale "old" the condition is non-zero, so the statement would throw.
    let fence = |id: &str| umkm_runtime::clickhouse::Fence {
        topic: "t".into(),
        claims: [(0, id.to_string())].into(),
    };
    statements.extend([
        "CREATE TABLE umkm_chdb._umkm_rows (dedup_key String, nmid String, event_date Date) ENGINE = Memory".to_string(),
        "INSERT INTO umkm_chdb._umkm_rows VALUES ('f1', 'ID1000000000001', '2025-06-04')".to_string(),
        "CREATE TABLE umkm_chdb.fence_probe (dedup_key String, nmid String, event_date Date) ENGINE = Memory".to_string(),
        "INSERT INTO umkm_chdb.partition_claims (target_table, topic, partition, claim, claim_id) VALUES \
         ('fence_probe', 't', 0, 1, 'old'), ('fence_probe', 't', 0, 2, 'new')".to_string(),
        umkm_runtime::clickhouse::fenced_insert_sql("umkm_chdb", "fence_probe", &["dedup_key", "nmid", "event_date"], &fence("new"))
            .replace("FROM _umkm_rows", "FROM umkm_chdb._umkm_rows"),
    ]);
    // The rollups' repair (docs/reliability.md "Rollups after a crash"): q1 noted as a suspect,
    // and one ticket row too many, so the ticket rollup differs in one group.
    statements.extend([
        "INSERT INTO umkm_chdb.rollup_suspects VALUES ('qris_payments', '2025-06-03', 'q1', now())".to_string(),
        "INSERT INTO umkm_chdb.payments_ticket_monthly VALUES ('2025-06-01', 'qris', '36.74', 'retail_general', 25000, 1)".to_string(),
    ]);
    let differing = |r: &umkm_core::rollups::Rollup, window: Option<(u32, u32)>, want: u32| {
        format!(
            "SELECT count() FROM ({})={want}",
            umkm_core::rollups::diff_sql("umkm_chdb", r, window)
        )
    };
    let always = Some((0, u32::MAX));
    let rollup_checks = [
        differing(&umkm_core::rollups::DAILY, None, 0),
        differing(&umkm_core::rollups::MONTHLY, None, 0),
        differing(&umkm_core::rollups::TICKETS, None, 1),
        differing(&umkm_core::rollups::DAILY, always, 0),
        differing(&umkm_core::rollups::TICKETS, always, 1),
    ];
    // The adoption snapshot rebuild, twice (the second replaces the first).
    for _ in 0..2 {
        statements.extend(umkm_core::adoption::rebuild_statements("umkm_chdb"));
    }
    let checks: Vec<String> = [
        // Applied twice, the reference data is still there once.
        "SELECT count() FROM umkm_chdb.ref_regions=201".to_string(),
        "SELECT count() FROM umkm_chdb.ref_regions WHERE level = 'kecamatan'=155".to_string(),
        "SELECT sector FROM umkm_chdb.ref_mcc_sector WHERE mcc = '5948'=\"fashion\"".to_string(),
        "SELECT count() FROM umkm_chdb.ref_kbli_sector=93".to_string(),
        "SELECT sector FROM umkm_chdb.ref_kbli_sector WHERE kbli_prefix = '10722'=\"food_processing\"".to_string(),
        "SELECT version, sector FROM umkm_chdb.v_merchants_current=2,\"fashion\"".to_string(),
        (
            "SELECT channel, instrument, merchant_key, region_code, sector FROM umkm_chdb.v_payments ORDER BY channel, merchant_key \
             =\"card\",\"debit_card\",\"NIB-1\",\"36.04.19\",\"fashion\"\n\
             \"qris\",\"qris_mpm_static\",\"NIB-1\",\"36.04.19\",\"fashion\"\n\
             \"qris\",\"qris_cpm\",\"NMID:ID1099999999999\",\"36.71\",\"food_beverage\""
        ).to_string(),
        "SELECT count() FROM umkm_chdb.ref_umkm_population=2".to_string(),
        "SELECT count() FROM umkm_chdb.fence_probe WHERE dedup_key = 'f1'=1".to_string(),
        format!(
            "SELECT toUInt8({})=0",
            umkm_runtime::clickhouse::fence_condition("umkm_chdb", "fence_probe", &fence("new"))
        ),
        format!(
            "SELECT toUInt8({})=1",
            umkm_runtime::clickhouse::fence_condition("umkm_chdb", "fence_probe", &fence("old"))
        ),
        // Every column of every analysts' view is described, and no description is stale.
        (format!("{UNDESCRIBED}=0").replace("DB", "umkm_chdb")).to_string(),
        (format!("{STALE_DOCS}=0").replace("DB", "umkm_chdb")).to_string(),
        "SELECT count() > 80 FROM umkm_chdb.column_docs=1".to_string(),
        (
            "SELECT channel, merchant_key, kab_kota_code, sector, sum(success_value_idr) FROM umkm_chdb.v_merchant_activity_monthly \
             GROUP BY channel, merchant_key, kab_kota_code, sector ORDER BY channel, merchant_key \
             =\"card\",\"NIB-1\",\"36.04\",\"fashion\",450000\n\
             \"qris\",\"NIB-1\",\"36.04\",\"fashion\",25000\n\
             \"qris\",\"NMID:ID1099999999999\",\"36.71\",\"food_beverage\",10000"
        ).to_string(),
        "SELECT sum(success_value_idr) FROM umkm_chdb.payments_merchant_daily=485000".to_string(),
        (
            "SELECT toString(event_date), channel, merchant_key, kab_kota_code, sum(success_value_idr) FROM umkm_chdb.adoption_merchant_daily \
             GROUP BY event_date, channel, merchant_key, kab_kota_code ORDER BY channel, merchant_key \
             =\"2025-06-03\",\"card\",\"NIB-1\",\"36.04\",450000\n\
             \"2025-06-03\",\"qris\",\"NIB-1\",\"36.04\",25000\n\
             \"2025-06-03\",\"qris\",\"NMID:ID1099999999999\",\"36.71\",10000"
        ).to_string(),
        (
            "SELECT channel, merchant_key, kab_kota_code, sector, sum(success_value_idr) FROM umkm_chdb.adoption_merchant_monthly \
             GROUP BY channel, merchant_key, kab_kota_code, sector ORDER BY channel, merchant_key \
             =\"card\",\"NIB-1\",\"36.04\",\"fashion\",450000\n\
             \"qris\",\"NIB-1\",\"36.04\",\"fashion\",25000\n\
             \"qris\",\"NMID:ID1099999999999\",\"36.71\",\"food_beverage\",10000"
        ).to_string(),
    ]
    .into();
    let checks: Vec<String> = checks.into_iter().chain(rollup_checks).collect();
    let stdout = umkm_e2e::run_chdb("chdb", &statements, &checks)
        .map_err(|e| e.context("chDB rejected a migration"))?;
    ensure!(stdout.contains("ok"), "{stdout}");
    let major: u32 = stdout
        .lines()
        .find_map(|l| l.trim_matches('"').split('.').next()?.parse().ok())
        .unwrap_or(0);
    ensure!(major >= 24, "chDB is not a current ClickHouse: {stdout}");
    println!(
        "chdb: {} statements ran twice, then the canonical views over sample rows; {}",
        migration_statements / 2,
        stdout.trim().replace('\n', " ")
    );
    Ok(())
}

#[tokio::test]
async fn migrate_subcommand_is_idempotent_on_the_test_server() -> Result<()> {
    let env = Env::from_env();
    let db = unique("migrate");
    let out1 = umkm_e2e::run_subcommand(&env, "qris-consumer", "migrate", &db)?;
    ensure!(out1.contains("applied: 0001_qris_payments"), "{out1}");
    let out2 = umkm_e2e::run_subcommand(&env, "qris-consumer", "migrate", &db)?;
    ensure!(out2.contains("applied: none"), "{out2}");
    let version = ch(&env, "SELECT version()").await?;
    if version.starts_with("18.") {
        ensure!(
            out2.contains("skipped (need a newer server): 0002"),
            "{out2}"
        );
    }
    let server = migrations::parse_version(&version).unwrap_or((0, 0));
    let expected = migrations::ALL
        .iter()
        .filter(|m| migrations::applies_to(m, server))
        .count();
    let n = ch_u64(&env, &format!("SELECT count() FROM {db}.schema_migrations")).await?;
    ensure!(
        n as usize == expected,
        "ledger holds {n} migrations, expected {expected}"
    );
    let cols = ch_u64(
        &env,
        &format!(
            "SELECT count() FROM system.columns WHERE database = '{db}' AND table = 'qris_payments'"
        ),
    )
    .await?;
    ensure!(cols == 43, "qris_payments has {cols} columns");
    for (what, sql) in [
        ("view columns without a description", UNDESCRIBED),
        ("descriptions of missing columns", STALE_DOCS),
    ] {
        let n = ch_u64(&env, &sql.replace("DB", &db)).await?;
        ensure!(n == 0, "{n} {what} in column_docs");
    }
    let described = ch_u64(&env, &format!("SELECT count() FROM {db}.column_docs")).await?;
    ensure!(described > 80, "column_docs holds {described} rows");

    // Reference data: every Banten kab/kota and kecamatan of the shipped CSV, once.
    let csv =
        std::fs::read_to_string(repo_root().join("schemas/reference/kemendagri_banten_2025.csv"))?;
    let want: std::collections::BTreeSet<(String, String)> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 3).then(|| (f[0].to_string(), f[1].to_string()))
        })
        .collect();
    let got_text = ch(
        &env,
        &format!(
            "SELECT code, name FROM {db}.ref_regions WHERE province_code = '36' FORMAT TabSeparated"
        ),
    )
    .await?;
    let got: Vec<(String, String)> = got_text
        .lines()
        .filter_map(|l| {
            l.split_once('\t')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let got_set: std::collections::BTreeSet<_> = got.iter().cloned().collect();
    ensure!(got.len() == got_set.len(), "duplicate region rows");
    ensure!(
        got_set == want,
        "ref_regions differs from the CSV: {} vs {} rows",
        got_set.len(),
        want.len()
    );
    ensure!(want.len() == 1 + 8 + 155, "the CSV has {} rows", want.len());
    // Re-running the reference INSERT adds nothing.
    let ctx = RenderContext {
        database: db.clone(),
        ..Default::default()
    };
    let m3 = migrations::ALL
        .iter()
        .find(|m| m.version == 3)
        .ok_or_else(|| anyhow::anyhow!("no migration 3"))?;
    for stmt in migrations::render(m3.sql, &ctx) {
        ch(&env, &stmt).await?;
    }
    let n = ch_u64(&env, &format!("SELECT count() FROM {db}.ref_regions")).await?;
    ensure!(
        n == 38 + 8 + 155,
        "ref_regions holds {n} rows after a re-run"
    );
    let mcc = ch_u64(&env, &format!("SELECT count() FROM {db}.ref_mcc_sector WHERE mcc = '5812' AND sector = 'food_beverage'")).await?;
    ensure!(mcc == 1, "MCC 5812 mapping rows: {mcc}");
    println!(
        "migrate on ClickHouse {}: {}",
        version.trim(),
        out1.replace('\n', " | ")
    );
    Ok(())
}

#[test]
fn invalid_configuration_lists_every_problem() -> Result<()> {
    let out = Command::new(consumer_bin())
        .arg("check-config")
        .env_clear()
        .env("UMKM__BATCH__MAX_ROWS", "0")
        .env("UMKM__CLICKHOUSE__URL", "localhost:8123")
        .env("UMKM_CLICKHOUSE_PASSWORD", "s3cret-never-printed")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2),
        "exit {:?}: {err}",
        out.status.code()
    );
    for needle in [
        "batch.max_rows",
        "clickhouse.url",
        "registry:",
        "pii.hash_key",
    ] {
        ensure!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    ensure!(!err.contains("s3cret"), "a secret was printed");
    Ok(())
}

/// A Kafka setting librdkafka refuses (here TLS, which this build lacks) and an https URL this
/// build cannot speak are configuration errors at once (exit 2): at `check-config`, and at
/// start-up before the service waits for ClickHouse.
#[test]
fn unsupported_settings_fail_before_clickhouse() -> Result<()> {
    let dir = std::env::temp_dir().join(unique("tls_config"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("umkm.toml");
    let base = |cmd: &str| {
        let mut c = Command::new(consumer_bin());
        c.args(["--config", &file.display().to_string(), cmd])
            .env_clear()
            .env("UMKM_PII_HASH_KEY", "0123456789abcdef0123")
            .env("UMKM__REGISTRY__DIR", repo_root().join("schemas/avro"))
            .env("UMKM__LOG__FORMAT", "text")
            .env("UMKM__ADMIN__LISTEN", "127.0.0.1:0")
            // Nothing listens here: a service that waited for ClickHouse would retry for 15 min.
            .env("UMKM_CLICKHOUSE_URL", "http://127.0.0.1:9");
        c
    };
    // Each setting is refused with the key that is wrong, before anything connects.
    let cases = [
        (
            "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"GSSAPI\"\nsasl_username = \"u\"\nsasl_password = \"p\"\n",
            "kafka.security.sasl_mechanism: GSSAPI is not built",
        ),
        (
            "[kafka.tls]\nca_file = \"/etc/ssl/certs/ca-certificates.crt\"\n",
            "kafka.tls: set, but kafka.security.protocol is plaintext",
        ),
        (
            "[kafka.security]\nprotocol = \"ssl\"\n[kafka.extra]\n\"security.protocol\" = \"SASL_SSL\"\n",
            "kafka.extra.security.protocol: also set",
        ),
        (
            "[kafka.security]\nprotocol = \"ssl\"\n[kafka.tls]\nca_file = \"/nonexistent/ca.pem\"\n",
            "kafka.tls.ca_file: cannot read /nonexistent/ca.pem",
        ),
        (
            "[clickhouse.tls]\nca_file = \"/nonexistent/ca.pem\"\n",
            "clickhouse.tls: set, but the URL \"http://127.0.0.1:9\" is not https://",
        ),
        // librdkafka's own check of a passthrough property.
        (
            "[kafka.extra]\n\"ssl.endpoint.identification.algorithm\" = \"sometimes\"\n",
            "ssl.endpoint.identification.algorithm",
        ),
    ];
    for (toml, needle) in cases {
        std::fs::write(&file, toml)?;
        for cmd in ["check-config", "run"] {
            let started = std::time::Instant::now();
            let out = base(cmd).output()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ensure!(
                out.status.code() == Some(2),
                "{cmd} with {toml:?}: exit {:?}: {text}",
                out.status.code()
            );
            ensure!(text.contains(needle), "{cmd}: {needle:?} not in: {text}");
            ensure!(
                !text.contains("ClickHouse not reachable yet"),
                "{cmd} waited for ClickHouse: {text}"
            );
            ensure!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{cmd} took {:?}",
                started.elapsed()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// SIGTERM while the service is still starting (here: waiting for a broker that is not there)
/// stops it at once with exit 0, not by the signal's default action.
#[test]
fn sigterm_during_start_up_stops_cleanly() -> Result<()> {
    let mut child = Command::new(consumer_bin())
        .env_clear()
        .env("UMKM_PII_HASH_KEY", "0123456789abcdef0123")
        .env("UMKM__REGISTRY__DIR", repo_root().join("schemas/avro"))
        .env("UMKM__LOG__FORMAT", "text")
        .env("UMKM__ADMIN__LISTEN", "127.0.0.1:0")
        // Nothing listens on either: the service keeps retrying its start-up.
        .env("UMKM__KAFKA__BROKERS", "127.0.0.1:9")
        .env("UMKM_CLICKHOUSE_URL", "http://127.0.0.1:9")
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(std::time::Duration::from_secs(3));
    ensure!(child.try_wait()?.is_none(), "exited before the signal");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            anyhow::bail!("still running 20 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut err)?;
    ensure!(status.code() == Some(0), "exit {status:?}: {err}");
    ensure!(err.contains("stop requested during start-up"), "{err}");
    Ok(())
}

#[test]
fn check_config_redacts_secrets() -> Result<()> {
    let out = Command::new(consumer_bin())
        .arg("check-config")
        .env_clear()
        .env("UMKM_PII_HASH_KEY", "pii-key-that-must-not-appear")
        .env("UMKM_CLICKHOUSE_PASSWORD", "s3cret-never-printed")
        .env("UMKM__REGISTRY__DIR", repo_root().join("schemas/avro"))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "{text}");
    ensure!(text.contains("<redacted>"), "{text}");
    ensure!(
        !text.contains("s3cret") && !text.contains("pii-key-that"),
        "a secret was printed:\n{text}"
    );
    Ok(())
}

/// The analysts' and Grafana's user `umkm_reader` (deploy/clickhouse-users.xml; the local stack
/// installs it too) reads every table and view and cannot write, alter or drop anything.
#[tokio::test]
async fn the_reader_user_can_select_and_cannot_write() -> Result<()> {
    let env = Env::from_env();
    let db = unique("reader");
    umkm_e2e::run_subcommand(&env, "qris-consumer", "migrate", &db)?;
    let user = std::env::var("UMKM_READER_USER").unwrap_or_else(|_| "umkm_reader".into());
    let password = std::env::var("UMKM_READER_PASSWORD")
        .context("UMKM_READER_PASSWORD (scripts/stack env sets it for the local stack)")?;
    let http = reqwest::Client::new();
    let as_reader = |sql: String| {
        let req = http
            .post(&env.clickhouse)
            .basic_auth(&user, Some(&password))
            .body(sql);
        async move {
            let r = req.send().await?;
            let status = r.status();
            anyhow::Ok((status, r.text().await?))
        }
    };
    for sql in [
        format!("SELECT count() FROM {db}.qris_payments"),
        format!("SELECT count() FROM {db}.v_payments"),
        format!("SELECT count() FROM {db}.ref_regions"),
    ] {
        let (status, body) = as_reader(sql.clone()).await?;
        ensure!(status.is_success(), "{sql}: {status} {body}");
    }
    let regions = ch_u64(&env, &format!("SELECT count() FROM {db}.ref_regions")).await?;
    let (_, body) = as_reader(format!("SELECT count() FROM {db}.ref_regions")).await?;
    ensure!(body.trim() == regions.to_string(), "reader saw {body}");
    for sql in [
        format!(
            "INSERT INTO {db}.schema_migrations (version, name, checksum, applied_at) VALUES (999, 'x', 'x', now())"
        ),
        format!("ALTER TABLE {db}.qris_payments DELETE WHERE 1"),
        format!("DROP TABLE {db}.qris_payments"),
        format!("CREATE TABLE {db}.reader_made (a UInt8) ENGINE = Memory"),
    ] {
        let (status, body) = as_reader(sql.clone()).await?;
        ensure!(
            !status.is_success() && body.contains("readonly"),
            "the reader could run {sql}: {status} {body}"
        );
    }
    ensure!(
        ch_u64(
            &env,
            &format!("SELECT count() FROM {db}.schema_migrations WHERE version = 999")
        )
        .await?
            == 0,
        "the reader's INSERT landed"
    );
    ensure!(
        ch_u64(&env, &format!("EXISTS TABLE {db}.qris_payments")).await? == 1,
        "the reader dropped a table"
    );
    ch(&env, &format!("DROP DATABASE {db}")).await?;
    Ok(())
}
