//! The layout of run state in the bucket: plan, progress, done markers, report, `_SUCCESS.json`.
//!
//! ```text
//! <state>/runs/<job>/<run-id>/job.yaml          the resolved job (params applied)
//! <state>/runs/<job>/<run-id>/plan.json         shards: object keys, sizes, ETags
//! <state>/runs/<job>/<run-id>/progress/<i>.json per shard, updated while it runs
//! <state>/runs/<job>/<run-id>/done/<i>/<attempt>-<n>.json  done markers of shard i, in
//!                                                batches: ETag, outputs, counts per object
//! <state>/runs/<job>/<run-id>/keys/<rule>/<hash>.keys  sorted key hashes for `unique` rules
//! <state>/runs/<job>/<run-id>/uploads/<i>/<hash>.json  a multipart upload shard i has open
//! <state>/runs/<job>/<run-id>/report.json       the run report
//! <state>/runs/<job>/<run-id>/report.html       the run report as a page (charts)
//! <state>/runs/<job>/<run-id>/_SUCCESS.json     written last: every output with size, rows, checksum
//! <state>/ledger/<job>/...                       incremental jobs: what published runs consumed
//! <state>/schedules/<schedule>/history/<run-id>.json  schedules: one record per fire
//! <state>/pipelines/<pipeline>/<run-id>/pipeline.json  pipelines: every step's run and outcome
//! <state>/pipelines/<pipeline>/<run-id>/_SUCCESS.json  written once every step succeeded
//! ```
//!
//! Each document has one module here that reads and writes it; nothing else spells a path
//! of the layout or parses a document.

pub mod checks;
pub mod history;
pub mod ledger;
pub mod manifest;
pub mod marker;
pub mod phases;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod report;
pub mod uploads;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::exit::ExitCode;
use crate::storage::uri::S3Uri;
use crate::storage::{Storage, StorageError};

/// Reading or writing a document of run state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {uri}")]
    Read {
        uri: S3Uri,
        #[source]
        source: Box<StorageError>,
    },
    #[error("{uri} does not exist; was the run planned?")]
    Missing { uri: S3Uri },
    #[error("{uri} is not a valid {what}")]
    Malformed {
        uri: S3Uri,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {uri}")]
    Write {
        uri: S3Uri,
        #[source]
        source: Box<StorageError>,
    },
}

impl StateError {
    /// The store's own code when it failed (1 when a retry may help); 2 for state that is
    /// missing or does not parse, which a retry finds the same.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            StateError::Read { source, .. } | StateError::Write { source, .. } => {
                source.exit_code()
            }
            StateError::Missing { .. } | StateError::Malformed { .. } => ExitCode::Config,
        }
    }
}

/// The document at `uri`, `None` when there is none; one that does not parse is an error
/// that names it as `what`.
async fn read_json<T: DeserializeOwned>(
    storage: &Storage,
    uri: &S3Uri,
    what: &'static str,
) -> Result<Option<T>, StateError> {
    let Some(bytes) = read_bytes(storage, uri).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Malformed {
            uri: uri.clone(),
            what,
            source,
        })
}

