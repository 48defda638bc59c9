//! `sluice bench`: scenarios that print figures next to an anchor run in the same command
//! (docs/performance.md): the conversion (convert.rs), a transformer's cost
//! (transformer.rs), the embedded server alone (server.rs), many small objects (small.rs)
//! and listing and planning many keys (listing.rs). The data they share is here.

pub mod anchor;
pub mod convert;
pub mod listing;
pub mod server;
pub mod small;
pub mod transformer;

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::demo::{DatasetShape, HEADER, generate_object};
use crate::format::options::{Compression, CsvReadOptions, ParquetWriteOptions};
use crate::format::{self, DecodeError, FORMAT_METADATA_KEY, Throughput, ThroughputError};

/// The timestamp format of the generated data.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// The typed schema of the generated taxi data (timestamps typed at decode).
pub fn taxi_schema() -> SchemaRef {
    let fields = HEADER
        .split(',')
        .map(|name| {
            let data_type = match name {
                "pickup_at" | "dropoff_at" => DataType::Timestamp(TimeUnit::Microsecond, None),
                "store_and_fwd" => DataType::Utf8,
                "vendor_id" | "passenger_count" | "rate_code" | "pickup_location"
                | "dropoff_location" | "payment_type" => DataType::Int32,
                _ => DataType::Float64,
            };
            let field = Field::new(name, data_type.clone(), true);
            if matches!(data_type, DataType::Timestamp(..)) {
                field.with_metadata([(FORMAT_METADATA_KEY.into(), TIMESTAMP_FORMAT.into())].into())
            } else {
                field
            }
        })
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
}

/// Writes a taxi-like CSV of at least `bytes` bytes to `path` (no malformed rows), generated
/// in chunks of 64 MiB so that a large file never sits in memory; returns the rows written.
pub fn write_dataset(path: &Path, bytes: usize) -> std::io::Result<u64> {
    write_dataset_in_chunks(path, bytes, 64 << 20)
}

fn write_dataset_in_chunks(path: &Path, bytes: usize, chunk: usize) -> std::io::Result<u64> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut rows = 0;
    let mut written = 0;
    let mut index = 0;
    while written < bytes {
        // Later chunks lose their header line, so they are generated that much larger:
        // every chunk then adds rows, whatever is left to write.
        let header = if index == 0 { 0 } else { HEADER.len() + 1 };
        let shape = DatasetShape {
            objects: 1,
            object_bytes: chunk.min(bytes - written) + header,
            gzip_every: 0,
            malformed_every: 0,
            seed: 1,
        };
        let object = generate_object(&shape, index);
        // Every chunk starts with the header line; keep only the first one.
        let body = &object.body[header..];
        file.write_all(body)?;
        written += body.len();
        rows += object.rows;
        index += 1;
    }
    file.flush()?;
    Ok(rows)
}

/// Decodes the CSV file at `path` with `schema` and encodes it to Parquet (zstd, default
/// settings) into a sink that discards the bytes, on one thread or two.
pub fn decode_encode(
    path: &Path,
    schema: SchemaRef,
    threads: usize,
) -> Result<Throughput, ThroughputError> {
    let bytes = std::fs::metadata(path).map_err(DecodeError::from)?.len();
    let file = std::fs::File::open(path).map_err(DecodeError::from)?;
    format::decode_encode_throughput(
        format::decompress(Box::new(file), Compression::None),
        bytes,
        schema,
        &CsvReadOptions::default(),
        &ParquetWriteOptions::default(),
        crate::worker::decode::BATCH_ROWS,
        threads,
    )
}

/// The bucket of the benchmarks' data on the embedded server.
pub const BUCKET: &str = "bench";

/// A job converting CSV under `source` (only `include` if given) to typed Parquet in
/// `s3://bench-out/<name>/`, no SQL step.
pub fn csv_to_parquet_job(name: &str, source: &str, include: Option<&str>, shards: u32) -> String {
    let mut columns = String::new();
    for field in taxi_schema().fields() {
        let kind = match field.data_type() {
            DataType::Timestamp(..) => "timestamp",
            DataType::Int32 => "int32",
            DataType::Float64 => "float64",
            _ => "string",
        };
        let _ = write!(columns, "\n      - {{ name: {}, type: {kind}", field.name());
        if kind == "timestamp" {
            let _ = write!(columns, ", format: \"{TIMESTAMP_FORMAT}\"");
        }
        columns.push_str(" }");
    }
    let include = include
        .map(|i| format!("\n    include: [\"{i}\"]"))
        .unwrap_or_default();
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: {name}
spec:
  source:
    uri: {source}{include}
    format: csv
    schema:{columns}
  sink:
    uri: s3://{BUCKET}-out/{name}/
    format: parquet
  parallelism: {shards}
  shards: {shards}
"
    )
}

/// Where a scenario runs: the S3 it reaches and the embedded server's directory, where the
/// generated data is written.
pub struct Target {
    pub storage: crate::storage::Storage,
    pub endpoint: crate::storage::Endpoint,
    /// The S3 is the embedded default, serving `dir`.
    pub embedded: bool,
    pub dir: std::path::PathBuf,
}

impl Target {
    /// Fails unless the S3 is the embedded default.
    pub fn require_embedded(&self, scenario: &str) -> anyhow::Result<()> {
        if self.embedded {
            Ok(())
        } else {
            anyhow::bail!(
                "the {scenario} scenario runs on the embedded default only (unset AWS_ENDPOINT_URL and --endpoint)"
            )
        }
    }
}

/// `sluice run` of a loaded job with `parallelism` workers, each pinned to `cpus` CPUs.
pub async fn local_run(
    target: &Target,
    loaded: &crate::spec::Loaded,
    parallelism: u32,
    cpus: Option<usize>,
) -> anyhow::Result<crate::run::LocalRun> {
    let options = crate::run::LocalRunOptions {
        program: std::env::current_exe()?,
        env: target.endpoint.env.clone(),
        parallelism: Some(parallelism),
        run_id: Some(format!(
            "{}-{}",
            loaded.job.name,
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        )),
        bar: false,
        cpus,
        resume: false,
        full: false,
    };
    Ok(crate::run::run_locally(&target.storage, loaded, options).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_has_one_header_and_reaches_the_size_whatever_the_last_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.csv");
        // 10,007 bytes in chunks of 4,000: the last chunk is smaller than a row.
        let rows = write_dataset_in_chunks(&path, 10_007, 4_000).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() >= 10_007, "{} bytes", text.len());
        assert_eq!(text.lines().filter(|l| *l == HEADER).count(), 1);
        assert!(text.starts_with(HEADER));
        assert_eq!(text.lines().count() as u64, rows + 1);
    }
}
