//! Running a job on a cluster: submit (plan, ConfigMap, worker Job), watch the Job until it
//! finishes, publish the run; resume a run with a new Job over the unfinished shards only;
//! report a run's status. Every step is idempotent per run id, so a retried launcher (or a
//! second `submit --run-id`) picks the run up where it is.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job as KubeJob;

use crate::exit::ExitCode;
use crate::kubernetes::cluster::{Cluster, ClusterError, JobState, plan_of, state_of};
use crate::kubernetes::render::{
    Target, WORKER_CONTAINER, WorkerPlan, config_map, worker_job, worker_job_name,
};
use crate::plan::Plan;
use crate::pod::ShardOutcome;
use crate::pod::progress::ProgressView;
use crate::run::publish;
use crate::run::start::{self, StartError};
use crate::spec::{self, Loaded};
use crate::state::RunLayout;
use crate::state::StateError;
use crate::state::manifest::is_published;
use crate::state::plan::{load_job_text, load_plan, read_plan};
use crate::state::progress::{ShardProgress, read_progress};
use crate::state::report::RunReport;
use crate::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Publish(Box<publish::PublishError>),
    #[error("the run's job file is not valid: {uri}: {why}")]
    BadJob { uri: String, why: String },
    #[error("run {run_id} is still running (Job {job}); wait for it or `sluice cancel` it first")]
    StillRunning { run_id: String, job: String },
    #[error(
        "no worker Job of run {run_id} is left in namespace {namespace} to find its state by (cancelled, or removed after ttlSecondsAfterFinished); give --state s3://.../runs/<job>/{run_id}/ or --job FILE"
    )]
    NoState { run_id: String, namespace: String },
    /// The run's Jobs were deleted while it was watched: nothing is wrong with the job or its
    /// data, and resuming finishes it, so the code is 1.
    #[error(
        "run {run_id} was cancelled: its Jobs were deleted; its state stays at {state}, and `sluice resume {run_id} --state {state}` finishes it"
    )]
    Cancelled { run_id: String, state: String },
}

impl SubmitError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SubmitError::Cluster(e) => e.exit_code(),
            SubmitError::Storage(e) => e.exit_code(),
            SubmitError::Start(e) => e.exit_code(),
            SubmitError::State(e) => e.exit_code(),
            SubmitError::Publish(e) => e.exit_code(),
            SubmitError::BadJob { .. }
            | SubmitError::StillRunning { .. }
            | SubmitError::NoState { .. } => ExitCode::Config,
            SubmitError::Cancelled { .. } => ExitCode::Transient,
        }
    }
}

impl From<publish::PublishError> for SubmitError {
    fn from(error: publish::PublishError) -> Self {
        SubmitError::Publish(Box::new(error))
    }
}

/// A submitted run.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub run_id: String,
    pub layout: RunLayout,
    pub plan: Plan,
    pub job: String,
}

/// Plans the run (or reuses the plan already written for this run id), creates the
/// ConfigMap (unless the launcher runs from it already) and the worker Job.
pub async fn submit(
    storage: &Storage,
    cluster: &Cluster,
    loaded: &Loaded,
    target: &Target,
    create_config_map: bool,
) -> Result<Submitted, SubmitError> {
    let job = &loaded.job;
    let layout = RunLayout::new(&job.state, &job.name, &target.run_id);
    let plan = match read_plan(storage, &layout).await? {
        Some(plan) => {
            tracing::info!(run = %target.run_id, "the run is planned already; reusing its plan");
            plan
        }
        None => {
            let plan = start::make_plan(storage, job, &target.run_id, false).await?;
            start::write_run(storage, &layout, &plan, &loaded.resolved_yaml).await?;
            plan
        }
    };
    if create_config_map {
        cluster
            .config_map(&config_map(job, &loaded.resolved_yaml, target))
            .await?;
    }
    let work = WorkerPlan::all(layout.plan(), plan.shards.len() as u32);
    let created = cluster.create_once(&worker_job(job, target, &work)).await?;
    // The run's ConfigMap goes with its worker Job (TTL, cancel).
    cluster.own_config_map(&target.run_id, &created).await?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(
        run = %target.run_id,
        job = %name,
        namespace = %cluster.namespace,
        shards = plan.shards.len(),
        objects = plan.objects,
        bytes = plan.bytes,
        "submitted"
    );
    Ok(Submitted {
        run_id: target.run_id.clone(),
        layout,
        plan,
        job: name,
    })
}

