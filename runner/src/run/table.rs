//! A run's Delta Lake table (`sink.format: delta`): the Parquet data files the workers wrote
//! under the table's prefix become visible in one Delta transaction made at publish, after
//! every check passed: all of a run or none of it. A full run replaces the table's rows, an
//! incremental one appends. The transaction carries the application transaction
//! `sluice/<job>/<run id>`, so a resumed or retried publish finds its commit instead of
//! making a second one. The commit uses S3 conditional writes (`If-None-Match: *` on the
//! log entry), which delta-rs needs instead of a lock.

use std::collections::HashMap;
use std::sync::{Arc, Once};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Remove, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures::{StreamExt, TryStreamExt};

use crate::exit::ExitCode;
use crate::format::partition::{DEFAULT_PARTITION, values_of};
use crate::spec::Job;
use crate::state::manifest::TableVersion;
use crate::state::marker::OutputObject;
use crate::storage::uri::S3Uri;
use crate::storage::{Storage, StorageError, parquet_metadata};

/// The metadata key of a commit naming the run that made it.
const RUN_KEY: &str = "sluice.run";
/// Footers of data files read at the same time.
const FOOTERS_IN_FLIGHT: usize = 16;

/// Committing a run's table failed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("the Delta table at {uri}")]
    Delta {
        uri: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    #[error("reading the data file {uri}")]
    DataFile {
        uri: String,
        #[source]
        source: Box<StorageError>,
    },
    #[error("the Delta table at {uri}: {message}")]
    Invalid { uri: String, message: String },
}

impl TableError {
    /// A commit conflict or an unreachable store may pass on retry; a table the run's
    /// files do not fit does not.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TableError::Delta { .. } => ExitCode::Transient,
            TableError::DataFile { source, .. } => source.exit_code(),
            TableError::Invalid { .. } => ExitCode::Config,
        }
    }
}

/// What a run commits to its table.
pub struct RunFiles<'a> {
    pub run_id: &'a str,
    /// The run's data files.
    pub outputs: &'a [&'a OutputObject],
    /// The run read only objects new since the published runs (an incremental plan): its
    /// files are appended; otherwise they replace the table's.
    pub append: bool,
    /// The schema of the job's output records, when it is known before running (it types
    /// the partition columns; strings otherwise).
    pub output: Option<SchemaRef>,
}

/// Commits the run's data files to the table at the job's sink, once: when the table
/// already holds the run's transaction, the version it made is returned.
pub async fn commit(
    storage: &Storage,
    job: &Job,
    run: RunFiles<'_>,
) -> Result<TableVersion, TableError> {
    let RunFiles {
        run_id,
        outputs,
        append,
        output,
    } = run;
    let sink = &job.sink;
    let uri = sink.uri.to_string();
    let delta = |source| TableError::Delta {
        uri: uri.clone(),
        source: Box::new(source),
    };
    let table = open(storage, &sink.uri).await?;
    let app_id = format!("sluice/{}/{run_id}", job.name);
    if table.version().is_some() {
        let state = table.snapshot().map_err(delta)?;
        let committed = state
            .transaction_version(table.log_store().as_ref(), &app_id)
            .await
            .map_err(delta)?;
        if committed.is_some() {
            let version = version_of_run(&table, run_id).await.map_err(delta)?;
            tracing::info!(run = %run_id, version, "the run's table version was committed before");
            return Ok(TableVersion {
                format: "delta".into(),
                uri,
                version,
                files: outputs.len() as u64,
            });
        }
    }

    let (adds, data_schema) = data_files(storage, job, outputs, output.as_deref()).await?;
    let files = adds.len() as u64;
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    let properties = CommitProperties::default()
        .with_metadata([(RUN_KEY.to_string(), serde_json::json!(run_id))])
        .with_application_transaction(Transaction::new(&app_id, 0));
    let partition_by = (!sink.partition_by.is_empty()).then(|| sink.partition_by.clone());
    let version = match table.version() {
        None => {
            let schema = table_schema(job, data_schema, output.as_deref(), &uri)?;
            let created = table
                .create()
                .with_columns(schema.fields().cloned())
                .with_partition_columns(sink.partition_by.clone())
                .with_actions(actions)
                .with_commit_properties(properties)
                .await
                .map_err(delta)?;
            created.version().unwrap_or(0)
        }
        Some(_) => {
            // A run whose columns differ from the table's would make files its readers
            // cannot read as the table says: refused before anything is committed.
            if let Some(data) = data_schema {
                let expected = table_schema(job, Some(data), output.as_deref(), &uri)?;
                let current = table.snapshot().map_err(delta)?.schema();
                if let Some(difference) = difference(&current, &expected) {
                    return Err(TableError::Invalid {
                        uri,
                        message: format!(
                            "the run's columns differ from the table's ({difference}); write to a new table, or change the table's schema with a Delta tool first"
                        ),
                    });
                }
            }
            let mode = if append {
                SaveMode::Append
            } else {
                SaveMode::Overwrite
            };
            if mode == SaveMode::Overwrite {
                actions.extend(
                    removes(&table)
                        .map_err(delta)?
                        .into_iter()
                        .map(Action::Remove),
                );
            }
            let state = table.snapshot().map_err(delta)?;
            let operation = DeltaOperation::Write {
                mode,
                partition_by,
                predicate: None,
            };
            let committed = CommitBuilder::from(properties)
                .with_actions(actions)
                .build(Some(state), table.log_store(), operation)
                .await
                .map_err(delta)?;
            committed.version()
        }
    };
    tracing::info!(run = %run_id, table = %uri, version, files, "committed the run to its Delta table");
    Ok(TableVersion {
        format: "delta".into(),
        uri,
        version,
        files,
    })
}

