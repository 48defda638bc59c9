//! One fire of a schedule: its params and run id, the target loaded with them, and the run
//! carried out locally (the local pod runner, as `sluice run` or `sluice task run`) or on a
//! cluster (the submit path, as `sluice submit`, or the task's Job, as `task run --kube`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::exit::ExitCode;
use crate::kubernetes::cluster::Cluster;
use crate::kubernetes::render::Target;
pub use crate::pipeline::Executor;
use crate::pipeline::{ExecuteError, PipelineError, PipelineOptions, run_pipeline};
use crate::spec::pipeline::{Pipeline, load_pipeline_file};
use crate::spec::schedule::cron::run_id;
use crate::spec::schedule::params::FireTimes;
use crate::spec::schedule::{Schedule, ScheduleTarget};
use crate::spec::task::TaskDefinition;
use crate::spec::{self, Loaded};
use crate::state::RunLayout;
use crate::state::history::{FireStatus, History};
use crate::state::pipeline::PipelineLayout;
use crate::storage::Storage;
use crate::storage::uri::S3Uri;
use crate::task::{Overrides, TaskError};

#[derive(Debug, thiserror::Error)]
pub enum FireError {
    #[error("{origin}: {message}")]
    Params { origin: String, message: String },
    #[error(transparent)]
    Target(#[from] spec::SpecErrors),
    #[error("{origin}: spec.target: {path}")]
    Task {
        origin: String,
        path: String,
        #[source]
        source: Box<TaskError>,
    },
    /// The fire's run could not be carried out (a run that ran and failed has an exit code).
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl FireError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            FireError::Execute(e) => e.exit_code(),
            FireError::Pipeline(e) => e.exit_code(),
            FireError::Params { .. } | FireError::Target(_) | FireError::Task { .. } => {
                ExitCode::Config
            }
        }
    }
}

/// What a fire runs: a job loaded with the rendered params, or a task definition with
/// this fire's overrides (the rendered `args` as its command, the params as environment).
#[derive(Debug, Clone)]
pub enum FireTarget {
    Job(Box<Loaded>),
    Task {
        def: Box<TaskDefinition>,
        overrides: Overrides,
    },
    /// A pipeline loaded with the rendered params as its own params.
    Pipeline(Box<Pipeline>),
}

/// A fire ready to run.
#[derive(Debug, Clone)]
pub struct PreparedFire {
    /// The schedule's name.
    pub schedule: String,
    pub time: DateTime<Utc>,
    pub interval: (DateTime<Utc>, DateTime<Utc>),
    pub params: BTreeMap<String, String>,
    pub run_id: String,
    /// The prefix the schedule's history lives under.
    pub state: S3Uri,
    pub target: FireTarget,
}

impl PreparedFire {
    /// The run's state of a job target (a task has no run state).
    pub fn layout(&self) -> Option<RunLayout> {
        match &self.target {
            FireTarget::Job(loaded) => Some(RunLayout::new(
                &loaded.job.state,
                &loaded.job.name,
                &self.run_id,
            )),
            FireTarget::Task { .. } | FireTarget::Pipeline(_) => None,
        }
    }

    /// The run's record of a pipeline target.
    pub fn pipeline_layout(&self) -> Option<PipelineLayout> {
        match &self.target {
            FireTarget::Pipeline(pipeline) => Some(PipelineLayout::new(
                &pipeline.state,
                &pipeline.name,
                &self.run_id,
            )),
            _ => None,
        }
    }

    /// The history of the fire's schedule.
    pub fn history(&self, storage: &Storage) -> History {
        History::new(storage.clone(), &self.state, &self.schedule)
    }
}

/// Renders the params (and args) of the fire at `time` and loads the target with them.
pub fn prepare(schedule: &Schedule, time: DateTime<Utc>) -> Result<PreparedFire, FireError> {
    let tz = schedule.time_zone;
    let interval = schedule.cron.interval_of(time, tz);
    let times = FireTimes {
        time,
        start: interval.0,
        end: interval.1,
        tz,
    };
    let bad = |message| FireError::Params {
        origin: schedule.origin.clone(),
        message,
    };
    let params = schedule
        .params
        .render(&schedule.name, &times)
        .map_err(bad)?;
    let args = match &schedule.args {
        Some(args) => Some(args.render(&schedule.name, &times).map_err(bad)?),
        None => None,
    };
    let (run_id, state, target) = match &schedule.target {
        ScheduleTarget::Job(path) => {
            let loaded = spec::load_file(path, &params)?;
            let state = schedule
                .state
                .clone()
                .unwrap_or_else(|| loaded.job.state.clone());
            (
                run_id(&loaded.job.name, time),
                state,
                FireTarget::Job(Box::new(loaded)),
            )
        }
        ScheduleTarget::TaskDefinition(path) => {
            let (def, mut overrides) = task_target(schedule, path, args, &params)?;
            let id = run_id(&def.family, time);
            overrides.run_id = Some(id.clone());
            let state = schedule
                .state
                .clone()
                .expect("a schedule of a task definition names its state");
            let def = Box::new(def);
            (id, state, FireTarget::Task { def, overrides })
        }
        ScheduleTarget::Pipeline(path) => {
            let pipeline = load_pipeline_file(path, &params)?;
            let state = schedule
                .state
                .clone()
                .unwrap_or_else(|| pipeline.state.clone());
            (
                run_id(&pipeline.name, time),
                state,
                FireTarget::Pipeline(Box::new(pipeline)),
            )
        }
    };
    Ok(PreparedFire {
        schedule: schedule.name.clone(),
        time,
        interval,
        run_id,
        params: params.into_iter().collect(),
        state,
        target,
    })
}

