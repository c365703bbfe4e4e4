//! Publishes synthetic Banten QRIS traffic (with double reports, redeliveries and a few bad
//! records) to a topic, creating the topics if needed. Used by `scripts/demo`.
//!
//! usage: qris-publish [--payments N] [--topic T] [--dlq-topic T] [--partitions P] [--seed S]

use std::time::Instant;

use umkm_e2e::traffic::{Spec, generate};
use umkm_e2e::{Env, create_topic, publish};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut spec = Spec::default();
    let mut topic = "payments.qris.v1".to_string();
    let mut dlq = "payments.dlq".to_string();
    let mut partitions = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--payments" => spec.payments = val()?.parse()?,
            "--topic" => topic = val()?,
            "--dlq-topic" => dlq = val()?,
            "--partitions" => partitions = val()?.parse()?,
            "--seed" => spec.seed = val()?.parse()?,
            "--bad-each" => spec.bad_each = val()?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let env = Env::from_env();
    for (t, p) in [(&topic, partitions), (&dlq, 1)] {
        if let Err(e) = create_topic(&env, t, p).await {
            eprintln!("topic {t}: {e} (continuing: it may exist already)");
        }
    }
    let plan = generate(&spec);
    let t = Instant::now();
    publish(&env, &topic, &plan.messages).await?;
    println!(
        "published {} messages to {topic} in {:.2?}: {} unique payments, {} issuer+acquirer double reports, {} redeliveries, {} bad records",
        plan.messages.len(),
        t.elapsed(),
        plan.unique.len(),
        plan.double_reports,
        plan.redeliveries,
        plan.bad_total()
    );
    Ok(())
}
