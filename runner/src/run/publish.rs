//! Publishing a run: abort every upload the run left open, gather every object's done
//! marker and every shard's outcome, write report.json, and only when everything passed
//! write `_SUCCESS.json`, last.

use chrono::{DateTime, Utc};

use crate::exit::ExitCode;
use crate::plan::Plan;
use crate::pod::ShardOutcome;
use crate::run::report::{throughput_series, write_html};
use crate::state::checks::CheckReport;
use crate::state::manifest::{PublishedOutput, SuccessManifest, write_manifest};
use crate::state::marker::{DoneMarker, OutputObject, RecordCounts, read_markers};
use crate::state::phases::PhaseTimes;
use crate::state::plan::load_job_text;
use crate::state::progress::{ObjectFailure, read_progress};
use crate::state::report::{ReportStatus, RunReport, ShardReport, write_report};
use crate::state::uploads::{CleanUpError, abort_recorded};
use crate::state::{RunLayout, StateError};
use crate::storage::Storage;
use crate::validate::run::RunFacts;

/// Why a run could not be published (a run that failed its checks is a report).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    State(#[from] StateError),
    /// An upload of the run is still open: nothing is published until it is aborted.
    #[error("the run still has an open upload; run `sluice resume` to finish it")]
    OpenUploads(#[source] CleanUpError),
}

impl PublishError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            PublishError::State(e) => e.exit_code(),
            PublishError::OpenUploads(e) => e.exit_code(),
        }
    }
}

/// Aborts the uploads the run's shards recorded and left open (a killed worker, an abort
/// that failed), so no part of the run is left stored and billed; returns how many. Call it
/// only once no worker of the run is running.
pub async fn abort_open_uploads(
    storage: &Storage,
    layout: &RunLayout,
) -> Result<usize, PublishError> {
    let aborted = abort_recorded(storage, layout, None)
        .await
        .map_err(PublishError::OpenUploads)?;
    if aborted > 0 {
        tracing::info!(
            run = layout.run_id(),
            aborted,
            "aborted uploads the run left open"
        );
    }
    Ok(aborted)
}

