//! The job file as written: raw structs that mirror the YAML exactly. Their doc comments
//! are the user documentation of each field (they become the JSON Schema descriptions).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::format::options::{Compression, ParquetCompression, SinkFormat, SourceFormat};
use crate::spec::container::ContainerConfig;
use crate::spec::job::OnBadRecord;
use crate::spec::kubernetes::KubernetesConfig;

/// The only `apiVersion` this version of sluice reads.
pub const API_VERSION: &str = "sluice.dev/v1alpha1";
/// The `kind` of a job file.
pub const KIND: &str = "Job";

/// A sluice job file: where records come from, how they are transformed and checked, and
/// where they go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The version of the file format. Must be `sluice.dev/v1alpha1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The kind of file. Must be `Job`.
    pub kind: String,
    /// The job's name and labels.
    pub metadata: Metadata,
    /// What the job does.
    pub spec: SpecConfig,
}

impl JobFile {
    /// The top-level keys, in file order (kept equal to the JSON Schema by a test).
    pub const FIELDS: &'static [&'static str] = &["apiVersion", "kind", "metadata", "spec"];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The job's name: a DNS-1123 label (lowercase letters, digits and `-`, starting and
    /// ending with a letter or digit, at most 63 characters). It names the Kubernetes Job
    /// and the job's run state.
    pub name: String,
    /// Labels copied onto the Kubernetes Job and its pods (Kubernetes label syntax).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The `spec:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecConfig {
    /// Named values substituted for `{{ params.NAME }}` in `source.uri`, `source.include`,
    /// `source.exclude`, `sink.uri`, `state` and transform `sql`. `--param NAME=VALUE`
    /// replaces or adds a value. Numbers and booleans are read as their text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[serde(deserialize_with = "scalar_string_map")]
    #[schemars(with = "BTreeMap<String, ParamValueSchema>")]
    pub params: BTreeMap<String, String>,
    /// Where the input objects are and how to decode them.
    pub source: SourceConfig,
    /// Transform steps, applied in order to every record batch. Empty: records pass as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transform: Vec<TransformStepConfig>,
    /// What to do with records that cannot be decoded.
    #[serde(default)]
    pub validate: ValidateConfig,
    /// Where the output objects go and how to encode them.
    pub sink: SinkConfig,
    /// How many shards run at the same time (at least 1).
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// How the source objects are split into shards: a count (`4`) or a target number of
    /// bytes per shard (`"256MiB"`). An object is one task, unless it is larger than
    /// `split_size`.
    #[serde(default = "default_shards")]
    pub shards: ShardsConfig,
    /// Text objects (CSV, JSONL) larger than this are split into byte ranges at record
    /// boundaries, each range a task of its own with its own output object
    /// (`<stem>.part-00001.<ext>`, ...) and done marker; Parquet objects larger than this are
    /// split into ranges of row groups. A size with a unit (`"256MiB"`), or `0` / `off` to
    /// never split. Compressed objects are never split. A split CSV object must not hold a
    /// newline inside a quoted field (the run fails with exit code 4 if one does); see
    /// docs/resume.md.
    #[serde(default = "default_split_size")]
    pub split_size: SplitSizeConfig,
    /// `full` (the default) processes every selected object on every run; `incremental`
    /// processes only the objects that no published run consumed with the same ETag (a
    /// ledger under `<state>/ledger/<job>/`); `sluice run --full` ignores the ledger once.
    #[serde(default)]
    pub mode: RunMode,
    /// How many times a failed shard is retried (0 to 100). Only transient failures are
    /// retried; bad configuration, failed validation and bad data are not.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Where run state (plan, progress, markers, reports) is kept. Default:
    /// `s3://<sink bucket>/_sluice/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The S3 endpoint URL (`http://` or `https://`), for S3-compatible stores. The
    /// `--endpoint` flag and `AWS_ENDPOINT_URL` take precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// How the job's pods run on Kubernetes: image, namespace, service account,
    /// resources, scheduling and environment (see docs/kubernetes.md).
    #[serde(default, skip_serializing_if = "is_default")]
    pub kubernetes: KubernetesConfig,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl SpecConfig {
    /// The keys of `spec:` (kept equal to the JSON Schema by a test).
    pub const FIELDS: &'static [&'static str] = &[
        "params",
        "source",
        "transform",
        "validate",
        "sink",
        "parallelism",
        "shards",
        "split_size",
        "mode",
        "retries",
        "state",
        "endpoint",
        "kubernetes",
    ];
}

