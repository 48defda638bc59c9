//! The encoding end of an object's pipeline: a blocking thread encodes batches into output
//! objects, each streamed to S3 as a multipart upload, spilling into a numbered next object
//! once `max_object_size` is passed; with `partition_by`, one series of objects per Hive
//! partition path. Uploads are staged, not completed: the caller decides.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::format::partition::Partitioner;
use crate::format::{self, Encoder};
use crate::spec::job::Sink;
use crate::storage::uri::S3Uri;
use crate::storage::{PendingUpload, Storage, SyncUploadWriter, UploadOptions, sync_upload};
use crate::worker::clock::{Phase, PhaseClock};
use crate::worker::error::ObjectError;

/// One output object, fully uploaded but not yet visible.
pub struct OutputPart {
    pub uri: S3Uri,
    /// The partition path it is under (`None` without `partition_by`).
    pub partition: Option<String>,
    pub rows: u64,
    pub pending: PendingUpload,
}

/// Names an output object: by its partition path (`None` without `partition_by`) and its
/// number within that partition.
pub type KeyFor = dyn Fn(Option<&str>, usize) -> S3Uri + Send + Sync;

/// Encodes `stream` into output objects named by `key_for`: one series of numbered objects,
/// or with `partition_by` one series per partition path.
pub async fn encode_outputs(
    storage: Storage,
    sink: Sink,
    mut stream: SendableRecordBatchStream,
    key_for: Box<KeyFor>,
    clock: Arc<PhaseClock>,
) -> Result<Vec<OutputPart>, ObjectError> {
    let schema = stream.schema();
    let (tx, rx) = mpsc::channel::<RecordBatch>(2);
    let handle = Handle::current();
    let encoder = tokio::task::spawn_blocking(move || {
        Outputs {
            storage: &storage,
            sink: &sink,
            key_for: &*key_for,
            handle: &handle,
            clock: &clock,
            parts: Vec::new(),
        }
        .encode(schema, rx)
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

/// The objects of one source object's output, written on the encoding thread.
struct Outputs<'a> {
    storage: &'a Storage,
    sink: &'a Sink,
    key_for: &'a KeyFor,
    handle: &'a Handle,
    clock: &'a Arc<PhaseClock>,
    /// The objects finished so far (staged, not completed).
    parts: Vec<OutputPart>,
}

/// One partition's output: its open object, if any, and how many it finished.
struct Partition {
    open: Option<OpenPart>,
    finished: usize,
    /// The batch it was last written from (the longest idle one is finished first).
    used: u64,
}

impl Outputs<'_> {
    /// Encodes every batch of `rx`. On an error every upload of the object is aborted: the
    /// finished ones here, the open ones as they are dropped.
    fn encode(
        mut self,
        schema: SchemaRef,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<Vec<OutputPart>, ObjectError> {
        let result = if self.sink.partition_by.is_empty() {
            self.encode_whole(schema, rx)
        } else {
            self.encode_partitioned(schema, rx)
        };
        match result {
            Ok(()) => Ok(self.parts),
            Err(error) => {
                for part in self.parts {
                    let _ = self.handle.block_on(part.pending.abort());
                }
                Err(error)
            }
        }
    }

    fn open(&self, schema: &SchemaRef, uri: S3Uri) -> Result<OpenPart, ObjectError> {
        OpenPart::open(
            self.storage,
            self.sink,
            schema.clone(),
            uri,
            self.handle,
            self.clock,
        )
    }

    fn close(&mut self, open: OpenPart, partition: Option<&str>) -> Result<(), ObjectError> {
        let mut part = open.close(self.handle)?;
        part.partition = partition.map(str::to_string);
        self.parts.push(part);
        Ok(())
    }

    /// Every record into one series of objects, spilling past `max_object_size`.
    fn encode_whole(
        &mut self,
        schema: SchemaRef,
        mut rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<(), ObjectError> {
        let mut current: Option<OpenPart> = None;
        while let Some(batch) = rx.blocking_recv() {
            let open = match current.as_mut() {
                Some(open) => open,
                None => current.insert(self.open(&schema, (self.key_for)(None, self.parts.len()))?),
            };
            open.write(&batch)?;
            if open.bytes() >= self.sink.max_object_size {
                let full = current.take().expect("just written");
                self.close(full, None)?;
            }
        }
        // Always at least one object, so an empty input still has its (empty) output.
        match current.take() {
            Some(open) => self.close(open, None),
            None if self.parts.is_empty() => {
                let empty = self.open(&schema, (self.key_for)(None, 0))?;
                self.close(empty, None)
            }
            None => Ok(()),
        }
    }

    /// Records routed to one series of objects per partition path, without the partition
    /// columns. At most `max_open_partitions` objects are open; one more finishes the
    /// longest idle one, whose next records start its next numbered object.
    fn encode_partitioned(
        &mut self,
        schema: SchemaRef,
        mut rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<(), ObjectError> {
        let partitioner =
            Partitioner::new(&schema, &self.sink.partition_by).map_err(|message| {
                ObjectError::Partition {
                    uri: self.sink.uri.clone(),
                    message,
                }
            })?;
        let data_schema = partitioner.data_schema().clone();
        let mut partitions: HashMap<String, Partition> = HashMap::new();
        let mut open_now = 0;
        let mut batches = 0u64;
        while let Some(batch) = rx.blocking_recv() {
            batches += 1;
            let split = partitioner.split(&batch).map_err(|e| {
                ObjectError::Internal(format!("splitting a batch by partition: {e}"))
            })?;
            for (path, records) in split {
                let opening = partitions.get(&path).is_none_or(|p| p.open.is_none());
                if opening && open_now >= self.sink.max_open_partitions {
                    let idle = partitions
                        .iter()
                        .filter(|(_, p)| p.open.is_some())
                        .min_by(|a, b| (a.1.used, a.0).cmp(&(b.1.used, b.0)))
                        .map(|(path, _)| path.clone())
                        .expect("a partition is open");
                    let partition = partitions.get_mut(&idle).expect("listed");
                    let open = partition.open.take().expect("open");
                    partition.finished += 1;
                    open_now -= 1;
                    self.close(open, Some(&idle))?;
                }
                let partition = partitions.entry(path.clone()).or_insert(Partition {
                    open: None,
                    finished: 0,
                    used: 0,
                });
                partition.used = batches;
                if partition.open.is_none() {
                    let uri = (self.key_for)(Some(&path), partition.finished);
                    partition.open = Some(self.open(&data_schema, uri)?);
                    open_now += 1;
                }
                let open = partition.open.as_mut().expect("opened");
                open.write(&records)?;
                if open.bytes() >= self.sink.max_object_size {
                    let full = partition.open.take().expect("open");
                    partition.finished += 1;
                    open_now -= 1;
                    self.close(full, Some(&path))?;
                }
            }
        }
        // The last objects, in path order (so that the outputs' order does not depend on
        // a hash map's).
        let mut last: Vec<(String, OpenPart)> = partitions
            .into_iter()
            .filter_map(|(path, p)| p.open.map(|open| (path, open)))
            .collect();
        last.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, open) in last {
            self.close(open, Some(&path))?;
        }
        Ok(())
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
            partition: None,
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
