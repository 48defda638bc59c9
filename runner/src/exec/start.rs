//! Starting a run: list and plan the source, infer the schema if needed, and write
//! job.yaml and plan.json into the run's state.

use arrow::datatypes::SchemaRef;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::format;
use crate::format::options::{Compression, SourceFormat};
use crate::plan::{Plan, PlanError, columns_of};
use crate::spec::job::Job;
use crate::state::RunLayout;
use crate::storage::uri::S3Uri;
use crate::storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Plan(#[from] PlanError),
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
}

/// Lists the source and builds the plan (nothing is written).
pub async fn make_plan(storage: &Storage, job: &Job, run_id: &str) -> Result<Plan, StartError> {
    let listing = storage.list(&job.source.uri).await?;
    let mut plan = Plan::build(job, run_id, listing, None)?;
    if matches!(job.source.format, SourceFormat::Csv | SourceFormat::Jsonl) {
        let schema = match &job.source.schema {
            Some(schema) => Some(schema.clone()),
            None => infer(storage, job, &plan).await?,
        };
        plan.schema = schema.map(|s| columns_of(&s));
    }
    Ok(plan)
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
    if storage.head(&layout.plan()).await?.is_some() {
        return Err(StartError::RunExists {
            run_id: plan.run_id.clone(),
            uri: layout.plan(),
        });
    }
    storage
        .put_bytes(&layout.job(), resolved_yaml.to_string().into())
        .await?;
    let body = serde_json::to_vec_pretty(plan).expect("plan serializes");
    storage.put_bytes(&layout.plan(), body.into()).await?;
    Ok(())
}
