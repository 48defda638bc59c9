//! The local pod runner: it executes a rendered Job on this machine, a worker Indexed Job or
//! a task's single-pod Job. Each completion index becomes a process with the pod's command,
//! args and env (JOB_COMPLETION_INDEX included), at most `parallelism` at once; native sidecars (init containers with
//! `restartPolicy: Always`) start first, are waited on until ready, are restarted if they
//! exit and are stopped at the end (once per run, not per pod: local pods share this
//! machine's loopback, where a sidecar's port can be bound only once); exit codes are
//! judged by the Job's own `podFailurePolicy`,
//! `backoffLimitPerIndex` (`backoffLimit` for a single-pod Job), `maxFailedIndexes` and
//! `activeDeadlineSeconds`.
//!
//! It interprets only what sluice renders; it is not a Kubernetes.

mod job;
mod process;
pub mod progress;
mod sidecar;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::batch::v1::Job as KubeJob;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::exit::ExitCode;
use crate::pod::job::{Verdict, judge, main_container, shape, sidecars};
use crate::pod::process::PodTemplate;
use crate::pod::progress::{ProgressView, watch_progress};
use crate::state::RunLayout;
use crate::storage::Storage;

/// How one completion index ended.
#[derive(Debug, Clone)]
pub struct ShardOutcome {
    /// The completion index.
    pub index: u32,
    pub exit: ExitCode,
    /// The main container's own exit code (`None`: killed, stopped or never started).
    pub code: Option<i32>,
    /// Pods started for the index (the first and its retries).
    pub attempts: u32,
    /// The last lines the main container wrote to stderr (kept for failed indexes).
    pub last_lines: Vec<String>,
}

/// A rendered Job the local runner cannot execute.
#[derive(Debug, thiserror::Error)]
pub enum PodRunError {
    #[error(
        "the local runner executes the Jobs `sluice render` writes (Indexed with backoffLimitPerIndex, or one pod with backoffLimit): {0}"
    )]
    Unsupported(String),
    #[error(
        "container {container:?} uses image {image:?}, which has no local command: give it a `local.command` in its file, or run on a cluster"
    )]
    NoLocalCommand { container: String, image: String },
}

impl PodRunError {
    /// A manifest the local pod runner cannot carry out is a wiring mistake: 2.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

pub struct LocalPodRunner {
    /// The sluice image: its containers run this executable.
    pub sluice_image: String,
    pub program: PathBuf,
    /// The command that stands in for each container of another image, by container name
    /// (a transformer sidecar is named after its step).
    pub local_commands: BTreeMap<String, Vec<String>>,
    /// Environment added to every process after the pod's own (the S3 endpoint and
    /// credentials this machine uses).
    pub env: Vec<(String, String)>,
    /// Show a progress bar (a terminal) or log progress lines.
    pub bar: bool,
    /// Pin each process to the first N CPUs (benchmarks measure one core against two).
    pub cpus: Option<usize>,
    /// Where the main container's output goes.
    pub output: PodOutput,
}

/// Where the main container's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodOutput {
    /// Both to stderr (or the progress bar), each line prefixed with its index: workers
    /// report on stderr, and several run at once.
    Prefixed,
    /// Stdout to this process's stdout and stderr to its stderr, as they are: one task
    /// whose output is the caller's.
    Passthrough,
}

