//! The one table that maps every error to its kind, retryability and worker exit code.

use std::fmt;

/// The worker exit codes of the contract between worker, local runner and podFailurePolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitCode {
    /// 0: everything done.
    Done,
    /// 1: a transient failure; a retry can help.
    Transient,
    /// 2: bad configuration or usage; a retry fails again.
    Config,
    /// 3: a validation check failed; a retry fails again.
    Validation,
    /// 4: bad source data beyond the allowed threshold; a retry fails again.
    BadData,
}

impl ExitCode {
    /// Every code, in numeric order.
    pub const ALL: [ExitCode; 5] = [
        ExitCode::Done,
        ExitCode::Transient,
        ExitCode::Config,
        ExitCode::Validation,
        ExitCode::BadData,
    ];

    pub fn code(self) -> i32 {
        match self {
            ExitCode::Done => 0,
            ExitCode::Transient => 1,
            ExitCode::Config => 2,
            ExitCode::Validation => 3,
            ExitCode::BadData => 4,
        }
    }

    pub fn from_code(code: i32) -> Option<ExitCode> {
        ExitCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether a retry of the same work can succeed (only transient failures).
    pub fn retryable(self) -> bool {
        matches!(self, ExitCode::Transient)
    }

    pub fn describe(self) -> &'static str {
        match self {
            ExitCode::Done => "done",
            ExitCode::Transient => "transient failure, retried",
            ExitCode::Config => "configuration or usage error",
            ExitCode::Validation => "validation failed",
            ExitCode::BadData => "bad source data beyond the allowed threshold",
        }
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.describe())
    }
}

/// An exit code of a run with sluice's meaning of it, where it has one (`3 (validation
/// failed)`); a task's own code as it is.
pub fn describe_exit(exit: i32) -> String {
    match ExitCode::from_code(exit) {
        Some(code) => code.to_string(),
        None => exit.to_string(),
    }
}

/// The exit status for several runs: the highest exit code (0 when every run succeeded).
/// sluice's codes rank by number too, so a transient failure (1) ranks below bad data (4).
pub fn worst_exit(exits: impl IntoIterator<Item = i32>) -> u8 {
    let worst = exits.into_iter().max().unwrap_or(0);
    u8::try_from(worst).unwrap_or(1)
}

/// Who is at fault for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's file, flags or data.
    User,
    /// Something outside sluice (S3, the network, a transformer).
    External,
    /// A bug or invariant broken inside sluice.
    Internal,
}

/// Implemented by every module error so that main and the worker can map it to an exit code.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
    fn exit_code(&self) -> ExitCode;
}

/// The exit code for an error that reached the edge: the first error in the chain that
/// classifies itself decides; anything else is a transient failure.
pub fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if let Some(code) = classify_any(cause) {
            return code;
        }
    }
    ExitCode::Transient
}

