//! `sluice backfill`: the runs of the past intervals in a range, oldest first, under the
//! schedule's concurrency policy; published intervals (succeeded task runs) are skipped,
//! unfinished job runs resumed.

use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::schedule::daemon::execute_and_record;
use crate::schedule::fire::{self, Executor};
use crate::spec::schedule::{ConcurrencyPolicy, Schedule};
use crate::state::history::{FireStatus, HistoryRecord, Trigger};
use crate::storage::Storage;

/// What happened to one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRun {
    pub run_id: String,
    pub scheduled: DateTime<Utc>,
    /// The run's exit code (a task's own); `None` when the interval was published (a task
    /// run: succeeded) already and skipped.
    pub exit: Option<i32>,
}

/// The fires whose whole interval lies in [`from`, `to`], oldest first.
pub fn fires_in(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let tz = schedule.time_zone;
    schedule
        .cron
        .fires_between(from, to, tz, 100_000)
        .into_iter()
        .filter(|t| schedule.cron.interval_of(*t, tz).0 >= from)
        .collect()
}

/// Runs the intervals in [`from`, `to`]; `max_parallel` bounds `Allow` (the other policies
/// run one at a time).
pub async fn backfill(
    schedule: &Schedule,
    storage: &Storage,
    executor: &Executor,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max_parallel: usize,
) -> anyhow::Result<Vec<BackfillRun>> {
    let parallel = match schedule.concurrency {
        ConcurrencyPolicy::Allow => max_parallel.max(1),
        ConcurrencyPolicy::Forbid | ConcurrencyPolicy::Replace => 1,
    };
    let fires = fires_in(schedule, from, to);
    let mut prepared = Vec::with_capacity(fires.len());
    for time in fires {
        prepared.push(fire::prepare(schedule, time)?);
    }
    let runs = futures::stream::iter(prepared.into_iter().map(|fire| async move {
        if fire::published(storage, &fire).await? {
            tracing::info!(run = %fire.run_id, "published already; skipped");
            return Ok::<_, anyhow::Error>(BackfillRun {
                run_id: fire.run_id,
                scheduled: fire.time,
                exit: None,
            });
        }
        let resume = fire::resumable(storage, &fire).await?;
        let history = fire.history(storage);
        let mut record = HistoryRecord {
            schedule: schedule.name.clone(),
            run_id: fire.run_id.clone(),
            scheduled_time: fire.time,
            interval_start: fire.interval.0,
            interval_end: fire.interval.1,
            params: fire.params.clone(),
            trigger: Trigger::Backfill,
            status: FireStatus::Started,
            started_at: Utc::now(),
            finished_at: None,
            exit_code: None,
            lag_seconds: (Utc::now() - fire.time).num_seconds().max(0) as f64,
        };
        history.write(&record).await?;
        tracing::info!(run = %fire.run_id, resume, "backfilling");
        let exit = execute_and_record(executor, storage, &fire, resume, &mut record).await;
        Ok(BackfillRun {
            run_id: fire.run_id,
            scheduled: fire.time,
            exit: Some(exit),
        })
    }))
    .buffered(parallel)
    .collect::<Vec<_>>()
    .await;
    runs.into_iter().collect()
}
