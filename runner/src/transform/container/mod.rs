//! Container steps: the records (or the raw object) go to the user's transformer over
//! loopback, and what it returns is decoded into records again (or kept as an opaque
//! object by the worker).

pub mod harness;
pub mod protocol;
pub mod transport;
pub mod wire;

use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::exit::ExitCode;
use crate::spec::container::{ContainerStep, StepInput};
use crate::transform::container::transport::TransportError;
use crate::transform::container::wire::{ByteStream, OutputDecodeError, decode_output};

/// A container step failed on one object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("step {step}, object {key}: {failure}")]
pub struct ContainerError {
    pub step: String,
    pub key: String,
    pub failure: Failure,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Output(#[from] OutputDecodeError),
}

impl ContainerError {
    pub fn new(step: &str, key: &str, failure: impl Into<Failure>) -> ContainerError {
        ContainerError {
            step: step.to_string(),
            key: key.to_string(),
            failure: failure.into(),
        }
    }

    /// From an output error: a broken transport is the transport's failure.
    fn from_output(step: &str, key: &str, error: OutputDecodeError) -> ContainerError {
        let failure = match (error.transport, error.io) {
            (Some(transport), _) => Failure::Transport(transport),
            (None, true) => Failure::Transport(TransportError::Broken(error.detail)),
            (None, false) => Failure::Output(OutputDecodeError {
                transport: None,
                ..error
            }),
        };
        ContainerError {
            step: step.to_string(),
            key: key.to_string(),
            failure,
        }
    }

    /// Whether retrying the object can help.
    pub fn transient(&self) -> bool {
        match &self.failure {
            Failure::Transport(t) => t.transient(),
            Failure::Output(_) => false,
        }
    }

    /// 1 for what a retry may fix; 4 when the transformer refused the object (a 4xx reply
    /// or a failing io command: bad data for it); 2 when its output is not what the step
    /// declares (a wiring mistake).
    pub fn exit_code(&self) -> ExitCode {
        match &self.failure {
            _ if self.transient() => ExitCode::Transient,
            Failure::Transport(TransportError::Status { .. })
            | Failure::Transport(TransportError::Exit { .. }) => ExitCode::BadData,
            _ => ExitCode::Config,
        }
    }
}

/// Waits until every transformer of the job (an io step's bridge included) answers
/// `GET /health`.
pub async fn wait_for_transformers(job: &crate::spec::job::Job) -> Result<(), ContainerError> {
    for step in &job.steps {
        if let crate::spec::job::StepKind::Container(c) = &step.kind {
            transport::wait_ready(c.listen_port(), c.init_timeout)
                .await
                .map_err(|e| ContainerError::new(&step.name, "(before the first object)", e))?;
        }
    }
    Ok(())
}

/// The MIME type of what a step sends.
pub fn content_type(input: StepInput) -> &'static str {
    match input {
        StepInput::Raw => "application/octet-stream",
        StepInput::Csv => "text/csv",
        StepInput::Jsonl => "application/x-ndjson",
        StepInput::Arrow => "application/vnd.apache.arrow.stream",
    }
}

/// Sends `body` through the step and decodes the reply as records. A failure that shows
/// only while the reply is read ends the returned stream with the `ContainerError`.
pub async fn records_through(
    step: &ContainerStep,
    name: &str,
    key: &str,
    size: Option<u64>,
    body: ByteStream,
) -> Result<SendableRecordBatchStream, ContainerError> {
    let reply = transport::exchange(step, key, size, content_type(step.input), body)
        .await
        .map_err(|e| ContainerError::new(name, key, e))?;
    let decoded = decode_output(reply, step.output)
        .await
        .map_err(|e| ContainerError::from_output(name, key, e))?;
    let schema = decoded.stream.schema();
    let (name, key) = (name.to_string(), key.to_string());
    let mut task = Some(decoded.task);
    let tail = futures::stream::poll_fn(move |cx| {
        let Some(handle) = task.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let result = std::task::ready!(std::pin::Pin::new(handle).poll(cx));
        task = None;
        std::task::Poll::Ready(match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(Err(DataFusionError::External(Box::new(
                ContainerError::from_output(&name, &key, e),
            )))),
            Err(e) => Some(Err(DataFusionError::Execution(format!(
                "decoding the transformer output ended abnormally: {e}"
            )))),
        })
    });
    let stream = decoded.stream.chain(tail);
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
}

/// A structured step mid-pipeline: the incoming batches encoded as the step's input.
pub async fn apply(
    step: &ContainerStep,
    name: &str,
    key: &str,
    input: SendableRecordBatchStream,
) -> Result<SendableRecordBatchStream, ContainerError> {
    let body = wire::encode_batches(input, step.input);
    records_through(step, name, key, None, body).await
}

/// The container failure behind a pipeline error, if there is one.
pub fn container_error(error: &DataFusionError) -> Option<&ContainerError> {
    match error {
        DataFusionError::External(e) => e.downcast_ref::<ContainerError>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<ContainerError>())
        }),
        DataFusionError::Context(_, inner) => container_error(inner),
        DataFusionError::Shared(inner) => container_error(inner),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            arrow::error::ArrowError::ExternalError(e) => e.downcast_ref::<ContainerError>(),
            _ => None,
        },
        _ => None,
    }
}