fn classify_any(cause: &(dyn std::error::Error + 'static)) -> Option<ExitCode> {
    if let Some(e) = cause.downcast_ref::<crate::storage::uri::S3UriError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::spec::SpecErrors>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::storage::StorageError>() {
        return Some(e.exit_code());
    }
    // Object streams report through io::Error, whose source() skips the error it wraps.
    if let Some(e) = cause
        .downcast_ref::<std::io::Error>()
        .and_then(crate::storage::StorageError::from_io)
    {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::worker::error::ObjectError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::worker::WorkerError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::exec::start::StartError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::exec::verify::VerifyError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::exec::submit::SubmitError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::exec::cluster::ClusterError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::exec::local::PodRunError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::task::TaskError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::schedule::fire::FireError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::plan::PlanError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::format::DecodeError>() {
        return Some(e.exit_code());
    }
    if let Some(e) = cause.downcast_ref::<crate::format::EncodeError>() {
        return Some(e.exit_code());
    }
    None
}

impl Classify for crate::storage::uri::S3UriError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
    fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

impl Classify for crate::storage::StorageError {
    fn kind(&self) -> ErrorKind {
        use crate::storage::StorageError as E;
        if self.is_transient() {
            return ErrorKind::External;
        }
        match self {
            E::UploadClosed { .. } | E::WriterDropped { .. } => ErrorKind::Internal,
            E::ParquetMetadata { .. } => ErrorKind::User,
            // Missing buckets or keys, denied access, invalid requests: the job's settings.
            _ if self
                .failure()
                .is_some_and(|f| f.is_not_found() || f.is_access_denied()) =>
            {
                ErrorKind::User
            }
            _ => ErrorKind::External,
        }
    }
    fn exit_code(&self) -> ExitCode {
        if self.is_transient() {
            ExitCode::Transient
        } else {
            ExitCode::Config
        }
    }
}

impl Classify for crate::task::TaskError {
    fn kind(&self) -> ErrorKind {
        use crate::task::TaskError as E;
        match self {
            E::Cluster(e) => e.kind(),
            E::Logs { .. } => ErrorKind::External,
            _ => ErrorKind::User,
        }
    }
    fn exit_code(&self) -> ExitCode {
        use crate::task::TaskError as E;
        match self {
            E::Cluster(e) => e.exit_code(),
            E::Local(e) => e.exit_code(),
            E::Logs { .. } => ExitCode::Transient,
            _ => ExitCode::Config,
        }
    }
}

impl Classify for crate::plan::PlanError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
    fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

impl Classify for crate::transform::TransformError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
    fn exit_code(&self) -> ExitCode {
        match self {
            crate::transform::TransformError::Container(e) => e.exit_code(),
            // A query that does not plan (unknown column, bad function) fails again on retry.
            _ => ExitCode::Config,
        }
    }
}

impl Classify for crate::worker::error::ObjectError {
    fn kind(&self) -> ErrorKind {
        use crate::worker::error::ObjectError as E;
        match self {
            E::Storage(e) => e.kind(),
            E::Decode { source, .. } => source.kind(),
            E::Encode { .. } | E::Internal(_) | E::Cancelled => ErrorKind::Internal,
            E::Parquet { .. } | E::BadRecord { .. } | E::TooManyBadRecords { .. } => {
                ErrorKind::User
            }
            E::TransformPlan(_)
            | E::Transform(_)
            | E::StepCount { .. }
            | E::Validation { .. }
            | E::Rule { .. } => ErrorKind::User,
            E::Lost { .. } => ErrorKind::Internal,
            E::ReadBack { .. } => ErrorKind::External,
            E::Transformer(e) if e.transient() => ErrorKind::External,
            E::Transformer(_) => ErrorKind::User,
        }
    }
    fn exit_code(&self) -> ExitCode {
        use crate::worker::error::ObjectError as E;
        match self {
            E::Storage(e) => e.exit_code(),
            E::Decode { source, .. } => source.exit_code(),
            // A Parquet object that cannot be read is bad source data.
            E::Parquet { .. } => ExitCode::BadData,
            E::BadRecord { .. } | E::TooManyBadRecords { .. } => ExitCode::BadData,
            E::TransformPlan(e) => e.exit_code(),
            // A query failing on the data (a cast of a bad value) fails again on retry.
            E::Transform(_) => ExitCode::BadData,
            E::StepCount { .. } | E::Lost { .. } | E::ReadBack { .. } | E::Validation { .. } => {
                ExitCode::Validation
            }
            E::Rule { .. } => ExitCode::Config,
            E::Encode { .. } | E::Internal(_) | E::Cancelled => ExitCode::Transient,
            E::Transformer(e) => e.exit_code(),
        }
    }
}

impl Classify for crate::worker::WorkerError {
    fn kind(&self) -> ErrorKind {
        use crate::worker::WorkerError as E;
        match self {
            E::ReadState { source, .. }
            | E::WriteState { source, .. }
            | E::CleanUploads { source, .. } => source.kind(),
            _ => ErrorKind::User,
        }
    }
    fn exit_code(&self) -> ExitCode {
        use crate::worker::WorkerError as E;
        match self {
            E::ReadState { source, .. }
            | E::WriteState { source, .. }
            | E::CleanUploads { source, .. } => source.exit_code(),
            E::MissingState { .. }
            | E::BadPlan { .. }
            | E::BadJob(_)
            | E::NoSuchShard { .. }
            | E::Plan(_) => ExitCode::Config,
        }
    }
}

impl Classify for crate::exec::verify::VerifyError {
    fn kind(&self) -> ErrorKind {
        use crate::exec::verify::VerifyError as E;
        match self {
            E::Storage(e) => e.kind(),
            _ => ErrorKind::User,
        }
    }
    fn exit_code(&self) -> ExitCode {
        use crate::exec::verify::VerifyError as E;
        match self {
            E::Storage(e) => e.exit_code(),
            // A manifest that no longer parses was changed after publish.
            E::BadManifest { .. } | E::BadListedUri { .. } => ExitCode::Validation,
            E::NotPublished { .. }
            | E::NeedsJob { .. }
            | E::NotAManifest { .. }
            | E::BadUri { .. }
            | E::NoJob { .. }
            | E::BadJob { .. } => ExitCode::Config,
        }
    }
}

impl Classify for crate::exec::start::StartError {
    fn kind(&self) -> ErrorKind {
        use crate::exec::start::StartError as E;
        match self {
            E::Storage(e) => e.kind(),
            E::Infer { source, .. } => source.kind(),
            E::Plan(_) | E::RunExists { .. } => ErrorKind::User,
            E::Ledger(crate::state::ledger::LedgerError::Storage(e)) => e.kind(),
            E::Ledger(crate::state::ledger::LedgerError::Read { .. }) => ErrorKind::External,
            E::Ledger(_) => ErrorKind::Internal,
            E::Join(_) => ErrorKind::Internal,
        }
    }
    fn exit_code(&self) -> ExitCode {
        use crate::exec::start::StartError as E;
        match self {
            E::Storage(e) => e.exit_code(),
            E::Infer { source, .. } => source.exit_code(),
            E::Plan(_) | E::RunExists { .. } => ExitCode::Config,
            E::Ledger(crate::state::ledger::LedgerError::Storage(e)) => e.exit_code(),
            E::Ledger(crate::state::ledger::LedgerError::Read { .. }) => ExitCode::Transient,
            // A ledger or plan that does not parse will not parse on a retry either.
            E::Ledger(_) => ExitCode::Config,
            E::Join(_) => ExitCode::Transient,
        }
    }
}

impl Classify for crate::exec::cluster::ClusterError {
    fn kind(&self) -> ErrorKind {
        use crate::exec::cluster::ClusterError as E;
        match self {
            // Denied, invalid or missing objects are the setup's; the rest is the cluster's.
            E::Api(kube::Error::Api(status)) if status.code < 500 && status.code != 429 => {
                ErrorKind::User
            }
            E::Api(_) => ErrorKind::External,
            E::Config(_) | E::NoRun { .. } | E::NoPlan { .. } | E::Malformed { .. } => {
                ErrorKind::User
            }
        }
    }
    fn exit_code(&self) -> ExitCode {
        match self.kind() {
            ErrorKind::User => ExitCode::Config,
            _ => ExitCode::Transient,
        }
    }
}

impl Classify for crate::exec::submit::SubmitError {
    fn kind(&self) -> ErrorKind {
        use crate::exec::submit::SubmitError as E;
        match self {
            E::Cluster(e) => e.kind(),
            E::Storage(e) => e.kind(),
            E::Start(e) => e.kind(),
            E::State { .. } => ErrorKind::External,
            E::StillRunning { .. } => ErrorKind::User,
        }
    }
    fn exit_code(&self) -> ExitCode {
        use crate::exec::submit::SubmitError as E;
        match self {
            E::Cluster(e) => e.exit_code(),
            E::Storage(e) => e.exit_code(),
            E::Start(e) => e.exit_code(),
            E::State { .. } | E::StillRunning { .. } => ExitCode::Config,
        }
    }
}

impl Classify for crate::exec::local::PodRunError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
    fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

impl Classify for crate::format::DecodeError {
    fn kind(&self) -> ErrorKind {
        use crate::format::DecodeError as E;
        match self {
            E::Read { .. } => ErrorKind::External,
            E::Batch { .. } => ErrorKind::Internal,
            E::HeaderMismatch { .. }
            | E::UnsupportedType { .. }
            | E::InvalidTimeZone { .. }
            | E::UnsupportedFormat { .. }
            | E::Json { .. }
            | E::RecordTooLong { .. }
            | E::QuotedNewline { .. }
            | E::EmptySample => ErrorKind::User,
        }
    }
    fn exit_code(&self) -> ExitCode {
        use crate::format::DecodeError as E;
        match self {
            // The reader below (S3, the network, a decompressor) failed: a retry can help.
            E::Read { .. } | E::Batch { .. } => ExitCode::Transient,
            E::HeaderMismatch { .. }
            | E::Json { .. }
            | E::RecordTooLong { .. }
            | E::QuotedNewline { .. }
            | E::EmptySample => ExitCode::BadData,
            E::UnsupportedType { .. } | E::InvalidTimeZone { .. } | E::UnsupportedFormat { .. } => {
                ExitCode::Config
            }
        }
    }
}

impl Classify for crate::format::EncodeError {
    fn kind(&self) -> ErrorKind {
        if self.is_io() {
            ErrorKind::External
        } else {
            ErrorKind::Internal
        }
    }
    fn exit_code(&self) -> ExitCode {
        // A destination that refused bytes may take them on a retry; an encoding failure is
        // a bug, and exit 1 is the catch-all for those too.
        ExitCode::Transient
    }
}

impl Classify for crate::spec::SpecErrors {
    fn kind(&self) -> ErrorKind {
        ErrorKind::User
    }
    fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}
