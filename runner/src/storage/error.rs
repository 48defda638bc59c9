//! What can go wrong talking to S3, named after the operation that failed.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::S3Uri;
use crate::exit::ExitCode;

/// An S3 operation that failed. Every variant names the object or bucket it was about.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("listing {uri}")]
    ListObjects {
        uri: S3Uri,
        #[source]
        source: S3Failure,
    },
    #[error("reading {uri}")]
    GetObject {
        uri: S3Uri,
        #[source]
        source: S3Failure,
    },
    #[error("reading the metadata of {uri}")]
    HeadObject {
        uri: S3Uri,
        #[source]
        source: S3Failure,
    },
    #[error("writing {uri}")]
    PutObject {
        uri: S3Uri,
        #[source]
        source: S3Failure,
    },
    #[error("deleting {uri}")]
    DeleteObject {
        uri: S3Uri,
        #[source]
        source: S3Failure,
    },
    #[error("creating bucket s3://{bucket}")]
    CreateBucket {
        bucket: String,
        #[source]
        source: S3Failure,
    },
    #[error("starting a multipart upload to {uri}")]
    CreateUpload {
        uri: S3Uri,
        #[source]
        source: S3Failure,
    },
    #[error("uploading part {part} of {uri}")]
    UploadPart {
        uri: S3Uri,
        part: i32,
        #[source]
        source: S3Failure,
    },
    #[error("completing the multipart upload of {uri}")]
    CompleteUpload {
        uri: S3Uri,
        #[source]
        source: S3Failure,
    },
    #[error("aborting multipart upload {upload_id} of {uri}")]
    AbortUpload {
        uri: S3Uri,
        upload_id: String,
        #[source]
        source: S3Failure,
    },
    #[error("listing multipart uploads under {uri}")]
    ListUploads {
        uri: S3Uri,
        #[source]
        source: S3Failure,
    },
    /// The object's ETag no longer matches the one the read started with.
    #[error("{uri} changed while it was read (expected ETag {etag})")]
    ObjectChanged { uri: S3Uri, etag: String },
    /// A response that does not fit the request (a short range, a missing size).
    #[error("unexpected response reading {uri}: {detail}")]
    BadResponse { uri: S3Uri, detail: String },
    /// The upload was already finished, aborted or failed.
    #[error("the upload to {uri} is closed")]
    UploadClosed { uri: S3Uri },
    /// A synchronous writer was dropped before `finish`; its upload was aborted.
    #[error("the writer for {uri} was dropped before it finished; the upload was aborted")]
    WriterDropped { uri: S3Uri },
    /// A task of ours (a part upload) panicked or was cancelled.
    #[error("an upload task for {uri} stopped")]
    UploadTask {
        uri: S3Uri,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("part {part} of {uri} failed by an injected fault")]
    InjectedFault { uri: S3Uri, part: i32 },
    #[error("reading the Parquet footer of {uri}")]
    ParquetMetadata {
        uri: S3Uri,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The embedded server may not stand in (inside a pod, a worker, the launcher) and the
    /// AWS default chain found no credentials.
    #[error(
        "no S3 credentials: {why}, so sluice does not start its embedded S3 server; the AWS default credential chain found none (tried: {tried})"
    )]
    NoCredentials {
        why: String,
        tried: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("starting the embedded S3 server on {dir}")]
    EmbeddedServer {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// 1 for what a retry may fix (5xx, throttling, the network); 2 otherwise (a missing
    /// bucket or key, denied access, an invalid request: the job's settings).
    pub fn exit_code(&self) -> ExitCode {
        if self.is_transient() {
            ExitCode::Transient
        } else {
            ExitCode::Config
        }
    }
}

