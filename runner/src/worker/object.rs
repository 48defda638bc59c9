//! One source object, streaming: get -> decompress -> decode -> transform -> encode ->
//! upload; then account for every record, complete the uploads and read the counts back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use chrono::Utc;
use datafusion::execution::SendableRecordBatchStream;
use tokio_util::task::AbortOnDropHandle;

use crate::plan::PlannedObject;
use crate::spec::container::{OutputFormat, StepInput};
use crate::spec::job::Job;
use crate::spec::job::StepKind;
use crate::state::checks::RuleOutcome;
use crate::state::marker::{DoneMarker, OutputObject, RecordCounts, StepCounts};
use crate::storage::Storage;
use crate::storage::uri::S3Uri;
use crate::transform::{self, StepCounter};
use crate::validate::keys::KeysError;
use crate::validate::object::{KeySpills, ObjectChecks, judge_output_sizes};
use crate::worker::clock::{Phase, PhaseClock, timed_batches};
use crate::worker::decode::{DecodeStats, Decoding};
pub use crate::worker::error::ObjectError;
use crate::worker::output::{OutputPart, encode_outputs};
use crate::worker::raw::{self, raw_step};
use crate::worker::read_back::{stored_rejects, stored_rows};
use crate::worker::rejects::{RejectsWriter, StagedRejects};
use crate::worker::spills::{Leftovers, output_uri, remove_leftover_spills};
use crate::worker::staged::Staged;

/// What every object of a shard shares.
pub struct ObjectContext {
    pub storage: Storage,
    pub job: Arc<Job>,
    /// The schema to decode with (explicit or planned); `None` for Parquet sources.
    pub schema: Option<SchemaRef>,
    /// The job's fingerprint, written into every done marker.
    pub fingerprint: String,
    /// Where `unique` rules spill each object's keys (the run's `keys/` prefix); `None`
    /// outside a run, where keys are not collected.
    pub keys: Option<S3Uri>,
}

/// Processes one source object and returns its done marker. On any error every upload of
/// this object is aborted: nothing of it becomes visible.
pub async fn process(
    ctx: &ObjectContext,
    object: &PlannedObject,
) -> Result<DoneMarker, ObjectError> {
    let started = Instant::now();
    let clock = PhaseClock::new();
    let job = &ctx.job;
    let source = S3Uri::new(job.source.uri.bucket.clone(), object.key.clone());
    let relative = object
        .key
        .strip_prefix(job.source.uri.key.as_str())
        .unwrap_or(&object.key)
        .to_string();

    if let Some((step, container)) = raw_step(job)
        && container.output == OutputFormat::Opaque
    {
        return raw::opaque(ctx, object, &relative, step, container, &clock).await;
    }
    let range_suffix = object.range.map(|r| r.stem_suffix()).unwrap_or_default();
    let rejects = RejectsWriter::start(
        &ctx.storage,
        job.sink
            .uri
            .join(&format!("_rejected/{relative}{range_suffix}.jsonl")),
        &job.sink,
        match &object.range {
            Some(r) => format!("{source} (range {} of {})", r.part, r.parts),
            None => source.to_string(),
        },
    );
    // Until the pipeline runs, a failure leaves only the rejects writer to abort (the
    // decode task aborts when its handle drops).
    let Pipeline {
        output,
        mut counters,
        task,
        raw,
        checks,
    } = match start_pipeline(ctx, object, &source, &rejects, &clock).await {
        Ok(pipeline) => pipeline,
        Err(e) => {
            rejects.abort().await;
            return Err(e);
        }
    };
    let sink = job.sink.clone();
    let relative_for_keys = relative.clone();
    let range = object.range;
    let key_for = move |partition: Option<&str>, part: usize| {
        output_uri(&sink, partition, &relative_for_keys, range.as_ref(), part)
    };
    let encoded = encode_outputs(
        ctx.storage.clone(),
        job.sink.clone(),
        output,
        Box::new(key_for),
        clock.clone(),
    )
    .await;
    let decoded = match task {
        Some(task) => task
            .await
            .unwrap_or_else(|e| Err(ObjectError::from_join(e))),
        // The records came from the raw step's transformer: its output is the input.
        None => {
            let records = raw.as_ref().map_or(0, |r| r.counter.get().1);
            Ok(DecodeStats {
                records,
                good: records,
                ..Default::default()
            })
        }
    };
    if let Some(raw) = &raw {
        counters.insert(0, raw.counter.clone());
    }
    let staged = rejects.finish().await;

    let (stats, parts, rejects) = settle(decoded, encoded, staged)
        .await
        .map_err(|e| RawInput::explain(raw.as_ref(), e))?;
    let flow = Flow {
        stats: &stats,
        counters: &counters,
        rule_rejected: checks.rejected(),
        clock: &clock,
    };
    // Whatever commit leaves staged when it fails is aborted here, in one place.
    let mut staged = Staged::new(parts, rejects);
    let committed = commit(ctx, object, &source, &relative, &flow, checks, &mut staged).await;
    if committed.is_err() {
        staged.abort().await;
    }
    let Committed {
        counts,
        outputs,
        rejects,
        outcomes,
    } = committed?;
    Ok(DoneMarker {
        key: object.key.clone(),
        etag: object.etag.clone(),
        range: object.range,
        fingerprint: ctx.fingerprint.clone(),
        size: object.size,
        outputs,
        rejects,
        records: counts,
        checks: outcomes,
        steps: job
            .steps
            .iter()
            .zip(&counters)
            .map(|(step, c)| {
                let (input, output) = c.get();
                StepCounts {
                    name: step.name.clone(),
                    input,
                    output,
                }
            })
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
        phases: clock.times(),
        finished: Utc::now(),
    })
}

