//! Writing one object: parts with CRC32C checksums uploaded concurrently, committed as a separate step.
//!
//! Bodies are sent unsigned (`UNSIGNED-PAYLOAD`): the request is signed, but a SHA-256 of
//! every byte, computed by the client and again by the store, would check nothing the
//! CRC32C of each part (verified by the store, and read back by sluice) does not.

use std::io;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::{S3Failure, S3Uri, Storage, StorageError};

/// S3 refuses parts smaller than this (except the last one).
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// The size of the chunks a [`SyncUploadWriter`] hands over.
const SYNC_CHUNK: usize = 1 << 20;

/// How an object is split and how many parts travel at once. Memory per upload is about
/// `part_size * (parts_in_flight + 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    pub part_size: u64,
    pub parts_in_flight: usize,
}

impl Default for UploadOptions {
    fn default() -> UploadOptions {
        UploadOptions {
            part_size: 8 << 20,
            parts_in_flight: 4,
        }
    }
}

/// What was written, once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub uri: S3Uri,
    pub size: u64,
    /// CRC32C of the whole object, 8 hex digits.
    pub crc32c: String,
    /// Number of parts (1 for a single PUT).
    pub parts: usize,
    pub etag: String,
}

/// CRC32C as S3 wants it in `x-amz-checksum-crc32c`: base64 of the big-endian bytes.
pub fn crc32c_base64(crc: u32) -> String {
    BASE64_STANDARD.encode(crc.to_be_bytes())
}

/// CRC32C as sluice reports it: 8 hex digits.
pub fn crc32c_hex(crc: u32) -> String {
    hex::encode(crc.to_be_bytes())
}

/// Where a client records the multipart uploads it starts (a run keeps them in its state),
/// so that whoever finishes the run can abort any that was neither completed nor aborted.
#[async_trait::async_trait]
pub trait UploadJournal: Send + Sync + std::fmt::Debug {
    /// The upload was created; called before its first part is sent. An error fails the
    /// upload, which is then aborted.
    async fn started(&self, uri: &S3Uri, upload_id: &str) -> Result<(), StorageError>;
    /// The upload was completed or aborted: nothing is left to clean up.
    async fn ended(&self, uri: &S3Uri, upload_id: &str) -> Result<(), StorageError>;
}

impl Storage {
    /// Records a new upload in the journal, if there is one.
    async fn record_started(&self, uri: &S3Uri, upload_id: &str) -> Result<(), StorageError> {
        match &self.journal {
            Some(journal) => journal.started(uri, upload_id).await,
            None => Ok(()),
        }
    }

    /// Forgets a completed or aborted upload. A failure only leaves a record behind, whose
    /// abort later finds the upload gone.
    async fn record_ended(&self, uri: &S3Uri, upload_id: &str) {
        if let Some(journal) = &self.journal
            && let Err(error) = journal.ended(uri, upload_id).await
        {
            tracing::warn!(%error, key = %uri, upload_id, "forgetting a finished upload");
        }
    }

    /// Aborts one of this client's own uploads (with retries) and forgets it.
    async fn abort_own(&self, uri: &S3Uri, upload_id: &str) -> Result<(), StorageError> {
        self.abort_upload(&uri.bucket, &uri.key, upload_id).await?;
        self.record_ended(uri, upload_id).await;
        Ok(())
    }
}

struct DonePart {
    number: i32,
    etag: String,
    checksum: String,
}

/// Writes one object. Bytes are buffered into parts of `part_size`; the first full part
/// starts a multipart upload and parts upload concurrently, at most `parts_in_flight` at
/// once (`write` waits beyond that). An object smaller than one part becomes a single PUT
/// at commit time. Any error aborts the multipart upload, and so does dropping an
/// unfinished `Upload`: no incomplete upload is left behind.
pub struct Upload {
    storage: Storage,
    uri: S3Uri,
    opts: UploadOptions,
    buffer: BytesMut,
    upload_id: Option<String>,
    in_flight: JoinSet<Result<DonePart, StorageError>>,
    done: Vec<DonePart>,
    next_part: i32,
    crc: u32,
    size: u64,
    closed: bool,
    fail_part: Option<i32>,
}

