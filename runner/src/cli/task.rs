//! `sluice task run FILE [-- ARGS...]`: run a task definition once, here or on a cluster,
//! with its command, entrypoint or environment overridden for this run.

use std::path::PathBuf;
use std::time::Duration;

use crate::kubernetes::cluster::Cluster;
use crate::pod::PodOutput;
use crate::spec;
use crate::task::{self, Overrides, Where};

#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// Run a task definition once and exit with its main container's exit code. Locally
    /// (the default) each container's `local.command` stands in for its image and the
    /// output streams to this terminal; with --kube the Job is created on the cluster,
    /// waited for, and its log printed.
    ///
    /// `sluice task run jobs/backfill-range.yaml -- 2018-01-01 2019-01-01` runs the
    /// essential container with those arguments in place of its `command`.
    Run(TaskRunArgs),
}

#[derive(Debug, clap::Args)]
pub struct TaskRunArgs {
    /// The task definition (`kind: TaskDefinition`).
    pub file: PathBuf,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Run on the Kubernetes cluster of the kubeconfig (KUBECONFIG or ~/.kube/config, or
    /// the service account inside a pod) instead of on this machine.
    #[arg(long)]
    pub kube: bool,
    /// The namespace (default: the definition's `kubernetes.namespace`, else `sluice`).
    #[arg(long, requires = "kube")]
    pub namespace: Option<String>,
    /// Use this run id instead of `<family>-<UTC time>`.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Seconds between two reads of the Job's status (with --kube).
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    pub poll: u64,
}

/// The per-run overrides, shared by `sluice task run` and `sluice render`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OverrideArgs {
    /// Replace the container's `command` (its arguments), split like a shell does:
    /// --command "2018-01-01 2019-01-01". The same as `-- ARGS...`.
    #[arg(long, value_name = "CMD", conflicts_with = "args")]
    pub command: Option<String>,
    /// Replace the container's `entryPoint`, split like a shell does. Locally it runs
    /// instead of `local.command` and must exist on this machine.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Set an environment variable of the container (repeatable): --env MODE=full
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The container the overrides apply to (default: the essential one).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Arguments that replace the container's `command` for this run.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

impl OverrideArgs {
    /// Whether any override is given (a job file takes none).
    pub fn any(&self) -> bool {
        self.command.is_some()
            || self.entrypoint.is_some()
            || !self.env.is_empty()
            || self.container.is_some()
            || !self.args.is_empty()
    }

    pub fn to_overrides(
        &self,
        run_id: Option<String>,
        namespace: Option<String>,
    ) -> anyhow::Result<Overrides> {
        let command = match (&self.command, self.args.is_empty()) {
            (Some(text), _) => Some(split("--command", text)?),
            (None, false) => Some(self.args.clone()),
            (None, true) => None,
        };
        Ok(Overrides {
            container: self.container.clone(),
            entry_point: self
                .entrypoint
                .as_deref()
                .map(|text| split("--entrypoint", text))
                .transpose()?,
            command,
            env: self
                .env
                .iter()
                .map(|e| task::overrides::parse_env(e))
                .collect::<Result<_, _>>()?,
            run_id,
            namespace,
        })
    }
}

fn split(flag: &str, text: &str) -> anyhow::Result<Vec<String>> {
    shlex::split(text).ok_or_else(|| {
        anyhow::Error::new(crate::spec::SpecErrors::unreadable(
            flag,
            format!("unbalanced quotes in {text:?}"),
        ))
    })
}

/// Returns the main container's exit code (or sluice's own for a problem before it ran).
pub fn run(command: TaskCommand) -> anyhow::Result<u8> {
    let TaskCommand::Run(args) = command;
    let def = spec::load_task_file(&args.file)?;
    let overrides = args
        .overrides
        .to_overrides(args.run_id.clone(), args.namespace.clone())?;
    crate::cli::runtime()?.block_on(async {
        let how = if args.kube {
            Where::Cluster {
                cluster: Cluster::connect(&overrides.namespace(&def)).await?,
                poll: Duration::from_secs(args.poll.max(1)),
            }
        } else {
            Where::Local {
                program: std::env::current_exe()?,
                env: Vec::new(),
                output: PodOutput::Passthrough,
            }
        };
        let outcome = task::run_task(&def, &overrides, how).await?;
        Ok(outcome.exit_status())
    })
}
