//! The scheduler: on every tick, each schedule's due fires (catch-up included) are started
//! under its concurrency policy; runs are recorded in the history as they start and end.
//! Time comes from a `Clock`, so tests can move it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::schedule::catchup::{Due, due_at};
use crate::schedule::fire::{self, Executor, PreparedFire};
use crate::schedule::leader::LeaseLock;
use crate::schedule::metrics::{Fire, Metrics};
use crate::spec::schedule::{ConcurrencyPolicy, Schedule};
use crate::state::history::{FireStatus, History, HistoryRecord};
use crate::state::report::read_report;
use crate::storage::Storage;

/// Where the scheduler gets the time from.
#[async_trait::async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Returns at `t` (or at once when `t` has passed).
    async fn sleep_until(&self, t: DateTime<Utc>);
}

/// The wall clock.
pub struct SystemClock;

#[async_trait::async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep_until(&self, t: DateTime<Utc>) {
        if let Ok(wait) = (t - Utc::now()).to_std() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A run the scheduler started and has not seen end; its task returns the exit code.
struct ActiveRun {
    fire: PreparedFire,
    record: HistoryRecord,
    task: JoinHandle<i32>,
}

/// A run that `run_once` started, and how it ended (`None`: stopped by `Replace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredRun {
    pub run_id: String,
    pub exit: Option<i32>,
}

/// What one tick did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickOutcome {
    /// Run ids started, in order.
    pub started: Vec<String>,
    /// Run ids whose fire had been started before (a duplicate trigger: nothing done).
    pub already_started: Vec<String>,
    /// Fires that wait for a running run (`Forbid`).
    pub waiting: usize,
    /// Runs another scheduler started and never recorded the end of, taken over to watch
    /// them to their end (on becoming the leader).
    pub adopted: Vec<String>,
}

pub struct Scheduler {
    schedules: Vec<Arc<Schedule>>,
    storage: Storage,
    executor: Executor,
    metrics: Arc<Metrics>,
    lease: Option<LeaseLock>,
    /// Per schedule: the newest fire handled (started, skipped or dropped).
    last: HashMap<String, Option<DateTime<Utc>>>,
    active: HashMap<String, Vec<ActiveRun>>,
    /// Each run sends its id as its last act, so the daemon wakes, forgets it and looks at
    /// a waiting fire again (a finished check on the task could still see it running).
    ended_tx: mpsc::UnboundedSender<String>,
    ended_rx: mpsc::UnboundedReceiver<String>,
    /// Whether this scheduler led at its last tick: on becoming the leader it adopts the
    /// runs in flight, which only the history and the cluster know.
    leading: bool,
}

impl Scheduler {
    pub fn new(
        schedules: Vec<Schedule>,
        storage: Storage,
        executor: Executor,
        metrics: Arc<Metrics>,
    ) -> Scheduler {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Scheduler {
            schedules: schedules.into_iter().map(Arc::new).collect(),
            storage,
            executor,
            metrics,
            lease: None,
            last: HashMap::new(),
            active: HashMap::new(),
            ended_tx,
            ended_rx,
            leading: false,
        }
    }

    /// Fire only while holding this Lease.
    pub fn with_lease(mut self, lease: LeaseLock) -> Scheduler {
        self.lease = Some(lease);
        self
    }

    /// The run ids still running, per schedule.
    pub fn running(&self) -> BTreeMap<String, Vec<String>> {
        self.active
            .iter()
            .map(|(s, runs)| {
                (
                    s.clone(),
                    runs.iter().map(|r| r.fire.run_id.clone()).collect(),
                )
            })
            .filter(|(_, runs): &(String, Vec<String>)| !runs.is_empty())
            .collect()
    }

