//! The rejects object of one source object: bad records as JSON lines (source, line, error,
//! raw record) under the sink's `_rejected/` prefix. Created only when there is a reject.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::format::BadRecord;
use crate::spec::job::Sink;
use crate::storage::uri::S3Uri;
use crate::storage::{PendingUpload, Storage, Upload, UploadOptions};
use crate::worker::error::ObjectError;

/// Bad records buffered between the decoder and the rejects upload.
const REJECTS_IN_FLIGHT: usize = 1024;
/// Bytes gathered before they are handed to the upload.
const CHUNK: usize = 1 << 20;

/// The staged (uploaded, not yet visible) rejects object.
pub struct StagedRejects {
    pub rows: u64,
    pub pending: PendingUpload,
}

pub struct RejectsWriter {
    tx: mpsc::Sender<BadRecord>,
    task: JoinHandle<Result<Option<StagedRejects>, ObjectError>>,
}

/// One line of a rejects object.
#[derive(Serialize)]
struct RejectLine<'a> {
    source: &'a str,
    line: u64,
    error: &'a str,
    record: &'a str,
}

impl RejectsWriter {
    pub fn start(storage: &Storage, uri: S3Uri, sink: &Sink, source: String) -> RejectsWriter {
        let (tx, mut rx) = mpsc::channel::<BadRecord>(REJECTS_IN_FLIGHT);
        let storage = storage.clone();
        let options = UploadOptions {
            part_size: sink.part_size,
            parts_in_flight: sink.parts_in_flight,
        };
        let task = tokio::spawn(async move {
            let mut upload: Option<Upload> = None;
            let mut buffer = BytesMut::new();
            let mut rows = 0u64;
            while let Some(bad) = rx.recv().await {
                let line = RejectLine {
                    source: &source,
                    line: bad.line,
                    error: &bad.error,
                    record: &bad.raw,
                };
                serde_json::to_writer((&mut buffer).writer(), &line)
                    .map_err(|e| ObjectError::Internal(format!("encoding a reject: {e}")))?;
                buffer.put_u8(b'\n');
                rows += 1;
                let writer = upload.get_or_insert_with(|| storage.upload(uri.clone(), options));
                if buffer.len() >= CHUNK {
                    writer.write(buffer.split().freeze()).await?;
                }
            }
            match upload {
                None => Ok(None),
                Some(mut writer) => {
                    if !buffer.is_empty() {
                        writer.write(buffer.freeze()).await?;
                    }
                    let pending = writer.finish().await?;
                    Ok(Some(StagedRejects { rows, pending }))
                }
            }
        });
        RejectsWriter { tx, task }
    }

    pub fn sender(&self) -> mpsc::Sender<BadRecord> {
        self.tx.clone()
    }

    /// Waits for the last reject to be uploaded (call after the decoder finished).
    pub async fn finish(self) -> Result<Option<StagedRejects>, ObjectError> {
        drop(self.tx);
        self.task
            .await
            .unwrap_or_else(|e| Err(ObjectError::from_join(e)))
    }

    /// Gives up: anything staged is aborted.
    pub async fn abort(self) {
        if let Ok(Some(staged)) = self.finish().await {
            let _ = staged.pending.abort().await;
        }
    }
}
