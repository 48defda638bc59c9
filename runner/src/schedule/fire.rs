//! One fire of a schedule: its params and run id, the target loaded with them, and the run
//! carried out locally (the local pod runner, as `sluice run`) or on a cluster (the submit
//! path, as `sluice submit`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Classify, ErrorKind, ExitCode};
use crate::exec::cluster::Cluster;
use crate::exec::render::Target;
use crate::exec::{LocalRunOptions, run_locally, submit};
use crate::schedule::cron::run_id;
use crate::schedule::params::FireTimes;
use crate::spec::schedule::{Schedule, ScheduleTarget};
use crate::spec::{self, Loaded};
use crate::state::RunLayout;
use crate::storage::Storage;

#[derive(Debug, thiserror::Error)]
pub enum FireError {
    #[error("{origin}: {message}")]
    Params { origin: String, message: String },
    #[error(transparent)]
    Target(#[from] spec::SpecErrors),
    #[error(
        "{origin}: spec.target: {path} is a TaskDefinition; scheduling task definitions is not supported yet"
    )]
    TaskDefinitionUnsupported { origin: String, path: String },
}

impl Classify for FireError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
    fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

/// A fire ready to run: the target loaded with the rendered params.
#[derive(Debug, Clone)]
pub struct PreparedFire {
    pub time: DateTime<Utc>,
    pub interval: (DateTime<Utc>, DateTime<Utc>),
    pub params: BTreeMap<String, String>,
    pub run_id: String,
    pub loaded: Loaded,
}

impl PreparedFire {
    pub fn layout(&self) -> RunLayout {
        let job = &self.loaded.job;
        RunLayout::new(&job.state, &job.name, &self.run_id)
    }
}

/// Renders the params of the fire at `time` and loads the target with them.
pub fn prepare(schedule: &Schedule, time: DateTime<Utc>) -> Result<PreparedFire, FireError> {
    let tz = schedule.time_zone;
    let interval = schedule.cron.interval_of(time, tz);
    let times = FireTimes {
        time,
        start: interval.0,
        end: interval.1,
        tz,
    };
    let params = schedule
        .params
        .render(&schedule.name, &times)
        .map_err(|message| FireError::Params {
            origin: schedule.origin.clone(),
            message,
        })?;
    let loaded = match &schedule.target {
        ScheduleTarget::Job(path) => spec::load_file(path, &params)?,
        ScheduleTarget::TaskDefinition(path) => {
            return Err(fire_task_definition(schedule, path));
        }
    };
    Ok(PreparedFire {
        time,
        interval,
        run_id: run_id(&loaded.job.name, time),
        params: params.into_iter().collect(),
        loaded,
    })
}

/// Task definitions get their runner in `sluice task run`; until a schedule can call it,
/// such a target is a configuration error.
fn fire_task_definition(schedule: &Schedule, path: &std::path::Path) -> FireError {
    FireError::TaskDefinitionUnsupported {
        origin: schedule.origin.clone(),
        path: path.display().to_string(),
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

/// Whether the run of this fire was started already (its plan exists): a second trigger of
/// the same scheduled time is then a no-op.
pub async fn already_started(storage: &Storage, fire: &PreparedFire) -> anyhow::Result<bool> {
    Ok(storage.head(&fire.layout().plan()).await?.is_some())
}

/// Whether the run of this fire was published.
pub async fn published(storage: &Storage, fire: &PreparedFire) -> anyhow::Result<bool> {
    Ok(storage.head(&fire.layout().success()).await?.is_some())
}

/// Runs the fire to its end and returns the run's exit code. `resume` finishes a run that
/// was started before (its own plan) instead of planning a new one.
pub async fn execute(
    executor: &Executor,
    storage: &Storage,
    fire: &PreparedFire,
    resume: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = &fire.loaded;
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
            let report =
                submit::watch_and_publish(storage, &cluster, &fire.run_id, started, *poll).await?;
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
        let target = Target::new(
            &fire.loaded.job,
            None,
            namespace.as_deref(),
            fire.run_id.clone(),
        );
        Cluster::new(client.clone(), &target.namespace)
            .delete_run(&fire.run_id)
            .await?;
    }
    Ok(())
}

/// On the embedded server, the target's sink and state buckets are created (as `sluice run`
/// does); on real S3 a missing bucket stays a configuration error.
pub async fn create_embedded_buckets(storage: &Storage, schedule: &Schedule) -> anyhow::Result<()> {
    let now = Utc::now();
    let time = schedule
        .cron
        .latest_at_or_before(now, schedule.time_zone)
        .unwrap_or(now);
    let fire = prepare(schedule, time)?;
    storage
        .create_bucket(&fire.loaded.job.sink.uri.bucket)
        .await?;
    storage.create_bucket(&fire.loaded.job.state.bucket).await?;
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

/// `sluice render SCHEDULE`: the ConfigMap and CronJob of a schedule as YAML. Params that
/// are templates need a fire time, which a native CronJob does not give: they are refused.
pub fn render_cron_job(
    schedule: &Schedule,
    image: Option<&str>,
    namespace: Option<&str>,
) -> Result<String, FireError> {
    let templated = schedule.params.templated();
    if !templated.is_empty() {
        return Err(FireError::Params {
            origin: schedule.origin.clone(),
            message: format!(
                "spec.params: {} use the schedule's time or interval, which a native CronJob cannot fill; run the schedule with `sluice scheduler` instead",
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
    let loaded = match &schedule.target {
        ScheduleTarget::Job(path) => spec::load_file(path, &params)?,
        ScheduleTarget::TaskDefinition(path) => return Err(fire_task_definition(schedule, path)),
    };
    let (map, cron) = crate::exec::cronjob::cron_job(
        schedule,
        &loaded.job,
        &loaded.resolved_yaml,
        image,
        namespace,
    );
    let objects = [
        serde_json::to_value(map).expect("objects serialize"),
        serde_json::to_value(cron).expect("objects serialize"),
    ];
    Ok(crate::exec::render::to_yaml(&objects))
}
