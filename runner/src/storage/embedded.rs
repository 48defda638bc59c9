//! The embedded S3 server: a local directory served over loopback, each sub-directory a bucket.
//!
//! s3s-fs does the storage. A thin layer in front of it adds what sluice relies on and
//! s3s-fs 0.14 leaves out: ETags in listings (and for files dropped into the directory by
//! hand), `If-Match` on GET and HEAD, verification of each part's CRC32C, and
//! ListMultipartUploads (read from s3s-fs's own upload records); and ListObjectsV2 from a
//! sorted walk that resumes where the last page ended (embedded_list.rs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use base64::prelude::{BASE64_STANDARD, BASE64_URL_SAFE_NO_PAD, Engine as _};
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::StorageError;
use super::embedded_list::{Query, list_page};

/// The fixed credentials of the embedded server. It listens on loopback only.
pub const EMBEDDED_ACCESS_KEY: &str = "sluice";
pub const EMBEDDED_SECRET_KEY: &str = "sluice-local-secret";
pub const EMBEDDED_REGION: &str = "us-east-1";

/// A running embedded S3 server; it stops when dropped.
#[derive(Debug)]
pub struct EmbeddedServer {
    url: String,
    addr: SocketAddr,
    dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl EmbeddedServer {
    /// Serves `dir` (created if missing) on 127.0.0.1, on `port` or a free one.
    pub async fn start(dir: &Path, port: Option<u16>) -> Result<EmbeddedServer, StorageError> {
        let failed = |source: std::io::Error| StorageError::EmbeddedServer {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(failed)?;
        let fs =
            FileSystem::new(dir).map_err(|e| failed(std::io::Error::other(format!("{e:?}"))))?;
        let root = dir.canonicalize().map_err(failed)?;
        let layer = EtagLayer {
            fs,
            root: root.clone(),
        };
        let service = {
            let mut builder = S3ServiceBuilder::new(layer);
            builder.set_auth(SimpleAuth::from_single(
                EMBEDDED_ACCESS_KEY,
                EMBEDDED_SECRET_KEY,
            ));
            builder.build()
        };
        let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
            .await
            .map_err(failed)?;
        let addr = listener.local_addr().map_err(failed)?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(error) => {
                            tracing::warn!(%error, "embedded S3 server: accepting a connection");
                            continue;
                        }
                    },
                    _ = &mut stopped => break,
                };
                // A response's head and body go out in separate writes: with Nagle's
                // algorithm the body waits for the client's delayed ACK of the head, about
                // 40 ms on every GET of a small object.
                if let Err(error) = socket.set_nodelay(true) {
                    tracing::debug!(%error, "embedded S3 server: setting TCP_NODELAY");
                }
                let service = service.clone();
                tokio::spawn(async move {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service);
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "embedded S3 server: connection ended");
                    }
                });
            }
        });
        Ok(EmbeddedServer {
            url: format!("http://{addr}"),
            addr,
            dir: root,
            stop: Some(stop),
            task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory served (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn access_key(&self) -> &'static str {
        EMBEDDED_ACCESS_KEY
    }

    pub fn secret_key(&self) -> &'static str {
        EMBEDDED_SECRET_KEY
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// The key under which the layer records which file version an ETag belongs to.
const STAMP: &str = "sluice_stamp";

/// s3s-fs plus the behaviour listed in the module documentation.
struct EtagLayer {
    fs: FileSystem,
    root: PathBuf,
}

fn b64(s: &str) -> String {
    BASE64_URL_SAFE_NO_PAD.encode(s)
}

fn io_error(error: std::io::Error) -> s3s::S3Error {
    s3_error!(error, InternalError)
}

/// Size and modification time: what tells that a file changed behind the server's back.
fn stamp_of(meta: &std::fs::Metadata) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}:{modified}", meta.len())
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl EtagLayer {
    fn object_path(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        let relative = Path::new(key);
        let plain = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        (plain && !bucket.contains('/')).then(|| self.root.join(bucket).join(relative))
    }

    /// Where s3s-fs keeps an object's ETag and checksums.
    fn info_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(format!(
            ".bucket-{}.object-{}.internal.json",
            b64(bucket),
            b64(key)
        ))
    }

    fn load_info(&self, path: &Path) -> serde_json::Map<String, serde_json::Value> {
        std::fs::read(path)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default()
    }

    fn save_info(
        &self,
        path: &Path,
        info: &serde_json::Map<String, serde_json::Value>,
    ) -> std::io::Result<()> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join(format!(".sluice-tmp-{}-{n}", std::process::id()));
        std::fs::write(
            &tmp,
            serde_json::to_vec(info).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, path)
    }

    /// The object's ETag (unquoted), or `None` if there is no such object. A file written
    /// or changed outside S3 gets the MD5 of its content, computed once per version.
    async fn current_etag(&self, bucket: &str, key: &str) -> std::io::Result<Option<String>> {
        let Some(path) = self.object_path(bucket, key) else {
            return Ok(None);
        };
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let stamp = stamp_of(&meta);
        let info_path = self.info_path(bucket, key);
        let mut info = self.load_info(&info_path);
        let etag = info
            .get("e_tag")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let recorded = info.get(STAMP).and_then(|v| v.as_str()).map(str::to_string);
        match (etag, recorded) {
            (Some(etag), Some(recorded)) if recorded == stamp => Ok(Some(etag)),
            // Written through S3 and not yet stamped: s3s-fs's ETag is the truth.
            (Some(etag), None) => {
                info.insert(STAMP.into(), stamp.into());
                self.save_info(&info_path, &info)?;
                Ok(Some(etag))
            }
            _ => {
                let etag = tokio::task::spawn_blocking(move || md5_of_file(&path))
                    .await
                    .map_err(std::io::Error::other)??;
                info.retain(|k, _| !k.starts_with("checksum_"));
                info.insert("e_tag".into(), etag.clone().into());
                info.insert(STAMP.into(), stamp.into());
                self.save_info(&info_path, &info)?;
                Ok(Some(etag))
            }
        }
    }

    /// After a write through S3: the ETag s3s-fs recorded belongs to the file as it is now.
    async fn restamp(&self, bucket: &str, key: &str) -> std::io::Result<()> {
        let Some(path) = self.object_path(bucket, key) else {
            return Ok(());
        };
        let meta = tokio::fs::metadata(&path).await?;
        let info_path = self.info_path(bucket, key);
        let mut info = self.load_info(&info_path);
        if info.contains_key("e_tag") {
            info.insert(STAMP.into(), stamp_of(&meta).into());
            self.save_info(&info_path, &info)?;
        }
        Ok(())
    }

    /// `If-Match` against the current ETag; a missing object is left to s3s-fs to report.
    async fn check_if_match(
        &self,
        bucket: &str,
        key: &str,
        condition: Option<&ETagCondition>,
    ) -> S3Result<()> {
        let current = self.current_etag(bucket, key).await.map_err(io_error)?;
        match (condition, current) {
            (Some(ETagCondition::ETag(expected)), Some(current))
                if !ETag::Strong(current.clone()).strong_cmp(expected) =>
            {
                Err(s3_error!(PreconditionFailed, "ETag does not match"))
            }
            _ => Ok(()),
        }
    }

    fn part_path(&self, upload_id: &str, part: i32) -> PathBuf {
        self.root
            .join(format!(".upload_id-{upload_id}.part-{part}"))
    }

    /// Unfinished uploads, from the attribute files s3s-fs writes when an upload starts
    /// (`.bucket-B.object-K.upload-U.metadata.json`) and the upload record it removes when
    /// the upload completes or is aborted (`.upload-U.json`).
    fn unfinished_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> std::io::Result<Vec<MultipartUpload>> {
        let mut uploads = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name
                .strip_prefix(".bucket-")
                .and_then(|r| r.strip_suffix(".metadata.json"))
            else {
                continue;
            };
            let mut fields = rest.split('.');
            let (Some(b), Some(k), Some(u), None) = (
                fields.next(),
                fields.next().and_then(|f| f.strip_prefix("object-")),
                fields.next().and_then(|f| f.strip_prefix("upload-")),
                fields.next(),
            ) else {
                continue;
            };
            let decode = |s: &str| {
                BASE64_URL_SAFE_NO_PAD
                    .decode(s)
                    .ok()
                    .and_then(|raw| String::from_utf8(raw).ok())
            };
            let (Some(b), Some(k)) = (decode(b), decode(k)) else {
                continue;
            };
            if b != bucket || !k.starts_with(prefix) {
                continue;
            }
            if !self.root.join(format!(".upload-{u}.json")).exists() {
                continue;
            }
            let initiated = entry.metadata()?.modified().ok().map(Timestamp::from);
            uploads.push(MultipartUpload {
                key: Some(k),
                upload_id: Some(u.to_string()),
                initiated,
                ..Default::default()
            });
        }
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(uploads)
    }
}