/// What an object made visible, and how it was judged.
struct Committed {
    counts: RecordCounts,
    outputs: Vec<OutputObject>,
    rejects: Option<OutputObject>,
    outcomes: Vec<RuleOutcome>,
}

/// Accounts for every record, judges the object's rules, then completes the uploads and
/// reads back what was stored. What is still in `staged` when it fails is the caller's
/// to abort.
async fn commit(
    ctx: &ObjectContext,
    object: &PlannedObject,
    source: &S3Uri,
    relative: &str,
    flow: &Flow<'_>,
    checks: ObjectChecks,
    staged: &mut Staged,
) -> Result<Committed, ObjectError> {
    let clock = flow.clock;
    let job = &ctx.job;
    let counts = account(source, flow, &job.steps, staged.parts(), staged.rejects())?;
    let spills = ctx.keys.as_ref().map(|prefix| KeySpills {
        storage: &ctx.storage,
        prefix,
    });
    let judging = Instant::now();
    let outcomes = checks.finish(&counts, object.size, spills).await;
    clock.add(Phase::Validate, judging.elapsed());
    let mut outcomes = outcomes.map_err(|e| match e {
        KeysError::Storage(e) => ObjectError::Storage(e),
        other => ObjectError::Internal(format!("collecting unique keys: {other}")),
    })?;
    if let Some(e) = validation_failure(source, &outcomes) {
        return Err(e);
    }

    // Everything balanced in memory: make the outputs visible, then check what was stored.
    let mut written: BTreeMap<Option<String>, usize> = BTreeMap::new();
    for part in staged.parts() {
        *written.entry(part.partition.clone()).or_default() += 1;
    }
    let outputs = complete_and_verify(ctx, staged.take_parts(), clock).await?;
    let sizes: Vec<(String, u64)> = outputs.iter().map(|o| (o.uri.clone(), o.size)).collect();
    judge_output_sizes(&job.validate.rules, &mut outcomes, &sizes);
    if let Some(e) = validation_failure(source, &outcomes) {
        delete_outputs(ctx, &outputs).await;
        return Err(e);
    }
    for (partition, count) in written {
        let leftovers = Leftovers {
            partition: partition.as_deref(),
            relative,
            range: object.range.as_ref(),
            written: count,
        };
        remove_leftover_spills(ctx, leftovers).await?;
    }
    let rejects = match staged.take_rejects() {
        Some(rejects) => {
            let started = Instant::now();
            let verified = verify_rejects(ctx, rejects, &outputs).await;
            clock.add(Phase::ReadBack, started.elapsed());
            Some(verified?)
        }
        None => None,
    };
    Ok(Committed {
        counts,
        outputs,
        rejects,
        outcomes,
    })
}

