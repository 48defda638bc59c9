//! One shard: load the plan, then for each object skip it if done, else get, decode,
//! transform, validate, encode, upload, commit (a done marker). Progress is written as it goes.

pub mod clock;
pub mod cut;
pub mod decode;
pub mod error;
pub mod inline;
pub mod leftovers;
pub mod markers;
pub mod object;
pub mod output;
pub mod raw;
pub mod read_back;
pub mod rejects;
pub mod spills;
pub mod staged;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;

use crate::exit::{ExitCode, error_chain};
use crate::plan::PlannedObject;
use crate::spec;
use crate::state::checks::RuleOutcome;
use crate::state::marker::{DoneMarker, read_marker_map};
use crate::state::plan::{load_job_text, load_plan};
use crate::state::progress::{ObjectFailure, ShardProgress, read_progress, write_progress};
use crate::state::uploads::{CleanUpError, ShardUploads, abort_recorded};
use crate::state::{RunLayout, StateError};
use crate::storage::Storage;
use crate::storage::uri::S3Uri;
use crate::worker::markers::MarkerWriter;
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
    /// Source objects processed at the same time, at most: small objects go this many at
    /// a time, large ones fewer, as the memory budget allows (see [`InFlight`]).
    pub objects_in_flight: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            objects_in_flight: 16,
        }
    }
}

/// How many objects are worked on at once, sized by their size: each object holds a share
/// of a memory budget while it is processed. A large object's share is what its output
/// parts in flight and a few decoded batches take; the budget is two of those, so two
/// large objects (or one large and many small, or many small) are in flight at a time.
/// At most `objects` are processed at once whatever their size. An object waiting for its
/// done marker to be stored holds neither.
pub struct InFlight {
    budget: tokio::sync::Semaphore,
    slots: tokio::sync::Semaphore,
    large_mib: u32,
}

/// Decoded batches, decode chunks and encoder state of one object beside its output parts.
const BATCH_MIB: u64 = 32;

