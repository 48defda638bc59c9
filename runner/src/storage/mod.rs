//! S3 access: client setup, the embedded server, listing, reads and multipart writes.

mod connect;
pub mod embedded;
mod error;
mod parquet;
mod read;
mod retry;
mod upload;
pub mod uri;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

pub use connect::{ConnectOptions, DEFAULT_EMBEDDED_DIR, Endpoint};
pub use embedded::EmbeddedServer;
pub use error::{FailureKind, S3Failure, StorageError};
pub use parquet::{S3ParquetReader, parquet_metadata};
pub use read::ObjectStream;
pub use upload::{
    MIN_PART_SIZE, PendingUpload, SyncUploadWriter, Upload, UploadJournal, UploadOptions, Uploaded,
    crc32c_base64, crc32c_hex, sync_upload,
};
pub use uri::S3Uri;

/// How objects are read: one GET up to `range_size` bytes; larger ones in ranges of
/// `range_size` with `in_flight` requests at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTuning {
    pub range_size: u64,
    pub in_flight: usize,
}

impl Default for ReadTuning {
    fn default() -> ReadTuning {
        ReadTuning {
            range_size: 8 << 20,
            in_flight: 4,
        }
    }
}

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// The ETag as the server sends it, quotes included.
    pub etag: String,
    /// When it was last written, if the server says.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// When it started, if the server says.
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
}

/// An S3 client with sluice's settings. Cheap to clone; clones share the journal and the
/// aborts still running in the background.
#[derive(Debug, Clone)]
pub struct Storage {
    client: Client,
    read: ReadTuning,
    list_page_size: Option<i32>,
    /// Where this client's multipart uploads are recorded while open, if anywhere.
    journal: Option<std::sync::Arc<dyn UploadJournal>>,
    /// Aborts of dropped uploads, run in the background; see [`Storage::wait_for_aborts`].
    aborts: tokio_util::task::TaskTracker,
    /// The pause that throttling imposes on this client's bookkeeping requests.
    throttle: retry::Throttle,
    /// The endpoint URL, when one is configured (empty: AWS's own).
    endpoint: String,
    /// Where the client's credentials come from (for clients of other libraries that must
    /// reach the same store).
    credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
}

impl Storage {
    fn from_config(
        config: aws_sdk_s3::config::Builder,
        endpoint: &str,
        credentials: Option<aws_sdk_s3::config::SharedCredentialsProvider>,
    ) -> Storage {
        Storage {
            endpoint: endpoint.to_string(),
            credentials,
            client: Client::from_conf(config.build()),
            read: ReadTuning::default(),
            list_page_size: None,
            journal: None,
            aborts: tokio_util::task::TaskTracker::new(),
            throttle: retry::Throttle::default(),
        }
    }

    /// The same client, recording every multipart upload it starts in `journal` before the
    /// first part is sent and forgetting it once the upload is completed or aborted.
    pub fn with_upload_journal(mut self, journal: std::sync::Arc<dyn UploadJournal>) -> Storage {
        self.journal = Some(journal);
        self
    }

    /// Waits until every abort that a dropped upload started in the background has ended,
    /// so a process that exits next leaves none half done.
    pub async fn wait_for_aborts(&self) {
        self.aborts.close();
        self.aborts.wait().await;
        self.aborts.reopen();
    }

    /// The same client with other large-object read settings.
    pub fn with_read_tuning(mut self, read: ReadTuning) -> Storage {
        assert!(
            read.range_size > 0 && read.in_flight > 0,
            "read tuning must be positive"
        );
        self.read = read;
        self
    }

    /// The same client asking for at most `keys` keys per listing page (the server's
    /// default, usually 1000, otherwise).
    pub fn with_list_page_size(mut self, keys: i32) -> Storage {
        self.list_page_size = Some(keys);
        self
    }

    /// The underlying SDK client, for operations this module does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every object under a prefix (the key of `prefix` taken literally), sorted by key.
    pub async fn list(&self, prefix: &S3Uri) -> Result<Vec<ObjectInfo>, StorageError> {
        self.list_observed(prefix, &mut |_| {}).await
    }

