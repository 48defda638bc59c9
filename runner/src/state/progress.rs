//! progress/<i>.json: one shard's progress, rewritten while it runs and once at the end;
//! its one reader and writer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::checks::RuleOutcome;
use crate::state::marker::RecordCounts;
use crate::state::phases::PhaseTimes;
use crate::state::{RunLayout, StateError, read_json_lenient, write_json};
use crate::storage::Storage;

/// One shard's progress, rewritten while it runs and once at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardProgress {
    pub shard: u32,
    pub objects_total: u64,
    pub objects_done: u64,
    /// Objects skipped because a matching done marker existed (resumed work).
    pub objects_skipped: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub records: RecordCounts,
    /// Source bytes per second since the shard started.
    pub rate: f64,
    pub failures: Vec<ObjectFailure>,
    /// The worker process's peak resident memory so far (Linux VmHWM), in bytes.
    #[serde(default)]
    pub peak_rss_bytes: u64,
    pub finished: bool,
    /// When this attempt of the shard started.
    #[serde(default)]
    pub started: Option<DateTime<Utc>>,
    /// The shard's earlier attempts (pods before this one), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<AttemptSpan>,
    pub updated: Option<DateTime<Utc>>,
    /// Where the time of the objects this attempt processed went, and the time it spent
    /// writing their markers (see `state::phases`).
    #[serde(default)]
    pub phases: PhaseTimes,
}

/// When an attempt of a shard ran, as its last progress said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptSpan {
    pub started: DateTime<Utc>,
    /// When it last wrote its progress.
    pub ended: Option<DateTime<Utc>>,
    /// Whether it finished its objects (it may still have failed some).
    pub finished: bool,
}

impl ShardProgress {
    /// The attempts before the next one: the earlier ones and this one.
    pub fn attempts_so_far(&self) -> Vec<AttemptSpan> {
        let mut spans = self.earlier.clone();
        if let Some(started) = self.started {
            spans.push(AttemptSpan {
                started,
                ended: self.updated,
                finished: self.finished,
            });
        }
        spans
    }
}

/// Why one source object failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectFailure {
    pub key: String,
    pub exit_code: i32,
    pub error: String,
    /// The rules' outcomes when the object failed validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<RuleOutcome>,
}

/// Shard `shard`'s progress, if it was written and parses.
pub async fn read_progress(
    storage: &Storage,
    layout: &RunLayout,
    shard: u32,
) -> Result<Option<ShardProgress>, StateError> {
    read_json_lenient(storage, &layout.progress(shard)).await
}

pub async fn write_progress(
    storage: &Storage,
    layout: &RunLayout,
    progress: &ShardProgress,
) -> Result<(), StateError> {
    write_json(storage, &layout.progress(progress.shard), progress).await
}