/// The document at `uri`, `None` when there is none or it does not parse (a marker or a
/// progress file cut short by a crash is as good as none).
async fn read_json_lenient<T: DeserializeOwned>(
    storage: &Storage,
    uri: &S3Uri,
) -> Result<Option<T>, StateError> {
    Ok(read_bytes(storage, uri)
        .await?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Whether the document at `uri` exists.
async fn exists(storage: &Storage, uri: S3Uri) -> Result<bool, StateError> {
    storage
        .head(&uri)
        .await
        .map(|head| head.is_some())
        .map_err(|source| StateError::Read {
            uri,
            source: Box::new(source),
        })
}

async fn read_bytes(storage: &Storage, uri: &S3Uri) -> Result<Option<bytes::Bytes>, StateError> {
    storage
        .get_bytes(uri)
        .await
        .map_err(|source| StateError::Read {
            uri: uri.clone(),
            source: Box::new(source),
        })
}

/// Writes `document` as pretty JSON, so a person can read the state with any S3 tool.
async fn write_json<T: Serialize>(
    storage: &Storage,
    uri: &S3Uri,
    document: &T,
) -> Result<(), StateError> {
    let body = serde_json::to_vec_pretty(document).expect("state documents serialize");
    storage
        .put_bytes(uri, body.into())
        .await
        .map_err(|source| StateError::Write {
            uri: uri.clone(),
            source: Box::new(source),
        })
}

/// Where one run's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    root: S3Uri,
}

impl RunLayout {
    pub fn new(state: &S3Uri, job: &str, run_id: &str) -> RunLayout {
        RunLayout {
            root: RunLayout::runs_of(state, job).join(&format!("{run_id}/")),
        }
    }

    /// The prefix under which every run of `job` keeps its state (`<state>/runs/<job>/`).
    pub fn runs_of(state: &S3Uri, job: &str) -> S3Uri {
        state.join(&format!("runs/{job}/"))
    }

    /// The layout of the run whose plan sits at `plan` (`.../runs/<job>/<run>/plan.json`).
    pub fn from_plan_uri(plan: &S3Uri) -> RunLayout {
        let dir = plan.key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        RunLayout {
            root: S3Uri::new(plan.bucket.clone(), format!("{dir}/")),
        }
    }

    /// The layout of the run whose state directory is `root` (`.../runs/<job>/<run>/`).
    pub fn from_root(root: &S3Uri) -> RunLayout {
        RunLayout {
            root: root.as_prefix(),
        }
    }

    /// The run id: the last segment of the run's directory.
    pub fn run_id(&self) -> &str {
        let dir = self.root.key.trim_end_matches('/');
        dir.rsplit('/').next().unwrap_or(dir)
    }

    pub fn root(&self) -> &S3Uri {
        &self.root
    }

    pub fn job(&self) -> S3Uri {
        self.root.join("job.yaml")
    }

    pub fn plan(&self) -> S3Uri {
        self.root.join("plan.json")
    }

    pub fn progress(&self, shard: u32) -> S3Uri {
        self.root.join(&format!("progress/{shard:05}.json"))
    }

    /// A batch of done markers of shard `shard`, `name` unique to its attempt and batch.
    pub fn done_batch(&self, shard: u32, name: &str) -> S3Uri {
        self.root.join(&format!("done/{shard:05}/{name}.json"))
    }

    /// The prefix of every done marker of the run (to list them).
    pub fn done_prefix(&self) -> S3Uri {
        self.root.join("done/")
    }

    /// The prefix of the done markers of shard `shard`.
    pub fn shard_done_prefix(&self, shard: u32) -> S3Uri {
        self.root.join(&format!("done/{shard:05}/"))
    }

    /// Where `unique` rules spill the sorted keys of each object, per rule.
    pub fn keys(&self) -> S3Uri {
        self.root.join("keys/")
    }

    /// The records of the multipart uploads a shard (or, with `None`, any shard) has open.
    pub fn uploads(&self, shard: Option<u32>) -> S3Uri {
        match shard {
            Some(shard) => self.root.join(&format!("uploads/{shard:05}/")),
            None => self.root.join("uploads/"),
        }
    }

    /// The record of one open upload of a shard, named by a hash of its key and id.
    pub fn upload_record(&self, shard: u32, uri: &S3Uri, upload_id: &str) -> S3Uri {
        self.uploads(Some(shard)).join(&format!(
            "{}.json",
            key_hash(&format!("{uri}\n{upload_id}"))
        ))
    }

    pub fn report(&self) -> S3Uri {
        self.root.join("report.json")
    }

    pub fn report_html(&self) -> S3Uri {
        self.root.join("report.html")
    }

    pub fn success(&self) -> S3Uri {
        self.root.join("_SUCCESS.json")
    }
}

/// A stable, short, path-safe name for a source key.
pub fn key_hash(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        let state: S3Uri = "s3://out/_sluice/".parse().unwrap();
        let run = RunLayout::new(&state, "taxi", "taxi-20261122T020000Z");
        assert_eq!(
            run.plan().to_string(),
            "s3://out/_sluice/runs/taxi/taxi-20261122T020000Z/plan.json"
        );
        assert_eq!(RunLayout::from_plan_uri(&run.plan()), run);
        assert_eq!(RunLayout::from_root(run.root()), run);
        assert_eq!(run.run_id(), "taxi-20261122T020000Z");
        assert_eq!(
            run.progress(3).key,
            "_sluice/runs/taxi/taxi-20261122T020000Z/progress/00003.json"
        );
        let batch = run.done_batch(3, "20261122T020000123Z-000007");
        assert_eq!(
            batch.key,
            "_sluice/runs/taxi/taxi-20261122T020000Z/done/00003/20261122T020000123Z-000007.json"
        );
        assert!(batch.key.starts_with(&run.shard_done_prefix(3).key));
        assert!(batch.key.starts_with(&run.done_prefix().key));
    }
}