    /// Starts what is due at `now` for every schedule.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> anyhow::Result<TickOutcome> {
        self.reap().await;
        let mut outcome = TickOutcome::default();
        let leader = match &self.lease {
            Some(lease) => lease.try_acquire(now).await?,
            None => true,
        };
        if self.lease.is_some() {
            self.metrics.set_leader(leader);
        }
        if !leader {
            if self.leading {
                self.let_go();
            }
            self.leading = false;
            return Ok(outcome);
        }
        if !self.leading {
            self.leading = true;
            for schedule in self.schedules.clone() {
                if let Err(error) = self.adopt(&schedule, now, &mut outcome).await {
                    tracing::error!(schedule = %schedule.name, error = %format!("{error:#}"), "adopting the runs in flight failed");
                }
            }
        }
        for schedule in self.schedules.clone() {
            if let Err(error) = self.tick_schedule(&schedule, now, &mut outcome).await {
                tracing::error!(schedule = %schedule.name, error = %format!("{error:#}"), "schedule skipped this tick");
                self.metrics.fire(&schedule.name, Fire::Failed);
            }
        }
        Ok(outcome)
    }

    async fn tick_schedule(
        &mut self,
        schedule: &Arc<Schedule>,
        now: DateTime<Utc>,
        outcome: &mut TickOutcome,
    ) -> anyhow::Result<()> {
        let name = schedule.name.clone();
        let last = match self.last.get(&name) {
            Some(last) => *last,
            None => {
                let last = self.history_of(schedule, now)?.last_fire().await?;
                self.last.insert(name.clone(), last);
                last
            }
        };
        let plan = due_at(schedule, last, now);
        if plan.beyond_max_runs {
            tracing::warn!(schedule = %name, max_runs = schedule.max_catch_up_runs, "older missed fires are not caught up (catchUp.maxRuns); `sluice backfill` runs them");
            self.metrics.fire(&name, Fire::Missed);
        }
        for time in &plan.past_deadline {
            tracing::warn!(schedule = %name, scheduled = %time, "missed: past the starting deadline");
            self.metrics.fire(&name, Fire::Missed);
            self.last.insert(name.clone(), Some(*time));
        }
        for due in plan.due {
            let busy = self.active.get(&name).is_some_and(|r| !r.is_empty());
            if busy {
                match schedule.concurrency {
                    ConcurrencyPolicy::Allow => {}
                    ConcurrencyPolicy::Forbid => {
                        outcome.waiting += 1;
                        break;
                    }
                    ConcurrencyPolicy::Replace => self.replace_active(&name).await,
                }
            }
            self.start(schedule, due, now, outcome).await?;
            self.last.insert(name.clone(), Some(due.time));
        }
        Ok(())
    }

    /// The history of a schedule lives under its `state`, else its target job's.
    fn history_of(&self, schedule: &Schedule, now: DateTime<Utc>) -> anyhow::Result<History> {
        let time = schedule
            .cron
            .latest_at_or_before(now, schedule.time_zone)
            .unwrap_or(now);
        Ok(fire::prepare(schedule, time)?.history(&self.storage))
    }

    async fn start(
        &mut self,
        schedule: &Arc<Schedule>,
        due: Due,
        now: DateTime<Utc>,
        outcome: &mut TickOutcome,
    ) -> anyhow::Result<()> {
        let fire = fire::prepare(schedule, due.time)?;
        let history = fire.history(&self.storage);
        if fire::already_started(&self.storage, &fire).await? {
            tracing::info!(schedule = %schedule.name, run = %fire.run_id, "already started; nothing to do");
            outcome.already_started.push(fire.run_id);
            return Ok(());
        }
        let lag = (now - due.time).num_milliseconds().max(0) as f64 / 1000.0;
        let record = HistoryRecord {
            schedule: schedule.name.clone(),
            run_id: fire.run_id.clone(),
            scheduled_time: due.time,
            interval_start: fire.interval.0,
            interval_end: fire.interval.1,
            params: fire.params.clone(),
            trigger: due.trigger,
            status: FireStatus::Started,
            started_at: Utc::now(),
            finished_at: None,
            exit_code: None,
            lag_seconds: lag,
        };
        history.write(&record).await?;
        self.metrics
            .fire(&schedule.name, Fire::Started { lag_seconds: lag });
        tracing::info!(schedule = %schedule.name, run = %fire.run_id, scheduled = %due.time, trigger = ?due.trigger, lag_seconds = lag, "starting");
        outcome.started.push(fire.run_id.clone());
        self.spawn_run(&schedule.name, fire, record, false);
        Ok(())
    }

    /// Runs `fire` to its end in a task of its own, recording its end in `record`.
    fn spawn_run(
        &mut self,
        schedule: &str,
        fire: PreparedFire,
        record: HistoryRecord,
        resume: bool,
    ) {
        let task = {
            let (storage, executor, metrics, ended) = (
                self.storage.clone(),
                self.executor.clone(),
                self.metrics.clone(),
                self.ended_tx.clone(),
            );
            let (fire, mut record) = (fire.clone(), record.clone());
            let name = schedule.to_string();
            tokio::spawn(async move {
                let exit =
                    execute_and_record(&executor, &storage, &fire, resume, &mut record).await;
                metrics.fire(
                    &name,
                    if exit == 0 {
                        Fire::Succeeded {
                            finished: record.finished_at,
                        }
                    } else {
                        Fire::Failed
                    },
                );
                // A job's run adds its figures (records, bytes, phases) to its job's.
                if let Some(layout) = fire.layout()
                    && let Ok(Some(report)) = read_report(&storage, &layout).await
                {
                    metrics.run(&report);
                }
                let _ = ended.send(fire.run_id.clone());
                exit
            })
        };
        self.active
            .entry(schedule.to_string())
            .or_default()
            .push(ActiveRun { fire, record, task });
    }

    /// Takes over the runs of `schedule` that the history says started and never ended:
    /// the leader before this one started them and went away. On a cluster their Jobs run
    /// on; each is watched to its end (a run whose Jobs are gone resumes from its plan),
    /// published and recorded, and counts as running for the concurrency policy. A run
    /// that is published already is only recorded. Runs of the local executor are processes
    /// of the scheduler that started them: only a scheduler without a Lease (the one
    /// scheduler there is, started again) takes those over, by resuming them.
    async fn adopt(
        &mut self,
        schedule: &Arc<Schedule>,
        now: DateTime<Utc>,
        outcome: &mut TickOutcome,
    ) -> anyhow::Result<()> {
        if self.lease.is_some() && matches!(self.executor, Executor::Local { .. }) {
            return Ok(());
        }
        let history = self.history_of(schedule, now)?;
        for mut record in history.all().await? {
            let running = self
                .active
                .values()
                .flatten()
                .any(|r| r.fire.run_id == record.run_id);
            if record.status != FireStatus::Started || running {
                continue;
            }
            let fire = fire::prepare(schedule, record.scheduled_time)?;
            if fire::published(&self.storage, &fire).await? {
                record.status = FireStatus::Succeeded;
                record.exit_code = Some(0);
                record.finished_at = Some(Utc::now());
                fire.history(&self.storage).write(&record).await?;
                tracing::info!(schedule = %schedule.name, run = %record.run_id, "a run in flight was published meanwhile; recorded");
                continue;
            }
            let resume = fire::resumable(&self.storage, &fire).await?;
            tracing::info!(schedule = %schedule.name, run = %record.run_id, "adopting a run in flight");
            outcome.adopted.push(record.run_id.clone());
            self.spawn_run(&schedule.name, fire, record, resume);
        }
        Ok(())
    }

    /// Stops watching the runs in flight once another scheduler leads: on a cluster their
    /// Jobs run on and the new leader adopts them. Local runs are this process's own and
    /// run on to their end.
    fn let_go(&mut self) {
        if !matches!(self.executor, Executor::Cluster { .. }) {
            return;
        }
        for run in self.active.drain().flat_map(|(_, runs)| runs) {
            tracing::info!(run = %run.fire.run_id, "no longer the leader; the new leader watches this run");
            run.task.abort();
        }
    }

    /// Stops the running runs of a schedule (the `Replace` policy).
    async fn replace_active(&mut self, schedule: &str) {
        for run in self.active.remove(schedule).unwrap_or_default() {
            if run.task.is_finished() {
                continue;
            }
            run.task.abort();
            let _ = run.task.await;
            if let Err(error) = fire::stop(&self.executor, &run.fire).await {
                tracing::error!(run = %run.fire.run_id, error = %format!("{error:#}"), "stopping the replaced run");
            }
            let mut record = run.record;
            record.status = FireStatus::Replaced;
            record.finished_at = Some(Utc::now());
            let history = run.fire.history(&self.storage);
            if let Err(error) = history.write(&record).await {
                tracing::error!(run = %record.run_id, %error, "recording the replaced run");
            }
            tracing::info!(schedule, run = %record.run_id, "replaced by a newer run");
        }
    }

    /// Forgets the runs that ended: those that said so, and those whose task is gone.
    async fn reap(&mut self) {
        while let Ok(run_id) = self.ended_rx.try_recv() {
            self.forget(&run_id);
        }
        for runs in self.active.values_mut() {
            runs.retain(|r| !r.task.is_finished());
        }
    }

    fn forget(&mut self, run_id: &str) {
        for runs in self.active.values_mut() {
            runs.retain(|r| r.fire.run_id != run_id);
        }
    }

    /// Waits until every running run ended; their exit codes by run id.
    pub async fn wait_idle(&mut self) -> HashMap<String, i32> {
        let mut exits = HashMap::new();
        for (_, runs) in self.active.drain() {
            for run in runs {
                if let Ok(exit) = run.task.await {
                    exits.insert(run.fire.run_id, exit);
                }
            }
        }
        exits
    }

    /// `--once`: starts what is due at `now`, waits, and starts again what waited for it
    /// (`Forbid`), until nothing due at `now` is left. The runs started, in order.
    pub async fn run_once(&mut self, now: DateTime<Utc>) -> anyhow::Result<Vec<FiredRun>> {
        let mut started = Vec::new();
        loop {
            let outcome = self.tick(now).await?;
            let exits = self.wait_idle().await;
            let runs = outcome.adopted.into_iter().chain(outcome.started);
            started.extend(runs.map(|run_id| FiredRun {
                exit: exits.get(&run_id).copied(),
                run_id,
            }));
            if outcome.waiting == 0 {
                return Ok(started);
            }
        }
    }

    /// The daemon: tick, then sleep until the next fire of any schedule or until a run
    /// ends, forever (or until `stop` resolves).
    pub async fn run(
        &mut self,
        clock: Arc<dyn Clock>,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        loop {
            let now = clock.now();
            if let Err(error) = self.tick(now).await {
                tracing::error!(error = %format!("{error:#}"), "tick failed");
            }
            let mut wake = self
                .schedules
                .iter()
                .filter_map(|s| s.cron.next_after(now, s.time_zone))
                .min()
                .unwrap_or(now + chrono::Duration::minutes(1));
            if self.lease.is_some() {
                // Renew the Lease well within its duration.
                wake = wake.min(now + chrono::Duration::seconds(5));
            }
            tokio::select! {
                _ = clock.sleep_until(wake) => {}
                Some(run_id) = self.ended_rx.recv() => self.forget(&run_id),
                _ = &mut stop => {
                    tracing::info!("stopping; running runs are left to finish on their own or be resumed");
                    return Ok(());
                }
            }
        }
    }
}