/// A builder of the table at `uri`, reached with the settings of `storage`'s client.
async fn builder(
    storage: &Storage,
    uri: &S3Uri,
) -> Result<deltalake::DeltaTableBuilder, TableError> {
    static HANDLERS: Once = Once::new();
    HANDLERS.call_once(|| deltalake::aws::register_handlers(None));
    let text = uri.to_string();
    let options = storage
        .object_store_options()
        .await
        .map_err(|e| TableError::DataFile {
            uri: text.clone(),
            source: Box::new(e),
        })?;
    deltalake::ensure_table_uri(&text)
        .and_then(deltalake::DeltaTableBuilder::from_url)
        .map(|b| b.with_storage_options(options))
        .map_err(|source| TableError::Delta {
            uri: text,
            source: Box::new(source),
        })
}

fn delta_error(uri: &S3Uri) -> impl Fn(deltalake::DeltaTableError) -> TableError + '_ {
    move |source| TableError::Delta {
        uri: uri.to_string(),
        source: Box::new(source),
    }
}

/// The table at `uri` as it stands (not yet created: no version).
pub async fn open(storage: &Storage, uri: &S3Uri) -> Result<DeltaTable, TableError> {
    let builder = builder(storage, uri).await?;
    // A table that does not exist yet is not loaded (loading it logs an error).
    let log = uri.join("_delta_log/");
    let exists = !storage
        .list(&log)
        .await
        .map_err(|e| TableError::DataFile {
            uri: log.to_string(),
            source: Box::new(e),
        })?
        .is_empty();
    if exists {
        builder.load().await.map_err(delta_error(uri))
    } else {
        builder.build().map_err(delta_error(uri))
    }
}

/// The paths (relative to the table) of the data files of a table version.
pub async fn files_at(
    storage: &Storage,
    uri: &S3Uri,
    version: u64,
) -> Result<Vec<String>, TableError> {
    let table = builder(storage, uri)
        .await?
        .with_version(version)
        .load()
        .await
        .map_err(delta_error(uri))?;
    let root = uri.to_string();
    let mut paths: Vec<String> = table
        .get_file_uris()
        .map_err(delta_error(uri))?
        .map(|u| u.strip_prefix(&root).map(str::to_string).unwrap_or(u))
        .collect();
    paths.sort();
    Ok(paths)
}

/// The version the commit of `run_id` made, from the commits' metadata.
async fn version_of_run(
    table: &DeltaTable,
    run_id: &str,
) -> Result<u64, deltalake::DeltaTableError> {
    // The history lists one commit per version, newest first.
    let latest = table.version().unwrap_or(0);
    let mut history = table.history(None).enumerate();
    while let Some((back, info)) = history.next().await {
        if info?.info.get(RUN_KEY).and_then(|v| v.as_str()) == Some(run_id) {
            return Ok(latest.saturating_sub(back as u64));
        }
    }
    Ok(latest)
}

/// A `remove` for every data file of the table's current version (a full run replaces them).
fn removes(table: &DeltaTable) -> Result<Vec<Remove>, deltalake::DeltaTableError> {
    let root = table.table_url().to_string();
    let root = root.trim_end_matches('/').to_string() + "/";
    let now = chrono::Utc::now().timestamp_millis();
    Ok(table
        .get_file_uris()?
        .map(|u| Remove {
            path: u.strip_prefix(&root).map(str::to_string).unwrap_or(u),
            data_change: true,
            deletion_timestamp: Some(now),
            ..Default::default()
        })
        .collect())
}

