//! Listing -> filtered objects -> shards balanced by bytes -> the plan manifest.

pub mod keys;
pub mod split;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::exit::ExitCode;
pub use crate::format::FORMAT_METADATA_KEY;
use crate::spec::job::{Job, Shards, Source};
use crate::storage::ObjectInfo;
use crate::storage::uri::S3Uri;

/// What a run will do: every source object, assigned to exactly one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub job: String,
    pub run_id: String,
    pub created: DateTime<Utc>,
    pub source: S3Uri,
    pub sink: S3Uri,
    pub state: S3Uri,
    /// The schema the workers decode with (explicit, or inferred at plan time), so every
    /// shard decodes every object the same way. `None` for self-describing formats.
    pub schema: Option<Vec<PlannedColumn>>,
    /// Tasks planned (a split object counts once per range).
    pub objects: u64,
    pub bytes: u64,
    /// The job is incremental: once published, the run's objects go into the ledger.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    pub shards: Vec<Shard>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub bytes: u64,
    pub objects: Vec<PlannedObject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedObject {
    pub key: String,
    /// Bytes of the task: the object's size, or its range's.
    pub size: u64,
    pub etag: String,
    /// The part of a split object this task reads (see `plan::split`); `None`: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<split::PlannedRange>,
}

impl PlannedObject {
    /// What names the task's done marker: the key, plus the range of a split object.
    pub fn task_key(&self) -> String {
        task_key(&self.key, self.range.as_ref())
    }
}

/// The task key of `key`, or of one range of it.
pub fn task_key(key: &str, range: Option<&split::PlannedRange>) -> String {
    match range {
        None => key.to_string(),
        Some(r) => format!("{key}#part-{:05}-of-{:05}", r.part, r.parts),
    }
}

/// One column of the planned schema: the Arrow type in its display form, plus the parse format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    pub nullable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("source.include/exclude: glob {glob:?}")]
    Glob {
        glob: String,
        #[source]
        source: globset::Error,
    },
    #[error("plan.json: column {column} has a type sluice cannot decode: {data_type}")]
    ColumnType { column: String, data_type: String },
}

impl PlanError {
    /// A selection or split setting that cannot be planned: 2.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

impl Plan {
    /// Builds the plan from a listing of the source prefix.
    pub fn build(
        job: &Job,
        run_id: &str,
        listing: Vec<ObjectInfo>,
        schema: Option<&SchemaRef>,
    ) -> Result<Plan, PlanError> {
        let objects = select_objects(&job.source, listing)?;
        Ok(Plan::from_tasks(job, run_id, objects, schema))
    }

    /// Builds the plan from selected (and possibly split) tasks.
    pub fn from_tasks(
        job: &Job,
        run_id: &str,
        tasks: Vec<PlannedObject>,
        schema: Option<&SchemaRef>,
    ) -> Plan {
        let shards = balance(tasks, job.shards);
        Plan {
            job: job.name.clone(),
            run_id: run_id.to_string(),
            created: Utc::now(),
            source: job.source.uri.clone(),
            sink: job.sink.uri.clone(),
            state: job.state.clone(),
            schema: schema.map(|s| columns_of(s)),
            objects: shards.iter().map(|s| s.objects.len() as u64).sum(),
            bytes: shards.iter().map(|s| s.bytes).sum(),
            incremental: job.mode == crate::spec::file::RunMode::Incremental,
            shards,
        }
    }

    /// The schema to decode with, rebuilt from plan.json.
    pub fn arrow_schema(&self) -> Result<Option<SchemaRef>, PlanError> {
        let Some(columns) = &self.schema else {
            return Ok(None);
        };
        let fields = columns
            .iter()
            .map(|c| {
                let data_type = parse_type(&c.data_type).ok_or_else(|| PlanError::ColumnType {
                    column: c.name.clone(),
                    data_type: c.data_type.clone(),
                })?;
                let mut field = Field::new(&c.name, data_type, c.nullable);
                if let Some(format) = &c.format {
                    field = field
                        .with_metadata([(FORMAT_METADATA_KEY.to_string(), format.clone())].into());
                }
                Ok(field)
            })
            .collect::<Result<Vec<_>, PlanError>>()?;
        Ok(Some(Arc::new(Schema::new(fields))))
    }

    /// The task key of every object of every shard, in plan order.
    pub fn task_keys(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(|s| s.objects.iter().map(|o| o.task_key()))
            .collect()
    }

