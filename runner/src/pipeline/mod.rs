//! Pipelines at run time: the DAG of a `kind: Pipeline` carried out step by step, here or on
//! a cluster (executor.rs), each step an ordinary run under its own run id (step.rs), the
//! pipeline's record kept in the bucket as steps start and end (`state::pipeline`).
//!
//! Steps whose dependencies succeeded start as soon as a slot is free (`spec.parallelism`
//! at once, in file order); a failed step skips the steps downstream of it while the
//! other branches run to their end. The pipeline is published (`_SUCCESS.json`) only when
//! every step succeeded. Resuming a pipeline run starts again every step that did not
//! succeed; a job step's own state decides between a fresh run, a resume and nothing.

pub mod executor;
pub mod step;
pub mod summary;

use std::collections::BTreeMap;

use chrono::Utc;
use tokio::task::JoinSet;

use crate::exit::ExitCode;
use crate::spec::pipeline::templates::StepResult;
use crate::spec::pipeline::{Pipeline, step_run_id};
use crate::state::StateError;
use crate::state::pipeline::{
    PipelineLayout, PipelineRecord, PipelineStatus, StepRecord, StepStatus,
};
use crate::storage::Storage;

pub use executor::{ExecuteError, Executor};
use step::{StepContext, StepOutcome, execute, prepare};

/// Why a pipeline run could not be carried out (a run whose steps failed is a record).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("pipeline run {run_id} has no record at {uri}: nothing to resume (was it started?)")]
    NothingToResume { run_id: String, uri: String },
    #[error(
        "pipeline run {run_id} exists already ({uri}); resume it with `sluice resume {run_id} --local PIPELINE`, or choose another run id"
    )]
    Exists { run_id: String, uri: String },
    #[error(
        "pipeline run {run_id} was started with step {step:?}, which the pipeline file no longer has; resume it with the file it was started with"
    )]
    StepGone { run_id: String, step: String },
}

impl PipelineError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            PipelineError::State(e) => e.exit_code(),
            _ => ExitCode::Config,
        }
    }
}

/// How a pipeline run is carried out.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub run_id: String,
    /// Finish the existing run `run_id`: every step that did not succeed starts again.
    pub resume: bool,
    /// On the embedded server: create each job step's buckets before it runs.
    pub create_buckets: bool,
}

/// A pipeline run that ended.
#[derive(Debug, Clone)]
pub struct PipelineRun {
    pub record: PipelineRecord,
    pub layout: PipelineLayout,
    pub exit: ExitCode,
}