    /// [`Storage::list`], telling `listed` the number of objects listed so far after each
    /// page.
    pub async fn list_observed(
        &self,
        prefix: &S3Uri,
        listed: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(prefix, None, token.take()).await?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                objects.push(ObjectInfo {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: object.e_tag().unwrap_or_default().to_string(),
                    last_modified: object
                        .last_modified()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                });
            }
            listed(objects.len());
            match page.next_continuation_token() {
                Some(next) if page.is_truncated().unwrap_or(false) => token = Some(next.into()),
                _ => break,
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// One page of a listing, retried page by page (see `retry`).
    async fn list_page(
        &self,
        prefix: &S3Uri,
        delimiter: Option<&str>,
        token: Option<String>,
    ) -> Result<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output, StorageError> {
        retry::retrying("a listing", &self.throttle, || async {
            self.client
                .list_objects_v2()
                .bucket(&prefix.bucket)
                .prefix(&prefix.key)
                .set_delimiter(delimiter.map(str::to_string))
                .set_max_keys(self.list_page_size)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| StorageError::ListObjects {
                    uri: prefix.clone(),
                    source: S3Failure::from_sdk(e),
                })
        })
        .await
    }

    /// The "directories" right below a prefix (common prefixes for the delimiter `/`),
    /// sorted; each ends with `/`.
    pub async fn list_dirs(&self, prefix: &S3Uri) -> Result<Vec<String>, StorageError> {
        let mut dirs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(prefix, Some("/"), token.take()).await?;
            dirs.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_string)),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated().unwrap_or(false) => token = Some(next.into()),
                _ => break,
            }
        }
        dirs.sort();
        Ok(dirs)
    }

    /// Bytes `range` of an object (an empty range reads nothing).
    pub async fn get_range(
        &self,
        uri: &S3Uri,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StorageError> {
        read::get_range(&self.client, uri, range, None).await
    }

    /// A whole (small) object, or `None` if it does not exist.
    pub async fn get_bytes(&self, uri: &S3Uri) -> Result<Option<Bytes>, StorageError> {
        retry::retrying("a read", &self.throttle, || self.get_bytes_once(uri)).await
    }

    async fn get_bytes_once(&self, uri: &S3Uri) -> Result<Option<Bytes>, StorageError> {
        let mut broken = 0;
        loop {
            let response = self
                .client
                .get_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .send()
                .await;
            let output = match response {
                Ok(output) => output,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                    return Ok(None);
                }
                Err(e) => {
                    return Err(StorageError::GetObject {
                        uri: uri.clone(),
                        source: S3Failure::from_sdk(e),
                    });
                }
            };
            match output.body.collect().await {
                Ok(body) => return Ok(Some(body.into_bytes())),
                Err(e) if broken < read::BODY_RETRIES => {
                    broken += 1;
                    tracing::warn!(%uri, attempt = broken, "the body of a read broke off ({e}); reading again");
                    tokio::time::sleep(read::body_backoff(broken)).await;
                }
                Err(e) => {
                    return Err(StorageError::GetObject {
                        uri: uri.clone(),
                        source: S3Failure::local(FailureKind::Response, e.to_string()),
                    });
                }
            }
        }
    }

    /// Writes a small object in one request, with its CRC32C for the server to check.
    pub async fn put_bytes(&self, uri: &S3Uri, body: Bytes) -> Result<(), StorageError> {
        self.put_object(uri, body, None).await.map(|_| ())
    }

    /// `put_bytes` with a Content-Type, for an object a browser opens (a report page).
    pub async fn put_bytes_as(
        &self,
        uri: &S3Uri,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), StorageError> {
        self.put_object(uri, body, Some(content_type))
            .await
            .map(|_| ())
    }

    /// One PutObject with a CRC32C checksum (retried: the same bytes to the same key);
    /// returns the ETag. The body is not signed (see [`upload`](crate::storage::upload)):
    /// the CRC32C, which the store verifies, covers it.
    async fn put_object(
        &self,
        uri: &S3Uri,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<String, StorageError> {
        let checksum = crc32c_base64(crc32c::crc32c(&body));
        retry::retrying("a write", &self.throttle, || async {
            let output = self
                .client
                .put_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .checksum_crc32_c(checksum.clone())
                .set_content_type(content_type.map(str::to_string))
                .body(ByteStream::from(body.clone()))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| StorageError::PutObject {
                    uri: uri.clone(),
                    source: S3Failure::from_sdk(e),
                })?;
            Ok(output.e_tag().unwrap_or_default().to_string())
        })
        .await
    }

    /// Size and ETag of an object, or `None` if it does not exist.
    pub async fn head(&self, uri: &S3Uri) -> Result<Option<ObjectInfo>, StorageError> {
        retry::retrying("reading metadata", &self.throttle, || self.head_once(uri)).await
    }

    async fn head_once(&self, uri: &S3Uri) -> Result<Option<ObjectInfo>, StorageError> {
        let response = self
            .client
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await;
        match response {
            Ok(output) => Ok(Some(ObjectInfo {
                key: uri.key.clone(),
                size: output.content_length().unwrap_or(0).max(0) as u64,
                etag: output.e_tag().unwrap_or_default().to_string(),
                last_modified: output
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => {
                let failure = S3Failure::from_sdk(e);
                // HEAD has no body, so a missing key can only show as a bare 404.
                if failure.status == Some(404) && failure.code.as_deref() != Some("NoSuchBucket") {
                    return Ok(None);
                }
                Err(StorageError::HeadObject {
                    uri: uri.clone(),
                    source: failure,
                })
            }
        }
    }

    /// Deletes an object; deleting a missing object is not an error.
    pub async fn delete(&self, uri: &S3Uri) -> Result<(), StorageError> {
        retry::retrying("a delete", &self.throttle, || async {
            self.client
                .delete_object()
                .bucket(&uri.bucket)
                .key(&uri.key)
                .send()
                .await
                .map_err(|e| StorageError::DeleteObject {
                    uri: uri.clone(),
                    source: S3Failure::from_sdk(e),
                })
        })
        .await?;
        Ok(())
    }

    /// Creates a bucket; a bucket that already exists is fine.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = S3Failure::from_sdk(e);
                match failure.code.as_deref() {
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists") => Ok(()),
                    _ => Err(StorageError::CreateBucket {
                        bucket: bucket.to_string(),
                        source: failure,
                    }),
                }
            }
        }
    }

    /// Unfinished multipart uploads under a prefix: `(key, upload id)`, sorted.
    pub async fn list_multipart_uploads(
        &self,
        prefix: &S3Uri,
    ) -> Result<Vec<(String, String)>, StorageError> {
        Ok(self
            .open_uploads(prefix)
            .await?
            .into_iter()
            .map(|u| (u.key, u.upload_id))
            .collect())
    }

    /// Unfinished multipart uploads under a prefix with when they started, sorted by key.
    pub async fn open_uploads(&self, prefix: &S3Uri) -> Result<Vec<OpenUpload>, StorageError> {
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_id_marker: Option<String> = None;
        loop {
            let (keys, ids) = (key_marker.take(), upload_id_marker.take());
            let page = retry::retrying("listing uploads", &self.throttle, || async {
                self.client
                    .list_multipart_uploads()
                    .bucket(&prefix.bucket)
                    .prefix(&prefix.key)
                    .set_key_marker(keys.clone())
                    .set_upload_id_marker(ids.clone())
                    .send()
                    .await
                    .map_err(|e| StorageError::ListUploads {
                        uri: prefix.clone(),
                        source: S3Failure::from_sdk(e),
                    })
            })
            .await?;
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id())
                    && key.starts_with(&prefix.key)
                {
                    uploads.push(OpenUpload {
                        key: key.to_string(),
                        upload_id: id.to_string(),
                        initiated: upload.initiated().and_then(|t| {
                            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                        }),
                    });
                }
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            upload_id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && upload_id_marker.is_none() {
                break;
            }
        }
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(uploads)
    }

    /// Aborts one multipart upload, retrying a transient failure (see `retry`). An upload
    /// that is gone already (aborted, or completed) counts as aborted: `NoSuchUpload`, or
    /// any other refusal when the upload is no longer listed (some servers answer
    /// `AccessDenied` for an upload that was completed).
    pub async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let refused = match self.abort_upload_once(bucket, key, upload_id).await {
            Err(error) if !error.is_transient() => error,
            other => return other,
        };
        match self.open_uploads(&S3Uri::new(bucket, key)).await {
            Ok(open)
                if !open
                    .iter()
                    .any(|u| u.key == key && u.upload_id == upload_id) =>
            {
                Ok(())
            }
            _ => Err(refused),
        }
    }

    async fn abort_upload_once(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        retry::retrying("an abort", &self.throttle, || async {
            match self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let failure = S3Failure::from_sdk(e);
                    let gone = match failure.code.as_deref() {
                        Some("NoSuchUpload") => true,
                        Some("NoSuchBucket") => false,
                        _ => failure.status == Some(404),
                    };
                    if gone {
                        return Ok(());
                    }
                    Err(StorageError::AbortUpload {
                        uri: S3Uri::new(bucket, key),
                        upload_id: upload_id.to_string(),
                        source: failure,
                    })
                }
            }
        })
        .await
    }

    /// Starts writing one object; see [`Upload`].
    pub fn upload(&self, uri: S3Uri, opts: UploadOptions) -> Upload {
        Upload::new(self.clone(), uri, opts)
    }
}
