//! `sluice bench transformer`: the cost of a transformer: the same CSV -> Parquet run over
//! 64 MiB objects, directly and through an identity hpush transformer.

use crate::bench::{BUCKET, Target, local_run, write_dataset};
use crate::spec;

/// Size of each object of the transformer benchmark.
const TRANSFORMER_OBJECT_MIB: usize = 64;

/// The same conversion directly and through an identity hpush transformer, on the embedded
/// server (the objects are written into its directory).
pub async fn run(target: &Target, mib: usize) -> anyhow::Result<()> {
    target.require_embedded("transformer")?;
    let objects = (mib / TRANSFORMER_OBJECT_MIB).max(1);
    let dir = target.dir.join(BUCKET).join("tx");
    for i in 0..objects {
        let path = dir.join(format!("part-{i:02}.csv"));
        if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            < (TRANSFORMER_OBJECT_MIB as u64) << 20
        {
            eprintln!("generating {} ...", path.display());
            write_dataset(&path, TRANSFORMER_OBJECT_MIB << 20)?;
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let direct = transformer_job("tx-direct", "csv", "");
    let through = transformer_job(
        "tx-identity",
        "raw",
        &format!(
            "  transform:
    - name: identity
      container:
        image: sluice
        comm: hpush
        port: {port}
        command: [sluice, transformer, serve, --op, identity, --listen, \"127.0.0.1:{port}\"]
        output: {{format: csv}}
"
        ),
    );
    println!(
        "transformer overhead: {objects} objects of {TRANSFORMER_OBJECT_MIB} MiB, CSV -> Parquet (schema inferred), one worker:"
    );
    target.storage.create_bucket(BUCKET).await?;
    target
        .storage
        .create_bucket(&format!("{BUCKET}-out"))
        .await?;
    let mut rates = Vec::new();
    for (label, yaml) in [("direct", direct), ("through identity hpush", through)] {
        let loaded = spec::load_str(&yaml, "transformer bench job", &[])?;
        let run = local_run(target, &loaded, 1, None).await?;
        let rate = run.report.bytes as f64 / 1e6 / run.report.seconds;
        println!(
            "  {label:<24} {rate:>7.1} MB/s ({} records, {:.2}s, exit {})",
            run.report.records.output,
            run.report.seconds,
            run.exit.code()
        );
        rates.push(rate);
    }
    println!(
        "  through the transformer: {:.0}% of the direct throughput",
        rates[1] / rates[0] * 100.0
    );
    Ok(())
}

fn transformer_job(name: &str, format: &str, transform: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: {name}
spec:
  source:
    uri: s3://{BUCKET}/tx/
    format: {format}
{transform}  sink:
    uri: s3://{BUCKET}-out/{name}/
    format: parquet
  parallelism: 1
  shards: 1
"
    )
}
