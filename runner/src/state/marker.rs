//! done/<shard>/<attempt>-<n>.json: the done markers of source objects, with what each
//! stored and counted, written by a shard's worker in batches; their one reader and writer.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::state::checks::RuleOutcome;
use crate::state::phases::PhaseTimes;
use crate::state::{RunLayout, StateError, read_json_lenient, write_json};
use crate::storage::Storage;
use crate::storage::uri::S3Uri;

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

/// What a worker writes in one PUT: the markers of every object that finished while the
/// previous batch was being written (a group commit), at least one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerBatch {
    pub markers: Vec<DoneMarker>,
}

impl DoneMarker {
    /// The task key the marker is for (see `PlannedObject::task_key`).
    pub fn task_key(&self) -> String {
        crate::plan::task_key(&self.key, self.range.as_ref())
    }
}

/// Writes a batch of done markers of shard `shard` under the name `name` (unique to the
/// attempt and the batch): the last act of finishing each of its objects.
pub async fn write_batch(
    storage: &Storage,
    layout: &RunLayout,
    shard: u32,
    name: &str,
    batch: &MarkerBatch,
) -> Result<(), StateError> {
    write_json(storage, &layout.done_batch(shard, name), batch).await
}

/// Batches read at the same time.
const BATCHES_IN_FLIGHT: usize = 32;

/// Every done marker under `prefix` (the run's, or one shard's), by task key. When a task
/// has more than one (an attempt redid it), the one that finished last counts. A batch that
/// does not parse counts as none: its objects are done again.
pub async fn read_marker_map(
    storage: &Storage,
    prefix: &S3Uri,
) -> Result<HashMap<String, DoneMarker>, StateError> {
    let listed = storage
        .list(prefix)
        .await
        .map_err(|source| StateError::Read {
            uri: prefix.clone(),
            source: Box::new(source),
        })?;
    let batches: Vec<Option<MarkerBatch>> = futures::stream::iter(listed)
        .map(|object| async move {
            let uri = S3Uri::new(prefix.bucket.clone(), object.key);
            read_json_lenient::<MarkerBatch>(storage, &uri).await
        })
        .buffer_unordered(BATCHES_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut markers: HashMap<String, DoneMarker> = HashMap::new();
    for marker in batches.into_iter().flatten().flat_map(|b| b.markers) {
        match markers.entry(marker.task_key()) {
            Entry::Occupied(mut seen) => {
                if marker.finished > seen.get().finished {
                    seen.insert(marker);
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(marker);
            }
        }
    }
    Ok(markers)
}

/// The done marker of each task key (`None` where there is none), in the keys' order.
pub async fn read_markers(
    storage: &Storage,
    layout: &RunLayout,
    keys: Vec<String>,
) -> Result<Vec<(String, Option<DoneMarker>)>, StateError> {
    let mut markers = read_marker_map(storage, &layout.done_prefix()).await?;
    Ok(keys
        .into_iter()
        .map(|key| {
            let marker = markers.remove(&key);
            (key, marker)
        })
        .collect())
}
