//! Streaming reads: one GET for small objects, concurrent ranged GETs pinned to the ETag for large ones.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};

use super::{FailureKind, S3Failure, S3Uri, Storage, StorageError};

/// An object's bytes as a stream, in order. Errors are `io::Error`s wrapping a
/// [`StorageError`] (see [`StorageError::from_io`]), so `tokio_util::io::StreamReader`
/// can wrap it.
pub struct ObjectStream {
    size: u64,
    etag: String,
    inner: BoxStream<'static, io::Result<Bytes>>,
}

impl ObjectStream {
    /// The object's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The ETag the read is pinned to.
    pub fn etag(&self) -> &str {
        &self.etag
    }
}

impl std::fmt::Debug for ObjectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStream")
            .field("size", &self.size)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

impl Stream for ObjectStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Storage {
    /// Streams an object. With `etag`, the read fails if the object is not (or no longer)
    /// that version. The first request is a GET of the first range (no HEAD before it): an
    /// object no larger than a range is that one response, streamed; the rest of a larger
    /// one follows as concurrent ranged GETs pinned to the ETag, yielded in order.
    pub async fn get(&self, uri: &S3Uri, etag: Option<&str>) -> Result<ObjectStream, StorageError> {
        let range_size = self.read.range_size.max(1);
        let first = self
            .client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .range(format!("bytes=0-{}", range_size - 1))
            .set_if_match(etag.map(str::to_string))
            .send()
            .await;
        let first = match first {
            Ok(output) => output,
            Err(e) => {
                let failure = S3Failure::from_sdk(e);
                // An empty object has no byte 0: S3 answers 416.
                if failure.status == Some(416) {
                    return self.get_empty(uri, etag).await;
                }
                return Err(changed_or(uri, etag, failure, get_error));
            }
        };
        let current = first.e_tag().unwrap_or_default().to_string();
        let size = match first.content_range().and_then(total_of_content_range) {
            Some(total) => total,
            // A server that ignores ranges sends the whole object.
            None => first.content_length().unwrap_or(0).max(0) as u64,
        };
        let pin = etag
            .map(str::to_string)
            .or_else(|| (!current.is_empty()).then(|| current.clone()));
        if size <= range_size || first.content_range().is_none() {
            let inner = resuming_body(self.client.clone(), uri.clone(), pin, size, first.body);
            return Ok(ObjectStream {
                size,
                etag: current,
                inner,
            });
        }
        let head = first.body;
        let first_len = range_size;
        let pin_first = pin.clone();
        let client = self.client.clone();
        let target = uri.clone();
        let starts = (first_len..size).step_by(range_size as usize);
        let rest = stream::iter(starts)
            .map(move |start| {
                let client = client.clone();
                let uri = target.clone();
                let pin = pin.clone();
                let end = (start + range_size).min(size);
                async move {
                    get_range(&client, &uri, start..end, pin.as_deref())
                        .await
                        .map_err(io::Error::other)
                }
            })
            .buffered(self.read.in_flight);
        let (client, first_uri, first_pin) = (self.client.clone(), uri.clone(), pin_first);
        let first_chunk = stream::once(async move {
            match collect_exactly(head, first_len as usize).await {
                Ok(bytes) if bytes.len() as u64 == first_len => Ok(bytes),
                // The body broke off (or came short): ask for the range again, pinned.
                broken => {
                    tracing::warn!(
                        uri = %first_uri,
                        "the first range of a read broke off ({:?}); reading it again",
                        broken.err()
                    );
                    get_range(&client, &first_uri, 0..first_len, first_pin.as_deref())
                        .await
                        .map_err(io::Error::other)
                }
            }
        });
        Ok(ObjectStream {
            size,
            etag: current,
            inner: first_chunk.chain(rest).boxed(),
        })
    }