/// The status of a run on the cluster: its worker Jobs (none when they were cancelled or
/// cleaned up) and what the bucket says: the shards' progress and whether it published.
#[derive(Debug, Clone)]
pub struct ClusterRunStatus {
    pub run_id: String,
    pub layout: RunLayout,
    pub plan: Plan,
    pub jobs: Vec<JobState>,
    pub progress: Vec<Option<ShardProgress>>,
    pub published: bool,
}

impl ClusterRunStatus {
    /// Shards completed by any of the run's Jobs; and a shard that no Job left in the
    /// cluster ran (its Jobs were cancelled or cleaned up) when its worker finished with every
    /// object done, as its last progress says. Where a Job tells, the Job decides.
    pub fn completed(&self) -> BTreeSet<u32> {
        let by_jobs = self.jobs.iter().flat_map(|j| j.completed.clone());
        let by_progress = self
            .plan
            .shards
            .iter()
            .zip(&self.progress)
            .filter(|(shard, _)| !self.jobs.iter().any(|j| j.shards.contains(&shard.index)))
            .filter(|(_, p)| {
                p.as_ref()
                    .is_some_and(|p| p.finished && p.failures.is_empty())
            })
            .map(|(shard, _)| shard.index);
        by_jobs.chain(by_progress).collect()
    }

    /// Shards failed for good in the latest Job that ran them and not completed since.
    pub fn failed(&self) -> BTreeSet<u32> {
        let completed = self.completed();
        self.jobs
            .iter()
            .flat_map(|j| j.failed.clone())
            .filter(|s| !completed.contains(s))
            .collect()
    }

    /// The latest Job, which decides whether the run is still going.
    pub fn latest(&self) -> Option<&JobState> {
        self.jobs.last()
    }

    pub fn bytes_done(&self) -> u64 {
        self.progress.iter().flatten().map(|p| p.bytes_done).sum()
    }

    /// Source bytes per second summed over the shards that are running.
    pub fn rate(&self) -> f64 {
        let completed = self.completed();
        self.progress
            .iter()
            .enumerate()
            .filter(|(i, _)| !completed.contains(&(*i as u32)))
            .filter_map(|(_, p)| p.as_ref().map(|p| p.rate))
            .sum()
    }

    /// Seconds left at the current rate, if it can be told.
    pub fn eta_seconds(&self) -> Option<f64> {
        let rate = self.rate();
        (rate > 0.0).then(|| self.plan.bytes.saturating_sub(self.bytes_done()) as f64 / rate)
    }
}

/// Where a run's state is: named by the user (`--state`, `--job`), else found through the
/// plan annotation of one of its worker Jobs.
pub async fn locate(
    cluster: &Cluster,
    run_id: &str,
    known: Option<&RunLayout>,
) -> Result<RunLayout, SubmitError> {
    match known {
        Some(layout) => Ok(layout.clone()),
        None => layout_of(cluster, run_id, &cluster.worker_jobs(run_id).await?),
    }
}

/// The run's state named by the plan annotation of the first of its worker Jobs; with no
/// Job left, an error that says how to name it.
fn layout_of(cluster: &Cluster, run_id: &str, jobs: &[KubeJob]) -> Result<RunLayout, SubmitError> {
    let Some(job) = jobs.first() else {
        return Err(no_state(cluster, run_id));
    };
    Ok(RunLayout::from_plan_uri(&plan_of(job)?))
}

fn no_state(cluster: &Cluster, run_id: &str) -> SubmitError {
    SubmitError::NoState {
        run_id: run_id.to_string(),
        namespace: cluster.namespace.clone(),
    }
}

/// Reads a run's status from the cluster and the bucket. A run whose Jobs are gone is
/// found by `known` and reported from the bucket alone.
pub async fn status(
    storage: &Storage,
    cluster: &Cluster,
    run_id: &str,
    known: Option<&RunLayout>,
) -> Result<ClusterRunStatus, SubmitError> {
    let jobs = cluster.worker_jobs(run_id).await?;
    let layout = match known {
        Some(layout) => layout.clone(),
        None => layout_of(cluster, run_id, &jobs)?,
    };
    let plan = load_plan(storage, &layout).await?;
    let states = jobs.iter().map(state_of).collect::<Result<Vec<_>, _>>()?;
    let mut progress = Vec::with_capacity(plan.shards.len());
    for shard in &plan.shards {
        progress.push(read_progress(storage, &layout, shard.index).await?);
    }
    let published = is_published(storage, &layout).await?;
    Ok(ClusterRunStatus {
        run_id: run_id.to_string(),
        layout,
        plan,
        jobs: states,
        progress,
        published,
    })
}

