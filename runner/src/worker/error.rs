//! Why one source object failed.

use datafusion::error::DataFusionError;

use crate::exit::ExitCode;
use crate::format::{DecodeError, EncodeError};
use crate::storage::StorageError;
use crate::storage::uri::S3Uri;
use crate::transform::TransformError;
use crate::transform::container::{ContainerError, container_error};

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("decoding {uri}")]
    Decode {
        uri: S3Uri,
        #[source]
        source: DecodeError,
    },
    #[error("reading Parquet {uri}")]
    Parquet {
        uri: S3Uri,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// `origin` names the object, and the range of a split object.
    #[error("{origin} line {line}: bad record ({error}); on_bad_record is fail")]
    BadRecord {
        origin: String,
        line: u64,
        error: String,
    },
    #[error(
        "{uri}: {bad} bad records of {total} exceed max_bad_records {limit}{}",
        kept_note(.kept)
    )]
    TooManyBadRecords {
        uri: S3Uri,
        bad: u64,
        total: u64,
        limit: crate::spec::job::BadRecordLimit,
        /// The rejects object holding the bad records met before the object stopped.
        kept: Option<Box<S3Uri>>,
    },
    #[error(transparent)]
    TransformPlan(TransformError),
    #[error(transparent)]
    Transformer(Box<ContainerError>),
    #[error("running the transform steps")]
    Transform(#[source] DataFusionError),
    #[error("encoding {uri}")]
    Encode {
        uri: S3Uri,
        #[source]
        source: EncodeError,
    },
    #[error(
        "{uri}: step {step} turned {input} records into {output}; a step that drops records must declare `filters: true`"
    )]
    StepCount {
        uri: S3Uri,
        step: String,
        input: u64,
        output: u64,
    },
    #[error("{uri}: records are not accounted for: {detail}")]
    Lost { uri: S3Uri, detail: String },
    #[error("{uri}: the stored object holds {stored} records but {written} were written")]
    ReadBack {
        uri: S3Uri,
        written: u64,
        stored: u64,
    },
    #[error("{uri}: validation failed: {failed}")]
    Validation {
        uri: S3Uri,
        failed: String,
        outcomes: Vec<crate::state::checks::RuleOutcome>,
    },
    #[error("{uri}: a validation rule cannot be applied: {message}")]
    Rule { uri: S3Uri, message: String },
    #[error("{uri}: spec.sink.partition_by: {message}")]
    Partition { uri: S3Uri, message: String },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("stopped because another part of the pipeline failed")]
    Cancelled,
}

impl ObjectError {
    pub fn exit_code(&self) -> ExitCode {
        use ObjectError as E;
        match self {
            E::Storage(e) => e.exit_code(),
            E::Decode { source, .. } => source.exit_code(),
            // A Parquet object that does not decode is bad source data; a read of it that
            // failed (S3, the network) is the storage's failure.
            E::Parquet { source, .. } => match storage_failure(source) {
                Some(e) => e.exit_code(),
                None => ExitCode::BadData,
            },
            E::BadRecord { .. } | E::TooManyBadRecords { .. } => ExitCode::BadData,
            E::TransformPlan(e) => e.exit_code(),
            // A query failing on the data (a cast of a bad value) fails again on retry.
            E::Transform(_) => ExitCode::BadData,
            E::StepCount { .. } | E::Lost { .. } | E::ReadBack { .. } | E::Validation { .. } => {
                ExitCode::Validation
            }
            E::Rule { .. } | E::Partition { .. } => ExitCode::Config,
            E::Encode { source, .. } => source.exit_code(),
            E::Internal(_) | E::Cancelled => ExitCode::Transient,
            E::Transformer(e) => e.exit_code(),
        }
    }
}

fn kept_note(kept: &Option<Box<S3Uri>>) -> String {
    kept.as_ref()
        .map(|uri| format!("; the records rejected so far are in {uri}"))
        .unwrap_or_default()
}

/// The storage error under a Parquet read error, if a read of the object failed.
fn storage_failure(error: &parquet::errors::ParquetError) -> Option<&StorageError> {
    match error {
        parquet::errors::ParquetError::External(e) => e.downcast_ref::<StorageError>(),
        _ => None,
    }
}

impl From<ContainerError> for ObjectError {
    fn from(error: ContainerError) -> Self {
        ObjectError::Transformer(Box::new(error))
    }
}

impl ObjectError {
    pub fn decode(uri: &S3Uri, source: DecodeError) -> ObjectError {
        ObjectError::Decode {
            uri: uri.clone(),
            source,
        }
    }

    pub fn encode(uri: &S3Uri, source: EncodeError) -> ObjectError {
        ObjectError::Encode {
            uri: uri.clone(),
            source,
        }
    }

    pub fn parquet(uri: &S3Uri, source: parquet::errors::ParquetError) -> ObjectError {
        ObjectError::Parquet {
            uri: uri.clone(),
            source,
        }
    }

    pub fn from_transform(error: TransformError) -> ObjectError {
        match error {
            TransformError::Container(e) => ObjectError::Transformer(e),
            other => ObjectError::TransformPlan(other),
        }
    }

    /// An error of the running pipeline; a transformer's failure keeps its own kind.
    pub fn from_pipeline(error: DataFusionError) -> ObjectError {
        match container_error(&error) {
            Some(e) => ObjectError::Transformer(Box::new(e.clone())),
            None => ObjectError::Transform(error),
        }
    }

    pub fn from_join(error: tokio::task::JoinError) -> ObjectError {
        ObjectError::Internal(format!("a pipeline task ended abnormally: {error}"))
    }
}