fn md5_of_file(path: &Path) -> std::io::Result<String> {
    use s3s::crypto::Checksum as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut md5 = s3s::crypto::Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
    }
    Ok(hex::encode(md5.finalize()))
}

fn crc32c_of_file(path: &Path) -> std::io::Result<u32> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut crc = 0u32;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
    Ok(crc)
}

#[async_trait::async_trait]
impl S3 for EtagLayer {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.copy_object(req).await?;
        self.restamp(&bucket, &key).await.map_err(io_error)?;
        Ok(response)
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = &req.input;
        self.check_if_match(&input.bucket, &input.key, input.if_match.as_ref())
            .await?;
        self.fs.get_object(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = &req.input;
        self.check_if_match(&input.bucket, &input.key, input.if_match.as_ref())
            .await?;
        self.fs.head_object(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let Some(bucket_dir) = self.object_path(&input.bucket, "") else {
            return Err(s3_error!(NoSuchBucket));
        };
        if !bucket_dir.is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        let max_keys = input.max_keys.unwrap_or(1000);
        // Resume after the later of the token (the last key or prefix sent) and start-after.
        let after = match (input.continuation_token.clone(), input.start_after.clone()) {
            (Some(token), Some(start)) => Some(token.max(start)),
            (token, start) => token.or(start),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let page = tokio::task::spawn_blocking(move || {
            list_page(
                &bucket_dir,
                &Query {
                    prefix: prefix.trim_start_matches('/'),
                    delimiter: delimiter.as_deref(),
                    after: after.as_deref(),
                    max_keys: usize::try_from(max_keys.max(0)).unwrap_or(1000),
                },
            )
        })
        .await
        .map_err(|e| io_error(std::io::Error::other(e)))?
        .map_err(io_error)?;
        let mut contents = Vec::with_capacity(page.objects.len());
        for (key, meta) in &page.objects {
            let e_tag = self
                .current_etag(&input.bucket, key)
                .await
                .map_err(io_error)?
                .map(ETag::Strong);
            contents.push(Object {
                key: Some(key.clone()),
                last_modified: meta.modified().ok().map(Timestamp::from),
                size: Some(i64::try_from(meta.len()).unwrap_or(i64::MAX)),
                e_tag,
                ..Default::default()
            });
        }
        let common_prefixes: Vec<CommonPrefix> = page
            .prefixes
            .into_iter()
            .map(|prefix| CommonPrefix {
                prefix: Some(prefix),
            })
            .collect();
        let key_count = contents.len() + common_prefixes.len();
        let output = ListObjectsV2Output {
            key_count: Some(i32::try_from(key_count).unwrap_or(i32::MAX)),
            max_keys: Some(max_keys),
            is_truncated: Some(page.truncated),
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
            continuation_token: input.continuation_token,
            next_continuation_token: page.truncated.then_some(page.last).flatten(),
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: input.prefix,
            start_after: input.start_after,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.put_object(req).await?;
        self.restamp(&bucket, &key).await.map_err(io_error)?;
        Ok(response)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let upload_id = req.input.upload_id.clone();
        let part = req.input.part_number;
        let expected = req.input.checksum_crc32c.clone();
        let mut response = self.fs.upload_part(req).await?;
        if let Some(expected) = expected {
            let path = self.part_path(&upload_id, part);
            let crc = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || crc32c_of_file(&path))
                    .await
                    .map_err(|e| io_error(std::io::Error::other(e)))?
                    .map_err(io_error)?
            };
            let actual = BASE64_STANDARD.encode(crc.to_be_bytes());
            if actual != expected {
                let _ = std::fs::remove_file(&path);
                return Err(s3_error!(
                    BadDigest,
                    "part {part}: x-amz-checksum-crc32c is {expected}, the data has {actual}"
                ));
            }
            response.output.checksum_crc32c = Some(actual);
        }
        Ok(response)
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.fs.upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.complete_multipart_upload(req).await?;
        self.restamp(&bucket, &key).await.map_err(io_error)?;
        Ok(response)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        if !self.root.join(&input.bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads = self
            .unfinished_uploads(&input.bucket, &prefix)
            .map_err(io_error)?;
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(false),
            max_uploads: input.max_uploads,
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}
