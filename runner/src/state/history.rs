//! A schedule's run history in the bucket, so a restarted scheduler knows what ran:
//! `<state>/schedules/<schedule>/history/<run-id>.json`, under the target job's state prefix.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::uri::S3Uri;
use crate::storage::{Storage, StorageError};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FireStatus {
    Started,
    Succeeded,
    Failed,
    /// Stopped by the `Replace` policy or by shutting the scheduler down.
    Replaced,
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// On time (or within the scheduler's tick).
    Schedule,
    /// A missed interval, run after the scheduler was down.
    CatchUp,
    /// `sluice backfill`.
    Backfill,
}

/// One fire of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub schedule: String,
    pub run_id: String,
    pub scheduled_time: DateTime<Utc>,
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    pub params: BTreeMap<String, String>,
    pub trigger: Trigger,
    pub status: FireStatus,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Seconds between the scheduled time and the start.
    pub lag_seconds: f64,
}

/// The history of one schedule.
#[derive(Debug, Clone)]
pub struct History {
    storage: Storage,
    prefix: S3Uri,
}

impl History {
    pub fn new(storage: Storage, state: &S3Uri, schedule: &str) -> History {
        History {
            storage,
            prefix: history_prefix(state, schedule),
        }
    }

    pub fn prefix(&self) -> &S3Uri {
        &self.prefix
    }

    pub async fn write(&self, record: &HistoryRecord) -> Result<(), StorageError> {
        let body = serde_json::to_vec_pretty(record).expect("history records serialize");
        self.storage
            .put_bytes(
                &self.prefix.join(&format!("{}.json", record.run_id)),
                Bytes::from(body),
            )
            .await
    }

    pub async fn get(&self, run_id: &str) -> Result<Option<HistoryRecord>, StorageError> {
        let uri = self.prefix.join(&format!("{run_id}.json"));
        Ok(self
            .storage
            .get_bytes(&uri)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Every record, oldest scheduled time first.
    pub async fn all(&self) -> Result<Vec<HistoryRecord>, StorageError> {
        let mut out = Vec::new();
        for object in self.storage.list(&self.prefix).await? {
            let uri = S3Uri::new(self.prefix.bucket.clone(), object.key);
            if let Some(bytes) = self.storage.get_bytes(&uri).await?
                && let Ok(record) = serde_json::from_slice::<HistoryRecord>(&bytes)
            {
                out.push(record);
            }
        }
        out.sort_by_key(|r| r.scheduled_time);
        Ok(out)
    }

    /// The newest scheduled time that was fired.
    pub async fn last_fire(&self) -> Result<Option<DateTime<Utc>>, StorageError> {
        // Run ids end in the UTC time, so the last key is the newest fire.
        let objects = self.storage.list(&self.prefix).await?;
        let Some(last) = objects.iter().map(|o| &o.key).max() else {
            return Ok(None);
        };
        let uri = S3Uri::new(self.prefix.bucket.clone(), last.clone());
        Ok(self
            .storage
            .get_bytes(&uri)
            .await?
            .and_then(|b| serde_json::from_slice::<HistoryRecord>(&b).ok())
            .map(|r| r.scheduled_time))
    }
}

/// `<state>/schedules/<schedule>/history/`.
pub fn history_prefix(state: &S3Uri, schedule: &str) -> S3Uri {
    state.join(&format!("schedules/{schedule}/history/"))
}
