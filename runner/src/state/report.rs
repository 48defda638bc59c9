//! report.json: the run report, written by publish for every run, failed or not; its one
//! reader and writer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::checks::CheckReport;
use crate::state::marker::RecordCounts;
use crate::state::phases::PhaseTimes;
use crate::state::progress::{AttemptSpan, ObjectFailure};
use crate::state::{RunLayout, StateError, read_json, write_json};
use crate::storage::Storage;

/// The run report: written for every run, failed or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub job: String,
    pub run_id: String,
    pub status: ReportStatus,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub seconds: f64,
    pub objects: u64,
    pub objects_done: u64,
    pub bytes: u64,
    /// Source bytes per second over the whole run.
    pub throughput: f64,
    pub records: RecordCounts,
    pub outputs: u64,
    pub output_bytes: u64,
    pub rejects: u64,
    pub shards: Vec<ShardReport>,
    pub failures: Vec<ObjectFailure>,
    /// Every validation rule's outcome, per scope (see docs/validation.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckReport>,
    /// The exit code of the run (0 when it succeeded).
    pub exit_code: i32,
    /// Where the objects' time went, summed over the run (see `state::phases`).
    #[serde(default)]
    pub phases: PhaseTimes,
    /// Source bytes and records per second across the run, from the objects' done markers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throughput_series: Vec<ThroughputPoint>,
}

/// The rates over one interval of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThroughputPoint {
    /// The interval's start, in seconds from the run's start.
    pub at: f64,
    pub seconds: f64,
    pub bytes_per_second: f64,
    pub records_per_second: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardReport {
    pub index: u32,
    pub exit_code: i32,
    pub attempts: u32,
    pub objects: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
    /// Its attempts before the last one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<AttemptSpan>,
    /// When its last attempt started and last wrote its progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    #[serde(default)]
    pub records: RecordCounts,
    /// Where the time of its last attempt went.
    #[serde(default)]
    pub phases: PhaseTimes,
}

/// The run's report, `None` before publish wrote one.
pub async fn read_report(
    storage: &Storage,
    layout: &RunLayout,
) -> Result<Option<RunReport>, StateError> {
    read_json(storage, &layout.report(), "run report").await
}

pub async fn write_report(
    storage: &Storage,
    layout: &RunLayout,
    report: &RunReport,
) -> Result<(), StateError> {
    write_json(storage, &layout.report(), report).await
}

/// Writes report.html, the report as a page, served as HTML when opened from the bucket.
pub async fn write_report_html(
    storage: &Storage,
    layout: &RunLayout,
    html: String,
) -> Result<(), StateError> {
    let uri = layout.report_html();
    storage
        .put_bytes_as(&uri, bytes::Bytes::from(html), "text/html; charset=utf-8")
        .await
        .map_err(|source| StateError::Write {
            uri,
            source: Box::new(source),
        })
}
