//! `sluice bench`: CSV -> typed Parquet throughput and peak memory, end to end and for
//! decode + encode alone, next to the DuckDB command for the same conversion.

use std::fmt::Write as _;

use crate::bench::{TIMESTAMP_FORMAT, decode_encode, duckdb_command, taxi_schema, write_dataset};
use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::run::{LocalRunOptions, run_locally};
use crate::spec;
use crate::spec::size::human_bytes;
use crate::state::progress::ShardProgress;
use crate::storage::UploadOptions;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Size of the generated CSV in MiB.
    #[arg(long, default_value_t = 1024)]
    pub mib: usize,
    /// Skip the end-to-end runs (measure decode + encode alone).
    #[arg(long)]
    pub no_end_to_end: bool,
    /// Measure the cost of a transformer instead: the same CSV -> Parquet run over 64 MiB
    /// objects (--mib of them in all), directly and through an identity hpush transformer.
    #[arg(long)]
    pub transformer: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

const BUCKET: &str = "bench";

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.transformer {
        transformer_overhead(&args)?;
        return Ok(ExitCode::Done);
    }
    let name = format!("taxi-{}mib.csv", args.mib);
    let path = args.connect.embedded_dir.join(BUCKET).join(&name);
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < (args.mib as u64) << 20 {
        eprintln!("generating {} ...", path.display());
        write_dataset(&path, args.mib << 20)?;
    }
    let size = std::fs::metadata(&path)?.len();
    println!("input: {} ({})", path.display(), human_bytes(size));
    println!("decode + encode alone (CSV -> typed Parquet, zstd, in one process):");
    for threads in [1, 2] {
        let t = decode_encode(&path, taxi_schema(), threads)?;
        println!(
            "  {threads} thread(s): {:>7.1} MB/s  ({} records in {:.2}s; decoding {:.2}s, encoding {:.2}s, {} of Parquet)",
            t.mb_per_second(),
            t.records,
            t.elapsed.as_secs_f64(),
            t.decode.as_secs_f64(),
            t.encode.as_secs_f64(),
            human_bytes(t.output_bytes)
        );
    }
    if !args.no_end_to_end {
        end_to_end(&args, &name, &path)?;
    }
    println!("the same conversion with DuckDB, on the same file:");
    for threads in [1, 2] {
        println!("  {}", duckdb_command(&path, threads));
    }
    println!(
        "  or: python3 tests/bench/duckdb_csv_to_parquet.py {}",
        path.display()
    );
    Ok(ExitCode::Done)
}

fn end_to_end(args: &BenchArgs, name: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let job_yaml = bench_job(name);
    let loaded = spec::load_str(&job_yaml, "bench job", &[])?;
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(None).await?;
        if conn.embedded.is_some() {
            let job = &loaded.job;
            for bucket in [BUCKET, &job.sink.uri.bucket, &job.state.bucket] {
                conn.storage.create_bucket(bucket).await?;
            }
        }
        let source = loaded.job.source.uri.join(name);
        if conn.embedded.is_none() {
            // Not the embedded server: upload the file so the run reads it from S3.
            let mut upload = conn.storage.upload(
                source.clone(),
                UploadOptions {
                    part_size: 16 << 20,
                    parts_in_flight: 4,
                },
            );
            let mut file = tokio::fs::File::open(path).await?;
            loop {
                let mut chunk = vec![0u8; 8 << 20];
                let n = tokio::io::AsyncReadExt::read(&mut file, &mut chunk).await?;
                if n == 0 {
                    break;
                }
                chunk.truncate(n);
                upload.write(chunk.into()).await?;
            }
            upload.finish().await?.complete().await?;
        }
        println!("end to end (S3 -> worker -> S3 multipart, read back and verified):");
        for cpus in [1, 2] {
            let options = LocalRunOptions {
                program: std::env::current_exe()?,
                env: conn.endpoint.env.clone(),
                parallelism: Some(1),
                run_id: Some(format!("bench-{cpus}cpu-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"))),
                bar: false,
                cpus: Some(cpus),
                resume: false,
                full: false,
            };
            let run = run_locally(&conn.storage, &loaded, options).await?;
            let progress: ShardProgress = conn
                .storage
                .get_bytes(&run.layout.progress(0))
                .await?
                .map(|b| serde_json::from_slice(&b))
                .transpose()?
                .unwrap_or_default();
            println!(
                "  {cpus} cpu(s): {:>7.1} MB/s worker, {:>7.1} MB/s whole run, peak RSS {}, exit {}",
                progress.rate / 1e6,
                run.report.bytes as f64 / 1e6 / run.report.seconds,
                human_bytes(progress.peak_rss_bytes),
                run.exit.code()
            );
        }
        Ok::<_, anyhow::Error>(())
    })
}

/// The benchmark's job: one CSV object to typed Parquet, no SQL step.
fn bench_job(name: &str) -> String {
    let mut columns = String::new();
    for field in taxi_schema().fields() {
        let kind = match field.data_type() {
            arrow::datatypes::DataType::Timestamp(..) => "timestamp",
            arrow::datatypes::DataType::Int32 => "int32",
            arrow::datatypes::DataType::Float64 => "float64",
            _ => "string",
        };
        let _ = write!(columns, "\n      - {{ name: {}, type: {kind}", field.name());
        if kind == "timestamp" {
            let _ = write!(columns, ", format: \"{TIMESTAMP_FORMAT}\"");
        }
        columns.push_str(" }");
    }
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: bench
spec:
  source:
    uri: s3://{BUCKET}/
    include: [\"{name}\"]
    format: csv
    schema:{columns}
  sink:
    uri: s3://{BUCKET}-out/
    format: parquet
  parallelism: 1
  shards: 1
"
    )
}

/// Size of each object of the transformer benchmark.
const TRANSFORMER_OBJECT_MIB: usize = 64;

/// The same conversion directly and through an identity hpush transformer, on the embedded
/// server (the objects are written into its directory).
fn transformer_overhead(args: &BenchArgs) -> anyhow::Result<()> {
    let objects = (args.mib / TRANSFORMER_OBJECT_MIB).max(1);
    let dir = args.connect.embedded_dir.join(BUCKET).join("tx");
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
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(None).await?;
        if conn.embedded.is_none() {
            anyhow::bail!("--transformer runs on the embedded server only (unset AWS_ENDPOINT_URL and --endpoint)");
        }
        conn.storage.create_bucket(BUCKET).await?;
        conn.storage.create_bucket(&format!("{BUCKET}-out")).await?;
        let mut rates = Vec::new();
        for (label, yaml) in [("direct", direct), ("through identity hpush", through)] {
            let loaded = spec::load_str(&yaml, "transformer bench job", &[])?;
            let options = LocalRunOptions {
                program: std::env::current_exe()?,
                env: conn.endpoint.env.clone(),
                parallelism: Some(1),
                run_id: Some(format!("{}-{}", loaded.job.name, chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"))),
                bar: false,
                cpus: None,
                resume: false,
                full: false,
            };
            let run = run_locally(&conn.storage, &loaded, options).await?;
            let rate = run.report.bytes as f64 / 1e6 / run.report.seconds;
            println!(
                "  {label:<24} {rate:>7.1} MB/s ({} records, {:.2}s, exit {})",
                run.report.records.output,
                run.report.seconds,
                run.exit.code()
            );
            rates.push(rate);
        }
        println!("  through the transformer: {:.0}% of the direct throughput", rates[1] / rates[0] * 100.0);
        Ok(())
    })
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