/// Runs (or resumes) a pipeline to its end.
pub async fn run_pipeline(
    executor: &Executor,
    storage: &Storage,
    pipeline: &Pipeline,
    options: PipelineOptions,
) -> Result<PipelineRun, PipelineError> {
    let run_id = options.run_id.clone();
    let layout = PipelineLayout::new(&pipeline.state, &pipeline.name, &run_id);
    let existing = crate::state::pipeline::read_record(storage, &layout).await?;
    let mut record = match (existing, options.resume) {
        (None, false) => fresh_record(pipeline, &run_id),
        (Some(_), false) => {
            return Err(PipelineError::Exists {
                run_id,
                uri: layout.record().to_string(),
            });
        }
        (None, true) => {
            return Err(PipelineError::NothingToResume {
                run_id,
                uri: layout.record().to_string(),
            });
        }
        (Some(record), true) => {
            if crate::state::pipeline::is_published(storage, &layout).await? {
                tracing::info!(run = %run_id, "the pipeline run is published already");
                return Ok(PipelineRun {
                    record,
                    layout,
                    exit: ExitCode::Done,
                });
            }
            resumed_record(pipeline, record)?
        }
    };
    crate::state::pipeline::write_record(storage, &layout, &record).await?;
    tracing::info!(pipeline = %pipeline.name, run = %run_id, steps = pipeline.steps.len(), "pipeline started");

    let ctx = StepContext {
        executor: executor.clone(),
        storage: storage.clone(),
        create_buckets: options.create_buckets,
    };
    let mut results: BTreeMap<String, StepResult> = record
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .filter_map(|s| s.result.clone().map(|r| (s.name.clone(), r)))
        .collect();
    let mut running: JoinSet<(usize, StepOutcome)> = JoinSet::new();
    loop {
        let mut changed = skip_downstream_of_failures(pipeline, &mut record);
        for index in ready_steps(pipeline, &record) {
            if running.len() >= pipeline.parallelism() {
                break;
            }
            changed = true;
            let step = &mut record.steps[index];
            step.attempts += 1;
            step.started = Some(Utc::now());
            step.finished = None;
            step.result = None;
            match prepare(pipeline, index, &run_id, &results) {
                Ok(prepared) => {
                    step.status = StepStatus::Running;
                    step.params = prepared.params.clone();
                    step.args = prepared.args.clone();
                    step.state = prepared.state();
                    step.error = None;
                    step.exit_code = None;
                    tracing::info!(step = %step.name, run = %step.run_id, "step started");
                    let ctx = ctx.clone();
                    running.spawn(async move { (index, execute(&ctx, &prepared).await) });
                }
                Err(why) => end_step(
                    step,
                    StepOutcome::failed(ExitCode::Config, why),
                    &mut results,
                ),
            }
        }
        if changed {
            crate::state::pipeline::write_record(storage, &layout, &record).await?;
            // A step that failed to start may skip others or free a slot.
            if running.is_empty() && !ready_steps(pipeline, &record).is_empty() {
                continue;
            }
        }
        let Some(joined) = running.join_next().await else {
            if skip_downstream_of_failures(pipeline, &mut record) {
                crate::state::pipeline::write_record(storage, &layout, &record).await?;
            }
            break;
        };
        let (index, outcome) = joined.expect("a step's task does not panic");
        end_step(&mut record.steps[index], outcome, &mut results);
        crate::state::pipeline::write_record(storage, &layout, &record).await?;
    }

    let exit = record
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .map(|s| {
            // A task's container may exit with a code of its own: a failure a retry may fix.
            s.exit_code
                .and_then(ExitCode::from_code)
                .unwrap_or(ExitCode::Transient)
        })
        .fold(ExitCode::Done, ExitCode::worse);
    record.finished = Some(Utc::now());
    record.exit_code = Some(exit.code());
    if record
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Succeeded)
    {
        record.status = PipelineStatus::Succeeded;
        crate::state::pipeline::publish(storage, &layout, &record).await?;
        tracing::info!(run = %run_id, "pipeline published");
    } else {
        record.status = PipelineStatus::Failed;
        crate::state::pipeline::write_record(storage, &layout, &record).await?;
    }
    Ok(PipelineRun {
        record,
        layout,
        exit,
    })
}

/// Records how a step ended; a succeeded step's results become available downstream.
fn end_step(
    step: &mut StepRecord,
    outcome: StepOutcome,
    results: &mut BTreeMap<String, StepResult>,
) {
    step.status = outcome.status;
    step.finished = Some(Utc::now());
    step.error = outcome.error;
    step.result = outcome.result;
    step.exit_code = Some(outcome.exit);
    match (&step.status, &step.result) {
        (StepStatus::Succeeded, Some(result)) => {
            tracing::info!(step = %step.name, run = %step.run_id, "step succeeded");
            results.insert(step.name.clone(), result.clone());
        }
        _ => tracing::error!(
            step = %step.name,
            run = %step.run_id,
            exit_code = outcome.exit,
            error = step.error.as_deref().unwrap_or(""),
            "step failed"
        ),
    }
}

