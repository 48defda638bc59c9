//! The ledger of an incremental job: which (key, ETag) pairs its published runs consumed.
//!
//! ```text
//! <state>/ledger/<job>/runs/<run-id>.jsonl   one per published run: {"key":..,"etag":..} a line
//! <state>/ledger/<job>/snapshot.jsonl        compacted: a first line {"runs":[..]} naming the
//!                                            run ledgers merged into it, then {"key","etag"}
//!                                            lines sorted by key (the latest ETag per key)
//! ```
//!
//! A run's ledger is written only after its `_SUCCESS.json`. A crash between the two leaves
//! a published run without a ledger: the next incremental plan finds it (a published run of
//! the job that no ledger names) and writes its ledger from its plan before reading the
//! ledger. Every ledger object is read as a stream of lines and checked against the
//! listing, so memory grows with the listing, not with the ledger. Past
//! [`COMPACT_AFTER`] run ledgers, the run that publishes merges them into a new snapshot
//! (written before the merged run ledgers are deleted; a reader skips run ledgers that the
//! snapshot names, so a crash in between double-counts nothing).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio_util::io::StreamReader;

use crate::exit::ExitCode;
use crate::plan::Plan;
use crate::state::RunLayout;
use crate::storage::uri::S3Uri;
use crate::storage::{ObjectInfo, Storage, StorageError, UploadOptions};

/// Run ledgers kept before they are merged into the snapshot.
pub const COMPACT_AFTER: usize = 16;

/// One consumed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub key: String,
    pub etag: String,
}

/// The first line of a snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotHeader {
    runs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("reading {uri}")]
    Read {
        uri: S3Uri,
        #[source]
        source: std::io::Error,
    },
    #[error("{uri} line {line}: not a ledger entry")]
    Malformed {
        uri: S3Uri,
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl LedgerError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            LedgerError::Storage(e) => e.exit_code(),
            LedgerError::Read { .. } => ExitCode::Transient,
            // A ledger or plan that does not parse will not parse on a retry either.
            LedgerError::Malformed { .. } => ExitCode::Config,
            LedgerError::State(e) => e.exit_code(),
        }
    }
}

/// Where one job's ledger lives.
#[derive(Debug, Clone)]
pub struct Ledger {
    root: S3Uri,
    state: S3Uri,
    job: String,
}

impl Ledger {
    pub fn new(state: &S3Uri, job: &str) -> Ledger {
        Ledger {
            root: state.join(&format!("ledger/{job}/")),
            state: state.clone(),
            job: job.to_string(),
        }
    }

    pub fn run(&self, run_id: &str) -> S3Uri {
        self.root.join(&format!("runs/{run_id}.jsonl"))
    }

    pub fn runs_prefix(&self) -> S3Uri {
        self.root.join("runs/")
    }

    pub fn snapshot(&self) -> S3Uri {
        self.root.join("snapshot.jsonl")
    }

    /// Records what a published run consumed (every distinct key of its plan with the
    /// ETag it was read at), then compacts if the run ledgers pile up.
    pub async fn record(&self, storage: &Storage, plan: &Plan) -> Result<(), LedgerError> {
        let mut seen = BTreeSet::new();
        let mut body = Vec::new();
        for object in plan.shards.iter().flat_map(|s| &s.objects) {
            if seen.insert(object.key.as_str()) {
                write_entry(&mut body, &object.key, &object.etag);
            }
        }
        storage
            .put_bytes(&self.run(&plan.run_id), body.into())
            .await?;
        tracing::info!(run = %plan.run_id, keys = seen.len(), "ledger updated");
        let (merged, runs) = self.index(storage).await?;
        let pending: Vec<&String> = runs.iter().filter(|r| !merged.contains(*r)).collect();
        if pending.len() > COMPACT_AFTER {
            self.compact(storage).await?;
        }
        Ok(())
    }

