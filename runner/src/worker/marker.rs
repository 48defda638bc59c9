//! What a worker records in the bucket: a done marker per source object, progress per shard.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    pub checks: Vec<crate::validate::outcome::RuleOutcome>,
    pub steps: Vec<StepCounts>,
    pub seconds: f64,
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
    pub updated: Option<DateTime<Utc>>,
}

/// Why one source object failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectFailure {
    pub key: String,
    pub exit_code: i32,
    pub error: String,
    /// The rules' outcomes when the object failed validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::validate::outcome::RuleOutcome>,
}

/// This process's peak resident set size in bytes (0 where /proc is not available).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
