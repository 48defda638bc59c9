//! The job file at its top level, as written: `JobFile`, its `spec:` section, and the parts
//! the file is read and checked in (`Unit`).
//!
//! The raw structs mirror the YAML exactly; their doc comments are the user documentation of
//! each field (they become the JSON Schema descriptions). Each section's structs sit beside
//! its checks (source.rs, steps.rs, validation.rs, sink.rs, shards.rs, kubernetes.rs). A new
//! field of `spec:` is added here (the field and its row in `SpecConfig::UNITS`), read in
//! load.rs, checked in validate.rs and carried by `Job`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::spec::kubernetes::KubernetesConfig;
use crate::spec::metadata::Metadata;
use crate::spec::shards::{ShardsConfig, SplitSizeConfig, default_shards, default_split_size};
use crate::spec::sink::SinkConfig;
use crate::spec::source::SourceConfig;
use crate::spec::steps::TransformStepConfig;
use crate::spec::validation::ValidateConfig;

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

/// The `spec:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecConfig {
    /// Named values substituted for `{{ params.NAME }}` in `source.uri`, `source.include`,
    /// `source.exclude`, `sink.uri`, `state`, transform `sql` and rule `sql`. `--param NAME=VALUE`
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
    /// The keys of `spec:` in file order, each with the unit it is read and checked as: the
    /// one list of them (kept equal to the JSON Schema by a test).
    pub const UNITS: [(&'static str, Unit); 13] = [
        ("params", Unit::Params),
        ("source", Unit::Source),
        ("transform", Unit::Transform),
        ("validate", Unit::Validate),
        ("sink", Unit::Sink),
        ("parallelism", Unit::Parallelism),
        ("shards", Unit::Shards),
        ("split_size", Unit::SplitSize),
        ("mode", Unit::Mode),
        ("retries", Unit::Retries),
        ("state", Unit::State),
        ("endpoint", Unit::Endpoint),
        ("kubernetes", Unit::Kubernetes),
    ];

    /// The keys of `spec:`, in file order.
    pub const FIELDS: &'static [&'static str] = &keys(Self::UNITS);
}

/// The keys of a table of units; a `const fn`, so that `FIELDS` is a constant.
const fn keys<const N: usize>(units: [(&'static str, Unit); N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = units[i].0;
        i += 1;
    }
    out
}

/// A part of the file that is read on its own, so that one broken part does not hide the
/// problems of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    ApiVersion,
    Kind,
    Metadata,
    Params,
    Source,
    /// The `transform` list as a whole (not a list).
    Transform,
    Step(usize),
    Validate,
    Sink,
    Parallelism,
    Shards,
    SplitSize,
    Mode,
    Retries,
    State,
    Endpoint,
    Kubernetes,
}

impl Unit {
    /// The key the unit is written under; a step's is its list's, `transform`.
    pub fn key(self) -> &'static str {
        match self {
            Unit::ApiVersion => "apiVersion",
            Unit::Kind => "kind",
            Unit::Metadata => "metadata",
            Unit::Step(_) => "transform",
            unit => SpecConfig::UNITS
                .iter()
                .find(|(_, u)| *u == unit)
                .map(|(key, _)| *key)
                .expect("every other unit is a key of spec:"),
        }
    }
}

pub fn default_parallelism() -> u32 {
    2
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
