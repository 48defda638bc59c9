//! Task definitions at run time: one run of a `kind: TaskDefinition` with its per-run
//! overrides, as a Kubernetes Job executed here (the local pod runner) or on a cluster.
//! `run_task` is the entry point for `sluice task run` and for schedules.

pub mod cluster;
pub mod error;
pub mod local;
pub mod overrides;
pub mod render;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job as KubeJob;
use serde::Serialize;

use crate::kubernetes::cluster::Cluster;
use crate::pod::PodOutput;
use crate::spec::task::TaskDefinition;

pub use error::TaskError;
pub use local::local_commands;
pub use overrides::Overrides;
pub use render::task_job;

/// Where a task runs.
pub enum Where {
    /// On this machine: each container's `local.command` stands in for its image.
    /// `program` is the sluice executable (for containers of the sluice image); `env` is
    /// added to every process's environment (which is this process's otherwise); `output`
    /// says where the containers' output goes (`Passthrough` for `sluice task run`,
    /// `Prefixed` on stderr for the scheduler).
    Local {
        program: PathBuf,
        env: Vec<(String, String)>,
        output: PodOutput,
    },
    /// On a cluster, in the cluster's namespace; the Job is read every `poll`.
    Cluster { cluster: Cluster, poll: Duration },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskOutcome {
    pub run_id: String,
    /// The Job's name.
    pub job: String,
    /// The essential container's exit code of the last attempt (1 when it never exited:
    /// stopped at the deadline, killed, or never started).
    pub exit_code: i32,
    /// Pods started (the first and its retries).
    pub attempts: u32,
    pub logs: Logs,
}

impl TaskOutcome {
    /// The exit status for a process: the container's, as far as one byte holds it.
    pub fn exit_status(&self) -> u8 {
        u8::try_from(self.exit_code).unwrap_or(1)
    }
}

/// Where a run's log is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Logs {
    /// Written to this process's output as the task ran.
    Streamed,
    /// In the pod (and printed to stdout when the run ended).
    Pod {
        namespace: String,
        pod: String,
        container: String,
    },
}

/// The Job of one run: the definition with the overrides applied.
pub fn render(def: &TaskDefinition, overrides: &Overrides) -> Result<KubeJob, TaskError> {
    let run = overrides.apply(def)?;
    Ok(task_job(
        &run,
        &overrides.namespace(def),
        &run_id(def, overrides),
    ))
}

/// Runs the task once with `overrides`, here or on a cluster, and waits for it.
pub async fn run_task(
    def: &TaskDefinition,
    overrides: &Overrides,
    how: Where,
) -> Result<TaskOutcome, TaskError> {
    let run = overrides.apply(def)?;
    let run_id = run_id(def, overrides);
    let outcome = match how {
        Where::Local {
            program,
            env,
            output,
        } => {
            let job = task_job(&run, &overrides.namespace(def), &run_id);
            local::run(&run, &job, program, env, output).await?
        }
        Where::Cluster { cluster, poll } => {
            let job = task_job(&run, &cluster.namespace, &run_id);
            cluster::run(&run, &job, &cluster, poll).await?
        }
    };
    tracing::info!(
        run = %outcome.run_id,
        exit_code = outcome.exit_code,
        attempts = outcome.attempts,
        "task finished"
    );
    Ok(outcome)
}

fn run_id(def: &TaskDefinition, overrides: &Overrides) -> String {
    overrides
        .run_id
        .clone()
        .unwrap_or_else(|| crate::plan::new_run_id(&def.family, chrono::Utc::now()))
}
