//! The validated runtime form of a job file: what the planner, worker and runner consume.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::format::options::{
    Compression, CsvReadOptions, CsvWriteOptions, ParquetWriteOptions, SinkFormat, SourceFormat,
};
use crate::spec::kubernetes::PodSettings;
use crate::storage::uri::S3Uri;

/// A validated job with params applied. Built only by `spec::load`; never holds I/O handles.
#[derive(Debug, Clone)]
pub struct Job {
    /// `metadata.name`: a DNS-1123 label.
    pub name: String,
    /// `metadata.labels`: Kubernetes labels for the Job and its pods.
    pub labels: BTreeMap<String, String>,
    pub source: Source,
    pub steps: Vec<Step>,
    pub validate: Validation,
    pub sink: Sink,
    pub parallelism: u32,
    pub shards: Shards,
    /// Objects larger than this are split into ranges; `None`: never split.
    pub split_size: Option<u64>,
    pub mode: crate::spec::file::RunMode,
    pub retries: u32,
    /// Where run state lives (default `s3://<sink bucket>/_sluice/`).
    pub state: S3Uri,
    /// S3 endpoint override from the job file (a flag or AWS_ENDPOINT_URL wins over it).
    pub endpoint: Option<String>,
    /// The params after `--param` overrides, as applied.
    pub params: BTreeMap<String, String>,
    /// `spec.kubernetes`: how the pods run on a cluster.
    pub kubernetes: PodSettings,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub uri: S3Uri,
    /// Globs matched against the key relative to the source prefix; empty means all.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub format: SourceFormat,
    pub csv: CsvReadOptions,
    /// `None` means detect from the key's extension (`.gz`, `.zst`).
    pub compression: Option<Compression>,
    /// The explicit schema; `None` means infer over a sample (see `format::infer`).
    ///
    /// Types: string -> Utf8, int32 -> Int32, int64 -> Int64, float32 -> Float32,
    /// float64 -> Float64, boolean -> Boolean, date -> Date32, timestamp ->
    /// Timestamp(Microsecond, timezone). A column's parse format (chrono strftime), when the
    /// file gives one, travels in the field metadata under `"sluice.format"`
    /// (`format::FORMAT_METADATA_KEY`); without it decoders use the defaults (date `%Y-%m-%d`,
    /// timestamp RFC 3339 or `%Y-%m-%d %H:%M:%S%.f`).
    pub schema: Option<SchemaRef>,
    /// How many records the inference reads.
    pub infer_records: usize,
}

/// One transform step, in order.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    /// The step may drop records on purpose (they count as `filtered`, not as lost).
    pub filters: bool,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    /// One read-only SELECT over table `input`.
    Sql { query: String },
    /// The user's transformer beside the worker.
    Container(Box<crate::spec::container::ContainerStep>),
}

/// What a record that cannot be decoded does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnBadRecord {
    /// Fail the object (and with it the shard).
    Fail,
    /// Drop the record and count it.
    Skip,
    /// Drop the record, count it and keep it in the run's rejects.
    Reject,
}

/// A limit on bad records per object.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordLimit {
    Count(u64),
    /// A fraction of the object's records, 0.0..=1.0.
    Fraction(f64),
}

impl std::fmt::Display for BadRecordLimit {
    /// As the job file writes it: `5`, or a fraction as a percentage (`2%`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRecordLimit::Count(n) => write!(f, "{n}"),
            BadRecordLimit::Fraction(x) => write!(f, "{}%", x * 100.0),
        }
    }
}

impl BadRecordLimit {
    /// Whether `bad` bad records out of `total` decoded records exceed the limit.
    pub fn exceeded(self, bad: u64, total: u64) -> bool {
        match self {
            BadRecordLimit::Count(n) => bad > n,
            BadRecordLimit::Fraction(f) => total > 0 && (bad as f64) > f * total as f64,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Validation {
    pub on_bad_record: OnBadRecord,
    pub max_bad_records: BadRecordLimit,
    /// `spec.validate.rules`, checked.
    pub rules: Vec<crate::spec::rules::Rule>,
    /// Offending rows kept per rule for the report.
    pub examples: usize,
}

#[derive(Debug, Clone)]
pub struct Sink {
    pub uri: S3Uri,
    pub format: SinkFormat,
    pub parquet: ParquetWriteOptions,
    pub csv: CsvWriteOptions,
    /// Compression of text outputs (csv, jsonl); parquet compresses inside the file.
    pub compression: Compression,
    pub part_size: u64,
    pub parts_in_flight: usize,
    /// Beyond this many bytes the output spills into numbered objects.
    pub max_object_size: u64,
    /// The output key template, relative to the sink prefix (see `plan::keys`).
    pub key: String,
    /// Hive-style partition columns, outermost first (empty: no partitions).
    pub partition_by: Vec<String>,
    /// Partitions of one object written at the same time.
    pub max_open_partitions: usize,
    /// The outputs are the data files of a Delta Lake table at `uri`, committed at publish.
    pub delta: bool,
    /// The directory of a run's data files below each partition path: a Delta table's
    /// files are the run's own (a later run must not overwrite what a version refers to).
    /// Set by the worker to the run id; `None` outside a Delta table.
    pub run_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shards {
    /// Exactly this many shards (fewer if there are fewer objects).
    Count(u32),
    /// As many shards as needed for about this many bytes each.
    TargetBytes(u64),
}
