//! `sluice run`: plan a run, write its state, execute its worker Job with the local pod
//! runner, publish it.

use std::path::PathBuf;

use chrono::Utc;

use crate::exit::ExitCode;
use crate::kubernetes::render::{Target, WorkerPlan, worker_job};
use crate::plan::PlanError;
use crate::pod::{LocalPodRunner, PodOutput, PodRunError};
use crate::run::publish;
use crate::run::start::{self, StartError};
use crate::spec::{Loaded, SpecErrors};
use crate::state::report::{ReportStatus, RunReport};
use crate::state::{RunLayout, StateError};
use crate::storage::Storage;

/// Why a local run could not be carried out (a run that ran and failed is a report).
#[derive(Debug, thiserror::Error)]
pub enum LocalRunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Rules(#[from] SpecErrors),
    #[error(transparent)]
    Pods(#[from] PodRunError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
}

impl LocalRunError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            LocalRunError::Start(e) => e.exit_code(),
            LocalRunError::State(e) => e.exit_code(),
            LocalRunError::Plan(e) => e.exit_code(),
            LocalRunError::Rules(e) => e.exit_code(),
            LocalRunError::Pods(e) => e.exit_code(),
            LocalRunError::Publish(e) => e.exit_code(),
        }
    }
}

/// How a local run is carried out.
#[derive(Debug, Clone)]
pub struct LocalRunOptions {
    /// The `sluice` executable that runs workers (normally the current one).
    pub program: PathBuf,
    /// Environment every worker gets, so it reaches the same S3.
    pub env: Vec<(String, String)>,
    /// Overrides the job's parallelism.
    pub parallelism: Option<u32>,
    /// Overrides the generated run id.
    pub run_id: Option<String>,
    pub bar: bool,
    /// Pin each worker to the first N CPUs (for benchmarks).
    pub cpus: Option<usize>,
    /// Finish the existing run `run_id` with its own plan instead of planning a new one:
    /// every shard runs again and skips the objects whose done marker matches.
    pub resume: bool,
    /// Ignore an incremental job's ledger: plan every selected object.
    pub full: bool,
}

/// What runs each container step's sidecar on this machine, by the name of its container:
/// its `local.command` (an io step's behind the bridge of `program`).
pub fn local_commands(
    job: &crate::spec::Job,
    program: &std::path::Path,
) -> std::collections::BTreeMap<String, Vec<String>> {
    job.steps
        .iter()
        .filter_map(|step| match &step.kind {
            crate::spec::job::StepKind::Container(c)
                if c.image != crate::spec::kubernetes::SLUICE_IMAGE_ALIAS =>
            {
                crate::transform::container::harness::local_argv(c, &step.name, program)
                    .ok()
                    .map(|argv| (step.name.clone(), argv))
            }
            _ => None,
        })
        .collect()
}

/// Adds a published run of an incremental job to its ledger (after `_SUCCESS.json`). A
/// failure here is logged, not fatal: the run is published, and the next incremental plan
/// writes the missing ledger from the run's plan (see `state::ledger`).
pub async fn record_in_ledger(storage: &Storage, plan: &crate::plan::Plan, report: &RunReport) {
    if !plan.incremental || report.status != ReportStatus::Succeeded {
        return;
    }
    let ledger = crate::state::ledger::Ledger::new(&plan.state, &plan.job);
    if let Err(error) = ledger.record(storage, plan).await {
        tracing::warn!(
            run = %plan.run_id,
            "updating the ledger failed; the next incremental run repairs it: {}",
            crate::exit::error_chain(&error)
        );
    }
}

/// A finished local run.
pub struct LocalRun {
    pub report: RunReport,
    pub layout: RunLayout,
    pub exit: ExitCode,
}

/// `sluice run`: plan, write the run's state, run every shard as a local worker process,
/// publish.
pub async fn run_locally(
    storage: &Storage,
    loaded: &Loaded,
    options: LocalRunOptions,
) -> Result<LocalRun, LocalRunError> {
    let job = &loaded.job;
    let started = Utc::now();
    let run_id = options
        .run_id
        .clone()
        .unwrap_or_else(|| crate::plan::new_run_id(&job.name, started));
    let layout = RunLayout::new(&job.state, &job.name, &run_id);
    let plan = if options.resume {
        let plan = crate::state::plan::load_plan(storage, &layout).await?;
        tracing::info!(run = %run_id, shards = plan.shards.len(), "resuming");
        // The run's earlier process is gone: what it left open is nobody's.
        publish::abort_open_uploads(storage, &layout).await?;
        plan
    } else {
        let plan = start::make_plan(storage, job, &run_id, options.full).await?;
        // The rules against the planned output schema, before any worker starts.
        crate::validate::schema::check(
            job,
            &loaded.resolved_yaml,
            &format!("job {}", job.name),
            plan.arrow_schema()?,
        )
        .await?;
        if plan.objects == 0 {
            tracing::warn!(source = %job.source.uri, "the source matched no objects");
        }
        start::write_run(storage, &layout, &plan, &loaded.resolved_yaml).await?;
        tracing::info!(
            run = %run_id,
            objects = plan.objects,
            bytes = plan.bytes,
            shards = plan.shards.len(),
            "planned"
        );
        plan
    };
    // The very Job that `sluice render` prints, executed by the local pod runner.
    let target = Target::new(job, None, None, run_id.clone());
    let mut manifest = worker_job(
        job,
        &target,
        &WorkerPlan::all(layout.plan(), plan.shards.len() as u32),
    );
    if let (Some(parallelism), Some(spec)) = (options.parallelism, manifest.spec.as_mut()) {
        spec.parallelism = Some(parallelism.max(1) as i32);
    }
    let program = options.program;
    let runner = LocalPodRunner {
        sluice_image: target.image.clone(),
        program: program.clone(),
        local_commands: local_commands(job, &program),
        env: options.env,
        bar: options.bar,
        cpus: options.cpus,
        output: PodOutput::Prefixed,
    };
    let outcomes = runner
        .run(&manifest, Some((storage, &layout, plan.bytes)))
        .await?;
    let report = publish::publish(storage, &layout, &plan, &outcomes, started).await?;
    record_in_ledger(storage, &plan, &report).await;
    let exit = ExitCode::from_code(report.exit_code).unwrap_or(ExitCode::Transient);
    Ok(LocalRun {
        report,
        layout,
        exit,
    })
}