impl Upload {
    pub(super) fn new(storage: Storage, uri: S3Uri, opts: UploadOptions) -> Upload {
        let opts = UploadOptions {
            part_size: opts.part_size.max(1),
            parts_in_flight: opts.parts_in_flight.max(1),
        };
        Upload {
            storage,
            uri,
            opts,
            buffer: BytesMut::new(),
            upload_id: None,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            next_part: 1,
            crc: 0,
            size: 0,
            closed: false,
            fail_part: None,
        }
    }

    /// Fault injection for tests: part `number` fails instead of being sent.
    #[doc(hidden)]
    pub fn fail_part(&mut self, number: i32) {
        self.fail_part = Some(number);
    }

    pub fn uri(&self) -> &S3Uri {
        &self.uri
    }

    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.size
    }

    /// Appends bytes; waits while `parts_in_flight` parts are being uploaded.
    pub async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        if self.closed {
            return Err(StorageError::UploadClosed {
                uri: self.uri.clone(),
            });
        }
        self.crc = crc32c::crc32c_append(self.crc, &data);
        self.size += data.len() as u64;
        let part_size = self.opts.part_size as usize;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let take = (part_size - self.buffer.len()).min(rest.len());
            grow_within(&mut self.buffer, take, part_size);
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buffer.len() == part_size {
                // A part is its own allocation of exactly its size: parts in flight hold
                // `part_size` each, not a shared buffer twice as large.
                // The object is large: the next part gets its whole buffer at once.
                let next = BytesMut::with_capacity(part_size);
                let part = std::mem::replace(&mut self.buffer, next).freeze();
                if let Err(e) = self.send_part(part).await {
                    self.fail().await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Uploads what is left and waits for every part. The object is not visible yet: the
    /// caller validates, then completes or aborts the returned [`PendingUpload`].
    pub async fn finish(mut self) -> Result<PendingUpload, StorageError> {
        if self.closed {
            return Err(StorageError::UploadClosed {
                uri: self.uri.clone(),
            });
        }
        if self.upload_id.is_none() {
            self.closed = true;
            let body = std::mem::take(&mut self.buffer).freeze();
            return Ok(PendingUpload {
                storage: self.storage.clone(),
                uri: self.uri.clone(),
                size: self.size,
                crc: self.crc,
                state: Pending::Single(body),
            });
        }
        let result = async {
            if !self.buffer.is_empty() {
                let last = std::mem::take(&mut self.buffer).freeze();
                self.send_part(last).await?;
            }
            while let Some(joined) = self.in_flight.join_next().await {
                self.record(joined)?;
            }
            Ok::<_, StorageError>(())
        }
        .await;
        if let Err(e) = result {
            self.fail().await;
            return Err(e);
        }
        self.closed = true;
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.number);
        Ok(PendingUpload {
            storage: self.storage.clone(),
            uri: self.uri.clone(),
            size: self.size,
            crc: self.crc,
            state: Pending::Multipart {
                upload_id: self.upload_id.take().expect("a multipart upload has an id"),
                parts,
            },
        })
    }

    /// Stops the upload and aborts it on the server.
    pub async fn abort(mut self) -> Result<(), StorageError> {
        self.closed = true;
        self.in_flight.shutdown().await;
        match self.upload_id.take() {
            Some(id) => self.storage.abort_own(&self.uri, &id).await,
            None => Ok(()),
        }
    }

    async fn send_part(&mut self, body: Bytes) -> Result<(), StorageError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.create().await?;
                // Known before any part is stored, so an upload is never open unrecorded
                // for longer than this request.
                if let Err(error) = self.storage.record_started(&self.uri, &id).await {
                    if let Err(abort) = self.storage.abort_own(&self.uri, &id).await {
                        tracing::warn!(error = %abort, key = %self.uri, "aborting an upload that could not be recorded");
                    }
                    return Err(error);
                }
                self.upload_id = Some(id.clone());
                id
            }
        };
        while self.in_flight.len() >= self.opts.parts_in_flight {
            let joined = self
                .in_flight
                .join_next()
                .await
                .expect("parts are in flight");
            self.record(joined)?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let client = self.storage.client.clone();
        let uri = self.uri.clone();
        let fail = self.fail_part == Some(number);
        self.in_flight.spawn(async move {
            if fail {
                return Err(StorageError::InjectedFault { uri, part: number });
            }
            let checksum = crc32c_base64(crc32c::crc32c(&body));
            let output = client
                .upload_part()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_crc32_c(checksum.clone())
                .body(ByteStream::from(body))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| StorageError::UploadPart {
                    uri: uri.clone(),
                    part: number,
                    source: S3Failure::from_sdk(e),
                })?;
            Ok(DonePart {
                number,
                etag: output.e_tag().unwrap_or_default().to_string(),
                checksum,
            })
        });
        Ok(())
    }

    async fn create(&self) -> Result<String, StorageError> {
        let output = self
            .storage
            .client
            .create_multipart_upload()
            .bucket(&self.uri.bucket)
            .key(&self.uri.key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .map_err(|e| StorageError::CreateUpload {
                uri: self.uri.clone(),
                source: S3Failure::from_sdk(e),
            })?;
        output
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| StorageError::BadResponse {
                uri: self.uri.clone(),
                detail: "CreateMultipartUpload returned no upload id".into(),
            })
    }

    fn record(
        &mut self,
        joined: Result<Result<DonePart, StorageError>, tokio::task::JoinError>,
    ) -> Result<(), StorageError> {
        let part = joined.map_err(|source| StorageError::UploadTask {
            uri: self.uri.clone(),
            source,
        })??;
        self.done.push(part);
        Ok(())
    }

    /// After an error: stop the other parts and abort, best effort (the first error is
    /// what the caller needs to see).
    async fn fail(&mut self) {
        self.closed = true;
        self.in_flight.shutdown().await;
        if let Some(id) = self.upload_id.take()
            && let Err(error) = self.storage.abort_own(&self.uri, &id).await
        {
            tracing::warn!(%error, key = %self.uri, "aborting a failed upload");
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(id) = self.upload_id.take() {
            self.in_flight.abort_all();
            spawn_abort(&self.storage, &self.uri, id);
        }
    }
}

