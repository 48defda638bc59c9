//! Publishing a run: gather every object's done marker and every shard's outcome, write
//! report.json, and only when everything passed write `_SUCCESS.json`, last.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::ExitCode;
use crate::exec::local::ShardOutcome;
use crate::plan::Plan;
use crate::state::RunLayout;
use crate::storage::{Storage, StorageError};
use crate::validate::outcome::CheckReport;
use crate::validate::run::RunFacts;
use crate::worker::marker::{DoneMarker, ObjectFailure, OutputObject, RecordCounts, ShardProgress};

/// Markers read at the same time while publishing.
const MARKERS_IN_FLIGHT: usize = 32;

/// The run report: written for every run, failed or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub job: String,
    pub run_id: String,
    pub status: RunStatus,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub seconds: f64,
    pub objects: u64,
    pub objects_done: u64,
    pub bytes: u64,
    /// Source bytes per second over the whole run.
    pub throughput: f64,
    pub records: RecordCounts,
    pub outputs: u64,
    pub output_bytes: u64,
    pub rejects: u64,
    pub shards: Vec<ShardReport>,
    pub failures: Vec<ObjectFailure>,
    /// Every validation rule's outcome, per scope (see docs/validation.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckReport>,
    /// The exit code of the run (0 when it succeeded).
    pub exit_code: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardReport {
    pub index: u32,
    pub exit_code: i32,
    pub attempts: u32,
    pub objects: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
}

/// The publish manifest. Consumers read this, never a prefix listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuccessManifest {
    pub job: String,
    pub run_id: String,
    pub published: DateTime<Utc>,
    pub records: RecordCounts,
    pub outputs: Vec<PublishedOutput>,
    pub rejects: Vec<PublishedOutput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedOutput {
    /// The source object it came from.
    pub source: String,
    #[serde(flatten)]
    pub object: OutputObject,
}

