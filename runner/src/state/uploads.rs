//! uploads/<i>/<hash>.json: the multipart uploads a shard has open, each recorded before its
//! first part is sent and removed once it is completed or aborted; their one reader and
//! writer. Whatever a crash or a failed abort leaves here is aborted by the next attempt of
//! the shard, by `resume` and by publish, which touch only the uploads their own run recorded.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::state::{RunLayout, StateError, read_json_lenient, write_json};
use crate::storage::uri::S3Uri;
use crate::storage::{Storage, StorageError, UploadJournal};

/// Records cleaned up at the same time.
const IN_FLIGHT: usize = 16;

/// One open multipart upload of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub shard: u32,
    pub started: DateTime<Utc>,
}

/// The journal of one shard's uploads, kept in its run's state.
#[derive(Debug, Clone)]
pub struct ShardUploads {
    /// A client without a journal of its own: records are single PUTs.
    storage: Storage,
    layout: RunLayout,
    shard: u32,
}

impl ShardUploads {
    pub fn new(storage: Storage, layout: RunLayout, shard: u32) -> ShardUploads {
        ShardUploads {
            storage,
            layout,
            shard,
        }
    }
}

/// The storage error underneath a failed write of a record.
fn storage_error(error: StateError) -> StorageError {
    match error {
        StateError::Read { source, .. } | StateError::Write { source, .. } => *source,
        other => StorageError::BadResponse {
            uri: S3Uri::new("", ""),
            detail: other.to_string(),
        },
    }
}

#[async_trait::async_trait]
impl UploadJournal for ShardUploads {
    async fn started(&self, uri: &S3Uri, upload_id: &str) -> Result<(), StorageError> {
        let record = UploadRecord {
            bucket: uri.bucket.clone(),
            key: uri.key.clone(),
            upload_id: upload_id.to_string(),
            shard: self.shard,
            started: Utc::now(),
        };
        let at = self.layout.upload_record(self.shard, uri, upload_id);
        write_json(&self.storage, &at, &record)
            .await
            .map_err(storage_error)
    }

    async fn ended(&self, uri: &S3Uri, upload_id: &str) -> Result<(), StorageError> {
        self.storage
            .delete(&self.layout.upload_record(self.shard, uri, upload_id))
            .await
    }
}

/// Why the recorded uploads of a run could not all be aborted.
#[derive(Debug, thiserror::Error)]
pub enum CleanUpError {
    #[error("listing the open uploads recorded under {uri}")]
    List {
        uri: S3Uri,
        #[source]
        source: StorageError,
    },
    #[error(transparent)]
    Read(#[from] StateError),
    #[error("aborting the upload {upload_id} of s3://{bucket}/{key} recorded in {record}")]
    Abort {
        bucket: String,
        key: String,
        upload_id: String,
        record: S3Uri,
        #[source]
        source: StorageError,
    },
    #[error("removing the record {record} of an aborted upload")]
    Forget {
        record: S3Uri,
        #[source]
        source: StorageError,
    },
}

impl CleanUpError {
    /// 1 when a retry may help (it usually does), else the store's own code.
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            CleanUpError::List { source, .. }
            | CleanUpError::Abort { source, .. }
            | CleanUpError::Forget { source, .. } => source.exit_code(),
            CleanUpError::Read(e) => e.exit_code(),
        }
    }
}

/// Aborts every upload recorded for one shard (or, with `None`, for the whole run) and
/// removes the records; returns the uploads aborted (one completed since counts too: its
/// abort finds it gone). Only call it when nothing of the run, or of that shard, is
/// writing: an upload recorded here may be one a live worker still uses.
pub async fn abort_recorded(
    storage: &Storage,
    layout: &RunLayout,
    shard: Option<u32>,
) -> Result<usize, CleanUpError> {
    let prefix = layout.uploads(shard);
    let records = storage
        .list(&prefix)
        .await
        .map_err(|source| CleanUpError::List {
            uri: prefix.clone(),
            source,
        })?;
    let bucket = &prefix.bucket;
    let results: Vec<Result<bool, CleanUpError>> = futures::stream::iter(records)
        .map(|object| async move {
            let at = S3Uri::new(bucket.clone(), object.key);
            // A record cut short cannot exist (a PUT is atomic); an unreadable one is
            // someone else's object and stays.
            let Some(record) = read_json_lenient::<UploadRecord>(storage, &at).await? else {
                tracing::warn!(record = %at, "not an upload record; left alone");
                return Ok(false);
            };
            tracing::info!(
                uri = %S3Uri::new(record.bucket.clone(), record.key.clone()),
                upload_id = %record.upload_id,
                shard = record.shard,
                "aborting an upload the run left open"
            );
            storage
                .abort_upload(&record.bucket, &record.key, &record.upload_id)
                .await
                .map_err(|source| CleanUpError::Abort {
                    bucket: record.bucket.clone(),
                    key: record.key.clone(),
                    upload_id: record.upload_id.clone(),
                    record: at.clone(),
                    source,
                })?;
            storage
                .delete(&at)
                .await
                .map_err(|source| CleanUpError::Forget { record: at, source })?;
            Ok(true)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut aborted = 0;
    for result in results {
        aborted += usize::from(result?);
    }
    Ok(aborted)
}
