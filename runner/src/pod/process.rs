//! Containers as local processes: a container's argv and environment on this machine, one
//! pod's main container run to its exit with its output passed through, and the spawning
//! every process shares (scratch mounts, JOB_COMPLETION_INDEX, CPU pinning).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use indicatif::ProgressBar;
use k8s_openapi::api::core::v1::Container;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::pod::{LocalPodRunner, PodOutput, PodRunError};

/// Lines of a failed container's stderr kept for the summary.
const KEPT_LINES: usize = 20;

/// One container as a local process.
#[derive(Debug, Clone)]
pub(super) struct Process {
    pub(super) name: String,
    pub(super) argv: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    /// Mount paths; each becomes a fresh directory per pod (an emptyDir).
    pub(super) scratch: Vec<String>,
}

/// A pod as local processes.
pub(super) struct PodTemplate {
    /// This sluice executable (probes that run the sluice binary run it).
    pub(super) program: PathBuf,
    pub(super) output: PodOutput,
    /// Output lines are labelled `[shard N]` in an Indexed Job, else `[container]`.
    pub(super) indexed: bool,
    pub(super) main: Process,
    pub(super) sidecars: Vec<(Container, Process)>,
    pub(super) env: Vec<(String, String)>,
    pub(super) cpus: Option<usize>,
}

impl PodTemplate {
    /// Runs the main container of one pod for completion index `index` (the sidecars run
    /// already). Returns its exit code (`None` when it was killed or never started) and its
    /// last stderr lines.
    pub(super) async fn run(
        &self,
        index: u32,
        bar: Option<&ProgressBar>,
    ) -> (Option<i32>, Vec<String>) {
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

    pub(super) fn spawn(
        &self,
        process: &Process,
        index: u32,
        scratch: &Path,
    ) -> std::io::Result<Child> {
        spawn_process(process, &self.env, self.cpus, index, scratch)
    }
}

/// `$(NAME)` replaced by the value of NAME in `env`, as the kubelet does: an unknown name
/// stays as written and `$$` is a literal `$`.
fn expand_vars(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, value)) = env.iter().rev().find(|(k, _)| *k == inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

impl LocalPodRunner {
    /// The argv and environment of a container on this machine.
    pub(super) fn process(&self, container: &Container) -> Result<Process, PodRunError> {
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
        argv.extend(args.iter().cloned());
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
        // Kubernetes substitutes `$(NAME)` in the container's command and args from its
        // env; what stands in for an image (`local`) is this machine's, and left as it is.
        let from_spec = argv.len() - args.len();
        let argv = argv
            .iter()
            .enumerate()
            .map(|(i, arg)| {
                if i >= from_spec || (image == self.sluice_image && i > 0) {
                    expand_vars(arg, &env)
                } else {
                    arg.clone()
                }
            })
            .collect();
        Ok(Process {
            name: container.name.clone(),
            argv,
            env,
            scratch,
        })
    }
}

pub(super) fn spawn_process(
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

pub(super) fn show(bar: Option<&ProgressBar>, line: &str) {
    match bar {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    }
}

/// Passes a stream's lines through, prefixed.
pub(super) fn forward(
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

/// Restricts the child process to CPUs 0..n.
pub(super) fn pin_to_cpus(command: &mut Command, n: usize) {
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
    use super::expand_vars;

    #[test]
    fn variables_in_args_expand_as_the_kubelet_expands_them() {
        let env = vec![("JOB".to_string(), "nightly-29921880".to_string())];
        assert_eq!(expand_vars("$(JOB)", &env), "nightly-29921880");
        assert_eq!(expand_vars("x=$(JOB)!", &env), "x=nightly-29921880!");
        assert_eq!(expand_vars("$(OTHER)", &env), "$(OTHER)");
        assert_eq!(expand_vars("$$(JOB) $5", &env), "$(JOB) $5");
    }
}