impl StorageError {
    /// Whether a retry of the same operation can succeed: server errors, throttling,
    /// timeouts, broken connections and objects that changed mid-read. Missing buckets and
    /// keys, denied access and invalid requests fail again.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::ListObjects { source, .. }
            | StorageError::GetObject { source, .. }
            | StorageError::HeadObject { source, .. }
            | StorageError::PutObject { source, .. }
            | StorageError::DeleteObject { source, .. }
            | StorageError::CreateBucket { source, .. }
            | StorageError::CreateUpload { source, .. }
            | StorageError::UploadPart { source, .. }
            | StorageError::CompleteUpload { source, .. }
            | StorageError::AbortUpload { source, .. }
            | StorageError::ListUploads { source, .. } => source.is_transient(),
            StorageError::ObjectChanged { .. }
            | StorageError::BadResponse { .. }
            | StorageError::UploadTask { .. }
            | StorageError::InjectedFault { .. } => true,
            StorageError::EmbeddedServer { .. } => true,
            // A footer read can fail on the way (transient) or be corrupt (not).
            StorageError::ParquetMetadata { source, .. } => match source {
                parquet::errors::ParquetError::External(inner) => inner
                    .downcast_ref::<StorageError>()
                    .is_some_and(StorageError::is_transient),
                _ => false,
            },
            StorageError::UploadClosed { .. }
            | StorageError::WriterDropped { .. }
            | StorageError::NoCredentials { .. } => false,
        }
    }

    /// The S3 failure underneath, if the error came from a request.
    pub fn failure(&self) -> Option<&S3Failure> {
        match self {
            StorageError::ListObjects { source, .. }
            | StorageError::GetObject { source, .. }
            | StorageError::HeadObject { source, .. }
            | StorageError::PutObject { source, .. }
            | StorageError::DeleteObject { source, .. }
            | StorageError::CreateBucket { source, .. }
            | StorageError::CreateUpload { source, .. }
            | StorageError::UploadPart { source, .. }
            | StorageError::CompleteUpload { source, .. }
            | StorageError::AbortUpload { source, .. }
            | StorageError::ListUploads { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The storage error carried inside an `io::Error` (object streams report through
    /// `io::Error`, whose `source()` skips the error it wraps).
    pub fn from_io(error: &std::io::Error) -> Option<&StorageError> {
        error.get_ref()?.downcast_ref::<StorageError>()
    }
}

/// How a request failed, reduced to what decides about retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server answered with an error.
    Service,
    /// The request timed out.
    Timeout,
    /// The connection could not be made or broke.
    Connection,
    /// The response could not be read or parsed.
    Response,
    /// The request could not be built (a bug or bad input on our side).
    Construction,
}

/// One failed S3 request: the HTTP status, the S3 error code and a readable message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct S3Failure {
    pub kind: FailureKind,
    pub status: Option<u16>,
    pub code: Option<Box<str>>,
    pub message: Box<str>,
}

impl S3Failure {
    pub fn from_sdk<E>(error: SdkError<E, HttpResponse>) -> S3Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let code: Option<Box<str>> = error.code().map(Into::into);
        let kind = match &error {
            SdkError::ServiceError(_) => FailureKind::Service,
            SdkError::TimeoutError(_) => FailureKind::Timeout,
            SdkError::DispatchFailure(_) => FailureKind::Connection,
            SdkError::ResponseError(_) => FailureKind::Response,
            _ => FailureKind::Construction,
        };
        let message = match (kind, status) {
            (FailureKind::Service, Some(status)) if code.is_some() => {
                let mut m = format!("HTTP {status}");
                if let Some(code) = &code {
                    m.push_str(&format!(" {code}"));
                }
                if let Some(text) = error.message().filter(|t| !t.is_empty()) {
                    m.push_str(&format!(": {text}"));
                }
                m
            }
            _ => DisplayErrorContext(&error).to_string(),
        };
        S3Failure {
            kind,
            status,
            code,
            message: message.into(),
        }
    }

    /// A failure made up by fault injection or by checks of our own.
    pub fn local(kind: FailureKind, message: impl Into<String>) -> S3Failure {
        S3Failure {
            kind,
            status: None,
            code: None,
            message: message.into().into(),
        }
    }

    /// The S3 error codes that mean the request itself is wrong or not allowed.
    const PERMANENT_CODES: &'static [&'static str] = &[
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccountProblem",
        "NoSuchBucket",
        "NoSuchKey",
        "InvalidArgument",
        "InvalidBucketName",
        "InvalidRequest",
        "InvalidRange",
        "EntityTooSmall",
        "EntityTooLarge",
        "InvalidPart",
        "InvalidPartOrder",
        "MethodNotAllowed",
        "NotImplemented",
    ];

    pub fn is_transient(&self) -> bool {
        match self.kind {
            FailureKind::Timeout | FailureKind::Connection | FailureKind::Response => true,
            FailureKind::Construction => false,
            FailureKind::Service => {
                if let Some(code) = self.code.as_deref()
                    && S3Failure::PERMANENT_CODES.contains(&code)
                {
                    return false;
                }
                match self.status {
                    Some(s) if s >= 500 => true,
                    // Throttling, request timeout, a precondition that changed under us,
                    // a conflicting concurrent operation.
                    Some(408 | 409 | 412 | 429) => true,
                    Some(_) => false,
                    None => true,
                }
            }
        }
    }

    /// Whether the server asked the client to slow down (503 SlowDown, 429, throttling
    /// codes).
    pub fn is_throttling(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "SlowDown"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "TooManyRequests"
            )
        ) || matches!(self.status, Some(429 | 503))
    }

    /// Whether the server said the bucket or key does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("NoSuchKey" | "NoSuchBucket" | "NotFound")
        ) || self.status == Some(404)
    }

    /// Whether the server refused the credentials or the permission.
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "AllAccessDisabled"
            )
        ) || self.status == Some(403)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> S3Failure {
        S3Failure {
            kind: FailureKind::Service,
            status: Some(status),
            code: Some(code.into()),
            message: "".into(),
        }
    }

    #[test]
    fn classifies_failures() {
        assert!(!service(404, "NoSuchKey").is_transient());
        assert!(!service(403, "AccessDenied").is_transient());
        assert!(!service(400, "InvalidArgument").is_transient());
        assert!(service(503, "SlowDown").is_transient());
        assert!(service(500, "InternalError").is_transient());
        assert!(service(412, "PreconditionFailed").is_transient());
        assert!(S3Failure::local(FailureKind::Connection, "refused").is_transient());
        let uri = S3Uri::new("raw", "a.csv");
        let changed = StorageError::ObjectChanged {
            uri: uri.clone(),
            etag: "\"x\"".into(),
        };
        assert!(changed.is_transient());
        let missing = StorageError::GetObject {
            uri,
            source: service(404, "NoSuchKey"),
        };
        assert!(!missing.is_transient());
        assert_eq!(missing.to_string(), "reading s3://raw/a.csv");
    }

    #[test]
    fn finds_storage_error_inside_io_error() {
        let inner = StorageError::UploadClosed {
            uri: S3Uri::new("raw", "k"),
        };
        let io = std::io::Error::other(inner);
        assert!(matches!(
            StorageError::from_io(&io),
            Some(StorageError::UploadClosed { .. })
        ));
    }
}