impl LocalPodRunner {
    /// Runs every completion index of `job` and returns their outcomes in index order.
    /// `progress` (the run's state and its total bytes) feeds the progress display.
    pub async fn run(
        &self,
        job: &KubeJob,
        progress: Option<(&Storage, &RunLayout, u64)>,
    ) -> Result<Vec<ShardOutcome>, PodRunError> {
        let shape = shape(job)?;
        // Resolve every container's command before anything starts.
        let main = self.process(main_container(&shape.pod)?)?;
        let sidecars = sidecars(&shape.pod)
            .map(|c| Ok((c.clone(), self.process(c)?)))
            .collect::<Result<Vec<_>, PodRunError>>()?;
        let pod = Arc::new(PodTemplate {
            program: self.program.clone(),
            output: self.output,
            indexed: shape.indexed,
            main,
            sidecars,
            env: self.env.clone(),
            cpus: self.cpus,
        });
        let view = ProgressView::new(
            self.bar,
            shape.completions as usize,
            progress.map_or(0, |p| p.2),
        );
        let bars = view.bars().cloned();
        let bar = bars.as_ref().map(|b| b.total().clone());
        // Local pods share this machine's loopback, where a sidecar's port can be bound
        // once: each sidecar runs once for the whole run, ready before the first pod.
        let sidecars = match pod.start_sidecars(bar.as_ref()).await {
            Ok(sidecars) => sidecars,
            Err(why) => {
                if let Some(bars) = &bars {
                    bars.finish();
                }
                return Ok((0..shape.completions)
                    .map(|index| ShardOutcome {
                        index,
                        exit: ExitCode::Transient,
                        code: None,
                        attempts: 1,
                        last_lines: vec![why.clone()],
                    })
                    .collect());
            }
        };
        let slots = Arc::new(Semaphore::new(shape.parallelism.max(1)));
        let failed = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let shape = Arc::new(shape);
        let mut tasks = JoinSet::new();
        for index in 0..shape.completions {
            let (slots, pod, bar, shape, failed, stop_tx) = (
                slots.clone(),
                pod.clone(),
                bar.clone(),
                shape.clone(),
                failed.clone(),
                stop_tx.clone(),
            );
            let mut stop = stop.clone();
            tasks.spawn(async move {
                let mut outcome = ShardOutcome {
                    index,
                    exit: ExitCode::Transient,
                    code: None,
                    attempts: 0,
                    last_lines: vec!["not started: the Job stopped first".into()],
                };
                let _slot = tokio::select! {
                    slot = slots.acquire_owned() => slot.expect("semaphore open"),
                    _ = stop.wait_for(|s| *s) => return outcome,
                };
                let mut counted = 0;
                loop {
                    if *stop.borrow() {
                        return outcome;
                    }
                    outcome.attempts += 1;
                    let (code, lines) = tokio::select! {
                        ended = pod.run(index, bar.as_ref()) => ended,
                        _ = stop.wait_for(|s| *s) => (None, vec!["stopped: the Job failed or passed its deadline".into()]),
                    };
                    outcome.last_lines = lines;
                    outcome.code = code;
                    outcome.exit = code
                        .and_then(ExitCode::from_code)
                        .unwrap_or(ExitCode::Transient);
                    let verdict = match code {
                        Some(0) => Verdict::Succeeded,
                        Some(code) => judge(&shape.rules, code),
                        // Killed by a signal or stopped: like a pod without an exit code.
                        None => Verdict::Count,
                    };
                    match verdict {
                        Verdict::Succeeded => return outcome,
                        Verdict::Ignore => continue,
                        Verdict::Count if counted < shape.backoff_limit => {
                            counted += 1;
                            tracing::warn!(
                                shard = index,
                                attempt = outcome.attempts,
                                exit = ?code,
                                "worker failed; retrying the index"
                            );
                            continue;
                        }
                        Verdict::FailJob => {
                            stop_tx.send_replace(true);
                        }
                        Verdict::Count | Verdict::FailIndex => {
                            let failed_now = failed.fetch_add(1, Ordering::SeqCst) + 1;
                            if shape.max_failed_indexes.is_some_and(|max| failed_now > max) {
                                tracing::error!(
                                    failed = failed_now,
                                    "more indexes failed than maxFailedIndexes allows; stopping the Job"
                                );
                                stop_tx.send_replace(true);
                            }
                        }
                    }
                    return outcome;
                }
            });
        }
        let watcher = progress.map(|(storage, layout, _)| {
            tokio::spawn(watch_progress(
                storage.clone(),
                layout.clone(),
                shape.completions,
                view,
            ))
        });
        let deadline = shape.deadline;
        let stop_on_deadline = stop_tx.clone();
        let timer = tokio::spawn(async move {
            if let Some(deadline) = deadline {
                tokio::time::sleep(deadline).await;
                tracing::error!(
                    seconds = deadline.as_secs(),
                    "the Job passed activeDeadlineSeconds; stopping it"
                );
                stop_on_deadline.send_replace(true);
            }
        });
        let mut outcomes: Vec<ShardOutcome> = tasks.join_all().await;
        sidecars.stop().await;
        timer.abort();
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        if let Some(bars) = &bars {
            bars.finish();
        }
        outcomes.sort_by_key(|o| o.index);
        Ok(outcomes)
    }
}
