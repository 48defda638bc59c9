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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::batch::v1::{Job as KubeJob, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::exit::ExitCode;
use crate::state::RunLayout;
use crate::state::progress::ShardProgress;
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

/// Lines of a failed container's stderr kept for the summary.
const KEPT_LINES: usize = 20;
/// How often a readiness probe is tried when the probe gives no period.
const PROBE_PERIOD: Duration = Duration::from_millis(200);

/// What the Job asks of the runner, read once from the manifest.
struct JobShape {
    /// An Indexed Job (the workers' shards) rather than a single pod (a task).
    indexed: bool,
    completions: u32,
    parallelism: usize,
    /// Failed pods retried per index (`backoffLimitPerIndex`, or `backoffLimit` for a
    /// single-pod Job, where the one index is the whole Job).
    backoff_limit: u32,
    max_failed_indexes: Option<usize>,
    deadline: Option<Duration>,
    rules: Vec<PodFailurePolicyRule>,
    pod: PodSpec,
}

/// What the policy decides about a finished pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Succeeded,
    /// Counts against `backoffLimitPerIndex`; retried while within it.
    Count,
    /// Retried without counting.
    Ignore,
    FailIndex,
    FailJob,
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
        let bar = self.progress_bar(progress.map_or(0, |p| p.2));
        // Local pods share this machine's loopback, where a sidecar's port can be bound
        // once: each sidecar runs once for the whole run, ready before the first pod.
        let sidecars = match pod.start_sidecars(bar.as_ref()).await {
            Ok(sidecars) => sidecars,
            Err(why) => {
                if let Some(bar) = bar {
                    bar.finish_and_clear();
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
        let watcher = progress.map(|(storage, layout, total)| {
            tokio::spawn(watch_progress(
                storage.clone(),
                layout.clone(),
                shape.completions,
                total,
                bar.clone(),
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
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        outcomes.sort_by_key(|o| o.index);
        Ok(outcomes)
    }

    /// The argv and environment of a container on this machine.
    fn process(&self, container: &Container) -> Result<Process, PodRunError> {
        let image = container.image.clone().unwrap_or_default();
        let command = container.command.clone().unwrap_or_default();
        let args = container.args.clone().unwrap_or_default();
        let mut argv = if image == self.sluice_image {
            // The sluice image's entrypoint is the sluice binary: this executable.
            let rest = match command.first().map(String::as_str) {
                Some("sluice") | Some("/usr/local/bin/sluice") => command[1..].to_vec(),
                _ => command,
            };
            let mut argv = vec![self.program.display().to_string()];
            argv.extend(rest);
            argv
        } else {
            match self.local_commands.get(&container.name) {
                Some(local) => local.clone(),
                None => {
                    return Err(PodRunError::NoLocalCommand {
                        container: container.name.clone(),
                        image,
                    });
                }
            }
        };
        argv.extend(args);
        let mut env = Vec::new();
        for var in container.env.iter().flatten() {
            match (&var.value, &var.value_from) {
                (Some(value), _) => env.push((var.name.clone(), value.clone())),
                // Secret and field references resolve from this machine's environment.
                (None, Some(_)) => match std::env::var(&var.name) {
                    Ok(value) => env.push((var.name.clone(), value)),
                    Err(_) => tracing::debug!(
                        name = %var.name,
                        "a referenced variable is not set on this machine; left unset"
                    ),
                },
                (None, None) => env.push((var.name.clone(), String::new())),
            }
        }
        if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
            tracing::debug!(
                container = %container.name,
                "envFrom is not resolved locally; set those variables in this environment"
            );
        }
        let scratch: Vec<String> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect();
        Ok(Process {
            name: container.name.clone(),
            argv,
            env,
            scratch,
        })
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

fn shape(job: &KubeJob) -> Result<JobShape, PodRunError> {
    let unsupported = |why: &str| PodRunError::Unsupported(why.to_string());
    let spec = job.spec.as_ref().ok_or_else(|| unsupported("no spec"))?;
    let pod = spec
        .template
        .spec
        .clone()
        .ok_or_else(|| unsupported("no pod template"))?;
    if pod.restart_policy.as_deref() != Some("Never") {
        return Err(unsupported("restartPolicy is not Never"));
    }
    let (completions, backoff_limit) = match spec.completion_mode.as_deref() {
        Some("Indexed") => (
            spec.completions.unwrap_or(1).max(0) as u32,
            spec.backoff_limit_per_index
                .ok_or_else(|| unsupported("no backoffLimitPerIndex"))?,
        ),
        None | Some("NonIndexed") if spec.completions.unwrap_or(1) == 1 => {
            // Kubernetes' default backoffLimit is 6.
            (1, spec.backoff_limit.unwrap_or(6))
        }
        _ => {
            return Err(unsupported(
                "a non-indexed Job with more than one completion",
            ));
        }
    };
    Ok(JobShape {
        indexed: spec.completion_mode.as_deref() == Some("Indexed"),
        completions,
        parallelism: spec.parallelism.unwrap_or(1).max(1) as usize,
        backoff_limit: backoff_limit.max(0) as u32,
        max_failed_indexes: spec.max_failed_indexes.map(|m| m.max(0) as usize),
        deadline: spec
            .active_deadline_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64)),
        rules: spec
            .pod_failure_policy
            .as_ref()
            .map(|p| p.rules.clone())
            .unwrap_or_default(),
        pod,
    })
}

fn main_container(pod: &PodSpec) -> Result<&Container, PodRunError> {
    match pod.containers.as_slice() {
        [one] => Ok(one),
        _ => Err(PodRunError::Unsupported(format!(
            "the pod has {} containers; sluice renders one (sidecars are init containers)",
            pod.containers.len()
        ))),
    }
}

/// Native sidecars: init containers with `restartPolicy: Always`, in order.
fn sidecars(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
}

/// The podFailurePolicy's verdict on a main container that exited with `code` (not 0);
/// the first matching rule wins, as in Kubernetes. No match counts against the index.
fn judge(rules: &[PodFailurePolicyRule], code: i32) -> Verdict {
    for rule in rules {
        let Some(codes) = &rule.on_exit_codes else {
            // Pod conditions (DisruptionTarget) never arise for a local process.
            continue;
        };
        let listed = codes.values.contains(&code);
        let matches = match codes.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        if matches {
            return match rule.action.as_str() {
                "Ignore" => Verdict::Ignore,
                "FailIndex" => Verdict::FailIndex,
                "FailJob" => Verdict::FailJob,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// One container as a local process.
#[derive(Debug, Clone)]
struct Process {
    name: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    /// Mount paths; each becomes a fresh directory per pod (an emptyDir).
    scratch: Vec<String>,
}

/// A pod as local processes.
struct PodTemplate {
    /// This sluice executable (probes that run the sluice binary run it).
    program: PathBuf,
    output: PodOutput,
    /// Output lines are labelled `[shard N]` in an Indexed Job, else `[container]`.
    indexed: bool,
    main: Process,
    sidecars: Vec<(Container, Process)>,
    env: Vec<(String, String)>,
    cpus: Option<usize>,
}

impl PodTemplate {
    /// Runs the main container of one pod for completion index `index` (the sidecars run
    /// already). Returns its exit code (`None` when it was killed or never started) and its
    /// last stderr lines.
    async fn run(&self, index: u32, bar: Option<&ProgressBar>) -> (Option<i32>, Vec<String>) {
        let scratch = match tempfile::Builder::new().prefix("sluice-pod-").tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                return (
                    None,
                    vec![format!("creating the pod's scratch directory: {e}")],
                );
            }
        };
        let mut child = match self.spawn(&self.main, index, scratch.path()) {
            Ok(child) => child,
            Err(e) => {
                return (None, vec![format!("starting {}: {e}", self.main.argv[0])]);
            }
        };
        let label = if self.indexed {
            format!("[shard {index}]")
        } else {
            format!("[{}]", self.main.name)
        };
        let stdout = match self.output {
            PodOutput::Prefixed => {
                forward(child.stdout.take(), label.clone(), bar.cloned());
                None
            }
            PodOutput::Passthrough => child.stdout.take().map(|mut out| {
                tokio::spawn(async move {
                    let mut stdout = tokio::io::stdout();
                    let _ = tokio::io::copy(&mut out, &mut stdout).await;
                    let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
                })
            }),
        };
        let mut last = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match self.output {
                    PodOutput::Prefixed => show(bar, &format!("{label} {line}")),
                    PodOutput::Passthrough => show(bar, &line),
                }
                if last.len() == KEPT_LINES {
                    last.remove(0);
                }
                last.push(line);
            }
        }
        // Everything the container wrote is out before its exit is reported.
        if let Some(stdout) = stdout {
            let _ = stdout.await;
        }
        let code = child.wait().await.ok().and_then(|s| s.code());
        (code, last)
    }

    /// Starts the sidecars, in order, each waited on until ready, and keeps them running.
    async fn start_sidecars(&self, bar: Option<&ProgressBar>) -> Result<Sidecars, String> {
        let scratch = tempfile::Builder::new()
            .prefix("sluice-sidecars-")
            .tempdir()
            .map_err(|e| format!("creating the sidecars' scratch directory: {e}"))?;
        let mut running = Vec::new();
        for (container, process) in &self.sidecars {
            let label = format!("[{}]", process.name);
            let mut child = self
                .spawn(process, 0, scratch.path())
                .map_err(|e| format!("starting sidecar {}: {e}", process.name))?;
            forward(child.stdout.take(), label.clone(), bar.cloned());
            forward(child.stderr.take(), label, bar.cloned());
            if let Err(why) = ready(container, &mut child, &self.program).await {
                let _ = child.kill().await;
                for (stop, supervisor) in running {
                    let (stop, supervisor): (watch::Sender<bool>, tokio::task::JoinHandle<()>) =
                        (stop, supervisor);
                    stop.send_replace(true);
                    let _ = supervisor.await;
                }
                return Err(format!("sidecar {}: {why}", process.name));
            }
            let (stop, stopped) = watch::channel(false);
            let supervisor = tokio::spawn(supervise(
                child,
                Launch {
                    process: process.clone(),
                    env: self.env.clone(),
                    cpus: self.cpus,
                    index: 0,
                    scratch: scratch.path().to_path_buf(),
                },
                stopped,
                bar.cloned(),
            ));
            running.push((stop, supervisor));
        }
        Ok(Sidecars {
            running,
            _scratch: scratch,
        })
    }

    fn spawn(&self, process: &Process, index: u32, scratch: &Path) -> std::io::Result<Child> {
        spawn_process(process, &self.env, self.cpus, index, scratch)
    }
}

/// The running sidecars of a local run.
struct Sidecars {
    running: Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    _scratch: tempfile::TempDir,
}

impl Sidecars {
    async fn stop(self) {
        for (stop, supervisor) in self.running {
            stop.send_replace(true);
            let _ = supervisor.await;
        }
    }
}

/// What it takes to start a sidecar again.
struct Launch {
    process: Process,
    env: Vec<(String, String)>,
    cpus: Option<usize>,
    index: u32,
    scratch: PathBuf,
}

/// Keeps a sidecar running until `stop`: one that exits is started again after a second,
/// as `restartPolicy: Always` does on a cluster; the worker waits for it to be ready again.
async fn supervise(
    mut child: Child,
    launch: Launch,
    mut stop: watch::Receiver<bool>,
    bar: Option<ProgressBar>,
) {
    let label = format!("[shard {}/{}]", launch.index, launch.process.name);
    loop {
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(status) = exited else {
            let _ = child.kill().await;
            return;
        };
        if *stop.borrow() {
            return;
        }
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        show(
            bar.as_ref(),
            &format!("{label} exited ({status}); restarting it"),
        );
        let stopping = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            return;
        }
        match spawn_process(
            &launch.process,
            &launch.env,
            launch.cpus,
            launch.index,
            &launch.scratch,
        ) {
            Ok(mut next) => {
                forward(next.stdout.take(), label.clone(), bar.clone());
                forward(next.stderr.take(), label.clone(), bar.clone());
                child = next;
            }
            Err(e) => {
                show(bar.as_ref(), &format!("{label} cannot be restarted: {e}"));
                return;
            }
        }
    }
}

fn spawn_process(
    process: &Process,
    extra_env: &[(String, String)],
    cpus: Option<usize>,
    index: u32,
    scratch: &Path,
) -> std::io::Result<Child> {
    {
        let mut command = Command::new(&process.argv[0]);
        command.args(&process.argv[1..]);
        for (name, value) in &process.env {
            // A variable naming a mount path points into this pod's scratch directory.
            let value = if process.scratch.contains(value) {
                scratch.display().to_string()
            } else {
                value.clone()
            };
            command.env(name, value);
        }
        command
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cpus) = cpus {
            pin_to_cpus(&mut command, cpus);
        }
        command.spawn()
    }
}

/// Waits until a sidecar's readiness probe (an HTTP GET on loopback) answers 2xx or 3xx,
/// within the probe's own budget (initial delay + period x failure threshold).
async fn ready(container: &Container, child: &mut Child, program: &Path) -> Result<(), String> {
    let Some(probe) = &container.readiness_probe else {
        return Ok(());
    };
    let check = match (&probe.http_get, &probe.exec) {
        (Some(get), _) => {
            let port = match &get.port {
                IntOrString::Int(port) => *port as u16,
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name))
                    .map(|p| p.container_port as u16)
                    .ok_or_else(|| {
                        format!(
                            "the probe names port {name:?}, which the container does not declare"
                        )
                    })?,
            };
            Check::Http {
                port,
                path: get.path.clone().unwrap_or_else(|| "/".into()),
            }
        }
        (None, Some(exec)) => {
            let mut argv = exec.command.clone().unwrap_or_default();
            // The sluice binary, wherever the pod has it, is this executable here.
            if argv
                .first()
                .is_some_and(|a| a == "sluice" || a.ends_with("/sluice"))
            {
                argv[0] = program.display().to_string();
            }
            if argv.is_empty() {
                return Err("the exec readiness probe has no command".into());
            }
            Check::Exec(argv)
        }
        (None, None) => return Err("only httpGet and exec readiness probes run locally".into()),
    };
    let period = probe
        .period_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(PROBE_PERIOD);
    let budget = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64)
        + period * probe.failure_threshold.unwrap_or(3).max(1) as u32;
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited before it was ready ({status})"));
        }
        if check.passes().await {
            return Ok(());
        }
        if started.elapsed() > budget {
            return Err(format!(
                "not ready after {budget:.0?}: {check} never passed"
            ));
        }
        tokio::time::sleep(PROBE_PERIOD.min(period)).await;
    }
}

