//! `sluice transform`: one object through the job's steps, written to a local file or to
//! stdout instead of the sink: for trying a job on a sample before running it.

use std::io::Write;

use futures::StreamExt;
use tokio::io::AsyncReadExt;

use crate::format;
use crate::plan::PlannedObject;
use crate::spec::container::{ContainerStep, OutputFormat, StepInput};
use crate::storage::uri::S3Uri;
use crate::transform::container::wire::ByteStream;
use crate::transform::{self, container};
use crate::worker::clock::PhaseClock;
use crate::worker::error::ObjectError;
use crate::worker::object::{Input, ObjectContext, RawInput};
use crate::worker::raw::{self, raw_step};

/// What went through.
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineCounts {
    /// Records decoded (or returned by a raw first step).
    pub input: u64,
    pub output: u64,
    /// Records that could not be decoded (logged, not written).
    pub bad: u64,
    /// Bytes written (an opaque output).
    pub bytes: u64,
}

/// Transforms `object` and writes the result, encoded as the sink's format (or the opaque
/// reply of a last raw step as it is), to `out`.
pub async fn transform_object(
    ctx: &ObjectContext,
    object: &PlannedObject,
    out: Box<dyn Write + Send>,
) -> Result<InlineCounts, ObjectError> {
    let job = &ctx.job;
    let source = S3Uri::new(job.source.uri.bucket.clone(), object.key.clone());
    if let Some((step, c)) = raw_step(job)
        && c.output == OutputFormat::Opaque
    {
        let (body, watch) = raw::body(ctx, &source, object, &PhaseClock::new()).await?;
        return send_opaque(&step.name, c, object, body, out)
            .await
            .map_err(|e| watch.explain(e));
    }
    let (bad_tx, mut bad_rx) = tokio::sync::mpsc::channel::<format::BadRecord>(64);
    let key = object.key.clone();
    let bad_log = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(bad) = bad_rx.recv().await {
            n += 1;
            tracing::warn!(key = %key, line = bad.line, "bad record: {}", bad.error);
        }
        n
    });
    let input = Input::start(ctx, &source, object, bad_tx, &PhaseClock::new()).await?;
    let (stream, task, steps, raw) = input.into_parts(job);
    let written = async {
        let (mut output, _counters) = transform::apply_steps(steps, stream, &object.key)
            .await
            .map_err(ObjectError::from_transform)?;
        let sink = &job.sink;
        let mut encoder = format::open_encoder(
            sink.format,
            output.schema(),
            &sink.parquet,
            &sink.csv,
            sink.compression,
            out,
        )
        .map_err(|e| ObjectError::encode(&source, e))?;
        while let Some(batch) = output.next().await {
            let batch = batch.map_err(ObjectError::from_pipeline)?;
            encoder
                .write(&batch)
                .map_err(|e| ObjectError::encode(&source, e))?;
        }
        encoder
            .finish()
            .map_err(|e| ObjectError::encode(&source, e))
    }
    .await
    .map_err(|e| RawInput::explain(raw.as_ref(), e))?;
    let input = match task {
        Some(task) => {
            task.await
                .unwrap_or_else(|e| Err(ObjectError::from_join(e)))?
                .records
        }
        None => raw.map_or(0, |r| r.counter.get().1),
    };
    let bad = bad_log.await.unwrap_or(0);
    Ok(InlineCounts {
        input,
        output: written,
        bad,
        bytes: 0,
    })
}

/// Exchanges `body` with an opaque raw step and writes the reply to `out`.
async fn send_opaque(
    step: &str,
    c: &ContainerStep,
    object: &PlannedObject,
    body: ByteStream,
    mut out: Box<dyn Write + Send>,
) -> Result<InlineCounts, ObjectError> {
    let failed = |e| container::ContainerError::new(step, &object.key, e);
    let mut reply = container::transport::exchange(
        c,
        &object.key,
        Some(object.size),
        container::content_type(StepInput::Raw),
        body,
    )
    .await
    .map_err(failed)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = reply.read(&mut buf).await.map_err(|e| {
            failed(
                container::transport::transport_error(&e)
                    .cloned()
                    .unwrap_or_else(|| container::transport::TransportError::Broken(e.to_string())),
            )
        })?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| ObjectError::Internal(format!("writing the output: {e}")))?;
        bytes += n as u64;
    }
    out.flush()
        .map_err(|e| ObjectError::Internal(format!("writing the output: {e}")))?;
    Ok(InlineCounts {
        bytes,
        ..Default::default()
    })
}
