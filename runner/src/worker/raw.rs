//! Objects whose first step is a container step with `input: raw`: the transformer gets the
//! object's bytes (decompressed) instead of records. An `opaque` reply is stored as it is,
//! one output object per source object; a structured reply is decoded into the records
//! that the rest of the pipeline sees.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use chrono::Utc;
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::format::options::Compression;
use crate::format::{CorruptInput, DecodeError};
use crate::plan::PlannedObject;
use crate::plan::keys::output_key_with_extension;
use crate::spec::container::{ContainerStep, OutputFormat, StepInput};
use crate::spec::job::{Job, Step, StepKind};
use crate::state::marker::{DoneMarker, OutputObject, RecordCounts, StepCounts};
use crate::storage::UploadOptions;
use crate::storage::uri::S3Uri;
use crate::transform::container::wire::ByteStream;
use crate::transform::container::{ContainerError, content_type, transport};
use crate::worker::clock::{PhaseClock, WaitedBytes};
use crate::worker::error::ObjectError;
use crate::worker::object::ObjectContext;

/// The job's first step when it takes the raw object.
pub fn raw_step(job: &Job) -> Option<(&Step, &ContainerStep)> {
    match job.steps.first().map(|s| (s, &s.kind)) {
        Some((step, StepKind::Container(c))) if c.input == StepInput::Raw => Some((step, c)),
        _ => None,
    }
}

/// The object's bytes, decompressed per the source's compression (or its key), and a watch
/// on them.
pub async fn body(
    ctx: &ObjectContext,
    source: &S3Uri,
    object: &PlannedObject,
    clock: &Arc<PhaseClock>,
) -> Result<(ByteStream, SourceWatch), ObjectError> {
    let stream = WaitedBytes::new(
        ctx.storage.get(source, Some(&object.etag)).await?,
        clock.clone(),
    );
    let reader = StreamReader::new(stream);
    let compression = ctx
        .job
        .source
        .compression
        .unwrap_or_else(|| Compression::from_key(&object.key));
    let watch = SourceWatch {
        uri: source.clone(),
        corrupt: Arc::default(),
    };
    let seen = watch.corrupt.clone();
    let stream = ReaderStream::new(crate::format::decompress_async(reader, compression))
        .inspect_err(move |e| {
            if let Some(corrupt) = e.get_ref().and_then(|e| e.downcast_ref::<CorruptInput>()) {
                seen.lock()
                    .expect("not poisoned")
                    .get_or_insert(corrupt.clone());
            }
        });
    Ok((Box::pin(stream), watch))
}

/// Why a raw object's body broke, when the data was at fault: the transformer's side of an
/// exchange sees only that the body ended early.
#[derive(Clone)]
pub struct SourceWatch {
    uri: S3Uri,
    corrupt: Arc<Mutex<Option<CorruptInput>>>,
}

impl SourceWatch {
    /// The error to report for a failed object: bad source data (exit 4, naming the object)
    /// when its compressed body was corrupt or truncated, else `error` as it is.
    pub fn explain(&self, error: ObjectError) -> ObjectError {
        match self.corrupt.lock().expect("not poisoned").clone() {
            Some(corrupt) => ObjectError::decode(
                &self.uri,
                DecodeError::Read {
                    origin: self.uri.to_string(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, corrupt),
                },
            ),
            None => error,
        }
    }
}

/// Sends the object through a step whose output is opaque and stores the reply as the
/// object's one output, a multipart upload completed only once the reply ended well.
pub async fn opaque(
    ctx: &ObjectContext,
    object: &PlannedObject,
    relative: &str,
    step: &Step,
    container: &ContainerStep,
    clock: &Arc<PhaseClock>,
) -> Result<DoneMarker, ObjectError> {
    debug_assert_eq!(container.output, OutputFormat::Opaque);
    let started = Instant::now();
    let source = S3Uri::new(ctx.job.source.uri.bucket.clone(), object.key.clone());
    let (input, watch) = body(ctx, &source, object, clock).await?;
    let mut marker = store_reply(ctx, object, relative, step, container, input)
        .await
        .map_err(|e| watch.explain(e))?;
    marker.seconds = started.elapsed().as_secs_f64();
    marker.phases = clock.times();
    Ok(marker)
}

/// Exchanges `input` with the transformer and stores its reply; the marker's times are the
/// caller's to fill in.
async fn store_reply(
    ctx: &ObjectContext,
    object: &PlannedObject,
    relative: &str,
    step: &Step,
    container: &ContainerStep,
    input: ByteStream,
) -> Result<DoneMarker, ObjectError> {
    let job = &ctx.job;
    let failed = |e: transport::TransportError| ContainerError::new(&step.name, &object.key, e);
    let mut reply = transport::exchange(
        container,
        &object.key,
        Some(object.size),
        content_type(StepInput::Raw),
        input,
    )
    .await
    .map_err(failed)?;
    let uri = job.sink.uri.join(&output_key_with_extension(
        &job.sink.key,
        relative,
        0,
        &container.extension,
    ));
    let mut upload = ctx.storage.upload(
        uri.clone(),
        UploadOptions {
            part_size: job.sink.part_size,
            parts_in_flight: job.sink.parts_in_flight,
        },
    );
    let chunk = (job.sink.part_size as usize).min(8 << 20);
    loop {
        let mut buf = BytesMut::with_capacity(chunk);
        let read = loop {
            match reply.read_buf(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(_) if buf.len() >= chunk => break Ok(()),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        let end = matches!(read, Ok(())) && buf.len() < chunk;
        if let Err(e) = read {
            let _ = upload.abort().await;
            let failure = transport::transport_error(&e)
                .cloned()
                .unwrap_or_else(|| transport::TransportError::Broken(e.to_string()));
            return Err(failed(failure).into());
        }
        if !buf.is_empty()
            && let Err(e) = upload.write(buf.freeze()).await
        {
            let _ = upload.abort().await;
            return Err(e.into());
        }
        if end {
            break;
        }
    }
    let pending = upload.finish().await?;
    let uploaded = pending.complete().await?;
    // What was stored must be what the transformer sent.
    let stored = ctx.storage.head(&uploaded.uri).await?.map(|h| h.size);
    if stored != Some(uploaded.size) {
        let _ = ctx.storage.delete(&uploaded.uri).await;
        return Err(ObjectError::Lost {
            uri: uploaded.uri.clone(),
            detail: format!(
                "the transformer sent {} bytes but the stored object holds {stored:?}",
                uploaded.size
            ),
        });
    }
    Ok(DoneMarker {
        key: object.key.clone(),
        etag: object.etag.clone(),
        range: None,
        fingerprint: ctx.fingerprint.clone(),
        size: object.size,
        outputs: vec![OutputObject {
            uri: uploaded.uri.to_string(),
            size: uploaded.size,
            rows: 0,
            crc32c: uploaded.crc32c,
        }],
        rejects: None,
        records: RecordCounts::default(),
        checks: Vec::new(),
        steps: vec![StepCounts {
            name: step.name.clone(),
            input: 0,
            output: 0,
        }],
        // The caller times the whole object.
        seconds: 0.0,
        phases: Default::default(),
        finished: Utc::now(),
    })
}