/// What an object being processed holds; given back when dropped.
pub struct Entered<'a> {
    _share: tokio::sync::SemaphorePermit<'a>,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl InFlight {
    pub fn for_sink(part_size: u64, parts_in_flight: usize, objects: usize) -> InFlight {
        let large = (part_size.saturating_mul(parts_in_flight as u64) >> 20) + BATCH_MIB;
        let large_mib = u32::try_from(large).unwrap_or(u32::MAX / 2);
        InFlight {
            budget: tokio::sync::Semaphore::new(2 * large_mib as usize),
            slots: tokio::sync::Semaphore::new(objects.max(1)),
            large_mib,
        }
    }

    /// The share of an object of `size` bytes, in MiB: about four times its size (decoded,
    /// encoded, buffered for a single PUT), at least 1, at most a large object's share.
    pub fn share(&self, size: u64) -> u32 {
        let estimate = size.saturating_mul(4).div_ceil(1 << 20).max(1);
        u32::try_from(estimate)
            .unwrap_or(u32::MAX)
            .min(self.large_mib)
    }

    /// Waits for a slot and the share of an object of `size` bytes.
    pub async fn enter(&self, size: u64) -> Entered<'_> {
        let closed = "the budget is never closed";
        let slot = self.slots.acquire().await.expect(closed);
        let share = self
            .budget
            .acquire_many(self.share(size))
            .await
            .expect(closed);
        Entered {
            _share: share,
            _slot: slot,
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
    let mut job = spec::load_str(&job_text, &layout.job().to_string(), &[])
        .map_err(WorkerError::BadJob)?
        .job;
    if job.sink.delta {
        job.sink.run_dir = Some(plan.run_id.clone());
    }
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
    // The shard's done markers so far, from a listing and a GET per batch of them.
    let markers = read_marker_map(&storage, &layout.shard_done_prefix(index)).await?;
    let markers = &markers;
    let attempt = Utc::now().format("%Y%m%dT%H%M%S%3fZ").to_string();
    let marker_writer = MarkerWriter::spawn(storage.clone(), layout.clone(), index, attempt);
    let writer = &marker_writer;
    let objects = options.objects_in_flight.max(1);
    let in_flight = InFlight::for_sink(
        ctx.job.sink.part_size,
        ctx.job.sink.parts_in_flight,
        objects,
    );
    let in_flight = &in_flight;
    let started = Instant::now();
    let reporter =
        spawn_progress_writer(storage.clone(), layout.clone(), progress.clone(), started);

    let results: Vec<(PlannedObject, ObjectOutcome)> =
        futures::stream::iter(shard.objects.iter().cloned())
            .map(|object| {
                let ctx = &ctx;
                let progress = progress.clone();
                async move {
                    let entered = in_flight.enter(object.size).await;
                    let outcome =
                        one_object(ctx, writer, &object, &progress, markers, entered).await;
                    (object, outcome)
                }
            })
            // Objects waiting for their marker are beside the ones processed.
            .buffer_unordered(objects * 4)
            .collect()
            .await;
    // Every object has heard whether its marker was stored, so nothing is queued here.
    marker_writer.close().await;
    // Stopped, not aborted: a write it has in flight lands before the final one, never after.
    reporter.stop().await;

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
    writer: &MarkerWriter,
    object: &PlannedObject,
    progress: &Mutex<ShardProgress>,
    markers: &HashMap<String, DoneMarker>,
    entered: Entered<'_>,
) -> ObjectOutcome {
    let task_key = object.task_key();
    // Resume: an object whose marker matches its ETag and the job's fingerprint is done.
    if let Some(marker) = markers.get(&task_key)
        && marker.etag == object.etag
        && marker.fingerprint == ctx.fingerprint
    {
        let mut p = progress.lock().expect("not poisoned");
        p.objects_skipped += 1;
        p.objects_done += 1;
        p.bytes_done += object.size;
        p.records.add(&marker.records);
        return Ok(marker.clone());
    }
    let mut committing = None;
    let result = match process_with_retries(ctx, object).await {
        Ok(marker) => {
            drop(entered);
            let started = Instant::now();
            let stored = writer.commit(marker).await;
            committing = Some(started.elapsed().as_secs_f64());
            stored.map_err(|(exit, error)| (exit, error, Vec::new()))
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

/// The task writing a shard's progress every `PROGRESS_EVERY`.
struct ProgressWriter {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ProgressWriter {
    /// Stops the task after the write it may have in flight.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn spawn_progress_writer(
    storage: Storage,
    layout: RunLayout,
    progress: Arc<Mutex<ShardProgress>>,
    started: Instant,
) -> ProgressWriter {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        while !*stopped.borrow() {
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
            tokio::select! {
                _ = tokio::time::sleep(PROGRESS_EVERY) => {}
                _ = stopped.changed() => break,
            }
        }
    });
    ProgressWriter { stop, task }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_objects_go_many_at_a_time_and_large_ones_two() {
        // 16 MiB parts, 4 in flight: a large object's share is 64 + 32 MiB, the budget 192.
        let in_flight = InFlight::for_sink(16 << 20, 4, 16);
        assert_eq!(in_flight.share(14_000), 1);
        assert_eq!(in_flight.share(10 << 20), 40);
        assert_eq!(in_flight.share(1 << 30), 96);
        assert_eq!(in_flight.budget.available_permits(), 192);
    }

    #[tokio::test]
    async fn a_third_large_object_waits_for_a_share() {
        let in_flight = InFlight::for_sink(16 << 20, 4, 16);
        let a = in_flight.enter(1 << 30).await;
        let _b = in_flight.enter(1 << 30).await;
        let third = tokio::time::timeout(Duration::from_millis(50), in_flight.enter(1 << 30)).await;
        assert!(third.is_err(), "a third large object entered");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), in_flight.enter(1 << 30)).await;
        assert!(third.is_ok());
    }

    #[tokio::test]
    async fn small_objects_wait_for_a_slot_past_the_limit() {
        let in_flight = InFlight::for_sink(16 << 20, 4, 2);
        let a = in_flight.enter(1000).await;
        let _b = in_flight.enter(1000).await;
        let third = tokio::time::timeout(Duration::from_millis(50), in_flight.enter(1000)).await;
        assert!(third.is_err(), "a third object entered with two slots");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), in_flight.enter(1000)).await;
        assert!(third.is_ok());
    }
}