/// One object's record pipeline, running.
struct Pipeline {
    /// The last step's output, watched by the object's rules.
    output: SendableRecordBatchStream,
    counters: Vec<Arc<StepCounter>>,
    /// The decoding of the source (`None` when a raw step's transformer is the input).
    task: Option<AbortOnDropHandle<Result<DecodeStats, ObjectError>>>,
    raw: Option<RawInput>,
    checks: ObjectChecks,
}

/// The record pipeline of one object, started: its input (decoded, or a raw step's
/// transformer), the transform steps over it, and the object's rules watching the output.
async fn start_pipeline(
    ctx: &ObjectContext,
    object: &PlannedObject,
    source: &S3Uri,
    rejects: &RejectsWriter,
    clock: &Arc<PhaseClock>,
) -> Result<Pipeline, ObjectError> {
    let job = &ctx.job;
    let input = Input::start(ctx, source, object, rejects.sender(), clock).await?;
    let (stream, task, steps, raw) = input.into_parts(job);
    let task = task.map(AbortOnDropHandle::new);
    let (output, counters) = transform::apply_steps(steps, stream, &object.key)
        .await
        .map_err(ObjectError::from_transform)?;
    let output = timed_batches(output, clock.clone(), Phase::Transform);
    let (output, checks) = ObjectChecks::attach(
        Arc::new(job.validate.rules.clone()),
        job.validate.examples,
        &object.task_key(),
        output,
        rejects.sender(),
    )
    .await
    .map_err(|e| ObjectError::Rule {
        uri: source.clone(),
        message: e.0,
    })?;
    let output = timed_batches(output, clock.clone(), Phase::Validate);
    Ok(Pipeline {
        output,
        counters,
        task,
        raw,
        checks,
    })
}

/// Combines the three ends of the pipeline. If any failed, aborts what the others staged
/// and returns the root cause (a `Cancelled` end only stopped because another one failed).
async fn settle(
    decoded: Result<DecodeStats, ObjectError>,
    encoded: Result<Vec<OutputPart>, ObjectError>,
    staged: Result<Option<StagedRejects>, ObjectError>,
) -> Result<(DecodeStats, Vec<OutputPart>, Option<StagedRejects>), ObjectError> {
    match (decoded, encoded, staged) {
        (Ok(d), Ok(p), Ok(s)) => Ok((d, p, s)),
        (d, p, s) => {
            let mut errors = Vec::new();
            let parts = match p {
                Ok(parts) => parts,
                Err(e) => {
                    errors.push(e);
                    Vec::new()
                }
            };
            let staged = match s {
                Ok(staged) => staged,
                Err(e) => {
                    errors.push(e);
                    None
                }
            };
            if let Err(e) = d {
                errors.insert(0, e);
            }
            let root = errors
                .iter()
                .position(|e| !matches!(e, ObjectError::Cancelled))
                .unwrap_or(0);
            let mut root = errors.swap_remove(root);
            let mut staged = Staged::new(parts, staged);
            // Records rejected before the limit stopped the object are kept, complete, for
            // the user to see why; its outputs are not.
            if let ObjectError::TooManyBadRecords { kept, .. } = &mut root
                && let Some(rejects) = staged.take_rejects()
            {
                match rejects.pending.complete().await {
                    Ok(uploaded) => *kept = Some(Box::new(uploaded.uri)),
                    Err(error) => tracing::warn!(%error, "completing the rejects upload failed"),
                }
            }
            staged.abort().await;
            Err(root)
        }
    }
}

fn is_raw(step: &crate::spec::job::Step) -> bool {
    matches!(&step.kind, StepKind::Container(c) if c.input == StepInput::Raw)
}

/// Where an object's records come from: decoded from the source, or from the transformer
/// of a raw first step.
pub(crate) enum Input {
    Decoded(Decoding),
    Transformed {
        stream: datafusion::execution::SendableRecordBatchStream,
        raw: RawInput,
    },
}

/// What a raw first step adds to an object's pipeline: its record count, and the watch on the
/// object's body that tells corrupt data from a broken transformer.
pub(crate) struct RawInput {
    pub counter: Arc<StepCounter>,
    pub watch: raw::SourceWatch,
}