/// Aborts an upload in the background, if there is a runtime to do it on; the client's
/// [`Storage::wait_for_aborts`] waits for it.
fn spawn_abort(storage: &Storage, uri: &S3Uri, upload_id: String) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(key = %uri, upload_id, "no runtime to abort a dropped upload on");
        return;
    };
    let owner = storage.clone();
    let uri = uri.clone();
    runtime.spawn(storage.aborts.track_future(async move {
        if let Err(error) = owner.abort_own(&uri, &upload_id).await {
            tracing::warn!(%error, key = %uri, "aborting a dropped upload");
        }
    }));
}

enum Pending {
    /// Smaller than one part: the whole object, PUT at commit.
    Single(Bytes),
    Multipart {
        upload_id: String,
        parts: Vec<DonePart>,
    },
}

/// Every byte is on the server (or, for a small object, in memory) but the object is not
/// visible until [`complete`](PendingUpload::complete). Dropping it aborts.
pub struct PendingUpload {
    storage: Storage,
    uri: S3Uri,
    size: u64,
    crc: u32,
    state: Pending,
}

impl std::fmt::Debug for PendingUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingUpload")
            .field("uri", &self.uri)
            .field("size", &self.size)
            .field("crc32c", &crc32c_hex(self.crc))
            .finish_non_exhaustive()
    }
}