/// An `add` for each data file, with its partition values from its path and its statistics
/// (record count, min, max and nulls per column) from its footer; and the files' schema.
async fn data_files(
    storage: &Storage,
    job: &Job,
    outputs: &[&OutputObject],
    output: Option<&Schema>,
) -> Result<(Vec<Add>, Option<SchemaRef>), TableError> {
    let sink = &job.sink;
    let root = sink.uri.to_string();
    // Owned futures: a stream over closures borrowing the outputs makes the publish future
    // lose `Send` (its lifetimes become higher-ranked).
    let reads: Vec<_> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let (storage, text, size) = (storage.clone(), o.uri.clone(), o.size);
            async move {
                let uri: S3Uri = text.parse().map_err(|e: crate::storage::uri::S3UriError| {
                    TableError::Invalid {
                        uri: text.clone(),
                        message: e.to_string(),
                    }
                })?;
                let metadata = parquet_metadata(&storage, &uri, size).await.map_err(|e| {
                    TableError::DataFile {
                        uri: text.clone(),
                        source: Box::new(e),
                    }
                })?;
                Ok::<_, TableError>((i, metadata))
            }
        })
        .collect();
    let footers: Vec<_> = futures::stream::iter(reads)
        .buffered(FOOTERS_IN_FLIGHT)
        .try_collect()
        .await?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut schema = None;
    let mut adds = Vec::with_capacity(footers.len());
    for (i, metadata) in footers {
        let o = outputs[i];
        let path = o.uri.strip_prefix(&root).unwrap_or(&o.uri).to_string();
        let file_schema = crate::run::table_stats::arrow_schema(&metadata).map_err(|message| {
            TableError::Invalid {
                uri: o.uri.clone(),
                message,
            }
        })?;
        let partition_values = partition_values(&path, &sink.partition_by, output);
        adds.push(Add {
            path,
            partition_values,
            size: o.size as i64,
            modification_time: now,
            data_change: true,
            stats: Some(crate::run::table_stats::stats_json(&metadata, &file_schema)),
            ..Default::default()
        });
        schema.get_or_insert(file_schema);
    }
    Ok((adds, schema))
}

/// The values of the partition columns of a data file, from the first segments of its path
/// (Delta serializes a timestamp with a space where Arrow prints a `T`).
fn partition_values(
    path: &str,
    columns: &[String],
    output: Option<&Schema>,
) -> HashMap<String, Option<String>> {
    let dirs: Vec<&str> = path.split('/').take(columns.len()).collect();
    values_of(&dirs.join("/"))
        .into_iter()
        .map(|(name, value)| {
            let timestamp = output
                .and_then(|s| s.field_with_name(&name).ok())
                .is_some_and(|f| matches!(f.data_type(), DataType::Timestamp(_, _)));
            let value = value.filter(|v| v != DEFAULT_PARTITION).map(|v| {
                if timestamp {
                    v.replacen('T', " ", 1)
                } else {
                    v
                }
            });
            (name, value)
        })
        .collect()
}

/// How the columns of `run` differ from the table's (by name and type), if they do.
fn difference(table: &StructType, run: &StructType) -> Option<String> {
    let describe = |s: &StructType| -> Vec<(String, String)> {
        s.fields()
            .map(|f| (f.name().to_string(), format!("{:?}", f.data_type())))
            .collect()
    };
    let (table, run) = (describe(table), describe(run));
    let mut found = Vec::new();
    for (name, kind) in &run {
        match table.iter().find(|(n, _)| n == name) {
            None => found.push(format!("{name} is new")),
            Some((_, current)) if current != kind => {
                found.push(format!("{name} is {kind}, the table has {current}"))
            }
            Some(_) => {}
        }
    }
    for (name, _) in &table {
        if !run.iter().any(|(n, _)| n == name) {
            found.push(format!("{name} is missing"));
        }
    }
    (!found.is_empty()).then(|| found.join("; "))
}

/// The table's schema: the data files' columns, then the partition columns typed as in the
/// job's output (strings when it is not known before running).
fn table_schema(
    job: &Job,
    data: Option<SchemaRef>,
    output: Option<&Schema>,
    uri: &str,
) -> Result<StructType, TableError> {
    let invalid = |message: String| TableError::Invalid {
        uri: uri.to_string(),
        message,
    };
    let mut fields: Vec<Field> = match (data, output) {
        (Some(data), _) => data.fields().iter().map(|f| f.as_ref().clone()).collect(),
        (None, Some(output)) => output
            .fields()
            .iter()
            .filter(|f| !job.sink.partition_by.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect(),
        (None, None) => {
            return Err(invalid(
                "the run wrote no data file and its output schema is not known before running: there is no schema to create the table with".into(),
            ));
        }
    };
    for column in &job.sink.partition_by {
        let data_type = output
            .and_then(|s| s.field_with_name(column).ok())
            .map_or(DataType::Utf8, |f| f.data_type().clone());
        fields.push(Field::new(column, data_type, true));
    }
    let schema = Arc::new(Schema::new(fields));
    schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| invalid(format!("its schema has no Delta type: {e}")))
}
