//! The local runner: each shard index runs as a process of the same `sluice worker`
//! entrypoint with the environment a pod gets (JOB_COMPLETION_INDEX, the S3 endpoint and
//! credentials). Exit codes are judged as the Job's podFailurePolicy would: only 1 is
//! retried, up to `retries` times per index.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::ExitCode;
use crate::plan::Plan;
use crate::state::RunLayout;
use crate::storage::Storage;
use crate::storage::uri::S3Uri;
use crate::worker::marker::ShardProgress;

/// How one shard index ended.
#[derive(Debug, Clone)]
pub struct ShardOutcome {
    pub index: u32,
    pub exit: ExitCode,
    pub attempts: u32,
    /// The last lines the worker wrote to stderr (kept for failed shards).
    pub last_lines: Vec<String>,
}

pub struct LocalRunner {
    /// The `sluice` executable that runs workers.
    pub program: PathBuf,
    /// Environment handed to every worker (S3 endpoint and credentials).
    pub env: Vec<(String, String)>,
    pub parallelism: u32,
    pub retries: u32,
    /// Show a progress bar (a terminal) or log progress lines.
    pub bar: bool,
    /// Pin each worker to the first N CPUs (benchmarks measure one core against two).
    pub cpus: Option<usize>,
}

/// Lines of a failed worker's stderr kept for the summary.
const KEPT_LINES: usize = 20;

impl LocalRunner {
    /// Runs every shard of `plan` and returns their outcomes in index order.
    pub async fn run(&self, storage: &Storage, plan: &Plan, plan_uri: &S3Uri) -> Vec<ShardOutcome> {
        let bar = self.progress_bar(plan.bytes);
        let slots = Arc::new(Semaphore::new(self.parallelism.max(1) as usize));
        let mut tasks = JoinSet::new();
        for shard in &plan.shards {
            let slots = slots.clone();
            let program = self.program.clone();
            let env = self.env.clone();
            let retries = self.retries;
            let plan_uri = plan_uri.clone();
            let index = shard.index;
            let bar = bar.clone();
            let cpus = self.cpus;
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await.expect("semaphore open");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let (exit, last_lines) =
                        run_worker(&program, &env, &plan_uri, index, cpus, bar.as_ref()).await;
                    if exit.retryable() && attempts <= retries {
                        tracing::warn!(
                            shard = index,
                            attempt = attempts,
                            "worker failed transiently; retrying"
                        );
                        continue;
                    }
                    return ShardOutcome {
                        index,
                        exit,
                        attempts,
                        last_lines,
                    };
                }
            });
        }
        let watcher = tokio::spawn(watch_progress(
            storage.clone(),
            RunLayout::from_plan_uri(plan_uri),
            plan.shards.len() as u32,
            plan.bytes,
            bar.clone(),
        ));
        let mut outcomes: Vec<ShardOutcome> = tasks.join_all().await;
        watcher.abort();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        outcomes.sort_by_key(|o| o.index);
        outcomes
    }

    fn progress_bar(&self, bytes: u64) -> Option<ProgressBar> {
        if !self.bar {
            return None;
        }
        let bar = ProgressBar::new(bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }
}

/// Runs one worker process to its end; its stderr lines are passed through.
async fn run_worker(
    program: &PathBuf,
    env: &[(String, String)],
    plan_uri: &S3Uri,
    index: u32,
    cpus: Option<usize>,
    bar: Option<&ProgressBar>,
) -> (ExitCode, Vec<String>) {
    let mut command = Command::new(program);
    command
        .arg("worker")
        .arg("--plan")
        .arg(plan_uri.to_string())
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cpus) = cpus {
        pin_to_cpus(&mut command, cpus);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return (
                ExitCode::Transient,
                vec![format!("starting {}: {error}", program.display())],
            );
        }
    };
    let mut last = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let shown = format!("[shard {index}] {line}");
            match bar {
                Some(bar) => bar.println(&shown),
                None => eprintln!("{shown}"),
            }
            if last.len() == KEPT_LINES {
                last.remove(0);
            }
            last.push(line);
        }
    }
    let exit = match child.wait().await {
        // A worker killed by a signal (OOM, ^C) is a transient failure, as a pod's would be.
        Ok(status) => status
            .code()
            .and_then(ExitCode::from_code)
            .unwrap_or(ExitCode::Transient),
        Err(_) => ExitCode::Transient,
    };
    (exit, last)
}

/// Sums the shards' progress objects into the bar (or a log line every 10 s).
async fn watch_progress(
    storage: Storage,
    layout: RunLayout,
    shards: u32,
    total: u64,
    bar: Option<ProgressBar>,
) {
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        let mut done = 0;
        let mut records = 0;
        for index in 0..shards {
            if let Ok(Some(bytes)) = storage.get_bytes(&layout.progress(index)).await
                && let Ok(p) = serde_json::from_slice::<ShardProgress>(&bytes)
            {
                done += p.bytes_done;
                records += p.records.input;
            }
        }
        match &bar {
            Some(bar) => bar.set_position(done),
            None if tick.is_multiple_of(10) => {
                tracing::info!(bytes_done = done, bytes_total = total, records, "progress");
            }
            None => {}
        }
    }
}

/// Restricts the child process to CPUs 0..n.
fn pin_to_cpus(command: &mut Command, n: usize) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe libc functions on a stack-allocated cpu set.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for cpu in 0..n {
                libc::CPU_SET(cpu, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
