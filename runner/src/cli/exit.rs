//! The exit status of an error that reached the top: the first error in its chain that
//! knows its own exit code decides (each error type says its code beside its definition).

use crate::exit::ExitCode;

/// The exit code for an error that reached the edge: the first error in the chain whose
/// type states its code decides; anything else is a transient failure.
pub fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    error
        .chain()
        .find_map(stated_code)
        .unwrap_or(ExitCode::Transient)
}

/// A usage error found by the CLI itself (a name that matches nothing, a malformed flag):
/// exit 2, since running the same command again fails the same way.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
}

impl UsageError {
    pub fn new(message: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

/// Tries each error type of the crate that states its exit code.
macro_rules! first_stated {
    ($cause:expr; $($error:ty),+ $(,)?) => {
        $(
            if let Some(e) = $cause.downcast_ref::<$error>() {
                return Some(e.exit_code());
            }
        )+
    };
}

fn stated_code(cause: &(dyn std::error::Error + 'static)) -> Option<ExitCode> {
    first_stated!(cause;
        UsageError,
        crate::storage::uri::S3UriError,
        crate::spec::SpecErrors,
        crate::storage::StorageError,
        crate::worker::error::ObjectError,
        crate::worker::WorkerError,
        crate::state::StateError,
        crate::run::local::LocalRunError,
        crate::run::start::StartError,
        crate::run::verify::VerifyError,
        crate::run::submit::SubmitError,
        crate::kubernetes::cluster::ClusterError,
        crate::pod::PodRunError,
        crate::task::TaskError,
        crate::schedule::fire::FireError,
        crate::pipeline::PipelineError,
        crate::pipeline::ExecuteError,
        crate::plan::PlanError,
        crate::format::DecodeError,
        crate::format::EncodeError,
    );
    // Object streams report through io::Error, whose source() skips the error it wraps.
    cause
        .downcast_ref::<std::io::Error>()
        .and_then(crate::storage::StorageError::from_io)
        .map(|e| e.exit_code())
}
