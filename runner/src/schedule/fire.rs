//! One fire of a schedule: its params and run id, the target loaded with them, and the run
//! carried out locally (the local pod runner, as `sluice run` or `sluice task run`) or on a
//! cluster (the submit path, as `sluice submit`, or the task's Job, as `task run --kube`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::exit::ExitCode;
use crate::kubernetes::cluster::Cluster;
use crate::kubernetes::render::Target;
use crate::pod::PodOutput;
use crate::run::local::LocalRunError;
use crate::run::submit::{self, SubmitError};
use crate::run::{LocalRunOptions, run_locally};
use crate::spec::schedule::cron::run_id;
use crate::spec::schedule::params::FireTimes;
use crate::spec::schedule::{Schedule, ScheduleTarget};
use crate::spec::task::TaskDefinition;
use crate::spec::{self, Loaded};
use crate::state::RunLayout;
use crate::state::history::{FireStatus, History};
use crate::storage::Storage;
use crate::storage::uri::S3Uri;
use crate::task::{Overrides, TaskError, Where, run_task};

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
    Local(Box<LocalRunError>),
    #[error(transparent)]
    Submit(Box<SubmitError>),
    #[error(transparent)]
    TaskRun(#[from] TaskError),
}

impl FireError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            FireError::Local(e) => e.exit_code(),
            FireError::Submit(e) => e.exit_code(),
            FireError::TaskRun(e) => e.exit_code(),
            FireError::Params { .. } | FireError::Target(_) | FireError::Task { .. } => {
                ExitCode::Config
            }
        }
    }
}

impl From<LocalRunError> for FireError {
    fn from(error: LocalRunError) -> Self {
        FireError::Local(Box::new(error))
    }
}

impl From<SubmitError> for FireError {
    fn from(error: SubmitError) -> Self {
        FireError::Submit(Box::new(error))
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
            FireTarget::Task { .. } => None,
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

/// Where the runs of a scheduler go.
#[derive(Clone)]
pub enum Executor {
    /// On this machine, through the local pod runner.
    Local {
        /// The `sluice` executable the workers run.
        program: PathBuf,
        /// Environment of every worker (the S3 endpoint and credentials).
        env: Vec<(String, String)>,
    },
    /// On a cluster, through the submit path: ConfigMap, worker Job, watch, publish.
    Cluster {
        client: kube::Client,
        image: Option<String>,
        namespace: Option<String>,
        poll: Duration,
    },
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Executor::Local { program, .. } => write!(f, "Local({})", program.display()),
            Executor::Cluster { namespace, .. } => write!(f, "Cluster({namespace:?})"),
        }
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
    match fire.layout() {
        Some(layout) => Ok(crate::state::plan::is_planned(storage, &layout).await?),
        None => Ok(false),
    }
}

/// Whether the run of this fire finished its work: a job's run was published, a task's
/// run succeeded.
pub async fn published(storage: &Storage, fire: &PreparedFire) -> anyhow::Result<bool> {
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
/// a job, the essential container's for a task. `resume` finishes a job's run that was
/// started before (its own plan) instead of planning a new one; a task runs again.
pub async fn execute(
    executor: &Executor,
    storage: &Storage,
    fire: &PreparedFire,
    resume: bool,
) -> Result<i32, FireError> {
    match &fire.target {
        FireTarget::Job(loaded) => Ok(execute_job(executor, storage, fire, loaded, resume)
            .await?
            .code()),
        FireTarget::Task { def, overrides } => {
            let how = match executor {
                Executor::Local { program, env } => Where::Local {
                    program: program.clone(),
                    env: env.clone(),
                    output: PodOutput::Prefixed,
                },
                Executor::Cluster {
                    client,
                    namespace,
                    poll,
                    ..
                } => Where::Cluster {
                    cluster: Cluster::new(
                        client.clone(),
                        namespace.as_deref().unwrap_or(&overrides.namespace(def)),
                    ),
                    poll: *poll,
                },
            };
            Ok(run_task(def, overrides, how).await?.exit_code)
        }
    }
}

async fn execute_job(
    executor: &Executor,
    storage: &Storage,
    fire: &PreparedFire,
    loaded: &Loaded,
    resume: bool,
) -> Result<ExitCode, FireError> {
    match executor {
        Executor::Local { program, env } => {
            let options = LocalRunOptions {
                program: program.clone(),
                env: env.clone(),
                parallelism: None,
                run_id: Some(fire.run_id.clone()),
                bar: false,
                cpus: None,
                resume,
                full: false,
            };
            let run = run_locally(storage, loaded, options).await?;
            Ok(run.exit)
        }
        Executor::Cluster {
            client,
            image,
            namespace,
            poll,
        } => {
            let target = Target::new(
                &loaded.job,
                image.as_deref(),
                namespace.as_deref(),
                fire.run_id.clone(),
            );
            let cluster = Cluster::new(client.clone(), &target.namespace);
            let started = Utc::now();
            // Submitting is idempotent per run id: an existing plan and Job are picked up.
            submit::submit(storage, &cluster, loaded, &target, true).await?;
            let report = submit::watch_and_publish(
                storage,
                &cluster,
                &fire.run_id,
                None,
                started,
                *poll,
                false,
            )
            .await?;
            Ok(ExitCode::from_code(report.exit_code).unwrap_or(ExitCode::Transient))
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
        };
        Cluster::new(client.clone(), &namespace)
            .delete_run(&fire.run_id)
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
    };
    Ok(crate::kubernetes::render::to_yaml(&objects))
}
