//! `sluice gc`: abort multipart uploads that were left open under a job's sink and state
//! prefixes (a worker killed between starting and completing or aborting an upload). S3
//! bills the stored parts until then; a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) is the second net.

use chrono::{DateTime, Utc};

use crate::storage::uri::S3Uri;
use crate::storage::{OpenUpload, Storage, StorageError};

/// What a clean-up found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Uploads older than the cut-off: aborted (or, on a dry run, to abort).
    pub stale: Vec<(S3Uri, OpenUpload)>,
    /// Uploads younger than the cut-off, left alone (a run may be writing them).
    pub young: usize,
    /// Uploads whose start the server does not tell, left alone.
    pub unknown_age: usize,
}

/// Aborts the uploads under `prefixes` that started before `cutoff`.
pub async fn abort_stale_uploads(
    storage: &Storage,
    prefixes: &[S3Uri],
    cutoff: DateTime<Utc>,
    dry_run: bool,
) -> Result<GcReport, StorageError> {
    let mut report = GcReport::default();
    let mut seen = std::collections::BTreeSet::new();
    for prefix in prefixes {
        for upload in storage.open_uploads(prefix).await? {
            if !seen.insert((prefix.bucket.clone(), upload.upload_id.clone())) {
                continue;
            }
            match upload.initiated {
                Some(started) if started < cutoff => {
                    let uri = S3Uri::new(prefix.bucket.clone(), upload.key.clone());
                    if !dry_run {
                        storage
                            .abort_upload(&prefix.bucket, &upload.key, &upload.upload_id)
                            .await?;
                    }
                    report.stale.push((uri, upload));
                }
                Some(_) => report.young += 1,
                None => report.unknown_age += 1,
            }
        }
    }
    Ok(report)
}
