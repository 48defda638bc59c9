//! Bodies to and from files, off the request threads: a request body is written by a
//! blocking task that also computes its digests (each once, in the same pass), and a file
//! is read in large chunks by a blocking task a few chunks ahead of the socket.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::{Checksum, StreamingBlob};
use s3s::{S3Result, s3_error};
use tokio::sync::mpsc;

/// Bytes written per write(2), and read per chunk of a GET.
const CHUNK: usize = 1 << 20;
/// Chunks queued between the socket and the file.
const QUEUED: usize = 4;
/// Objects up to this size are read in the same blocking call that looks them up.
pub const SMALL: u64 = 256 << 10;

/// The digests to compute over a body.
#[derive(Default)]
pub struct Digests {
    /// MD5: the ETag of a single PUT, and what Content-MD5 is checked against.
    pub md5: bool,
    /// xxh3-128: a part's ETag when no MD5 is asked for (cheap, and opaque like S3's).
    pub xxh3: bool,
    /// The S3 checksums the client sent or asked for.
    pub checksums: ChecksumHasher,
}

/// A body written to a file.
pub struct Written {
    pub size: u64,
    pub md5: Option<[u8; 16]>,
    pub xxh3: Option<[u8; 16]>,
    pub checksum: Checksum,
    pub meta: std::fs::Metadata,
}

struct Hashing {
    md5: Option<s3s::crypto::Md5>,
    xxh3: Option<Box<xxhash_rust::xxh3::Xxh3>>,
    checksums: ChecksumHasher,
}

impl Hashing {
    fn update(&mut self, data: &[u8]) {
        if let Some(md5) = &mut self.md5 {
            md5.update(data);
        }
        if let Some(xxh3) = &mut self.xxh3 {
            xxh3.update(data);
        }
        self.checksums.update(data);
    }
}

/// Writes `body` to `path` (created or truncated), computing `digests`. On any error the
/// file is removed.
pub async fn write_body(body: StreamingBlob, path: PathBuf, digests: Digests) -> S3Result<Written> {
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUED * 8);
    let target = path.clone();
    let writer = tokio::task::spawn_blocking(move || write_chunks(&target, rx, digests));
    let mut body = body;
    let mut failed = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break; // the writer failed: its error is reported below
                }
            }
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| s3_error!(InternalError, "writing a body: {e}"))?;
    if let Some(error) = failed {
        let _ = std::fs::remove_file(&path);
        return Err(s3_error!(
            IncompleteBody,
            "reading the request body: {error}"
        ));
    }
    written.map_err(|e| {
        let _ = std::fs::remove_file(&path);
        s3_error!(e, InternalError)
    })
}

/// Reads a small body whole (its Content-Length says it is small): written in the same
/// blocking call as the rest of its PUT, with [`write_bytes`].
pub async fn read_small(body: StreamingBlob, len: usize) -> S3Result<Bytes> {
    let mut body = body;
    let mut buf = BytesMut::with_capacity(len);
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| s3_error!(IncompleteBody, "reading the request body: {e}"))?;
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Writes `bytes` to `path` computing `digests`, on the calling (blocking) thread.
pub fn write_bytes(path: &Path, bytes: &[u8], digests: Digests) -> io::Result<Written> {
    let mut hashing = Hashing::new(digests);
    hashing.update(bytes);
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    let meta = file.metadata()?;
    Ok(hashing.finish(bytes.len() as u64, meta))
}

impl Hashing {
    fn new(digests: Digests) -> Hashing {
        Hashing {
            md5: digests.md5.then(s3s::crypto::Md5::new),
            xxh3: digests
                .xxh3
                .then(|| Box::new(xxhash_rust::xxh3::Xxh3::new())),
            checksums: digests.checksums,
        }
    }

    fn finish(self, size: u64, meta: std::fs::Metadata) -> Written {
        Written {
            size,
            md5: self.md5.map(|m| {
                let mut out = [0u8; 16];
                out.copy_from_slice(m.finalize().as_ref());
                out
            }),
            xxh3: self.xxh3.map(|x| x.digest128().to_be_bytes()),
            checksum: self.checksums.finalize(),
            meta,
        }
    }
}

fn write_chunks(
    path: &Path,
    mut rx: mpsc::Receiver<Bytes>,
    digests: Digests,
) -> io::Result<Written> {
    let mut file = File::create(path)?;
    let mut hashing = Hashing::new(digests);
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut size = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        hashing.update(&chunk);
        size += chunk.len() as u64;
        if buf.is_empty() && chunk.len() >= CHUNK {
            file.write_all(&chunk)?;
            continue;
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= CHUNK {
            file.write_all(&buf)?;
            buf.clear();
        }
    }
    file.write_all(&buf)?;
    let meta = file.metadata()?;
    Ok(hashing.finish(size, meta))
}

/// The part of a file a GET returns.
pub struct Span {
    pub start: u64,
    pub len: u64,
}

/// Reads `span` of an open file whole (for small objects).
pub fn read_span(file: &mut File, span: &Span) -> io::Result<Bytes> {
    let len = usize::try_from(span.len).map_err(io::Error::other)?;
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(span.start))?;
    file.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// Streams `span` of `file`: a blocking task reads chunks of 1 MiB a few ahead of the