impl PendingUpload {
    pub fn uri(&self) -> &S3Uri {
        &self.uri
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// CRC32C of the whole object, 8 hex digits.
    pub fn crc32c(&self) -> String {
        crc32c_hex(self.crc)
    }

    /// Makes the object visible. A failed completion aborts the upload.
    pub async fn complete(mut self) -> Result<Uploaded, StorageError> {
        let state = std::mem::replace(&mut self.state, Pending::Single(Bytes::new()));
        let (etag, parts) = match state {
            Pending::Single(body) => (self.storage.put_object(&self.uri, body, None).await?, 1),
            Pending::Multipart { upload_id, parts } => {
                let count = parts.len();
                let expected_etag = multipart_etag(parts.iter().map(|p| p.etag.as_str()));
                let completed = parts
                    .into_iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(p.etag)
                            .checksum_crc32_c(p.checksum)
                            .build()
                    })
                    .collect();
                let response = self
                    .storage
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.uri.bucket)
                    .key(&self.uri.key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(completed))
                            .build(),
                    )
                    .send()
                    .await;
                match response {
                    Ok(output) => {
                        self.storage.record_ended(&self.uri, &upload_id).await;
                        (output.e_tag().unwrap_or_default().to_string(), count)
                    }
                    Err(e) => {
                        let error = StorageError::CompleteUpload {
                            uri: self.uri.clone(),
                            source: S3Failure::from_sdk(e),
                        };
                        // A retried completion whose first attempt went through (only its
                        // answer was lost) finds the upload gone; the object is there.
                        if let Some(etag) = self.completed_already(expected_etag.as_deref()).await {
                            tracing::info!(key = %self.uri, "the upload was completed by an earlier attempt of the request");
                            self.storage.record_ended(&self.uri, &upload_id).await;
                            return Ok(Uploaded {
                                uri: self.uri.clone(),
                                size: self.size,
                                crc32c: crc32c_hex(self.crc),
                                parts: count,
                                etag,
                            });
                        }
                        if let Err(abort) = self.storage.abort_own(&self.uri, &upload_id).await {
                            tracing::warn!(error = %abort, key = %self.uri, "aborting after a failed completion");
                        }
                        return Err(error);
                    }
                }
            }
        };
        Ok(Uploaded {
            uri: self.uri.clone(),
            size: self.size,
            crc32c: crc32c_hex(self.crc),
            parts,
            etag,
        })
    }

    /// The stored object's ETag if it is exactly this upload's parts: same size, and the
    /// multipart ETag S3 derives from the parts' MD5s.
    async fn completed_already(&self, expected: Option<&str>) -> Option<String> {
        let expected = expected?;
        let stored = self.storage.head(&self.uri).await.ok()??;
        (stored.size == self.size && stored.etag.trim_matches('"') == expected)
            .then_some(stored.etag)
    }

    /// Discards the upload; nothing becomes visible.
    pub async fn abort(mut self) -> Result<(), StorageError> {
        let state = std::mem::replace(&mut self.state, Pending::Single(Bytes::new()));
        match state {
            Pending::Single(_) => Ok(()),
            Pending::Multipart { upload_id, .. } => {
                self.storage.abort_own(&self.uri, &upload_id).await
            }
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if let Pending::Multipart { upload_id, .. } =
            std::mem::replace(&mut self.state, Pending::Single(Bytes::new()))
        {
            spawn_abort(&self.storage, &self.uri, upload_id);
        }
    }
}

/// The ETag S3 gives a completed multipart upload: the hex MD5 of the parts' binary MD5s,
/// a dash and the number of parts. `None` when a part's ETag is not an MD5 (with SSE-KMS,
/// for example).
fn multipart_etag<'a>(part_etags: impl Iterator<Item = &'a str>) -> Option<String> {
    use md5::Digest as _;
    let mut digest = md5::Md5::default();
    let mut count = 0;
    for etag in part_etags {
        let raw = hex::decode(etag.trim_matches('"')).ok()?;
        if raw.len() != 16 {
            return None;
        }
        digest.update(&raw);
        count += 1;
    }
    Some(format!("{}-{count}", hex::encode(digest.finalize())))
}

enum Chunk {
    Data(Bytes),
    Finish,
}

/// A `std::io::Write` for encoders on a blocking thread: chunks go over a bounded channel
/// to an async task that drives an [`Upload`]. Dropping it without
/// [`finish`](SyncUploadWriter::finish) aborts the upload.
pub struct SyncUploadWriter {
    tx: mpsc::Sender<Chunk>,
    buffer: BytesMut,
    chunk: usize,
    written: u64,
}

