//! One step of a pipeline run: prepared (its params rendered from the results upstream, its
//! target loaded with them), then carried out under the step's own run id. A job step whose
//! run was published already is not run again; one that was planned is resumed with its own
//! plan.

use std::collections::BTreeMap;

use crate::exit::{ExitCode, error_chain};
use crate::pipeline::executor::Executor;
use crate::spec::Loaded;
use crate::spec::pipeline::templates::StepResult;
use crate::spec::pipeline::{Pipeline, StepKind, step_run_id};
use crate::spec::task::TaskDefinition;
use crate::state::RunLayout;
use crate::state::pipeline::StepStatus;
use crate::state::report::RunReport;
use crate::storage::Storage;
use crate::task::Overrides;

/// What a step run needs besides the step.
#[derive(Clone)]
pub struct StepContext {
    pub executor: Executor,
    pub storage: Storage,
    /// On the embedded server: create a job step's sink and state buckets first (as
    /// `sluice run` does).
    pub create_buckets: bool,
}

/// A step ready to run.
pub struct PreparedStep {
    pub name: String,
    pub run_id: String,
    pub params: BTreeMap<String, String>,
    pub args: Option<Vec<String>>,
    target: Target,
}

enum Target {
    Job(Box<Loaded>),
    Task {
        def: Box<TaskDefinition>,
        overrides: Overrides,
    },
}

impl PreparedStep {
    /// A job step's run state directory.
    pub fn state(&self) -> Option<String> {
        match &self.target {
            Target::Job(loaded) => Some(self.layout(loaded).root().to_string()),
            Target::Task { .. } => None,
        }
    }

    fn layout(&self, loaded: &Loaded) -> RunLayout {
        RunLayout::new(&loaded.job.state, &loaded.job.name, &self.run_id)
    }
}

/// Renders step `index`'s params (and a task's args) from the results upstream and loads
/// its target with them; what goes wrong here is the step's configuration (exit code 2).
pub fn prepare(
    pipeline: &Pipeline,
    index: usize,
    pipeline_run: &str,
    results: &BTreeMap<String, StepResult>,
) -> Result<PreparedStep, String> {
    let step = &pipeline.steps[index];
    let params = pipeline.render_params(step, pipeline_run, results)?;
    let run_id = step_run_id(pipeline_run, &step.name);
    let (args, target) = match step.kind {
        StepKind::Job => {
            let loaded = step.load_job(&params).map_err(|e| e.to_string())?;
            (None, Target::Job(Box::new(loaded)))
        }
        StepKind::Task => {
            let args = pipeline.render_args(step, pipeline_run, results)?;
            let def = step.load_task().map_err(|e| e.to_string())?;
            let overrides = Overrides {
                command: args.clone(),
                env: params.clone(),
                run_id: Some(run_id.clone()),
                ..Default::default()
            };
            overrides
                .apply(&def)
                .map_err(|e| format!("{}: {}", step.source.origin, error_chain(&e)))?;
            let def = Box::new(def);
            (args, Target::Task { def, overrides })
        }
    };
    Ok(PreparedStep {
        name: step.name.clone(),
        run_id,
        params: params.into_iter().collect(),
        args,
        target,
    })
}

/// How a step ended.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// `Succeeded` or `Failed`.
    pub status: StepStatus,
    pub exit: i32,
    pub result: Option<StepResult>,
    /// Why the step failed without a run to show for it.
    pub error: Option<String>,
}

impl StepOutcome {
    pub fn failed(exit: ExitCode, error: String) -> StepOutcome {
        StepOutcome {
            status: StepStatus::Failed,
            exit: exit.code(),
            result: None,
            error: Some(error),
        }
    }

    fn ended(result: StepResult) -> StepOutcome {
        StepOutcome {
            status: if result.exit_code == 0 {
                StepStatus::Succeeded
            } else {
                StepStatus::Failed
            },
            exit: result.exit_code,
            result: Some(result),
            error: None,
        }
    }
}

/// Carries out a prepared step to its end.
pub async fn execute(ctx: &StepContext, step: &PreparedStep) -> StepOutcome {
    match &step.target {
        Target::Job(loaded) => match run_job(ctx, step, loaded).await {
            Ok(report) => {
                let layout = step.layout(loaded);
                StepOutcome::ended(StepResult {
                    run_id: step.run_id.clone(),
                    exit_code: report.exit_code,
                    output: Some(loaded.job.sink.uri.to_string()),
                    state: Some(layout.root().to_string()),
                    records_in: Some(report.records.input),
                    records_out: Some(report.records.output),
                    rejected: Some(report.records.rejected),
                    objects: Some(report.objects),
                    outputs: Some(report.outputs),
                    output_bytes: Some(report.output_bytes),
                })
            }
            Err((exit, error)) => StepOutcome::failed(exit, error),
        },
        Target::Task { def, overrides } => match ctx.executor.run_task(def, overrides).await {
            Ok(outcome) => StepOutcome::ended(StepResult {
                run_id: step.run_id.clone(),
                exit_code: outcome.exit_code,
                ..Default::default()
            }),
            Err(error) => StepOutcome::failed(error.exit_code(), error_chain(&error)),
        },
    }
}

/// A job step's run: its published report, or the run carried out (resumed when planned).
async fn run_job(
    ctx: &StepContext,
    step: &PreparedStep,
    loaded: &Loaded,
) -> Result<RunReport, (ExitCode, String)> {
    let job = &loaded.job;
    let layout = step.layout(loaded);
    if ctx.create_buckets {
        for bucket in [&job.sink.uri.bucket, &job.state.bucket] {
            ctx.storage
                .create_bucket(bucket)
                .await
                .map_err(|e| (e.exit_code(), error_chain(&e)))?;
        }
    }
    let state = |e: crate::state::StateError| (e.exit_code(), error_chain(&e));
    if crate::state::manifest::is_published(&ctx.storage, &layout)
        .await
        .map_err(state)?
        && let Some(report) = crate::state::report::read_report(&ctx.storage, &layout)
            .await
            .map_err(state)?
    {
        tracing::info!(step = %step.name, run = %step.run_id, "published already");
        return Ok(report);
    }
    let resume = crate::state::plan::is_planned(&ctx.storage, &layout)
        .await
        .map_err(state)?;
    if resume {
        tracing::info!(step = %step.name, run = %step.run_id, "resuming the step's run");
    }
    ctx.executor
        .run_job(&ctx.storage, loaded, &step.run_id, resume)
        .await
        .map_err(|e| (e.exit_code(), error_chain(&e)))
}
