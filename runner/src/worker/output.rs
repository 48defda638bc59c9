//! The encoding end of an object's pipeline: a blocking thread encodes batches into output
//! objects, each streamed to S3 as a multipart upload, spilling into a numbered next object
//! once `max_object_size` is passed. Uploads are staged, not completed: the caller decides.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::format::{self, Encoder};
use crate::spec::job::Sink;
use crate::storage::uri::S3Uri;
use crate::storage::{PendingUpload, Storage, SyncUploadWriter, UploadOptions, sync_upload};
use crate::worker::clock::{Phase, PhaseClock};
use crate::worker::error::ObjectError;

/// One output object, fully uploaded but not yet visible.
pub struct OutputPart {
    pub uri: S3Uri,
    pub rows: u64,
    pub pending: PendingUpload,
}

/// Encodes `stream` into output objects named by `key_for(part)`.
pub async fn encode_outputs(
    storage: Storage,
    sink: Sink,
    mut stream: SendableRecordBatchStream,
    key_for: impl Fn(usize) -> S3Uri + Send + 'static,
    clock: Arc<PhaseClock>,
) -> Result<Vec<OutputPart>, ObjectError> {
    let schema = stream.schema();
    let (tx, rx) = mpsc::channel::<RecordBatch>(2);
    let handle = Handle::current();
    let encoder = tokio::task::spawn_blocking(move || {
        encode_blocking(&storage, &sink, schema, rx, &key_for, &handle, &clock)
    });
    let mut failed = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(batch) => {
                if tx.send(batch).await.is_err() {
                    break; // the encoder stopped; its result says why
                }
            }
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    drop(tx);
    drop(stream);
    let encoded = encoder
        .await
        .unwrap_or_else(|e| Err(ObjectError::from_join(e)));
    match (failed, encoded) {
        (None, encoded) => encoded,
        (Some(error), Ok(parts)) => {
            for part in parts {
                let _ = part.pending.abort().await;
            }
            Err(ObjectError::from_pipeline(error))
        }
        (Some(error), Err(_)) => Err(ObjectError::from_pipeline(error)),
    }
}

fn encode_blocking(
    storage: &Storage,
    sink: &Sink,
    schema: SchemaRef,
    mut rx: mpsc::Receiver<RecordBatch>,
    key_for: &dyn Fn(usize) -> S3Uri,
    handle: &Handle,
    clock: &Arc<PhaseClock>,
) -> Result<Vec<OutputPart>, ObjectError> {
    let mut parts: Vec<OutputPart> = Vec::new();
    let mut current: Option<OpenPart> = None;
    let result = (|| {
        while let Some(batch) = rx.blocking_recv() {
            let open = match current.as_mut() {
                Some(open) => open,
                None => current.insert(OpenPart::open(
                    storage,
                    sink,
                    schema.clone(),
                    key_for(parts.len()),
                    handle,
                    clock,
                )?),
            };
            open.write(&batch)?;
            if open.bytes() >= sink.max_object_size {
                let full = current.take().expect("just written");
                parts.push(full.close(handle)?);
            }
        }
        // Always at least one object, so an empty input still has its (empty) output.
        if current.is_some() || parts.is_empty() {
            let last = match current.take() {
                Some(open) => open,
                None => OpenPart::open(storage, sink, schema.clone(), key_for(0), handle, clock)?,
            };
            parts.push(last.close(handle)?);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(parts),
        Err(error) => {
            // Dropping an open part's writer aborts its upload; staged parts abort here.
            drop(current);
            for part in parts {
                let _ = handle.block_on(part.pending.abort());
            }
            Err(error)
        }
    }
}

/// An output object being written: an encoder over a shared, counting upload writer.
struct OpenPart {
    uri: S3Uri,
    encoder: Box<dyn Encoder>,
    writer: SharedWriter,
    upload: tokio::task::JoinHandle<Result<PendingUpload, crate::storage::StorageError>>,
    rows: u64,
    clock: Arc<PhaseClock>,
}

impl OpenPart {
    fn open(
        storage: &Storage,
        sink: &Sink,
        schema: SchemaRef,
        uri: S3Uri,
        handle: &Handle,
        clock: &Arc<PhaseClock>,
    ) -> Result<OpenPart, ObjectError> {
        let options = UploadOptions {
            part_size: sink.part_size,
            parts_in_flight: sink.parts_in_flight,
        };
        let (writer, upload) = {
            let _runtime = handle.enter();
            sync_upload(storage, uri.clone(), options)
        };
        let writer = SharedWriter(Arc::new(Mutex::new(Some(writer))), clock.clone());
        let encoder = format::open_encoder(
            sink.format,
            schema,
            &sink.parquet,
            &sink.csv,
            sink.compression,
            Box::new(writer.clone()),
        )
        .map_err(|e| ObjectError::encode(&uri, e))?;
        Ok(OpenPart {
            uri,
            encoder,
            writer,
            upload,
            rows: 0,
            clock: clock.clone(),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ObjectError> {
        let clock = self.clock.clone();
        clock
            .time(Phase::Encode, || self.encoder.write(batch))
            .map_err(|e| ObjectError::encode(&self.uri, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.writer.bytes()
    }

    /// Finishes the format, hands the last bytes to the upload and waits until every part
    /// is uploaded.
    fn close(self, handle: &Handle) -> Result<OutputPart, ObjectError> {
        let clock = self.clock.clone();
        let rows = clock
            .time(Phase::Encode, || self.encoder.finish())
            .map_err(|e| ObjectError::encode(&self.uri, e))?;
        if rows != self.rows {
            return Err(ObjectError::Lost {
                uri: self.uri.clone(),
                detail: format!("encoder reports {rows} rows, {} were given", self.rows),
            });
        }
        let writer = self.writer.0.lock().expect("not poisoned").take();
        let handed = writer.map(|w| w.finish()).transpose();
        // If the hand-over failed, the upload task stopped: its error is the reason.
        let pending = clock
            .time(Phase::Upload, || handle.block_on(self.upload))
            .map_err(ObjectError::from_join)??;
        if let Err(e) = handed {
            let _ = handle.block_on(pending.abort());
            return Err(ObjectError::Internal(format!(
                "handing the last bytes of {} to its upload: {e}",
                self.uri
            )));
        }
        Ok(OutputPart {
            uri: self.uri,
            rows,
            pending,
        })
    }
}

/// Lets the encoder own a `Write` while this side keeps the upload writer to finish it. Its
/// writes wait when the upload is behind: that time is the upload's.
#[derive(Clone)]
struct SharedWriter(Arc<Mutex<Option<SyncUploadWriter>>>, Arc<PhaseClock>);

impl SharedWriter {
    fn bytes(&self) -> u64 {
        self.0
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map_or(0, |w| w.bytes_written())
    }
}

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock().expect("not poisoned").as_mut() {
            Some(w) => self.1.time(Phase::Upload, || w.write(buf)),
            None => Err(std::io::Error::other("upload already finished")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock().expect("not poisoned").as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}