    /// An object whose first byte does not exist: empty, if a HEAD says so.
    async fn get_empty(
        &self,
        uri: &S3Uri,
        etag: Option<&str>,
    ) -> Result<ObjectStream, StorageError> {
        let head = self
            .client
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .set_if_match(etag.map(str::to_string))
            .send()
            .await
            .map_err(|e| changed_or(uri, etag, S3Failure::from_sdk(e), head_error))?;
        let size = head.content_length().unwrap_or(0).max(0) as u64;
        if size != 0 {
            return Err(StorageError::BadResponse {
                uri: uri.clone(),
                detail: format!(
                    "a read from byte 0 was refused as out of range, yet the object has {size} bytes"
                ),
            });
        }
        Ok(ObjectStream {
            size: 0,
            etag: head.e_tag().unwrap_or_default().to_string(),
            inner: stream::empty().boxed(),
        })
    }
}

/// The total size in a Content-Range header: `bytes 0-99/1234` -> 1234.
fn total_of_content_range(range: &str) -> Option<u64> {
    range.rsplit_once('/')?.1.trim().parse().ok()
}

impl Storage {
    /// The bytes `range` of an object pinned to `etag` (shorter at the object's end).
    pub async fn get_range_of(
        &self,
        uri: &S3Uri,
        etag: &str,
        range: Range<u64>,
        size: u64,
    ) -> Result<Bytes, StorageError> {
        let range = range.start.min(size)..range.end.min(size);
        get_range(&self.client, uri, range, Some(etag)).await
    }

    /// Streams `prefix`, then the bytes `span` of an object pinned to `etag`, as concurrent
    /// ranged GETs yielded in order: a byte range of a split object after its header.
    pub fn get_span(
        &self,
        uri: &S3Uri,
        etag: &str,
        size: u64,
        prefix: Bytes,
        span: Range<u64>,
    ) -> ObjectStream {
        let client = self.client.clone();
        let target = uri.clone();
        let pin = etag.to_string();
        let range_size = self.read.range_size.max(1);
        let finish = span.end;
        let starts = (span.start..span.end).step_by(range_size as usize);
        let body = stream::iter(starts)
            .map(move |start| {
                let client = client.clone();
                let uri = target.clone();
                let pin = pin.clone();
                let end = (start + range_size).min(finish);
                async move {
                    get_range(&client, &uri, start..end, Some(&pin))
                        .await
                        .map_err(io::Error::other)
                }
            })
            .buffered(self.read.in_flight);
        let inner = stream::once(async move { Ok(prefix) })
            .chain(body)
            .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(b) if b.is_empty())))
            .boxed();
        ObjectStream {
            size,
            etag: etag.to_string(),
            inner,
        }
    }
}

fn head_error(uri: &S3Uri, source: S3Failure) -> StorageError {
    StorageError::HeadObject {
        uri: uri.clone(),
        source,
    }
}

fn get_error(uri: &S3Uri, source: S3Failure) -> StorageError {
    StorageError::GetObject {
        uri: uri.clone(),
        source,
    }
}

/// A 412 to a request pinned to an ETag means the object changed.
fn changed_or(
    uri: &S3Uri,
    etag: Option<&str>,
    failure: S3Failure,
    otherwise: fn(&S3Uri, S3Failure) -> StorageError,
) -> StorageError {
    match etag {
        Some(etag) if failure.status == Some(412) => StorageError::ObjectChanged {
            uri: uri.clone(),
            etag: etag.to_string(),
        },
        _ => otherwise(uri, failure),
    }
}

