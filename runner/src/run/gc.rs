//! `sluice gc`: abort multipart uploads that were left open under a job's sink and state
//! prefixes (a worker killed between starting and completing or aborting an upload). S3
//! bills the stored parts until then; a bucket lifecycle rule
//! (`AbortIncompleteMultipartUpload`) is the second net. It also removes the state of runs
//! that were abandoned: never published and untouched for the state retention.

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

/// A run whose state is removed: never published and untouched for the retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedRun {
    pub run_id: String,
    /// `<state>/runs/<job>/<run-id>/`.
    pub root: S3Uri,
    pub objects: usize,
    pub bytes: u64,
    pub last_written: DateTime<Utc>,
}

/// What the state clean-up found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateGcReport {
    /// Removed (or, on a dry run, to remove).
    pub abandoned: Vec<AbandonedRun>,
    pub published: usize,
    /// Unpublished runs written to after the cut-off: in progress, or failed and recent
    /// enough to resume. Left alone.
    pub recent: usize,
}

/// Removes the state of the job's runs that were never published (no `_SUCCESS.json`) and
/// whose newest state object is older than `cutoff`. A running shard rewrites its
/// progress every few seconds, so a run in progress is always recent.
pub async fn remove_abandoned_runs(
    storage: &Storage,
    state: &S3Uri,
    job: &str,
    cutoff: DateTime<Utc>,
    dry_run: bool,
) -> Result<StateGcReport, StorageError> {
    let mut report = StateGcReport::default();
    let runs = crate::state::RunLayout::runs_of(state, job);
    for dir in storage.list_dirs(&runs).await? {
        let root = S3Uri::new(state.bucket.clone(), dir.clone());
        let objects = storage.list(&root).await?;
        if objects.iter().any(|o| o.key.ends_with("/_SUCCESS.json")) {
            report.published += 1;
            continue;
        }
        // A run whose age the server does not tell is left alone.
        let newest = objects
            .iter()
            .map(|o| o.last_modified)
            .try_fold(DateTime::<Utc>::MIN_UTC, |newest, t| {
                t.map(|t| newest.max(t))
            });
        let Some(last_written) = newest.filter(|t| *t < cutoff && !objects.is_empty()) else {
            report.recent += 1;
            continue;
        };
        if !dry_run {
            for object in &objects {
                storage
                    .delete(&S3Uri::new(state.bucket.clone(), object.key.clone()))
                    .await?;
            }
        }
        let run_id = dir
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        report.abandoned.push(AbandonedRun {
            run_id,
            root,
            objects: objects.len(),
            bytes: objects.iter().map(|o| o.size).sum(),
            last_written,
        });
    }
    Ok(report)
}