pub fn default_parallelism() -> u32 {
    2
}

pub fn default_shards() -> ShardsConfig {
    ShardsConfig::Size("256MiB".to_string())
}

pub fn default_split_size() -> SplitSizeConfig {
    SplitSizeConfig::Size("256MiB".to_string())
}

/// `spec.mode`: which objects a run processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// Every selected object, every run.
    #[default]
    Full,
    /// Only objects new or changed since the job's published runs consumed them.
    Incremental,
}

pub fn default_retries() -> u32 {
    2
}

/// `spec.source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source prefix, `s3://bucket/prefix/`. Every object below it is a candidate input.
    pub uri: String,
    /// Globs matched against each key relative to the source prefix; an object is read if it
    /// matches any of them. Empty: every object. `*` matches any characters including `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Globs of keys (relative to the source prefix) to leave out, even if included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// How the objects are encoded.
    pub format: SourceFormat,
    /// How the objects are compressed. `auto` decides per object from the key's extension
    /// (`.gz`, `.gzip`: gzip; `.zst`, `.zstd`: zstd; anything else: none).
    #[serde(default)]
    pub compression: SourceCompression,
    /// CSV options; only for `format: csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvSourceConfig>,
    /// The columns, in order. Without it the schema is inferred from a sample of the first
    /// object (int64, float64, boolean, else string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<ColumnConfig>>,
    /// How many records schema inference reads (at least 1).
    #[serde(default = "default_infer_records")]
    pub infer_records: u64,
}

pub fn default_infer_records() -> u64 {
    1000
}

/// Source compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceCompression {
    /// Decide from each key's extension.
    #[default]
    Auto,
    None,
    Gzip,
    Zstd,
}

/// `spec.source.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// The field separator: one ASCII character, or `"\t"` / `tab` for a tab.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Whether the first record holds the column names.
    #[serde(default = "default_true")]
    pub header: bool,
    /// The quote character: one ASCII character, different from the delimiter.
    #[serde(default = "default_quote")]
    pub quote: String,
    /// The escape character inside quoted fields: one ASCII character. Null: a quote inside
    /// a quoted field is written twice (`""`), as RFC 4180 says.
    #[serde(default)]
    pub escape: Option<String>,
    /// Field values read as null (compared after unquoting).
    #[serde(default = "default_null_values")]
    pub null_values: Vec<String>,
    /// Lines starting with this ASCII character are skipped. Null: no comment lines.
    #[serde(default)]
    pub comment: Option<String>,
}

impl Default for CsvSourceConfig {
    fn default() -> Self {
        CsvSourceConfig {
            delimiter: default_delimiter(),
            header: true,
            quote: default_quote(),
            escape: None,
            null_values: default_null_values(),
            comment: None,
        }
    }
}

pub fn default_delimiter() -> String {
    ",".to_string()
}

pub fn default_quote() -> String {
    "\"".to_string()
}

pub fn default_null_values() -> Vec<String> {
    vec![String::new()]
}

pub fn default_true() -> bool {
    true
}

