//! done/<hash>.json: a worker's done marker per source object, with what it stored and
//! counted; its one reader and writer.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::state::checks::RuleOutcome;
use crate::state::phases::PhaseTimes;
use crate::state::{RunLayout, StateError, read_json_lenient, write_json};
use crate::storage::Storage;

/// Written after every output of a source object is stored and verified. Its presence with
/// a matching ETag means the object is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneMarker {
    pub key: String,
    pub etag: String,
    /// The range of a split object this marker covers; `None`: the whole object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<crate::plan::split::PlannedRange>,
    /// The fingerprint of the job that made the outputs (see `spec::fingerprint`): an
    /// object is skipped only when both its ETag and this match.
    #[serde(default)]
    pub fingerprint: String,
    pub size: u64,
    pub outputs: Vec<OutputObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<OutputObject>,
    pub records: RecordCounts,
    /// Every rule's outcome on this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<RuleOutcome>,
    pub steps: Vec<StepCounts>,
    pub seconds: f64,
    /// Where the object's time went (see `state::phases`).
    #[serde(default)]
    pub phases: PhaseTimes,
    pub finished: DateTime<Utc>,
}

/// One stored object with what was verified about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputObject {
    /// `s3://bucket/key`.
    pub uri: String,
    pub size: u64,
    pub rows: u64,
    /// CRC32C of the whole object, hex.
    pub crc32c: String,
}

/// Per-object record accounting: `input = output + rejected + skipped + filtered`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCounts {
    pub input: u64,
    pub output: u64,
    /// Bad records written to the rejects object.
    pub rejected: u64,
    /// Bad records dropped (`on_bad_record: skip`).
    pub skipped: u64,
    /// Records dropped on purpose by steps that declare `filters: true`.
    pub filtered: u64,
}

impl RecordCounts {
    pub fn balanced(&self) -> bool {
        self.input == self.output + self.rejected + self.skipped + self.filtered
    }

    pub fn add(&mut self, other: &RecordCounts) {
        self.input += other.input;
        self.output += other.output;
        self.rejected += other.rejected;
        self.skipped += other.skipped;
        self.filtered += other.filtered;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCounts {
    pub name: String,
    pub input: u64,
    pub output: u64,
}

/// The done marker of `source_key` (a task key), if one exists and parses; a marker that
/// does not parse is as good as none: the object is done again.
pub async fn read_marker(
    storage: &Storage,
    layout: &RunLayout,
    source_key: &str,
) -> Result<Option<DoneMarker>, StateError> {
    read_json_lenient(storage, &layout.done_marker(source_key)).await
}

/// Markers read at the same time.
const MARKERS_IN_FLIGHT: usize = 32;

/// The done marker of each task key (`None` where there is none, or it does not parse), in
/// the keys' order.
pub async fn read_markers(
    storage: &Storage,
    layout: &RunLayout,
    keys: Vec<String>,
) -> Result<Vec<(String, Option<DoneMarker>)>, StateError> {
    futures::stream::iter(keys)
        .map(|key| async move {
            let marker = read_marker(storage, layout, &key).await;
            marker.map(|m| (key, m))
        })
        .buffered(MARKERS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Writes the done marker of `source_key`; the last act of finishing an object.
pub async fn write_marker(
    storage: &Storage,
    layout: &RunLayout,
    source_key: &str,
    marker: &DoneMarker,
) -> Result<(), StateError> {
    write_json(storage, &layout.done_marker(source_key), marker).await
}