/// Collects the run's outcome, writes report.json and, if everything passed,
/// `_SUCCESS.json`. Returns the report.
pub async fn publish(
    storage: &Storage,
    layout: &RunLayout,
    plan: &Plan,
    outcomes: &[ShardOutcome],
    started: DateTime<Utc>,
) -> Result<RunReport, StorageError> {
    let keys: Vec<String> = plan
        .shards
        .iter()
        .flat_map(|s| s.objects.iter().map(|o| o.task_key()))
        .collect();
    let markers: Vec<(String, Option<DoneMarker>)> = futures::stream::iter(keys)
        .map(|key| async move {
            let marker = storage
                .get_bytes(&layout.done_marker(&key))
                .await
                .map(|b| b.and_then(|b| serde_json::from_slice::<DoneMarker>(&b).ok()));
            (key, marker)
        })
        .buffered(MARKERS_IN_FLIGHT)
        .map(|(key, marker)| marker.map(|m| (key, m)))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

    let mut failures = Vec::new();
    for index in 0..plan.shards.len() as u32 {
        if let Some(bytes) = storage.get_bytes(&layout.progress(index)).await?
            && let Ok(progress) = serde_json::from_slice::<ShardProgress>(&bytes)
        {
            failures.extend(progress.failures);
        }
    }
    let mut records = RecordCounts::default();
    let mut outputs = Vec::new();
    let mut rejects = Vec::new();
    let etags: std::collections::HashMap<&str, &str> = plan
        .shards
        .iter()
        .flat_map(|s| &s.objects)
        .map(|o| (o.key.as_str(), o.etag.as_str()))
        .collect();
    for (key, marker) in &markers {
        match marker {
            Some(m) if etags.get(m.key.as_str()) == Some(&m.etag.as_str()) => {
                records.add(&m.records);
                outputs.extend(m.outputs.iter().map(|o| PublishedOutput {
                    source: m.key.clone(),
                    object: o.clone(),
                }));
                rejects.extend(m.rejects.iter().map(|o| PublishedOutput {
                    source: m.key.clone(),
                    object: o.clone(),
                }));
            }
            _ if failures.iter().any(|f| &f.key == key) => {}
            _ => failures.push(ObjectFailure {
                key: key.clone(),
                exit_code: ExitCode::Transient.code(),
                error: "no done marker: the object was not processed".into(),
                checks: Vec::new(),
            }),
        }
    }
    let checks = match rules_of_run(storage, layout).await? {
        Ok(job) => {
            let facts = RunFacts {
                plan,
                done: markers
                    .iter()
                    .filter_map(|(key, m)| {
                        m.as_ref()
                            .filter(|m| etags.get(m.key.as_str()) == Some(&m.etag.as_str()))
                            .map(|m| (key.as_str(), (&m.records, m.checks.as_slice())))
                    })
                    .collect(),
                failures: &failures,
                outputs: outputs.iter().map(|o| &o.object).collect(),
                sink_format: job.sink.format,
                keys: layout.keys(),
            };
            crate::validate::run::judge(storage, &job.validate.rules, job.validate.examples, &facts)
                .await
        }
        Err(problem) => {
            failures.push(ObjectFailure {
                key: layout.job().to_string(),
                exit_code: ExitCode::Config.code(),
                error: problem,
                checks: Vec::new(),
            });
            Vec::new()
        }
    };
    let exit = outcomes
        .iter()
        .map(|o| o.exit)
        .find(|e| *e != ExitCode::Done)
        .or_else(|| {
            failures
                .iter()
                .find_map(|f| ExitCode::from_code(f.exit_code).filter(|e| *e != ExitCode::Done))
        })
        .or_else(|| (!failures.is_empty()).then_some(ExitCode::Transient))
        .or_else(|| {
            checks
                .iter()
                .any(CheckReport::is_blocking)
                .then_some(ExitCode::Validation)
        })
        .unwrap_or(ExitCode::Done);
    let finished = Utc::now();
    let seconds = (finished - started).num_milliseconds().max(1) as f64 / 1000.0;
    let report = RunReport {
        job: plan.job.clone(),
        run_id: plan.run_id.clone(),
        status: if exit == ExitCode::Done {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        },
        started,
        finished,
        seconds,
        objects: plan.objects,
        objects_done: markers.iter().filter(|(_, m)| m.is_some()).count() as u64,
        bytes: plan.bytes,
        throughput: plan.bytes as f64 / seconds,
        records,
        outputs: outputs.len() as u64,
        output_bytes: outputs.iter().map(|o| o.object.size).sum(),
        rejects: rejects.iter().map(|o| o.object.rows).sum(),
        shards: plan
            .shards
            .iter()
            .map(|s| {
                let outcome = outcomes.iter().find(|o| o.index == s.index);
                ShardReport {
                    index: s.index,
                    exit_code: outcome.map_or(ExitCode::Transient.code(), |o| o.exit.code()),
                    attempts: outcome.map_or(0, |o| o.attempts),
                    objects: s.objects.len() as u64,
                    bytes: s.bytes,
                    last_lines: outcome
                        .filter(|o| o.exit != ExitCode::Done)
                        .map(|o| o.last_lines.clone())
                        .unwrap_or_default(),
                }
            })
            .collect(),
        failures,
        checks,
        exit_code: exit.code(),
    };
    let body = serde_json::to_vec_pretty(&report).expect("report serializes");
    storage.put_bytes(&layout.report(), body.into()).await?;
    if report.status == RunStatus::Succeeded {
        let manifest = SuccessManifest {
            job: plan.job.clone(),
            run_id: plan.run_id.clone(),
            published: Utc::now(),
            records,
            outputs,
            rejects,
        };
        let body = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        storage.put_bytes(&layout.success(), body.into()).await?;
    }
    Ok(report)
}

/// The run's resolved job, read back from its state (the rules to judge at publish).
/// `Ok(Err(..))` when it is missing or no longer valid.
async fn rules_of_run(
    storage: &Storage,
    layout: &RunLayout,
) -> Result<Result<crate::spec::Job, String>, StorageError> {
    let uri = layout.job();
    let Some(text) = storage.get_bytes(&uri).await? else {
        return Ok(Err(format!(
            "{uri} is missing: the run's rules cannot be judged"
        )));
    };
    Ok(
        crate::spec::load_str(&String::from_utf8_lossy(&text), &uri.to_string(), &[])
            .map(|loaded| loaded.job)
            .map_err(|e| format!("{uri} is not a valid job: {e}")),
    )
}
