//! Native sidecars on this machine: started in order before the first pod, each waited
//! on until its readiness probe passes, restarted when it exits (`restartPolicy: Always`),
//! stopped after the last pod.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::pod::process::{PodTemplate, Process, forward, show, spawn_process};

/// How often a readiness probe is tried when the probe gives no period.
const PROBE_PERIOD: Duration = Duration::from_millis(200);

impl PodTemplate {
    /// Starts the sidecars, in order, each waited on until ready, and keeps them running.
    pub(super) async fn start_sidecars(
        &self,
        bar: Option<&ProgressBar>,
    ) -> Result<Sidecars, String> {
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
}

/// The running sidecars of a local run.
pub(super) struct Sidecars {
    pub(super) running: Vec<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    pub(super) _scratch: tempfile::TempDir,
}

impl Sidecars {
    pub(super) async fn stop(self) {
        for (stop, supervisor) in self.running {
            stop.send_replace(true);
            let _ = supervisor.await;
        }
    }
}

/// What it takes to start a sidecar again.
pub(super) struct Launch {
    pub(super) process: Process,
    pub(super) env: Vec<(String, String)>,
    pub(super) cpus: Option<usize>,
    pub(super) index: u32,
    pub(super) scratch: PathBuf,
}

/// Keeps a sidecar running until `stop`: one that exits is started again after a second,
/// as `restartPolicy: Always` does on a cluster; the worker waits for it to be ready again.
pub(super) async fn supervise(
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

/// Waits until a sidecar's readiness probe (an HTTP GET on loopback) answers 2xx or 3xx,
/// within the probe's own budget (initial delay + period x failure threshold).
pub(super) async fn ready(
    container: &Container,
    child: &mut Child,
    program: &Path,
) -> Result<(), String> {
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
pub(super) enum Check {
    Http { port: u16, path: String },
    Exec(Vec<String>),
}

impl Check {
    pub(super) async fn passes(&self) -> bool {
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
pub(super) async fn http_ok(port: u16, path: &str) -> bool {
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
