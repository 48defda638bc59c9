//! What can go wrong when running a task, apart from the task itself failing.

use crate::exit::ExitCode;
use crate::kubernetes::cluster::ClusterError;
use crate::pod::PodRunError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("--container {name:?}: the task has no such container (it has {known})")]
    UnknownContainer { name: String, known: String },
    #[error(
        "--env {name}: looks like a credential; a literal value would be stored in the Job's pod spec: put it in the container's `secrets`"
    )]
    CredentialOverride { name: String },
    #[error("--env {given:?}: expected NAME=VALUE")]
    BadEnv { given: String },
    #[error("--entrypoint: must name a program")]
    EmptyEntryPoint,
    #[error("running the task on this machine")]
    Local(#[source] PodRunError),
    #[error("running the task on the cluster")]
    Cluster(#[source] ClusterError),
    #[error("reading the log of pod {pod}")]
    Logs {
        pod: String,
        #[source]
        source: std::io::Error,
    },
}

impl TaskError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TaskError::Cluster(e) => e.exit_code(),
            TaskError::Local(e) => e.exit_code(),
            TaskError::Logs { .. } => ExitCode::Transient,
            _ => ExitCode::Config,
        }
    }
}