impl RawInput {
    /// The error to report for the object (see `SourceWatch::explain`).
    pub(crate) fn explain(raw: Option<&RawInput>, error: ObjectError) -> ObjectError {
        match raw {
            Some(raw) => raw.watch.explain(error),
            None => error,
        }
    }
}

pub(crate) type DecodeTask = tokio::task::JoinHandle<Result<DecodeStats, ObjectError>>;

impl Input {
    pub(crate) async fn start(
        ctx: &ObjectContext,
        source: &S3Uri,
        object: &PlannedObject,
        rejects: tokio::sync::mpsc::Sender<crate::format::BadRecord>,
        clock: &Arc<PhaseClock>,
    ) -> Result<Input, ObjectError> {
        let Some((step, container)) = raw_step(&ctx.job) else {
            return Ok(Input::Decoded(
                Decoding::start(ctx, source, object, rejects, clock).await?,
            ));
        };
        let (body, watch) = raw::body(ctx, source, object, clock).await?;
        let stream = transform::container::records_through(
            container,
            &step.name,
            &object.key,
            Some(object.size),
            body,
        )
        .await?;
        let counter = Arc::new(StepCounter::default());
        Ok(Input::Transformed {
            stream: transform::count_output(stream, counter.clone()),
            raw: RawInput { counter, watch },
        })
    }

    /// The records, the decoding task (if decoding), the steps still to apply and the raw
    /// step's counter (if there was one).
    pub(crate) fn into_parts(
        self,
        job: &Job,
    ) -> (
        datafusion::execution::SendableRecordBatchStream,
        Option<DecodeTask>,
        &[crate::spec::job::Step],
        Option<RawInput>,
    ) {
        match self {
            Input::Decoded(d) => (d.stream, Some(d.task), &job.steps[..], None),
            Input::Transformed { stream, raw } => (stream, None, &job.steps[1..], Some(raw)),
        }
    }
}

/// Checks, in memory, that every decoded record is accounted for: each step that does not
/// declare `filters` keeps its record count, the encoders wrote what the last step produced,
/// and `input = output + rejected + skipped + filtered`.
/// The record counts an object's pipeline reported.
struct Flow<'a> {
    stats: &'a DecodeStats,
    counters: &'a [Arc<StepCounter>],
    /// Records that rules with `on_fail: reject` took out of the output.
    rule_rejected: u64,
    /// Where the object's time goes.
    clock: &'a PhaseClock,
}

/// The error that fails an object when an error-severity rule failed on it.
fn validation_failure(source: &S3Uri, outcomes: &[RuleOutcome]) -> Option<ObjectError> {
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.is_blocking())
        .map(|o| format!("{} ({}): {}", o.rule, o.kind, o.detail))
        .collect();
    (!failed.is_empty()).then(|| ObjectError::Validation {
        uri: source.clone(),
        failed: failed.join("; "),
        outcomes: outcomes.to_vec(),
    })
}

async fn delete_outputs(ctx: &ObjectContext, outputs: &[OutputObject]) {
    for output in outputs {
        if let Ok(uri) = output.uri.parse::<S3Uri>()
            && let Err(error) = ctx.storage.delete(&uri).await
        {
            tracing::warn!(%error, %uri, "deleting an output that failed validation failed");
        }
    }
}