/// A readiness check run on this machine.
enum Check {
    Http { port: u16, path: String },
    Exec(Vec<String>),
}

impl Check {
    async fn passes(&self) -> bool {
        match self {
            Check::Http { port, path } => http_ok(*port, path).await,
            Check::Exec(argv) => {
                let status = Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .status();
                matches!(
                    tokio::time::timeout(Duration::from_secs(2), status).await,
                    Ok(Ok(s)) if s.success()
                )
            }
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Http { port, path } => write!(f, "GET http://127.0.0.1:{port}{path}"),
            Check::Exec(argv) => write!(f, "`{}`", argv.join(" ")),
        }
    }
}

/// One HTTP/1.1 GET on loopback; true for a 2xx or 3xx status.
async fn http_ok(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    match tokio::time::timeout(Duration::from_secs(1), attempt).await {
        Ok(Ok(head)) => head.starts_with(b"HTTP/1.") && matches!(head[9], b'2' | b'3'),
        _ => false,
    }
}

fn show(bar: Option<&ProgressBar>, line: &str) {
    match bar {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    }
}

/// Passes a stream's lines through, prefixed.
fn forward(
    stream: Option<impl AsyncRead + Unpin + Send + 'static>,
    label: String,
    bar: Option<ProgressBar>,
) {
    if let Some(stream) = stream {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                show(bar.as_ref(), &format!("{label} {line}"));
            }
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::render::pod_failure_policy;

    #[test]
    fn the_rendered_policy_retries_only_transient_exits() {
        let rules = pod_failure_policy().rules;
        assert_eq!(judge(&rules, 1), Verdict::Count);
        assert_eq!(judge(&rules, 137), Verdict::Count);
        for code in [2, 3, 4] {
            assert_eq!(judge(&rules, code), Verdict::FailIndex);
        }
    }
}
