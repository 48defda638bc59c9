//! Where runs go, here or on a cluster, and one job or task run carried out there: the
//! local pod runner (as `sluice run` and `sluice task run`), or the submit path (as
//! `sluice submit`) and the task's Job on a cluster. Pipelines and schedules share it.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;

use crate::exit::ExitCode;
use crate::kubernetes::cluster::Cluster;
use crate::kubernetes::render::Target;
use crate::pod::PodOutput;
use crate::run::local::LocalRunError;
use crate::run::submit::{self, SubmitError};
use crate::run::{LocalRunOptions, run_locally};
use crate::spec::Loaded;
use crate::spec::task::TaskDefinition;
use crate::state::report::RunReport;
use crate::storage::Storage;
use crate::task::{Overrides, TaskError, TaskOutcome, Where, run_task};

/// Where runs go.
#[derive(Clone)]
pub enum Executor {
    /// On this machine, through the local pod runner.
    Local {
        /// The `sluice` executable the workers run.
        program: PathBuf,
        /// Environment of every worker (the S3 endpoint and credentials).
        env: Vec<(String, String)>,
    },
    /// On a cluster, through the submit path: ConfigMap, worker Job, watch, publish.
    Cluster {
        client: kube::Client,
        image: Option<String>,
        namespace: Option<String>,
        poll: Duration,
    },
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Executor::Local { program, .. } => write!(f, "Local({})", program.display()),
            Executor::Cluster { namespace, .. } => write!(f, "Cluster({namespace:?})"),
        }
    }
}

/// A run that could not be carried out (a run that ran and failed has a report or an exit
/// code instead).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Local(Box<LocalRunError>),
    #[error(transparent)]
    Submit(Box<SubmitError>),
    #[error(transparent)]
    Task(#[from] TaskError),
}

impl ExecuteError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ExecuteError::Local(e) => e.exit_code(),
            ExecuteError::Submit(e) => e.exit_code(),
            ExecuteError::Task(e) => e.exit_code(),
        }
    }
}

impl From<LocalRunError> for ExecuteError {
    fn from(error: LocalRunError) -> Self {
        ExecuteError::Local(Box::new(error))
    }
}

impl From<SubmitError> for ExecuteError {
    fn from(error: SubmitError) -> Self {
        ExecuteError::Submit(Box::new(error))
    }
}

impl Executor {
    /// Runs a job to its end under `run_id` and returns its report. `resume` finishes a run
    /// that was planned before (its own plan) instead of planning a new one; on a cluster,
    /// submitting is idempotent per run id, so an existing plan and Job are picked up.
    pub async fn run_job(
        &self,
        storage: &Storage,
        loaded: &Loaded,
        run_id: &str,
        resume: bool,
    ) -> Result<RunReport, ExecuteError> {
        match self {
            Executor::Local { program, env } => {
                let options = LocalRunOptions {
                    program: program.clone(),
                    env: env.clone(),
                    parallelism: None,
                    run_id: Some(run_id.to_string()),
                    bar: false,
                    cpus: None,
                    resume,
                    full: false,
                };
                Ok(run_locally(storage, loaded, options).await?.report)
            }
            Executor::Cluster {
                client,
                image,
                namespace,
                poll,
            } => {
                let target = Target::new(
                    &loaded.job,
                    image.as_deref(),
                    namespace.as_deref(),
                    run_id.to_string(),
                );
                let cluster = Cluster::new(client.clone(), &target.namespace);
                let started = Utc::now();
                submit::submit(storage, &cluster, loaded, &target, true).await?;
                Ok(submit::watch_and_publish(
                    storage, &cluster, run_id, None, started, *poll, false,
                )
                .await?)
            }
        }
    }

    /// Runs a task with its overrides (the run id among them) to its end.
    pub async fn run_task(
        &self,
        def: &TaskDefinition,
        overrides: &Overrides,
    ) -> Result<TaskOutcome, ExecuteError> {
        let how = match self {
            Executor::Local { program, env } => Where::Local {
                program: program.clone(),
                env: env.clone(),
                output: PodOutput::Prefixed,
            },
            Executor::Cluster {
                client,
                namespace,
                poll,
                ..
            } => Where::Cluster {
                cluster: Cluster::new(
                    client.clone(),
                    namespace.as_deref().unwrap_or(&overrides.namespace(def)),
                ),
                poll: *poll,
            },
        };
        Ok(run_task(def, overrides, how).await?)
    }
}
