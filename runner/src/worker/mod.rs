//! One shard: load the plan, then for each object skip it if done, else get, decode,
//! transform, validate, encode, upload, commit (a done marker). Progress is written as it goes.

pub mod clock;
pub mod cut;
pub mod decode;
pub mod error;
pub mod inline;
pub mod leftovers;
pub mod object;
pub mod output;
pub mod raw;
pub mod read_back;
pub mod rejects;
pub mod staged;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;

use crate::exit::{ExitCode, error_chain};
use crate::plan::PlannedObject;
use crate::spec;
use crate::state::checks::RuleOutcome;
use crate::state::marker::{DoneMarker, read_marker, write_marker};
use crate::state::plan::{load_job_text, load_plan};
use crate::state::progress::{ObjectFailure, ShardProgress, read_progress, write_progress};
use crate::state::uploads::{CleanUpError, ShardUploads, abort_recorded};
use crate::state::{RunLayout, StateError};
use crate::storage::Storage;
use crate::storage::uri::S3Uri;
use crate::worker::object::{ObjectContext, ObjectError};

/// How often progress.json is rewritten while a shard runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the run's job file is not valid")]
    BadJob(#[source] spec::SpecErrors),
    #[error("shard {index} is not in the plan ({shards} shards)")]
    NoSuchShard { index: u32, shards: usize },
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error("aborting the uploads an earlier attempt left open under {uri}")]
    CleanUploads {
        uri: S3Uri,
        #[source]
        source: crate::storage::StorageError,
    },
    #[error("aborting the uploads an earlier attempt of the shard recorded")]
    CleanRecorded(#[source] CleanUpError),
}

impl WorkerError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            WorkerError::State(e) => e.exit_code(),
            WorkerError::CleanUploads { source, .. } => source.exit_code(),
            WorkerError::CleanRecorded(e) => e.exit_code(),
            WorkerError::BadJob(_) | WorkerError::NoSuchShard { .. } | WorkerError::Plan(_) => {
                ExitCode::Config
            }
        }
    }
}

/// Tuning of one worker process.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Source objects processed at the same time.
    pub objects_in_flight: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            objects_in_flight: 2,
        }
    }
}

/// Runs shard `index` of the plan at `plan_uri` and returns the worker exit code. Returns
/// only once every upload the shard started is completed or aborted, background aborts of
/// dropped uploads included.
pub async fn run_shard(
    storage: Storage,
    plan_uri: &S3Uri,
    index: u32,
    options: WorkerOptions,
) -> Result<ExitCode, WorkerError> {
    let result = shard(storage.clone(), plan_uri, index, options).await;
    storage.wait_for_aborts().await;
    result
}

async fn shard(
    storage: Storage,
    plan_uri: &S3Uri,
    index: u32,
    options: WorkerOptions,
) -> Result<ExitCode, WorkerError> {
    let layout = RunLayout::from_plan_uri(plan_uri);
    let plan = load_plan(&storage, &layout).await?;
    let job_text = load_job_text(&storage, &layout).await?;
    let fingerprint = spec::fingerprint(&job_text);
    let job = spec::load_str(&job_text, &layout.job().to_string(), &[])
        .map_err(WorkerError::BadJob)?
        .job;
    let shard = plan.shard(index).ok_or(WorkerError::NoSuchShard {
        index,
        shards: plan.shards.len(),
    })?;
    let schema = match &job.source.schema {
        Some(schema) => Some(schema.clone()),
        None => plan.arrow_schema()?,
    };
    tracing::info!(
        job = %job.name,
        run = %plan.run_id,
        shard = index,
        objects = shard.objects.len(),
        bytes = shard.bytes,
        "shard starting"
    );

    // Transformers beside the worker must answer /health before the first object.
    if let Err(error) = crate::transform::container::wait_for_transformers(&job).await {
        tracing::error!(shard = index, "{error}");
        return Ok(ExitCode::Transient);
    }
    // A killed earlier attempt of this shard may have left uploads open: those it recorded
    // (sink and state alike), and one it was killed before recording, found by its key.
    // Only one pod works on an index at a time and runs of a job do not overlap, so none
    // of them is live.
    let recorded = abort_recorded(&storage, &layout, Some(index))
        .await
        .map_err(WorkerError::CleanRecorded)?;
    let swept = leftovers::abort_leftover_uploads(&storage, &job, &shard.objects)
        .await
        .map_err(|source| WorkerError::CleanUploads {
            uri: job.sink.uri.clone(),
            source,
        })?;
    if recorded + swept > 0 {
        tracing::info!(shard = index, recorded, swept, "aborted uploads left open");
    }
    // Every upload of the shard is recorded in the run's state while it is open.
    let journal = ShardUploads::new(storage.clone(), layout.clone(), index);
    let ctx = ObjectContext {
        storage: storage.clone().with_upload_journal(Arc::new(journal)),
        job: Arc::new(job),
        schema,
        fingerprint,
        keys: Some(layout.keys()),
    };
    // An earlier attempt of this shard left its progress: its span goes on in this one's.
    let earlier = read_progress(&storage, &layout, index)
        .await
        .ok()
        .flatten()
        .map(|p| p.attempts_so_far())
        .unwrap_or_default();
    let progress = Arc::new(Mutex::new(ShardProgress {
        shard: index,
        objects_total: shard.objects.len() as u64,
        bytes_total: shard.bytes,
        started: Some(Utc::now()),
        earlier,
        ..ShardProgress::default()
    }));
    let started = Instant::now();
    let reporter =
        spawn_progress_writer(storage.clone(), layout.clone(), progress.clone(), started);

    let results: Vec<(PlannedObject, ObjectOutcome)> =
        futures::stream::iter(shard.objects.iter().cloned())
            .map(|object| {
                let ctx = &ctx;
                let layout = &layout;
                let progress = progress.clone();
                async move {
                    let outcome = one_object(ctx, layout, &object, &progress).await;
                    (object, outcome)
                }
            })
            .buffer_unordered(options.objects_in_flight.max(1))
            .collect()
            .await;
    reporter.abort();

    let mut code = ExitCode::Done;
    for (object, outcome) in &results {
        if let Err((exit, error, _)) = outcome {
            tracing::error!(key = %object.key, exit = exit.code(), "{error}");
            code = code.worse(*exit);
        }
    }
    let final_progress = {
        let mut p = progress.lock().expect("not poisoned");
        p.finished = true;
        p.updated = Some(Utc::now());
        p.rate = rate(p.bytes_done, started);
        p.peak_rss_bytes = peak_rss_bytes();
        p.clone()
    };
    write_progress(&storage, &layout, &final_progress).await?;
    tracing::info!(
        shard = index,
        objects = final_progress.objects_done,
        skipped = final_progress.objects_skipped,
        failed = final_progress.failures.len(),
        records_in = final_progress.records.input,
        records_out = final_progress.records.output,
        exit = code.code(),
        "shard finished"
    );
    Ok(code)
}