    /// The run ids merged into the snapshot, and those with a run ledger.
    async fn index(
        &self,
        storage: &Storage,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), LedgerError> {
        let merged = self
            .snapshot_header(storage)
            .await?
            .runs
            .into_iter()
            .collect();
        let runs = storage
            .list(&self.runs_prefix())
            .await?
            .into_iter()
            .filter_map(|o| {
                o.key
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.strip_suffix(".jsonl"))
                    .map(str::to_string)
            })
            .collect();
        Ok((merged, runs))
    }

    async fn snapshot_header(&self, storage: &Storage) -> Result<SnapshotHeader, LedgerError> {
        let uri = self.snapshot();
        if storage.head(&uri).await?.is_none() {
            return Ok(SnapshotHeader::default());
        }
        let mut lines = open_lines(storage, &uri).await?;
        match lines.next_line().await {
            Ok(Some(line)) => {
                serde_json::from_str(&line).map_err(|source| LedgerError::Malformed {
                    uri,
                    line: 1,
                    source,
                })
            }
            Ok(None) => Ok(SnapshotHeader::default()),
            Err(source) => Err(LedgerError::Read { uri, source }),
        }
    }

    /// Writes the ledger of every published run of the job that has none (a crash after
    /// its `_SUCCESS.json`). Returns the runs repaired.
    pub async fn repair(&self, storage: &Storage) -> Result<Vec<String>, LedgerError> {
        let (merged, runs) = self.index(storage).await?;
        let runs_root = RunLayout::runs_of(&self.state, &self.job);
        let mut repaired = Vec::new();
        for dir in storage.list_dirs(&runs_root).await? {
            let run_id = dir.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            if run_id.is_empty() || merged.contains(run_id) || runs.contains(run_id) {
                continue;
            }
            let layout = RunLayout::new(&self.state, &self.job, run_id);
            if !crate::state::manifest::is_published(storage, &layout).await? {
                continue;
            }
            let Some(plan) = crate::state::plan::read_plan(storage, &layout).await? else {
                continue;
            };
            tracing::warn!(run = run_id, "a published run had no ledger; writing it");
            self.record(storage, &plan).await?;
            repaired.push(run_id.to_string());
        }
        Ok(repaired)
    }

    /// Keeps the objects of `listing` that no published run consumed with their current
    /// ETag, reading the snapshot and the run ledgers line by line.
    pub async fn unconsumed(
        &self,
        storage: &Storage,
        listing: Vec<ObjectInfo>,
    ) -> Result<Vec<ObjectInfo>, LedgerError> {
        let mut pending: HashMap<String, ObjectInfo> =
            listing.into_iter().map(|o| (o.key.clone(), o)).collect();
        let (merged, runs) = self.index(storage).await?;
        let mut sources = Vec::new();
        if !merged.is_empty() || storage.head(&self.snapshot()).await?.is_some() {
            sources.push((self.snapshot(), true));
        }
        sources.extend(
            runs.iter()
                .filter(|r| !merged.contains(*r))
                .map(|r| (self.run(r), false)),
        );
        for (uri, has_header) in sources {
            self.each_entry(storage, &uri, has_header, |entry| {
                if pending
                    .get(&entry.key)
                    .is_some_and(|o| o.etag == entry.etag)
                {
                    pending.remove(&entry.key);
                }
            })
            .await?;
        }
        let mut left: Vec<ObjectInfo> = pending.into_values().collect();
        left.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(left)
    }

    async fn each_entry(
        &self,
        storage: &Storage,
        uri: &S3Uri,
        has_header: bool,
        mut f: impl FnMut(LedgerEntry),
    ) -> Result<(), LedgerError> {
        let mut lines = open_lines(storage, uri).await?;
        let mut number = 0u64;
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(()),
                Err(source) => {
                    return Err(LedgerError::Read {
                        uri: uri.clone(),
                        source,
                    });
                }
            };
            number += 1;
            if (has_header && number == 1) || line.trim().is_empty() {
                continue;
            }
            let entry = serde_json::from_str(&line).map_err(|source| LedgerError::Malformed {
                uri: uri.clone(),
                line: number,
                source,
            })?;
            f(entry);
        }
    }

    /// Merges the snapshot and every run ledger into a new snapshot (the latest ETag per key,
    /// run ledgers taken in run id order), then deletes the merged run ledgers.
    pub async fn compact(&self, storage: &Storage) -> Result<(), LedgerError> {
        let (merged, runs) = self.index(storage).await?;
        let mut latest: BTreeMap<String, String> = BTreeMap::new();
        if storage.head(&self.snapshot()).await?.is_some() {
            self.each_entry(storage, &self.snapshot(), true, |e| {
                latest.insert(e.key, e.etag);
            })
            .await?;
        }
        let fresh: Vec<&String> = runs.iter().filter(|r| !merged.contains(*r)).collect();
        for run in &fresh {
            self.each_entry(storage, &self.run(run), false, |e| {
                latest.insert(e.key, e.etag);
            })
            .await?;
        }
        let header = SnapshotHeader {
            runs: merged
                .iter()
                .chain(fresh.iter().copied())
                .cloned()
                .collect(),
        };
        let mut upload = storage.upload(self.snapshot(), UploadOptions::default());
        let mut body = serde_json::to_vec(&header).expect("header serializes");
        body.push(b'\n');
        for (key, etag) in &latest {
            write_entry(&mut body, key, etag);
            if body.len() >= 4 << 20 {
                upload.write(Bytes::from(std::mem::take(&mut body))).await?;
            }
        }
        upload.write(Bytes::from(body)).await?;
        upload.finish().await?.complete().await?;
        for run in fresh {
            storage.delete(&self.run(run)).await?;
        }
        tracing::info!(keys = latest.len(), "ledger compacted");
        Ok(())
    }
}

fn write_entry(body: &mut Vec<u8>, key: &str, etag: &str) {
    serde_json::to_writer(
        &mut *body,
        &LedgerEntry {
            key: key.to_string(),
            etag: etag.to_string(),
        },
    )
    .expect("entries serialize");
    body.push(b'\n');
}

async fn open_lines(
    storage: &Storage,
    uri: &S3Uri,
) -> Result<
    tokio::io::Lines<tokio::io::BufReader<StreamReader<crate::storage::ObjectStream, Bytes>>>,
    LedgerError,
> {
    let body = storage.get(uri, None).await?;
    Ok(tokio::io::BufReader::new(StreamReader::new(body)).lines())
}