/// Starts an upload driven from a blocking thread. Must be called within a tokio runtime.
/// The task's result is the [`PendingUpload`] once the writer finished.
pub fn sync_upload(
    storage: &Storage,
    uri: S3Uri,
    opts: UploadOptions,
) -> (
    SyncUploadWriter,
    JoinHandle<Result<PendingUpload, StorageError>>,
) {
    let (tx, mut rx) = mpsc::channel::<Chunk>(4);
    let chunk = (opts.part_size as usize).clamp(1, SYNC_CHUNK);
    let mut upload = storage.upload(uri.clone(), opts);
    // Tracked, so a worker waits for the abort of a writer dropped at the last moment.
    let task = tokio::spawn(storage.aborts.track_future(async move {
        while let Some(message) = rx.recv().await {
            match message {
                Chunk::Data(data) => upload.write(data).await?,
                Chunk::Finish => return upload.finish().await,
            }
        }
        upload.abort().await?;
        Err(StorageError::WriterDropped { uri })
    }));
    let writer = SyncUploadWriter {
        tx,
        buffer: BytesMut::with_capacity(chunk),
        chunk,
        written: 0,
    };
    (writer, task)
}

impl SyncUploadWriter {
    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Hands over the rest and lets the task finish the upload. An error here means the
    /// task stopped; its `JoinHandle` has the reason.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_buffer()?;
        self.tx
            .blocking_send(Chunk::Finish)
            .map_err(|_| upload_stopped())
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = self.buffer.split().freeze();
        self.tx
            .blocking_send(Chunk::Data(data))
            .map_err(|_| upload_stopped())
    }
}

/// Makes room for `more` bytes in a part buffer: growing by doubling (small objects stay
/// small) but never past `limit`, the part size.
fn grow_within(buffer: &mut BytesMut, more: usize, limit: usize) {
    let needed = buffer.len() + more;
    if needed <= buffer.capacity() {
        return;
    }
    let capacity = needed.max(buffer.len() * 2).min(limit.max(needed));
    let mut grown = BytesMut::with_capacity(capacity);
    grown.extend_from_slice(buffer);
    *buffer = grown;
}

fn upload_stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the upload task stopped (its result has the reason)",
    )
}

impl io::Write for SyncUploadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buffer.len() >= self.chunk {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are handed over when full; the part buffer is the upload's to flush.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_buffers_grow_by_doubling_up_to_the_part_size() {
        let mut buffer = BytesMut::new();
        grow_within(&mut buffer, 100, 1000);
        assert!(buffer.capacity() >= 100);
        buffer.extend_from_slice(&[1; 100]);
        grow_within(&mut buffer, 300, 1000);
        assert!(
            buffer.capacity() >= 400 && buffer.capacity() < 1000,
            "{}",
            buffer.capacity()
        );
        buffer.extend_from_slice(&[2; 300]);
        grow_within(&mut buffer, 600, 1000);
        assert_eq!(buffer.capacity(), 1000);
        assert_eq!(&buffer[..], [[1u8; 100].as_slice(), &[2; 300]].concat());
    }

    #[test]
    fn checksums_in_s3_and_report_form() {
        // The CRC32C check value of "123456789" is 0xE3069283.
        let crc = crc32c::crc32c(b"123456789");
        assert_eq!(crc32c_hex(crc), "e3069283");
        assert_eq!(crc32c_base64(crc), "4waSgw==");
        let appended = crc32c::crc32c_append(crc32c::crc32c(b"1234"), b"56789");
        assert_eq!(appended, crc);
    }

    #[test]
    fn multipart_etag_is_the_md5_of_the_part_md5s() {
        // md5("a") and md5("b"), as S3 quotes them.
        let parts = [
            "\"0cc175b9c0f1b6a831c399e269772661\"",
            "\"92eb5ffee6ae2fec3ad71c777531578f\"",
        ];
        assert_eq!(
            multipart_etag(parts.into_iter()).as_deref(),
            Some("96e024ba2074fe77e8e965ba43a704be-2")
        );
        assert_eq!(multipart_etag(["\"not-an-md5\""].into_iter()), None);
    }
}