/// A scheduler that goes away stops watching its runs on a cluster (their Jobs run on, and
/// the next leader adopts them), as a process that ends would.
impl Drop for Scheduler {
    fn drop(&mut self) {
        self.let_go();
    }
}

/// Runs a fire to its end and records the end in its history record: the exit code (sluice's
/// own when the run could not be carried out), the status and the end time.
pub async fn execute_and_record(
    executor: &Executor,
    storage: &Storage,
    fire: &PreparedFire,
    resume: bool,
    record: &mut HistoryRecord,
) -> i32 {
    let exit = match fire::execute(executor, storage, fire, resume).await {
        Ok(exit) => exit,
        Err(error) => {
            tracing::error!(schedule = %fire.schedule, run = %fire.run_id, error = %crate::exit::error_chain(&error), "run failed");
            error.exit_code().code()
        }
    };
    record.finished_at = Some(Utc::now());
    record.exit_code = Some(exit);
    record.status = if exit == 0 {
        FireStatus::Succeeded
    } else {
        FireStatus::Failed
    };
    if let Err(error) = fire.history(storage).write(record).await {
        tracing::error!(run = %fire.run_id, %error, "recording the run's end");
    }
    tracing::info!(schedule = %fire.schedule, run = %fire.run_id, exit, "run ended");
    exit
}