/// One column of `spec.source.schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The column name (unique, not empty). For CSV with a header, columns are matched by
    /// position; the name is the one the transform and the sink see.
    pub name: String,
    /// The column type.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Whether the column may be null.
    #[serde(default = "default_true")]
    pub nullable: bool,
    /// How text is parsed, as a chrono strftime format; only for `date` and `timestamp`.
    /// Default for `date`: `%Y-%m-%d`; for `timestamp`: RFC 3339 or `%Y-%m-%d %H:%M:%S%.f`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The time zone of a `timestamp` column: an IANA name (`Europe/Berlin`, `UTC`) or an
    /// offset (`+02:00`). Without it timestamps have no time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// A column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    String,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    /// A calendar date (Arrow Date32).
    Date,
    /// A point in time with microsecond precision (Arrow Timestamp(Microsecond)).
    Timestamp,
}

/// One step of `spec.transform`. A step has exactly one kind (`sql` or `container`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformStepConfig {
    /// The step's name, unique within the job. Default: `step-<n>`, n counting from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One read-only SQL query (a SELECT, optionally with WITH, UNION, ...) over the table
    /// `input`, which holds the records coming into this step. DDL, DML, COPY and more than
    /// one statement are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The user's own transformer, run beside the worker and spoken to over loopback
    /// (see docs/transformers.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerConfig>,
    /// Whether the step may drop records on purpose (such as a WHERE clause). Dropped records
    /// are counted as filtered; without it, fewer records out than in fails validation.
    #[serde(default)]
    pub filters: bool,
}

/// `spec.validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// What a record that cannot be decoded does: `fail` fails the object, `skip` drops and
    /// counts it, `reject` drops and counts it and writes it to the run's rejects.
    #[serde(default = "default_on_bad_record")]
    pub on_bad_record: OnBadRecord,
    /// How many bad records an object may have before the run fails (with `skip` or
    /// `reject`): a count (`10`) or a fraction of the object's records (`"1%"` or `0.01`).
    #[serde(default = "default_max_bad_records")]
    pub max_bad_records: BadRecordLimitConfig,
    /// Data rules judged per object, shard or run (see docs/validation.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::spec::rules::RuleConfig>,
    /// How many offending rows each rule shows in the report (default 10).
    #[serde(default = "default_examples")]
    pub examples: usize,
}

pub fn default_examples() -> usize {
    10
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            on_bad_record: default_on_bad_record(),
            max_bad_records: default_max_bad_records(),
            rules: Vec::new(),
            examples: default_examples(),
        }
    }
}

pub fn default_on_bad_record() -> OnBadRecord {
    OnBadRecord::Fail
}

pub fn default_max_bad_records() -> BadRecordLimitConfig {
    BadRecordLimitConfig::Text("1%".to_string())
}

/// `spec.sink`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink prefix, `s3://bucket/prefix/`. It must not lie inside the source prefix.
    pub uri: String,
    /// How output objects are encoded.
    #[serde(default = "default_sink_format")]
    pub format: SinkFormat,
    /// Parquet options; only for `format: parquet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<ParquetSinkConfig>,
    /// CSV options; only for `format: csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvSinkConfig>,
    /// Compression of text outputs (`csv`, `jsonl`): `none`, `gzip` or `zstd`. Default `none`.
    /// Parquet compresses inside the file (see `parquet.compression`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// The size of each multipart upload part: 5MiB to 5GiB.
    #[serde(default = "default_part_size")]
    pub part_size: ByteSizeConfig,
    /// How many parts of one object upload at the same time (at least 1). Memory per object
    /// in flight is about `part_size * parts_in_flight`.
    #[serde(default = "default_parts_in_flight")]
    pub parts_in_flight: u32,
    /// Beyond this size an output spills into numbered objects (`{{ part }}`). At least
    /// `part_size`, at most `part_size * 10000` (the S3 part limit), which is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<ByteSizeConfig>,
    /// The output key relative to the sink prefix. Variables: `source.dir`, `source.stem`,
    /// `source.name`, `source.key`, `part`, `ext`. Must contain `{{ part }}` and one of
    /// `{{ source.stem }}`, `{{ source.name }}`, `{{ source.key }}`.
    #[serde(default = "default_key")]
    pub key: String,
}