/// A task definition target and the overrides of one fire: `args` as the essential
/// container's command, params as its environment; checked to apply.
fn task_target(
    schedule: &Schedule,
    path: &Path,
    args: Option<Vec<String>>,
    params: &[(String, String)],
) -> Result<(TaskDefinition, Overrides), FireError> {
    let def = spec::load_task_file(path)?;
    let overrides = Overrides {
        command: args,
        env: params.to_vec(),
        ..Default::default()
    };
    overrides.apply(&def).map_err(task_error(schedule, path))?;
    Ok((def, overrides))
}

/// A task definition target's error, named by the schedule and the target's path.
fn task_error(schedule: &Schedule, path: &Path) -> impl FnOnce(TaskError) -> FireError {
    let (origin, path) = (schedule.origin.clone(), path.display().to_string());
    move |source| FireError::Task {
        origin,
        path,
        source: Box::new(source),
    }
}

/// Whether the run of this fire was started already (its history record, or for a job
/// its plan, exists): a second trigger of the same scheduled time is then a no-op.
pub async fn already_started(storage: &Storage, fire: &PreparedFire) -> anyhow::Result<bool> {
    Ok(
        fire.history(storage).get(&fire.run_id).await?.is_some()
            || resumable(storage, fire).await?,
    )
}

/// Whether the fire is a job's run that was planned already, so that running it again
/// resumes it with its own plan.
pub async fn resumable(storage: &Storage, fire: &PreparedFire) -> anyhow::Result<bool> {
    if let Some(layout) = fire.pipeline_layout() {
        return Ok(crate::state::pipeline::read_record(storage, &layout)
            .await?
            .is_some());
    }
    match fire.layout() {
        Some(layout) => Ok(crate::state::plan::is_planned(storage, &layout).await?),
        None => Ok(false),
    }
}

/// Whether the run of this fire finished its work: a job's run was published, a task's
/// run succeeded.
pub async fn published(storage: &Storage, fire: &PreparedFire) -> anyhow::Result<bool> {
    if let Some(layout) = fire.pipeline_layout() {
        return Ok(crate::state::pipeline::is_published(storage, &layout).await?);
    }
    match fire.layout() {
        Some(layout) => Ok(crate::state::manifest::is_published(storage, &layout).await?),
        None => Ok(fire
            .history(storage)
            .get(&fire.run_id)
            .await?
            .is_some_and(|r| r.status == FireStatus::Succeeded)),
    }
}

/// Runs the fire to its end and returns its exit code: the run's (sluice's exit codes) for
/// a job or a pipeline, the essential container's for a task. `resume` finishes a job's (or
/// a pipeline's) run that was started before instead of starting a new one; a task runs again.
pub async fn execute(
    executor: &Executor,
    storage: &Storage,
    fire: &PreparedFire,
    resume: bool,
) -> Result<i32, FireError> {
    match &fire.target {
        FireTarget::Job(loaded) => {
            let report = executor
                .run_job(storage, loaded, &fire.run_id, resume)
                .await?;
            Ok(report.exit_code)
        }
        FireTarget::Task { def, overrides } => {
            Ok(executor.run_task(def, overrides).await?.exit_code)
        }
        FireTarget::Pipeline(pipeline) => {
            let options = PipelineOptions {
                run_id: fire.run_id.clone(),
                resume,
                create_buckets: false,
            };
            let run = run_pipeline(executor, storage, pipeline, options).await?;
            Ok(run.exit.code())
        }
    }
}

/// Stops a run that the `Replace` policy replaces (its local processes stop when its task
/// is dropped; on a cluster its Jobs and pods are deleted).
pub async fn stop(executor: &Executor, fire: &PreparedFire) -> anyhow::Result<()> {
    if let Executor::Cluster {
        client, namespace, ..
    } = executor
    {
        let namespace = match &fire.target {
            FireTarget::Job(loaded) => {
                Target::new(&loaded.job, None, namespace.as_deref(), fire.run_id.clone()).namespace
            }
            FireTarget::Task { def, overrides } => namespace
                .clone()
                .unwrap_or_else(|| overrides.namespace(def)),
            FireTarget::Pipeline(pipeline) => {
                return stop_pipeline(client, namespace.as_deref(), pipeline, &fire.run_id).await;
            }
        };
        Cluster::new(client.clone(), &namespace)
            .delete_run(&fire.run_id)
            .await?;
    }
    Ok(())
}