fn account(
    source: &S3Uri,
    flow: &Flow<'_>,
    steps: &[crate::spec::job::Step],
    parts: &[OutputPart],
    staged: Option<&StagedRejects>,
) -> Result<RecordCounts, ObjectError> {
    let (stats, counters) = (flow.stats, flow.counters);
    let mut flowing = stats.good;
    let mut filtered = 0;
    for (step, counter) in steps.iter().zip(counters) {
        let (input, output) = counter.get();
        if is_raw(step) {
            // A raw step's output records are the object's input records.
            continue;
        }
        if input != flowing {
            return Err(ObjectError::Lost {
                uri: source.clone(),
                detail: format!(
                    "step {} received {input} records, {flowing} were handed to it",
                    step.name
                ),
            });
        }
        if output != input && !(step.filters && output < input) {
            return Err(ObjectError::StepCount {
                uri: source.clone(),
                step: step.name.clone(),
                input,
                output,
            });
        }
        filtered += input - output;
        flowing = output;
    }
    let written: u64 = parts.iter().map(|p| p.rows).sum();
    if written + flow.rule_rejected != flowing {
        return Err(ObjectError::Lost {
            uri: source.clone(),
            detail: format!(
                "the encoders wrote {written} records and rules rejected {}, the steps produced {flowing}",
                flow.rule_rejected
            ),
        });
    }
    let rejected = staged.map_or(0, |s| s.rows);
    if rejected != stats.rejected + flow.rule_rejected {
        return Err(ObjectError::Lost {
            uri: source.clone(),
            detail: format!(
                "{} records were rejected but {rejected} reached the rejects object",
                stats.rejected + flow.rule_rejected
            ),
        });
    }
    let counts = RecordCounts {
        input: stats.records,
        output: written,
        rejected,
        skipped: stats.skipped,
        filtered,
    };
    if !counts.balanced() {
        return Err(ObjectError::Lost {
            uri: source.clone(),
            detail: format!(
                "input {} != output {} + rejected {} + skipped {} + filtered {}",
                counts.input, counts.output, counts.rejected, counts.skipped, counts.filtered
            ),
        });
    }
    Ok(counts)
}

/// Completes every output upload, then reads each stored object's record count back. A
/// mismatch deletes this object's outputs and fails it.
async fn complete_and_verify(
    ctx: &ObjectContext,
    parts: Vec<OutputPart>,
    clock: &PhaseClock,
) -> Result<Vec<OutputObject>, ObjectError> {
    let completing = Instant::now();
    let mut outputs = Vec::with_capacity(parts.len());
    let mut completed = Vec::new();
    let mut result = Ok(());
    let mut parts = parts.into_iter();
    for part in parts.by_ref() {
        match part.pending.complete().await {
            Ok(uploaded) => {
                completed.push(uploaded.uri.clone());
                outputs.push((uploaded, part.rows));
            }
            Err(e) => {
                result = Err(ObjectError::from(e));
                break;
            }
        }
    }
    if result.is_err() {
        Staged::new(parts.collect(), None).abort().await;
    }
    clock.add(Phase::Upload, completing.elapsed());
    let reading = Instant::now();
    let mut verified = Vec::with_capacity(outputs.len());
    if result.is_ok() {
        for (uploaded, rows) in &outputs {
            match stored_rows(&ctx.storage, &ctx.job.sink, &uploaded.uri, uploaded.size).await {
                Ok(stored) if stored == *rows => verified.push(OutputObject {
                    uri: uploaded.uri.to_string(),
                    size: uploaded.size,
                    rows: *rows,
                    crc32c: uploaded.crc32c.clone(),
                }),
                Ok(stored) => {
                    result = Err(ObjectError::ReadBack {
                        uri: uploaded.uri.clone(),
                        written: *rows,
                        stored,
                    });
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    clock.add(Phase::ReadBack, reading.elapsed());
    match result {
        Ok(()) => Ok(verified),
        Err(e) => {
            for uri in completed {
                if let Err(error) = ctx.storage.delete(&uri).await {
                    tracing::warn!(%error, %uri, "deleting an unverified output failed");
                }
            }
            Err(e)
        }
    }
}

async fn verify_rejects(
    ctx: &ObjectContext,
    staged: StagedRejects,
    outputs: &[OutputObject],
) -> Result<OutputObject, ObjectError> {
    let rows = staged.rows;
    let uploaded = staged.pending.complete().await?;
    let stored = stored_rejects(&ctx.storage, &uploaded.uri).await?;
    if stored != rows {
        for output in outputs {
            if let Ok(uri) = output.uri.parse::<S3Uri>() {
                let _ = ctx.storage.delete(&uri).await;
            }
        }
        let _ = ctx.storage.delete(&uploaded.uri).await;
        return Err(ObjectError::ReadBack {
            uri: uploaded.uri,
            written: rows,
            stored,
        });
    }
    Ok(OutputObject {
        uri: uploaded.uri.to_string(),
        size: uploaded.size,
        rows,
        crc32c: uploaded.crc32c,
    })
}
