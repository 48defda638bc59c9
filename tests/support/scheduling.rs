//! Helpers for schedule tests: times, a scheduler running fires on this machine against a
//! test server, and a schedule's history.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sluice::schedule::daemon::Scheduler;
use sluice::schedule::fire::Executor;
use sluice::schedule::metrics::Metrics;
use sluice::spec::schedule::load_schedule_file;
use sluice::state::history::{History, HistoryRecord};
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::TestServer;

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Runs through the local pod runner, with the `sluice` binary, against `server`.
pub fn local(server: &TestServer) -> Executor {
    Executor::Local {
        program: PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
        env: server.env(),
    }
}

/// A scheduler of the one schedule file, running locally against `server`.
pub fn scheduler(server: &TestServer, storage: &Storage, schedule: &Path) -> Scheduler {
    scheduler_counting(server, storage, schedule, Arc::new(Metrics::default()))
}

/// [`scheduler`], counting into `metrics`.
pub fn scheduler_counting(
    server: &TestServer,
    storage: &Storage,
    schedule: &Path,
    metrics: Arc<Metrics>,
) -> Scheduler {
    Scheduler::new(
        vec![load_schedule_file(schedule).unwrap()],
        storage.clone(),
        local(server),
        metrics,
    )
}

/// Every history record of `schedule` under the state prefix `state` (`s3://...`).
pub async fn history(storage: &Storage, state: &str, schedule: &str) -> Vec<HistoryRecord> {
    let state: S3Uri = state.parse().unwrap();
    History::new(storage.clone(), &state, schedule)
        .all()
        .await
        .unwrap()
}