pub fn default_sink_format() -> SinkFormat {
    SinkFormat::Parquet
}

pub fn default_part_size() -> ByteSizeConfig {
    ByteSizeConfig::Text("16MiB".to_string())
}

pub fn default_parts_in_flight() -> u32 {
    4
}

/// The default output key template: the source key's relative path with the new extension.
pub const DEFAULT_KEY_TEMPLATE: &str = "{{ source.dir }}{{ source.stem }}{{ part }}.{{ ext }}";

pub fn default_key() -> String {
    DEFAULT_KEY_TEMPLATE.to_string()
}

/// `spec.sink.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Page compression inside the Parquet file.
    #[serde(default = "default_parquet_compression")]
    pub compression: ParquetCompression,
    /// Rows per row group (at least 1).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: u64,
}

pub fn default_parquet_compression() -> ParquetCompression {
    ParquetCompression::Zstd
}

pub fn default_row_group_rows() -> u64 {
    122_880
}

/// `spec.sink.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvSinkConfig {
    /// The field separator: one ASCII character, or `"\t"` / `tab` for a tab.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Whether to write a header record with the column names.
    #[serde(default = "default_true")]
    pub header: bool,
}

/// A byte size as written: a number of bytes or text like `"16MiB"`; parsed by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteSizeConfig {
    Bytes(u64),
    Text(String),
}

impl fmt::Display for ByteSizeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteSizeConfig::Bytes(n) => write!(f, "{n}"),
            ByteSizeConfig::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// `spec.shards` as written: a count or a byte size per shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardsConfig {
    Count(u64),
    Size(String),
}

/// `spec.split_size` as written: a byte size, or `0` / `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitSizeConfig {
    Count(u64),
    Size(String),
}

impl<'de> Deserialize<'de> for SplitSizeConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match number_or_text(d, "a size like \"256MiB\", or 0 or off", false)? {
            NumberOrText::Unsigned(n) => Ok(SplitSizeConfig::Count(n)),
            NumberOrText::Text(s) => Ok(SplitSizeConfig::Size(s)),
            NumberOrText::Float(_) => unreachable!("floats are refused by the visitor"),
        }
    }
}

impl Serialize for SplitSizeConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SplitSizeConfig::Count(n) => s.serialize_u64(*n),
            SplitSizeConfig::Size(t) => s.serialize_str(t),
        }
    }
}

impl JsonSchema for SplitSizeConfig {
    fn schema_name() -> Cow<'static, str> {
        "SplitSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size with a unit such as \"256MiB\" above which an object is split into ranges, or 0 or \"off\" to never split.",
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": 0 },
                { "type": "string" }
            ]
        })
    }
}

/// `spec.validate.max_bad_records` as written.
#[derive(Debug, Clone, PartialEq)]
pub enum BadRecordLimitConfig {
    Count(u64),
    Fraction(f64),
    Text(String),
}

impl fmt::Display for BadRecordLimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecordLimitConfig::Count(n) => write!(f, "{n}"),
            BadRecordLimitConfig::Fraction(x) => write!(f, "{x}"),
            BadRecordLimitConfig::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// A number or text, as YAML gives it: the shape shared by the three types above.
enum NumberOrText {
    Unsigned(u64),
    Float(f64),
    Text(String),
}

struct NumberOrTextVisitor {
    expecting: &'static str,
    floats: bool,
}

