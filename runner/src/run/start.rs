//! Starting a run: list and plan the source, infer the schema if needed, and write
//! job.yaml and plan.json into the run's state.

use arrow::datatypes::SchemaRef;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::exit::ExitCode;
use crate::format;
use crate::format::options::{Compression, SourceFormat};
use crate::plan::{Plan, PlanError, PlannedObject, columns_of, select_objects, split};
use crate::spec::file::RunMode;
use crate::spec::job::Job;
use crate::state::RunLayout;
use crate::state::ledger::{Ledger, LedgerError};
use crate::storage::uri::S3Uri;
use crate::storage::{Storage, StorageError, parquet_metadata};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("reading the incremental ledger")]
    Ledger(#[from] LedgerError),
    #[error("inferring the schema from {uri}")]
    Infer {
        uri: S3Uri,
        #[source]
        source: format::DecodeError,
    },
    #[error("a run {run_id} already exists at {uri}; pick another --run-id")]
    RunExists { run_id: String, uri: S3Uri },
    #[error("schema inference stopped abnormally: {0}")]
    Join(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl StartError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            StartError::Storage(e) => e.exit_code(),
            StartError::Infer { source, .. } => source.exit_code(),
            StartError::Plan(_) | StartError::RunExists { .. } => ExitCode::Config,
            StartError::Ledger(e) => e.exit_code(),
            StartError::Join(_) => ExitCode::Transient,
            StartError::State(e) => e.exit_code(),
        }
    }
}

/// Lists the source and builds the plan (nothing is written). An incremental job plans only
/// the objects its ledger does not hold, unless `full`; objects above the job's split size
/// become several tasks.
pub async fn make_plan(
    storage: &Storage,
    job: &Job,
    run_id: &str,
    full: bool,
) -> Result<Plan, StartError> {
    make_plan_observed(storage, job, run_id, full, &mut |_| {}).await
}

/// [`make_plan`], telling `listed` how many source objects are listed so far.
pub async fn make_plan_observed(
    storage: &Storage,
    job: &Job,
    run_id: &str,
    full: bool,
    listed: &mut (dyn FnMut(usize) + Send),
) -> Result<Plan, StartError> {
    let mut listing = storage.list_observed(&job.source.uri, listed).await?;
    if job.mode == RunMode::Incremental && !full {
        let ledger = Ledger::new(&job.state, &job.name);
        ledger.repair(storage).await?;
        let listed = listing.len();
        listing = ledger.unconsumed(storage, listing).await?;
        tracing::info!(
            listed,
            new_or_changed = listing.len(),
            "incremental: the ledger holds the rest"
        );
    }
    let objects = select_objects(&job.source, listing)?;
    let tasks = split_tasks(storage, job, objects).await?;
    let mut plan = Plan::from_tasks(job, run_id, tasks, None);
    if matches!(job.source.format, SourceFormat::Csv | SourceFormat::Jsonl) {
        let schema = match &job.source.schema {
            Some(schema) => Some(schema.clone()),
            None => infer(storage, job, &plan).await?,
        };
        plan.schema = schema.map(|s| columns_of(&s));
    }
    Ok(plan)
}

/// Splits the objects larger than the job's split size into ranges: uncompressed text into
/// byte ranges, Parquet into ranges of row groups (read from each large object's footer).
async fn split_tasks(
    storage: &Storage,
    job: &Job,
    objects: Vec<PlannedObject>,
) -> Result<Vec<PlannedObject>, StartError> {
    let Some(split_size) = job.split_size else {
        return Ok(objects);
    };
    // A raw first step takes whole objects.
    if crate::worker::raw::raw_step(job).is_some() {
        return Ok(objects);
    }
    let mut tasks = Vec::with_capacity(objects.len());
    for object in objects {
        if object.size <= split_size {
            tasks.push(object);
            continue;
        }
        match job.source.format {
            SourceFormat::Csv | SourceFormat::Jsonl
                if split::splittable_text(&object.key, job.source.compression) =>
            {
                tasks.extend(split::split_bytes(object, split_size));
            }
            SourceFormat::Parquet => {
                let uri = S3Uri::new(job.source.uri.bucket.clone(), object.key.clone());
                let metadata = parquet_metadata(storage, &uri, object.size).await?;
                let groups: Vec<u64> = metadata
                    .row_groups()
                    .iter()
                    .map(|g| g.compressed_size().max(0) as u64)
                    .collect();
                tasks.extend(split::split_row_groups(object, &groups, split_size));
            }
            _ => tasks.push(object),
        }
    }
    Ok(tasks)
}

/// Infers the schema from a sample of the first planned object (by key).
async fn infer(storage: &Storage, job: &Job, plan: &Plan) -> Result<Option<SchemaRef>, StartError> {
    let Some(first) = plan
        .shards
        .iter()
        .flat_map(|s| &s.objects)
        .min_by(|a, b| a.key.cmp(&b.key))
    else {
        return Ok(None);
    };
    infer_object(storage, job, &first.key, &first.etag)
        .await
        .map(Some)
}

/// Infers the schema from a sample of one source object.
pub async fn infer_object(
    storage: &Storage,
    job: &Job,
    key: &str,
    etag: &str,
) -> Result<SchemaRef, StartError> {
    let uri = S3Uri::new(job.source.uri.bucket.clone(), key.to_string());
    let body = storage.get(&uri, Some(etag)).await?;
    let reader = SyncIoBridge::new(StreamReader::new(body));
    let compression = job
        .source
        .compression
        .unwrap_or_else(|| Compression::from_key(key));
    let (format, csv, records) = (
        job.source.format,
        job.source.csv.clone(),
        job.source.infer_records,
    );
    let target = uri.clone();
    let schema = tokio::task::spawn_blocking(move || {
        format::infer_schema(
            format,
            format::decompress(Box::new(reader), compression),
            &csv,
            records,
        )
    })
    .await
    .map_err(|e| StartError::Join(e.to_string()))?
    .map_err(|source| StartError::Infer {
        uri: target,
        source,
    })?;
    tracing::info!(%uri, columns = schema.fields().len(), "inferred the schema");
    Ok(schema)
}

/// Writes the resolved job and the plan into the run's state; refuses to overwrite a run.
pub async fn write_run(
    storage: &Storage,
    layout: &RunLayout,
    plan: &Plan,
    resolved_yaml: &str,
) -> Result<(), StartError> {
    if crate::state::plan::is_planned(storage, layout).await? {
        return Err(StartError::RunExists {
            run_id: plan.run_id.clone(),
            uri: layout.plan(),
        });
    }
    Ok(crate::state::plan::write_run(storage, layout, plan, resolved_yaml).await?)
}