/// One ranged GET, read to the end; fails unless exactly the range came back.
pub(super) async fn get_range(
    client: &Client,
    uri: &S3Uri,
    range: Range<u64>,
    etag: Option<&str>,
) -> Result<Bytes, StorageError> {
    if range.is_empty() {
        return Ok(Bytes::new());
    }
    let mut broken = 0;
    let bytes = loop {
        let output = client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(etag.map(str::to_string))
            .send()
            .await
            .map_err(|e| changed_or(uri, etag, S3Failure::from_sdk(e), get_error))?;
        match collect_exactly(output.body, (range.end - range.start) as usize).await {
            Ok(body) => break body,
            Err(e) if broken < BODY_RETRIES => {
                broken += 1;
                tracing::warn!(%uri, attempt = broken, "the body of a ranged read broke off ({e}); reading the range again");
                tokio::time::sleep(body_backoff(broken)).await;
            }
            Err(e) => {
                return Err(StorageError::GetObject {
                    uri: uri.clone(),
                    source: S3Failure::local(FailureKind::Connection, e.to_string()),
                });
            }
        }
    };
    let wanted = range.end - range.start;
    if bytes.len() as u64 != wanted {
        return Err(StorageError::BadResponse {
            uri: uri.clone(),
            detail: format!(
                "asked for bytes {}..{} ({wanted} bytes), got {} bytes",
                range.start,
                range.end,
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

/// A response body read into one buffer of the expected size (no second copy of the
/// chunks as `collect` + `into_bytes` would make).
async fn collect_exactly(
    mut body: ByteStream,
    expected: usize,
) -> Result<Bytes, aws_sdk_s3::primitives::ByteStreamError> {
    let mut buffer = bytes::BytesMut::with_capacity(expected);
    while let Some(chunk) = body.try_next().await? {
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

/// Times a response body that broke off is picked up again, in a row without progress,
/// before the read fails. The SDK retries requests; a body that breaks after the response
/// started is ours to retry.
pub(super) const BODY_RETRIES: u32 = 4;

/// Waits 100 ms, 200 ms, 400 ms, ... before the `n`-th pick-up (n from 1).
pub(super) fn body_backoff(n: u32) -> std::time::Duration {
    std::time::Duration::from_millis(100 << n.saturating_sub(1).min(6))
}

/// Where a single-GET read stands.
struct Resuming {
    client: Client,
    uri: S3Uri,
    pin: Option<String>,
    size: u64,
    body: ByteStream,
    /// Bytes yielded so far.
    offset: u64,
    /// Pick-ups since the last chunk that arrived.
    broken: u32,
}

/// The body of a single GET; when the connection breaks in the middle, the rest is asked
/// for with a ranged GET pinned to the same ETag, so a reset costs one request instead of
/// the object.
fn resuming_body(
    client: Client,
    uri: S3Uri,
    pin: Option<String>,
    size: u64,
    body: ByteStream,
) -> BoxStream<'static, io::Result<Bytes>> {
    let state = Resuming {
        client,
        uri,
        pin,
        size,
        body,
        offset: 0,
        broken: 0,
    };
    stream::try_unfold(state, |mut state| async move {
        loop {
            let error = match state.body.try_next().await {
                Ok(Some(chunk)) => {
                    state.offset += chunk.len() as u64;
                    state.broken = 0;
                    return Ok(Some((chunk, state)));
                }
                Ok(None) => return Ok(None),
                Err(e) => e,
            };
            // Without an ETag to pin the rest to, a resumed read could mix two versions.
            if state.pin.is_none() || state.offset >= state.size || state.broken >= BODY_RETRIES {
                return Err(io::Error::other(StorageError::GetObject {
                    uri: state.uri.clone(),
                    source: S3Failure::local(FailureKind::Connection, error.to_string()),
                }));
            }
            state.broken += 1;
            tracing::warn!(
                uri = %state.uri,
                offset = state.offset,
                attempt = state.broken,
                "the body of a read broke off ({error}); reading on from where it stopped"
            );
            tokio::time::sleep(body_backoff(state.broken)).await;
            let output = state
                .client
                .get_object()
                .bucket(&state.uri.bucket)
                .key(&state.uri.key)
                .range(format!("bytes={}-", state.offset))
                .set_if_match(state.pin.clone())
                .send()
                .await
                .map_err(|e| {
                    io::Error::other(changed_or(
                        &state.uri,
                        state.pin.as_deref(),
                        S3Failure::from_sdk(e),
                        get_error,
                    ))
                })?;
            let rest = state.size - state.offset;
            if let Some(length) = output.content_length()
                && length as u64 != rest
            {
                return Err(io::Error::other(StorageError::BadResponse {
                    uri: state.uri.clone(),
                    detail: format!(
                        "asked for the {rest} bytes from {}, got {length} bytes",
                        state.offset
                    ),
                }));
            }
            state.body = output.body;
        }
    })
    .boxed()
}
