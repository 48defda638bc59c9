//! _SUCCESS.json: the publish manifest, written last and only when every check passed;
//! consumers read it, never a prefix listing. Its one reader and writer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::marker::{OutputObject, RecordCounts};
use crate::state::{RunLayout, StateError, exists, read_json, write_json};
use crate::storage::Storage;

/// The publish manifest. Consumers read this, never a prefix listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuccessManifest {
    pub job: String,
    pub run_id: String,
    pub published: DateTime<Utc>,
    pub records: RecordCounts,
    pub outputs: Vec<PublishedOutput>,
    pub rejects: Vec<PublishedOutput>,
    /// The table version the run committed, for a Delta table sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableVersion>,
}

/// The version of a table a run committed its outputs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableVersion {
    /// `delta`.
    pub format: String,
    /// The table's location, `s3://bucket/prefix/`.
    pub uri: String,
    pub version: u64,
    /// Data files the version added.
    pub files: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedOutput {
    /// The source object it came from.
    pub source: String,
    #[serde(flatten)]
    pub object: OutputObject,
}

/// The run's manifest, `None` while the run is not published.
pub async fn read_manifest(
    storage: &Storage,
    layout: &RunLayout,
) -> Result<Option<SuccessManifest>, StateError> {
    read_json(storage, &layout.success(), "manifest").await
}

/// Whether the run is published (its manifest exists).
pub async fn is_published(storage: &Storage, layout: &RunLayout) -> Result<bool, StateError> {
    exists(storage, layout.success()).await
}

/// Publishes the run: the last write of a successful run.
pub async fn write_manifest(
    storage: &Storage,
    layout: &RunLayout,
    manifest: &SuccessManifest,
) -> Result<(), StateError> {
    write_json(storage, &layout.success(), manifest).await
}