    pub fn shard(&self, index: u32) -> Option<&Shard> {
        self.shards.get(index as usize)
    }
}

/// The planned form of a schema.
pub fn columns_of(schema: &Schema) -> Vec<PlannedColumn> {
    schema
        .fields()
        .iter()
        .map(|f| PlannedColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            format: f.metadata().get(FORMAT_METADATA_KEY).cloned(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// The inverse of `DataType`'s display for the types sluice decodes.
fn parse_type(s: &str) -> Option<DataType> {
    let simple = [
        DataType::Utf8,
        DataType::Int32,
        DataType::Int64,
        DataType::Float32,
        DataType::Float64,
        DataType::Boolean,
        DataType::Date32,
        DataType::Timestamp(TimeUnit::Microsecond, None),
    ];
    if let Some(t) = simple.into_iter().find(|t| t.to_string() == s) {
        return Some(t);
    }
    // Timestamp(µs, "Zone"): take the zone from between the quotes.
    let zone = s.strip_prefix("Timestamp(")?.split('"').nth(1)?;
    let t = DataType::Timestamp(TimeUnit::Microsecond, Some(zone.into()));
    (t.to_string() == s).then_some(t)
}

fn glob_set(globs: &[String]) -> Result<Option<GlobSet>, PlanError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(Glob::new(glob).map_err(|source| PlanError::Glob {
            glob: glob.clone(),
            source,
        })?);
    }
    let set = builder.build().map_err(|source| PlanError::Glob {
        glob: globs.join(", "),
        source,
    })?;
    Ok(Some(set))
}

/// Keeps the objects under the source prefix that match the include globs and none of the
/// exclude globs (both relative to the prefix). Folder markers (keys ending in `/`) are skipped.
pub fn select_objects(
    source: &Source,
    listing: Vec<ObjectInfo>,
) -> Result<Vec<PlannedObject>, PlanError> {
    let include = glob_set(&source.include)?;
    let exclude = glob_set(&source.exclude)?;
    let prefix = source.uri.key.as_str();
    let mut selected: Vec<PlannedObject> = listing
        .into_iter()
        .filter(|o| !o.key.ends_with('/'))
        .filter(|o| {
            let relative = o.key.strip_prefix(prefix).unwrap_or(&o.key);
            include.as_ref().is_none_or(|g| g.is_match(relative))
                && !exclude.as_ref().is_some_and(|g| g.is_match(relative))
        })
        .map(|o| PlannedObject {
            key: o.key,
            size: o.size,
            etag: o.etag,
            range: None,
        })
        .collect();
    selected.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(selected)
}

/// Splits objects into shards balanced by bytes: largest object first onto the lightest
/// shard (ties: lower index). Deterministic for a given listing. Never more shards than
/// objects, and at least one shard (possibly empty).
pub fn balance(mut objects: Vec<PlannedObject>, shards: Shards) -> Vec<Shard> {
    let total: u64 = objects.iter().map(|o| o.size).sum();
    let wanted = match shards {
        Shards::Count(n) => n as u64,
        Shards::TargetBytes(target) => total.div_ceil(target.max(1)),
    };
    let count = wanted.clamp(1, (objects.len() as u64).max(1)) as usize;
    let mut out: Vec<Shard> = (0..count)
        .map(|i| Shard {
            index: i as u32,
            bytes: 0,
            objects: Vec::new(),
        })
        .collect();
    objects.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| a.range.map(|r| r.part).cmp(&b.range.map(|r| r.part)))
    });
    for object in objects {
        let lightest = out
            .iter_mut()
            .min_by_key(|s| (s.bytes, s.objects.len(), s.index))
            .expect("at least one shard");
        lightest.bytes += object.size;
        lightest.objects.push(object);
    }
    out
}

/// A run id for a manual run: the job name and the UTC start time to the second.
pub fn new_run_id(job: &str, now: DateTime<Utc>) -> String {
    format!("{job}-{}", now.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64) -> PlannedObject {
        PlannedObject {
            key: key.into(),
            size,
            etag: format!("\"{size}\""),
            range: None,
        }
    }

    #[test]
    fn balance_spreads_bytes_evenly_and_is_deterministic() {
        let objects: Vec<_> = (0..40)
            .map(|i| obj(&format!("k{i:02}"), 1000 + (i * 7919 % 13) * 100))
            .collect();
        let a = balance(objects.clone(), Shards::Count(4));
        let mut reversed = objects.clone();
        reversed.reverse();
        let b = balance(reversed, Shards::Count(4));
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
        let sizes: Vec<u64> = a.iter().map(|s| s.bytes).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        let largest = objects.iter().map(|o| o.size).max().unwrap();
        assert!(max - min <= largest, "unbalanced: {sizes:?}");
        let planned: usize = a.iter().map(|s| s.objects.len()).sum();
        assert_eq!(planned, 40);
    }

    #[test]
    fn balance_never_makes_more_shards_than_objects() {
        assert_eq!(balance(vec![obj("a", 1)], Shards::Count(8)).len(), 1);
        let empty = balance(vec![], Shards::Count(3));
        assert_eq!(empty.len(), 1);
        assert!(empty[0].objects.is_empty());
        let by_bytes = balance(
            (0..10).map(|i| obj(&format!("{i}"), 100)).collect(),
            Shards::TargetBytes(250),
        );
        assert_eq!(by_bytes.len(), 4);
    }

    #[test]
    fn planned_types_round_trip() {
        for t in [
            DataType::Utf8,
            DataType::Int64,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("Europe/Berlin".into())),
        ] {
            assert_eq!(parse_type(&t.to_string()), Some(t));
        }
        assert_eq!(parse_type("Duration(s)"), None);
    }
}