/// Deletes the Jobs and pods of every step of a pipeline run, in the scheduler's namespace
/// (`--namespace`) or the default one.
async fn stop_pipeline(
    client: &kube::Client,
    namespace: Option<&str>,
    pipeline: &Pipeline,
    run_id: &str,
) -> anyhow::Result<()> {
    let namespace = namespace.unwrap_or(crate::kubernetes::render::DEFAULT_NAMESPACE);
    let cluster = Cluster::new(client.clone(), namespace);
    for step in &pipeline.steps {
        cluster
            .delete_run(&crate::spec::pipeline::step_run_id(run_id, &step.name))
            .await?;
    }
    Ok(())
}

/// On the embedded server, the buckets of the target's sink and state and of the
/// schedule's history are created (as `sluice run` does); on real S3 a missing bucket stays
/// a configuration error.
pub async fn create_embedded_buckets(storage: &Storage, schedule: &Schedule) -> anyhow::Result<()> {
    let now = Utc::now();
    let time = schedule
        .cron
        .latest_at_or_before(now, schedule.time_zone)
        .unwrap_or(now);
    let fire = prepare(schedule, time)?;
    let mut buckets = vec![fire.state.bucket.clone()];
    if let FireTarget::Job(loaded) = &fire.target {
        buckets.push(loaded.job.sink.uri.bucket.clone());
        buckets.push(loaded.job.state.bucket.clone());
    }
    if let FireTarget::Pipeline(pipeline) = &fire.target {
        buckets.push(pipeline.state.bucket.clone());
        buckets.extend(pipeline.buckets.iter().cloned());
    }
    buckets.sort();
    buckets.dedup();
    for bucket in buckets {
        storage.create_bucket(&bucket).await?;
    }
    Ok(())
}

/// Every schedule file (`*.yaml`, `*.yml` of kind Schedule) in a directory, by file name.
pub fn load_dir(dir: &std::path::Path) -> Result<Vec<Schedule>, spec::SpecErrors> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        spec::SpecErrors::unreadable(
            &dir.display().to_string(),
            format!("cannot read the schedules directory: {e}"),
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .filter(|p| crate::spec::schedule::is_schedule_file(p))
        .collect();
    paths.sort();
    let mut schedules = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match crate::spec::schedule::load_schedule_file(&path) {
            Ok(s) => schedules.push(s),
            Err(e) => errors.extend(e.errors),
        }
    }
    if errors.is_empty() {
        Ok(schedules)
    } else {
        Err(spec::SpecErrors { errors })
    }
}

/// `sluice render SCHEDULE`: the objects of a schedule as a native CronJob, as YAML: for a
/// job target its ConfigMap and a CronJob of the launcher, for a task definition a CronJob
/// of the task's Job. Params and args that are templates need a fire time, which a native
/// CronJob does not give: they are refused.
pub fn render_cron_job(
    schedule: &Schedule,
    image: Option<&str>,
    namespace: Option<&str>,
) -> Result<String, FireError> {
    let mut templated: Vec<String> = schedule
        .params
        .templated()
        .iter()
        .map(|p| format!("spec.params: {p}"))
        .collect();
    if schedule.args.as_ref().is_some_and(|a| a.templated()) {
        templated.push("spec.args".to_string());
    }
    if !templated.is_empty() {
        return Err(FireError::Params {
            origin: schedule.origin.clone(),
            message: format!(
                "{} use the schedule's time or interval, which a native CronJob cannot fill; run the schedule with `sluice scheduler` instead",
                templated.join(", ")
            ),
        });
    }
    let params: Vec<(String, String)> = schedule
        .params
        .sources()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let objects = match &schedule.target {
        ScheduleTarget::Job(path) => {
            let loaded = spec::load_file(path, &params)?;
            let (map, cron) = crate::kubernetes::cronjob::cron_job(
                schedule,
                &loaded.job,
                &loaded.resolved_yaml,
                image,
                namespace,
            );
            vec![
                serde_json::to_value(map).expect("objects serialize"),
                serde_json::to_value(cron).expect("objects serialize"),
            ]
        }
        ScheduleTarget::TaskDefinition(path) => {
            let args = schedule.args.as_ref().map(|a| a.sources().to_vec());
            let (def, mut overrides) = task_target(schedule, path, args, &params)?;
            overrides.namespace = namespace.map(str::to_string);
            let job = crate::task::render(&def, &overrides).map_err(task_error(schedule, path))?;
            let cron = crate::kubernetes::cronjob::task_cron_job(schedule, job);
            vec![serde_json::to_value(cron).expect("objects serialize")]
        }
        ScheduleTarget::Pipeline(path) => {
            let pipeline = load_pipeline_file(path, &params)?;
            let (map, cron) = crate::kubernetes::cronjob::pipeline_cron_job(
                schedule, &pipeline, image, namespace,
            );
            vec![
                serde_json::to_value(map).expect("objects serialize"),
                serde_json::to_value(cron).expect("objects serialize"),
            ]
        }
    };
    Ok(crate::kubernetes::render::to_yaml(&objects))
}