/// Polls the run until its latest worker Job finishes, logging progress, then publishes.
/// A run whose Jobs disappear meanwhile was cancelled: that is an error that says so. A run
/// with no Jobs left whose shards all completed (per the bucket) is published at once.
pub async fn watch_and_publish(
    storage: &Storage,
    cluster: &Cluster,
    run_id: &str,
    known: Option<&RunLayout>,
    started: DateTime<Utc>,
    poll: Duration,
    terminal: bool,
) -> Result<RunReport, SubmitError> {
    let layout = locate(cluster, run_id, known).await?;
    let mut view: Option<ProgressView> = None;
    let mut last_line = String::new();
    let mut seen_jobs = false;
    let status = loop {
        let status = status(storage, cluster, run_id, Some(&layout)).await?;
        let Some(latest) = status.latest().cloned() else {
            if !seen_jobs && status.completed().len() == status.plan.shards.len() {
                break status;
            }
            return Err(SubmitError::Cancelled {
                run_id: run_id.to_string(),
                state: layout.root().to_string(),
            });
        };
        seen_jobs = true;
        let line = format!(
            "{}/{} shards done, {} failed, {} running; {} of {} bytes",
            status.completed().len(),
            status.plan.shards.len(),
            status.failed().len(),
            latest.active,
            status.bytes_done(),
            status.plan.bytes
        );
        let view = view.get_or_insert_with(|| {
            ProgressView::new(terminal, status.plan.shards.len(), status.plan.bytes)
        });
        view.show(&status.progress);
        if line != last_line {
            match view.bars() {
                Some(bars) => bars.total().println(format!("{}: {line}", latest.name)),
                None => tracing::info!(
                    run = run_id,
                    job = %latest.name,
                    eta_seconds = status.eta_seconds().map(|s| s.round() as u64),
                    "{line}"
                ),
            }
            last_line = line;
        }
        if latest.finished() {
            if let Some(bars) = view.bars() {
                bars.finish();
            }
            break status;
        }
        tokio::time::sleep(poll).await;
    };
    let outcomes = outcomes(cluster, &status).await?;
    let report =
        publish::publish(storage, &status.layout, &status.plan, &outcomes, started).await?;
    crate::run::local::record_in_ledger(storage, &status.plan, &report).await;
    Ok(report)
}

/// Every shard's outcome across the run's Jobs; a failed shard's exit code is read from
/// its last pod.
async fn outcomes(
    cluster: &Cluster,
    status: &ClusterRunStatus,
) -> Result<Vec<ShardOutcome>, SubmitError> {
    let completed = status.completed();
    let mut outcomes = Vec::new();
    for shard in &status.plan.shards {
        let attempts = pods_of_shard(cluster, status, shard.index).await?;
        if completed.contains(&shard.index) {
            outcomes.push(ShardOutcome {
                index: shard.index,
                exit: ExitCode::Done,
                code: Some(0),
                attempts,
                last_lines: Vec::new(),
            });
            continue;
        }
        // The latest Job that ran this shard tells why it did not complete.
        let job = status
            .jobs
            .iter()
            .rev()
            .find(|j| j.shards.contains(&shard.index));
        let (exit, last_lines) = match job {
            Some(job) => last_exit(cluster, job, shard.index).await?,
            None => (ExitCode::Transient, vec!["never scheduled".into()]),
        };
        outcomes.push(ShardOutcome {
            index: shard.index,
            exit,
            code: Some(exit.code()),
            attempts,
            last_lines,
        });
    }
    Ok(outcomes)
}

/// The pods that ran `shard`, over every Job of the run (a retried or disrupted pod counts).
async fn pods_of_shard(
    cluster: &Cluster,
    status: &ClusterRunStatus,
    shard: u32,
) -> Result<u32, SubmitError> {
    let mut pods = 0;
    for job in status.jobs.iter().filter(|j| j.shards.contains(&shard)) {
        let index = job.shards.iter().position(|s| *s == shard).unwrap_or(0) as u32;
        pods += cluster.worker_pods_of_job(&job.name, index).await?.len() as u32;
    }
    Ok(pods)
}