fn fresh_record(pipeline: &Pipeline, run_id: &str) -> PipelineRecord {
    PipelineRecord {
        pipeline: pipeline.name.clone(),
        run_id: run_id.to_string(),
        params: pipeline.params().clone(),
        status: PipelineStatus::Running,
        started: Utc::now(),
        finished: None,
        exit_code: None,
        steps: pipeline
            .steps
            .iter()
            .map(|step| StepRecord {
                name: step.name.clone(),
                kind: step.kind,
                run_id: step_run_id(run_id, &step.name),
                depends_on: step
                    .depends_on
                    .iter()
                    .map(|&d| pipeline.steps[d].name.clone())
                    .collect(),
                status: StepStatus::Pending,
                params: BTreeMap::new(),
                args: None,
                attempts: 0,
                exit_code: None,
                state: None,
                started: None,
                finished: None,
                result: None,
                error: None,
            })
            .collect(),
    }
}

/// The record of a run to resume, in the pipeline's step order: what succeeded stays, every
/// other step waits to run again.
fn resumed_record(
    pipeline: &Pipeline,
    earlier: PipelineRecord,
) -> Result<PipelineRecord, PipelineError> {
    if let Some(gone) = earlier
        .steps
        .iter()
        .find(|s| pipeline.step(&s.name).is_none())
    {
        return Err(PipelineError::StepGone {
            run_id: earlier.run_id.clone(),
            step: gone.name.clone(),
        });
    }
    let mut record = fresh_record(pipeline, &earlier.run_id);
    record.started = earlier.started;
    record.params = earlier.params.clone();
    for step in &mut record.steps {
        if let Some(before) = earlier.step(&step.name) {
            step.attempts = before.attempts;
            if before.status == StepStatus::Succeeded {
                *step = StepRecord {
                    depends_on: step.depends_on.clone(),
                    ..before.clone()
                };
            }
        }
    }
    Ok(record)
}

/// Marks every pending step downstream of a failed or skipped one as skipped; whether any
/// changed.
fn skip_downstream_of_failures(pipeline: &Pipeline, record: &mut PipelineRecord) -> bool {
    let mut changed = false;
    for &index in &pipeline.order {
        let blocked = pipeline.steps[index].depends_on.iter().any(|&d| {
            matches!(
                record.steps[d].status,
                StepStatus::Failed | StepStatus::Skipped
            )
        });
        if blocked && record.steps[index].status == StepStatus::Pending {
            record.steps[index].status = StepStatus::Skipped;
            tracing::warn!(step = %record.steps[index].name, "skipped: a step it depends on failed");
            changed = true;
        }
    }
    changed
}

/// Pending steps whose every dependency succeeded, in file order.
fn ready_steps(pipeline: &Pipeline, record: &PipelineRecord) -> Vec<usize> {
    (0..pipeline.steps.len())
        .filter(|&i| record.steps[i].status == StepStatus::Pending)
        .filter(|&i| {
            pipeline.steps[i]
                .depends_on
                .iter()
                .all(|&d| record.steps[d].status == StepStatus::Succeeded)
        })
        .collect()
}

/// What each running job step of a pipeline run has done so far, from its plan and its
/// shards' progress in the bucket.
pub async fn running_progress(
    storage: &Storage,
    record: &PipelineRecord,
) -> Result<BTreeMap<String, summary::StepProgress>, StateError> {
    let mut out = BTreeMap::new();
    for step in &record.steps {
        let (StepStatus::Running, Some(state)) = (step.status, &step.state) else {
            continue;
        };
        let Ok(root) = state.parse::<crate::storage::uri::S3Uri>() else {
            continue;
        };
        let layout = crate::state::RunLayout::from_root(&root);
        let Some(plan) = crate::state::plan::read_plan(storage, &layout).await? else {
            continue;
        };
        let mut progress = summary::StepProgress {
            objects: plan.objects,
            bytes: plan.bytes,
            ..Default::default()
        };
        for shard in 0..plan.shards.len() as u32 {
            if let Some(p) = crate::state::progress::read_progress(storage, &layout, shard).await? {
                progress.objects_done += p.objects_done;
                progress.bytes_done += p.bytes_done;
            }
        }
        out.insert(step.name.clone(), progress);
    }
    Ok(out)
}