/// How one object ended: its marker, or the exit code and the error.
type ObjectOutcome = Result<DoneMarker, (ExitCode, String, Vec<RuleOutcome>)>;

async fn one_object(
    ctx: &ObjectContext,
    layout: &RunLayout,
    object: &PlannedObject,
    progress: &Mutex<ShardProgress>,
) -> ObjectOutcome {
    let task_key = object.task_key();
    // Resume: an object whose marker matches its ETag and the job's fingerprint is done.
    if let Ok(Some(marker)) = read_marker(&ctx.storage, layout, &task_key).await
        && marker.etag == object.etag
        && marker.fingerprint == ctx.fingerprint
    {
        let mut p = progress.lock().expect("not poisoned");
        p.objects_skipped += 1;
        p.objects_done += 1;
        p.bytes_done += object.size;
        p.records.add(&marker.records);
        return Ok(marker);
    }
    let mut committing = None;
    let result = match process_with_retries(ctx, object).await {
        Ok(marker) => {
            let started = Instant::now();
            let written = write_marker(&ctx.storage, layout, &task_key, &marker).await;
            committing = Some(started.elapsed().as_secs_f64());
            match written {
                Ok(()) => Ok(marker),
                Err(e) => Err((e.exit_code(), error_chain(&e), Vec::new())),
            }
        }
        Err(e) => {
            let checks = match &e {
                ObjectError::Validation { outcomes, .. } => outcomes.clone(),
                _ => Vec::new(),
            };
            Err((e.exit_code(), error_chain(&e), checks))
        }
    };
    let mut p = progress.lock().expect("not poisoned");
    p.phases.commit += committing.unwrap_or_default();
    match &result {
        Ok(marker) => {
            p.objects_done += 1;
            p.bytes_done += object.size;
            p.records.add(&marker.records);
            p.phases.add(&marker.phases);
        }
        Err((exit, error, checks)) => p.failures.push(ObjectFailure {
            key: task_key,
            exit_code: exit.code(),
            error: error.clone(),
            checks: checks.clone(),
        }),
    }
    result
}

/// Processes an object, retrying it after a transient transformer failure as often as the
/// failing step's `retries` allow, once the transformer answers /health again (a restarted
/// sidecar is waited on, not treated as a failure).
async fn process_with_retries(
    ctx: &ObjectContext,
    object: &PlannedObject,
) -> Result<DoneMarker, object::ObjectError> {
    let mut attempt = 0u32;
    loop {
        let error = match object::process(ctx, object).await {
            Ok(marker) => return Ok(marker),
            Err(error) => error,
        };
        let object::ObjectError::Transformer(failure) = &error else {
            return Err(error);
        };
        let step = ctx.job.steps.iter().find(|s| s.name == failure.step);
        let Some(crate::spec::job::StepKind::Container(container)) = step.map(|s| &s.kind) else {
            return Err(error);
        };
        if !failure.transient() || attempt >= container.retries {
            return Err(error);
        }
        attempt += 1;
        let backoff = Duration::from_millis(250 * 2u64.pow(attempt.min(5)));
        tracing::warn!(
            key = %object.key,
            step = %failure.step,
            attempt,
            "{error}; retrying in {backoff:?}"
        );
        tokio::time::sleep(backoff).await;
        if let Err(e) = crate::transform::container::transport::wait_ready(
            container.listen_port(),
            container.init_timeout,
        )
        .await
        {
            return Err(crate::transform::container::ContainerError::new(
                &failure.step,
                &object.key,
                e,
            )
            .into());
        }
    }
}

fn rate(bytes: u64, started: Instant) -> f64 {
    bytes as f64 / started.elapsed().as_secs_f64().max(1e-3)
}

fn spawn_progress_writer(
    storage: Storage,
    layout: RunLayout,
    progress: Arc<Mutex<ShardProgress>>,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let snapshot = {
                let mut p = progress.lock().expect("not poisoned");
                p.updated = Some(Utc::now());
                p.rate = rate(p.bytes_done, started);
                p.peak_rss_bytes = peak_rss_bytes();
                p.clone()
            };
            if let Err(error) = write_progress(&storage, &layout, &snapshot).await {
                tracing::warn!(error = %error_chain(&error), "writing progress failed");
            }
            tokio::time::sleep(PROGRESS_EVERY).await;
        }
    })
}

/// This process's peak resident set size in bytes (0 where /proc is not available).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