impl Visitor<'_> for NumberOrTextVisitor {
    type Value = NumberOrText;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumberOrText, E> {
        Ok(NumberOrText::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumberOrText, E> {
        u64::try_from(v)
            .map(NumberOrText::Unsigned)
            .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumberOrText, E> {
        if self.floats {
            Ok(NumberOrText::Float(v))
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NumberOrText, E> {
        Ok(NumberOrText::Text(v.to_string()))
    }
}

fn number_or_text<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
    floats: bool,
) -> Result<NumberOrText, D::Error> {
    d.deserialize_any(NumberOrTextVisitor { expecting, floats })
}

impl<'de> Deserialize<'de> for ByteSizeConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match number_or_text(d, "a byte size like \"16MiB\" or a number of bytes", false)? {
            NumberOrText::Unsigned(n) => Ok(ByteSizeConfig::Bytes(n)),
            NumberOrText::Text(s) => Ok(ByteSizeConfig::Text(s)),
            NumberOrText::Float(_) => unreachable!("floats are refused by the visitor"),
        }
    }
}

impl Serialize for ByteSizeConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ByteSizeConfig::Bytes(n) => s.serialize_u64(*n),
            ByteSizeConfig::Text(t) => s.serialize_str(t),
        }
    }
}

impl JsonSchema for ByteSizeConfig {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A byte size: a number of bytes, or a number with a unit such as \"16MiB\", \"16 MiB\" or \"5GB\" (KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB of 1000).",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for ShardsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match number_or_text(
            d,
            "a shard count like 4 or a size per shard like \"256MiB\"",
            false,
        )? {
            NumberOrText::Unsigned(n) => Ok(ShardsConfig::Count(n)),
            NumberOrText::Text(s) => Ok(ShardsConfig::Size(s)),
            NumberOrText::Float(_) => unreachable!("floats are refused by the visitor"),
        }
    }
}

impl Serialize for ShardsConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ShardsConfig::Count(n) => s.serialize_u64(*n),
            ShardsConfig::Size(t) => s.serialize_str(t),
        }
    }
}

impl JsonSchema for ShardsConfig {
    fn schema_name() -> Cow<'static, str> {
        "Shards".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A number of shards (at least 1), or a target size per shard with a unit such as \"256MiB\".",
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for BadRecordLimitConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expecting = "a count like 10 or a fraction like \"1%\" or 0.01";
        match number_or_text(d, expecting, true)? {
            NumberOrText::Unsigned(n) => Ok(BadRecordLimitConfig::Count(n)),
            NumberOrText::Float(x) => Ok(BadRecordLimitConfig::Fraction(x)),
            NumberOrText::Text(s) => Ok(BadRecordLimitConfig::Text(s)),
        }
    }
}

impl Serialize for BadRecordLimitConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BadRecordLimitConfig::Count(n) => s.serialize_u64(*n),
            BadRecordLimitConfig::Fraction(x) => s.serialize_f64(*x),
            BadRecordLimitConfig::Text(t) => s.serialize_str(t),
        }
    }
}

impl JsonSchema for BadRecordLimitConfig {
    fn schema_name() -> Cow<'static, str> {
        "BadRecordLimit".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A count of bad records (10), or a fraction of an object's records: \"1%\" or 0.01 (0 to 1).",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "number", "minimum": 0, "maximum": 1 },
                { "type": "string", "pattern": "^\\s*[0-9.]+\\s*%?\\s*$" }
            ]
        })
    }
}

/// The schema of one param value: text, a number or a boolean (read as its text).
pub struct ParamValueSchema;

impl JsonSchema for ParamValueSchema {
    fn schema_name() -> Cow<'static, str> {
        "ParamValue".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// A string map whose values may be written as numbers or booleans (`year: 2026`).
pub(crate) fn scalar_string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct ScalarString(String);

    impl<'de> Deserialize<'de> for ScalarString {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = ScalarString;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string, number or boolean")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarString, E> {
                    Ok(ScalarString(v.to_string()))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarString, E> {
                    Ok(ScalarString(v.to_string()))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarString, E> {
                    Ok(ScalarString(v.to_string()))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarString, E> {
                    Ok(ScalarString(v.to_string()))
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarString, E> {
                    Ok(ScalarString(v.to_string()))
                }
            }
            d.deserialize_any(V)
        }
    }

    let map = BTreeMap::<String, ScalarString>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}