/// socket, and stops when the response is dropped.
pub fn stream_span(mut file: File, span: Span) -> StreamingBlob {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(QUEUED);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(span.start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = span.len;
        while left > 0 {
            let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            // Read into the spare capacity: no zeroing of a megabyte per chunk.
            let mut buf = Vec::with_capacity(want);
            let read = match (&mut file).take(want as u64).read_to_end(&mut buf) {
                Ok(n) if n == want => Ok(Bytes::from(buf)),
                Ok(n) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ended {} bytes early", want - n),
                )),
                Err(e) => Err(e),
            };
            let stop = read.is_err();
            if tx.blocking_send(read).is_err() || stop {
                return;
            }
            left -= want as u64;
        }
    });
    StreamingBlob::wrap(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// A body of bytes already read.
pub fn whole(bytes: Bytes) -> StreamingBlob {
    StreamingBlob::wrap(futures::stream::iter([Ok::<_, io::Error>(bytes)]))
}

/// The `x-amz-checksum-*` headers of a PutObject or UploadPart input (they name them alike).
macro_rules! checksum_headers {
    ($input:expr) => {
        s3s::dto::Checksum {
            checksum_crc32: $input.checksum_crc32.clone(),
            checksum_crc32c: $input.checksum_crc32c.clone(),
            checksum_sha1: $input.checksum_sha1.clone(),
            checksum_sha256: $input.checksum_sha256.clone(),
            checksum_crc64nvme: $input.checksum_crc64nvme.clone(),
            ..Default::default()
        }
    };
}
pub(crate) use checksum_headers;

/// `$output { fields... }` with the five checksum fields of `$checksum` (a `Checksum`):
/// the responses that return checksums name them alike.
macro_rules! with_checksums {
    ($output:ident { $($field:ident: $value:expr),* $(,)? }, $checksum:expr) => {{
        let checksum: s3s::dto::Checksum = $checksum;
        $output {
            $($field: $value,)*
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }
    }};
}
pub(crate) use with_checksums;

/// A hasher for the checksums a request carries (headers) or announces (algorithm, for
/// a trailer).
pub fn checksums_for(given: &Checksum, algorithm: Option<&str>) -> S3Result<ChecksumHasher> {
    let mut hasher = ChecksumHasher::default();
    if given.checksum_crc32.is_some() || algorithm == Some("CRC32") {
        hasher.crc32 = Some(Default::default());
    }
    if given.checksum_crc32c.is_some() || algorithm == Some("CRC32C") {
        hasher.crc32c = Some(Default::default());
    }
    if given.checksum_sha1.is_some() || algorithm == Some("SHA1") {
        hasher.sha1 = Some(Default::default());
    }
    if given.checksum_sha256.is_some() || algorithm == Some("SHA256") {
        hasher.sha256 = Some(Default::default());
    }
    if given.checksum_crc64nvme.is_some() || algorithm == Some("CRC64NVME") {
        hasher.crc64nvme = Some(Default::default());
    }
    if let Some(other) = algorithm
        && !["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"].contains(&other)
    {
        return Err(s3_error!(
            InvalidArgument,
            "unsupported checksum algorithm {other}"
        ));
    }
    Ok(hasher)
}

/// The checksums a client sent, from the headers and, for a streamed body, the trailer
/// (read once the body has been consumed).
pub fn sent_checksums(
    mut given: Checksum,
    trailers: Option<s3s::TrailingHeaders>,
) -> S3Result<Checksum> {
    if let Some(trailers) = trailers
        && let Some(trailers) = trailers.take()
    {
        let value = |name: &str| -> S3Result<Option<String>> {
            trailers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map(str::to_string)
                        .map_err(|_| s3_error!(InvalidArgument, "{name} is not text"))
                })
                .transpose()
        };
        given.checksum_crc32 = value("x-amz-checksum-crc32")?.or(given.checksum_crc32);
        given.checksum_crc32c = value("x-amz-checksum-crc32c")?.or(given.checksum_crc32c);
        given.checksum_sha1 = value("x-amz-checksum-sha1")?.or(given.checksum_sha1);
        given.checksum_sha256 = value("x-amz-checksum-sha256")?.or(given.checksum_sha256);
        given.checksum_crc64nvme = value("x-amz-checksum-crc64nvme")?.or(given.checksum_crc64nvme);
    }
    Ok(given)
}

/// Checks the checksums the client sent against those of the bytes received.
pub fn verify(sent: &Checksum, actual: &Checksum, what: &str) -> S3Result<()> {
    let pairs = [
        ("crc32", &sent.checksum_crc32, &actual.checksum_crc32),
        ("crc32c", &sent.checksum_crc32c, &actual.checksum_crc32c),
        ("sha1", &sent.checksum_sha1, &actual.checksum_sha1),
        ("sha256", &sent.checksum_sha256, &actual.checksum_sha256),
        (
            "crc64nvme",
            &sent.checksum_crc64nvme,
            &actual.checksum_crc64nvme,
        ),
    ];
    for (name, sent, actual) in pairs {
        if let Some(sent) = sent
            && actual.as_ref() != Some(sent)
        {
            return Err(s3_error!(
                BadDigest,
                "{what}: x-amz-checksum-{name} is {sent}, the data has {}",
                actual.as_deref().unwrap_or("none")
            ));
        }
    }
    Ok(())
}

/// Checks Content-MD5 (base64) against the MD5 of the bytes received.
pub fn verify_md5(
    content_md5: Option<&str>,
    actual: Option<&[u8; 16]>,
    what: &str,
) -> S3Result<()> {
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    let Some(sent) = content_md5 else {
        return Ok(());
    };
    let sent = BASE64_STANDARD
        .decode(sent)
        .map_err(|_| s3_error!(InvalidDigest, "{what}: Content-MD5 is not base64"))?;
    if actual.map(|a| &a[..]) != Some(&sent[..]) {
        return Err(s3_error!(
            BadDigest,
            "{what}: Content-MD5 does not match the data"
        ));
    }
    Ok(())
}