/// The exit code of the worker container in the last pod of `shard` in `job`.
async fn last_exit(
    cluster: &Cluster,
    job: &JobState,
    shard: u32,
) -> Result<(ExitCode, Vec<String>), SubmitError> {
    let index = job.shards.iter().position(|s| *s == shard).unwrap_or(0) as u32;
    let pods = cluster.worker_pods_of_job(&job.name, index).await?;
    let terminated = pods.iter().rev().find_map(|pod| {
        let name = pod.metadata.name.clone().unwrap_or_default();
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find(|c| c.name == WORKER_CONTAINER)?
            .state
            .as_ref()?
            .terminated
            .as_ref()
            .map(|t| (name, t.exit_code, t.reason.clone(), t.message.clone()))
    });
    let reason = job.reason.clone().unwrap_or_default();
    Ok(match terminated {
        Some((pod, code, why, message)) => (
            ExitCode::from_code(code).unwrap_or(ExitCode::Transient),
            [
                Some(format!("pod {pod} exited with {code}")),
                why,
                message,
                (!reason.is_empty()).then_some(format!("Job {}: {reason}", job.name)),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        None => (
            ExitCode::Transient,
            vec![format!(
                "Job {} ended without completing index {index}{}",
                job.name,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            )],
        ),
    })
}

/// Starts a new worker Job over the shards of a run that did not complete (failed, never
/// run, or stopped by a cancel), rendered from the run's own resolved job file. Workers
/// skip objects whose done marker matches, so even a shard that half ran redoes only what
/// is missing. A run whose Jobs are gone is found by `known`; its image is the one given,
/// else the job file's.
pub async fn resume(
    storage: &Storage,
    cluster: &Cluster,
    run_id: &str,
    known: Option<&RunLayout>,
    image: Option<&str>,
) -> Result<Option<Submitted>, SubmitError> {
    let status = status(storage, cluster, run_id, known).await?;
    if let Some(latest) = status.latest()
        && !latest.finished()
    {
        return Err(SubmitError::StillRunning {
            run_id: run_id.into(),
            job: latest.name.clone(),
        });
    }
    // No Job of the run is running: the uploads its pods recorded and left open are
    // nobody's.
    publish::abort_open_uploads(storage, &status.layout).await?;
    let completed = status.completed();
    let todo: Vec<u32> = status
        .plan
        .shards
        .iter()
        .map(|s| s.index)
        .filter(|s| !completed.contains(s))
        .collect();
    if todo.is_empty() {
        tracing::info!(run = run_id, "every shard is complete; nothing to resume");
        return Ok(None);
    }
    let job_uri = status.layout.job();
    let text = load_job_text(storage, &status.layout).await?;
    let loaded =
        spec::load_str(&text, &job_uri.to_string(), &[]).map_err(|e| SubmitError::BadJob {
            uri: job_uri.to_string(),
            why: e.to_string(),
        })?;
    let first = cluster.worker_jobs(run_id).await?.into_iter().next();
    let target = Target {
        image: image
            .map(str::to_string)
            .or_else(|| first.as_ref().and_then(image_of))
            .unwrap_or_else(|| Target::new(&loaded.job, None, None, String::new()).image),
        namespace: cluster.namespace.clone(),
        run_id: run_id.to_string(),
    };
    // The next free `resume-N`: a cancelled Job of that name may still be terminating.
    let mut n = status.jobs.len().max(1);
    while cluster
        .job(&worker_job_name(run_id, Some(&format!("resume-{n}"))))
        .await?
        .is_some()
    {
        n += 1;
    }
    let attempt = format!("resume-{n}");
    let work = WorkerPlan {
        plan: status.layout.plan(),
        shards: todo,
        attempt: Some(attempt.clone()),
    };
    let created = cluster
        .create_once(&worker_job(&loaded.job, &target, &work))
        .await?;
    let name = created
        .metadata
        .name
        .unwrap_or_else(|| worker_job_name(run_id, Some(&attempt)));
    tracing::info!(run = run_id, job = %name, shards = ?work.shards, "resumed");
    Ok(Some(Submitted {
        run_id: run_id.to_string(),
        layout: status.layout,
        plan: status.plan,
        job: name,
    }))
}

fn image_of(job: &KubeJob) -> Option<String> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == WORKER_CONTAINER)?
        .image
        .clone()
}