/// Aborts the uploads the run left open, collects the run's outcome, writes report.json
/// and, if everything passed, `_SUCCESS.json`. Returns the report. Every worker of the run
/// must have ended.
pub async fn publish(
    storage: &Storage,
    layout: &RunLayout,
    plan: &Plan,
    outcomes: &[ShardOutcome],
    started: DateTime<Utc>,
) -> Result<RunReport, PublishError> {
    abort_open_uploads(storage, layout).await?;
    let markers = read_markers(storage, layout, plan.task_keys()).await?;

    let mut failures = Vec::new();
    let mut progresses = Vec::with_capacity(plan.shards.len());
    for index in 0..plan.shards.len() as u32 {
        let progress = read_progress(storage, layout, index).await?;
        if let Some(progress) = &progress {
            failures.extend(progress.failures.iter().cloned());
        }
        progresses.push(progress);
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
    let rules = rules_of_run(storage, layout).await?;
    let sink = rules.as_ref().ok().map(|job| job.sink.uri.clone());
    let table_job = rules.as_ref().ok().filter(|job| job.sink.delta).cloned();
    let checks = match rules {
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
                sink: &job.sink,
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
    // The most severe code of a failed shard (see `ExitCode::severity`), else of a failure.
    let mut exit = outcomes
        .iter()
        .map(|o| o.exit)
        .filter(|e| *e != ExitCode::Done)
        .max()
        .or_else(|| {
            failures
                .iter()
                .filter_map(|f| ExitCode::from_code(f.exit_code))
                .filter(|e| *e != ExitCode::Done)
                .max()
        })
        .or_else(|| (!failures.is_empty()).then_some(ExitCode::Transient))
        .or_else(|| {
            checks
                .iter()
                .any(CheckReport::is_blocking)
                .then_some(ExitCode::Validation)
        })
        .unwrap_or(ExitCode::Done);
    // A Delta table sees the run's files only now, every check having passed.
    let mut table = None;
    if let Some(job) = table_job.filter(|_| exit == ExitCode::Done) {
        let files: Vec<&OutputObject> = outputs.iter().map(|o| &o.object).collect();
        match commit_table(storage, &job, plan, &files).await {
            Ok(commit) => table = Some(commit),
            Err(error) => {
                exit = error.exit_code();
                failures.push(ObjectFailure {
                    key: job.sink.uri.to_string(),
                    exit_code: exit.code(),
                    error: crate::exit::error_chain(&error),
                    checks: Vec::new(),
                });
            }
        }
    }
    let finished = Utc::now();
    let seconds = (finished - started).num_milliseconds().max(1) as f64 / 1000.0;
    let report = RunReport {
        job: plan.job.clone(),
        run_id: plan.run_id.clone(),
        status: if exit == ExitCode::Done {
            ReportStatus::Succeeded
        } else {
            ReportStatus::Failed
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
                let progress = progresses.get(s.index as usize).and_then(Option::as_ref);
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
                    earlier: progress.map(|p| p.earlier.clone()).unwrap_or_default(),
                    started: progress.and_then(|p| p.started),
                    finished: progress.and_then(|p| p.updated),
                    records: progress.map(|p| p.records).unwrap_or_default(),
                    phases: progress.map(|p| p.phases).unwrap_or_default(),
                }
            })
            .collect(),
        failures,
        checks,
        exit_code: exit.code(),
        phases: progresses
            .iter()
            .flatten()
            .fold(PhaseTimes::default(), |mut sum, p| {
                sum.add(&p.phases);
                sum
            }),
        throughput_series: throughput_series(
            markers.iter().filter_map(|(_, m)| m.as_ref()),
            started,
            finished,
        ),
    };
    write_report(storage, layout, &report).await?;
    let done: Vec<&DoneMarker> = markers.iter().filter_map(|(_, m)| m.as_ref()).collect();
    // The report page is for people; a run is not failed for want of it.
    if let Err(error) = write_html(storage, layout, &report, &done, sink.as_ref()).await {
        tracing::warn!(%error, "writing report.html failed");
    }
    if report.status == ReportStatus::Succeeded {
        let manifest = SuccessManifest {
            job: plan.job.clone(),
            run_id: plan.run_id.clone(),
            published: Utc::now(),
            records,
            outputs,
            rejects,
            table,
        };
        write_manifest(storage, layout, &manifest).await?;
    }
    Ok(report)
}

/// Commits the run's data files to its Delta table, its partition columns typed as the
/// job's output has them when that is known before running.
async fn commit_table(
    storage: &Storage,
    job: &crate::spec::Job,
    plan: &Plan,
    files: &[&OutputObject],
) -> Result<crate::state::manifest::TableVersion, crate::run::table::TableError> {
    let input = match &job.source.schema {
        Some(schema) => Some(schema.clone()),
        None => plan.arrow_schema().ok().flatten(),
    };
    let output = match input {
        Some(input) => crate::validate::schema::output_schema(job, input).await,
        None => None,
    };
    let run = crate::run::table::RunFiles {
        run_id: &plan.run_id,
        outputs: files,
        append: plan.incremental,
        output,
    };
    crate::run::table::commit(storage, job, run).await
}

/// The run's resolved job, read back from its state (the rules to judge at publish).
/// `Ok(Err(..))` when it is missing or no longer valid.
async fn rules_of_run(
    storage: &Storage,
    layout: &RunLayout,
) -> Result<Result<crate::spec::Job, String>, PublishError> {
    let uri = layout.job();
    let text = match load_job_text(storage, layout).await {
        Ok(text) => text,
        Err(StateError::Missing { .. }) => {
            return Ok(Err(format!(
                "{uri} is missing: the run's rules cannot be judged"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(crate::spec::load_str(&text, &uri.to_string(), &[])
        .map(|loaded| loaded.job)
        .map_err(|e| format!("{uri} is not a valid job: {e}")))
}
