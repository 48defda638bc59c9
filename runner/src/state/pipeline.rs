//! A pipeline run's record in the bucket, beside the runs of its jobs:
//!
//! ```text
//! <state>/pipelines/<pipeline>/<run-id>/pipeline.json   every step: run id, status, results
//! <state>/pipelines/<pipeline>/<run-id>/_SUCCESS.json   written last, once every step succeeded
//! ```
//!
//! `pipeline.json` is rewritten as steps start and end; `_SUCCESS.json` is the record as it
//! stood when the last step ended, and marks the pipeline run published.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::pipeline::StepKind;
use crate::spec::pipeline::templates::StepResult;
use crate::state::{StateError, exists, read_json, write_json};
use crate::storage::Storage;
use crate::storage::uri::S3Uri;

/// Where one pipeline run's record lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineLayout {
    root: S3Uri,
}

impl PipelineLayout {
    pub fn new(state: &S3Uri, pipeline: &str, run_id: &str) -> PipelineLayout {
        PipelineLayout {
            root: PipelineLayout::runs_of(state, pipeline).join(&format!("{run_id}/")),
        }
    }

    /// The prefix of every run of a pipeline (`<state>/pipelines/<pipeline>/`).
    pub fn runs_of(state: &S3Uri, pipeline: &str) -> S3Uri {
        state.join(&format!("pipelines/{pipeline}/"))
    }

    pub fn root(&self) -> &S3Uri {
        &self.root
    }

    pub fn record(&self) -> S3Uri {
        self.root.join("pipeline.json")
    }

    pub fn success(&self) -> S3Uri {
        self.root.join("_SUCCESS.json")
    }
}

/// Where a pipeline run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineStatus {
    Running,
    Succeeded,
    Failed,
}

/// Where a step of a pipeline run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Waiting for its dependencies (or for a free slot).
    Pending,
    Running,
    /// A job step's run was published; a task step's container exited 0.
    Succeeded,
    Failed,
    /// Not run: a step it depends on failed or was skipped.
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One step of a pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub kind: StepKind,
    /// The step's own run id (a job step's run state is under it).
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    pub status: StepStatus,
    /// The params (and a task's args) the step ran with, once rendered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// A job step's run state directory (its plan, progress and report), once it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// How many times the step was started (a resumed pipeline starts a failed step again).
    #[serde(default)]
    pub attempts: u32,
    /// The exit code the step ended with: a job run's, or a task's essential container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    /// What the step gave the steps after it, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<StepResult>,
    /// Why the step failed without a run to show for it (its params did not render, its
    /// job file did not load, its run could not be carried out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A pipeline run: its params and every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRecord {
    pub pipeline: String,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    pub status: PipelineStatus,
    pub started: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<DateTime<Utc>>,
    /// The pipeline's exit code once it ended: the worst of its failed steps', 0 when every
    /// step succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub steps: Vec<StepRecord>,
}

impl PipelineRecord {
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub fn step_mut(&mut self, name: &str) -> Option<&mut StepRecord> {
        self.steps.iter_mut().find(|s| s.name == name)
    }
}

/// The record of a pipeline run, `None` before the run started.
pub async fn read_record(
    storage: &Storage,
    layout: &PipelineLayout,
) -> Result<Option<PipelineRecord>, StateError> {
    read_json(storage, &layout.record(), "pipeline record").await
}

pub async fn write_record(
    storage: &Storage,
    layout: &PipelineLayout,
    record: &PipelineRecord,
) -> Result<(), StateError> {
    write_json(storage, &layout.record(), record).await
}

/// Publishes a pipeline run whose every step succeeded: the record, then `_SUCCESS.json`.
pub async fn publish(
    storage: &Storage,
    layout: &PipelineLayout,
    record: &PipelineRecord,
) -> Result<(), StateError> {
    write_record(storage, layout, record).await?;
    write_json(storage, &layout.success(), record).await
}

/// Whether the pipeline run was published.
pub async fn is_published(storage: &Storage, layout: &PipelineLayout) -> Result<bool, StateError> {
    exists(storage, layout.success()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        let state: S3Uri = "s3://out/_sluice/".parse().unwrap();
        let run = PipelineLayout::new(&state, "daily", "daily-20261206T000000Z");
        assert_eq!(
            run.record().to_string(),
            "s3://out/_sluice/pipelines/daily/daily-20261206T000000Z/pipeline.json"
        );
        assert_eq!(
            run.success().key,
            "_sluice/pipelines/daily/daily-20261206T000000Z/_SUCCESS.json"
        );
    }
}
