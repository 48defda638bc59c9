//! GET, HEAD and PUT of whole objects: one blocking call looks an object up (file, ETag,
//! attributes, and the bytes themselves when it is small); a large body streams in 1 MiB
//! chunks; a PUT is written and hashed off the request thread and published by a rename.

use std::fs::File;
use std::io;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::body::{self, Digests, SMALL, Span};
use super::meta::{self, Attributes, Info, Root};

fn internal(error: io::Error) -> s3s::S3Error {
    s3_error!(error, InternalError)
}

/// An object is a file: a key cannot be an object and also continue with `/` into more
/// keys, nor have a part between slashes longer than a file name. Writing one says so
/// instead of failing as an internal error.
pub fn key_and_prefix(error: io::Error, key: &str) -> s3s::S3Error {
    match error.kind() {
        io::ErrorKind::NotADirectory
        | io::ErrorKind::IsADirectory
        | io::ErrorKind::DirectoryNotEmpty
        | io::ErrorKind::AlreadyExists => {
            s3_error!(
                InvalidArgument,
                "the embedded server keeps each object as a file, so a key cannot also be the \
                 prefix of other keys: {key} collides with an object or a prefix already stored"
            )
        }
        io::ErrorKind::InvalidFilename => s3_error!(
            KeyTooLongError,
            "the embedded server keeps each object as a file, and a part of the key between \
             slashes is longer than the file system allows (255 bytes): {key}"
        ),
        _ => internal(error),
    }
}

/// Whether opening a key's file failed because no object is there: no such file, a file
/// where the key has a directory, or a name no file can have.
pub fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename
    )
}

/// The error for a key with no object: `NoSuchKey`, or `NoSuchBucket` without the bucket.
pub fn missing_object(root: &Root, bucket: &str) -> s3s::S3Error {
    if root.bucket_path(bucket).is_some_and(|p| p.is_dir()) {
        s3_error!(NoSuchKey)
    } else {
        s3_error!(NoSuchBucket)
    }
}

/// Runs blocking file work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> S3Result<T> + Send + 'static,
) -> S3Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| s3_error!(InternalError, "a file task failed: {e}"))?
}

/// An object looked up for a GET or HEAD.
struct Found {
    file: File,
    meta: std::fs::Metadata,
    info: Info,
    attributes: Attributes,
    /// The bytes, for a small GET.
    bytes: Option<bytes::Bytes>,
}

/// The conditions of a GET or HEAD.
struct Conditions<'a> {
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
}

fn check_conditions(conditions: &Conditions<'_>, etag: &str) -> S3Result<()> {
    let current = ETag::Strong(etag.to_string());
    if let Some(ETagCondition::ETag(expected)) = conditions.if_match
        && !current.strong_cmp(expected)
    {
        return Err(s3_error!(PreconditionFailed, "ETag does not match"));
    }
    match conditions.if_none_match {
        Some(ETagCondition::Any) => Err(s3_error!(NotModified)),
        Some(ETagCondition::ETag(expected)) if current.strong_cmp(expected) => {
            Err(s3_error!(NotModified))
        }
        _ => Ok(()),
    }
}

fn look_up(
    root: &Root,
    bucket: &str,
    key: &str,
    conditions: &Conditions<'_>,
    range: Option<&Range>,
    read_small: bool,
) -> S3Result<(Found, Span)> {
    let path = root
        .object_path(bucket, key)
        .ok_or_else(|| s3_error!(NoSuchKey))?;
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if is_absent(&e) => return Err(missing_object(root, bucket)),
        Err(e) => return Err(internal(e)),
    };
    let meta = file.metadata().map_err(internal)?;
    if !meta.is_file() {
        return Err(s3_error!(NoSuchKey));
    }
    let info = meta::current_info(root, bucket, key, &meta).map_err(internal)?;
    check_conditions(conditions, &info.etag)?;
    let attributes =
        meta::load_attributes(&root.attributes_path(bucket, key, None)).map_err(internal)?;
    let span = match range {
        None => Span {
            start: 0,
            len: meta.len(),
        },
        Some(range) => {
            let r = range
                .check(meta.len())
                .map_err(|_| s3_error!(InvalidRange, "the range is not satisfiable"))?;
            Span {
                start: r.start,
                len: r.end - r.start,
            }
        }
    };
    let bytes = if read_small && span.len <= SMALL {
        Some(body::read_span(&mut file, &span).map_err(internal)?)
    } else {
        None
    };
    Ok((
        Found {
            file,
            meta,
            info,
            attributes,
            bytes,
        },
        span,
    ))
}

fn last_modified(meta: &std::fs::Metadata) -> Option<Timestamp> {
    meta.modified().ok().map(Timestamp::from)
}

/// Looks an object up off the request thread for a GET (`read_small`) or a HEAD.
async fn find(
    root: &Root,
    bucket: &str,
    key: &str,
    conditions: (Option<ETagCondition>, Option<ETagCondition>),
    range: Option<Range>,
    read_small: bool,
) -> S3Result<(Found, Span)> {
    let root = root.clone();
    let (bucket, key) = (bucket.to_string(), key.to_string());
    blocking(move || {
        look_up(
            &root,
            &bucket,
            &key,
            &Conditions {
                if_match: conditions.0.as_ref(),
                if_none_match: conditions.1.as_ref(),
            },
            range.as_ref(),
            read_small,
        )
    })
    .await
}

/// S3 returns the stored checksums only when asked, and only for the whole object.
fn returned_checksum(found: &Found, span: &Span, mode: Option<&ChecksumMode>) -> Checksum {
    let asked = mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
    if asked && span.len == found.meta.len() {
        found.info.checksum.clone()
    } else {
        Checksum::default()
    }
}

/// A GET's or HEAD's output: `$output { fields... }` plus what both say of the object.
macro_rules! object_output {
    ($output:ident { $($field:ident: $value:expr),* $(,)? }, $found:expr, $checksum:expr) => {{
        let Found { meta, info, attributes, .. } = $found;
        let expires = attributes.expires();
        body::with_checksums!(
            $output {
                $($field: $value,)*
                accept_ranges: Some("bytes".into()),
                last_modified: last_modified(&meta),
                e_tag: Some(ETag::Strong(info.etag)),
                metadata: attributes.user_metadata,
                content_encoding: attributes.content_encoding,
                content_type: attributes.content_type,
                content_disposition: attributes.content_disposition,
                content_language: attributes.content_language,
                cache_control: attributes.cache_control,
                expires: expires,
                website_redirect_location: attributes.website_redirect_location,
            },
            $checksum
        )
    }};
}

pub async fn get_object(
    root: &Root,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    if input.part_number.is_some() {
        return Err(s3_error!(NotImplemented, "GET of one part of an object"));
    }
    let conditions = (input.if_match, input.if_none_match);
    let (mut found, span) = find(
        root,
        &input.bucket,
        &input.key,
        conditions,
        input.range,
        true,
    )
    .await?;
    let checksum = returned_checksum(&found, &span, input.checksum_mode.as_ref());
    let content_range = input.range.is_some().then(|| {
        format!(
            "bytes {}-{}/{}",
            span.start,
            (span.start + span.len).saturating_sub(1),
            found.meta.len()
        )
    });
    let content_length = i64::try_from(span.len).map_err(|_| s3_error!(InternalError))?;
    let body = match found.bytes.take() {
        Some(bytes) => body::whole(bytes),
        None => body::stream_span(found.file, span),
    };
    Ok(S3Response::new(object_output!(
        GetObjectOutput {
            body: Some(body),
            content_length: Some(content_length),
            content_range: content_range,
        },
        found,
        checksum
    )))
}

pub async fn head_object(
    root: &Root,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    if input.part_number.is_some() {
        return Err(s3_error!(NotImplemented, "HEAD of one part of an object"));
    }
    let conditions = (input.if_match, input.if_none_match);
    let (found, span) = find(
        root,
        &input.bucket,
        &input.key,
        conditions,
        input.range,
        false,
    )
    .await?;
    let checksum = returned_checksum(&found, &span, input.checksum_mode.as_ref());
    let content_length = i64::try_from(span.len).unwrap_or(i64::MAX);
    Ok(S3Response::new(object_output!(
        HeadObjectOutput {
            content_length: Some(content_length),
        },
        found,
        checksum
    )))
}

/// The current ETag of an object, `None` if there is none.
pub fn existing_etag(root: &Root, bucket: &str, key: &str) -> S3Result<Option<String>> {
    let Some(path) = root.object_path(bucket, key) else {
        return Ok(None);
    };
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(Some(
            meta::current_info(root, bucket, key, &meta)
                .map_err(internal)?
                .etag,
        )),
        Ok(_) => Ok(None),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(internal(e)),
    }
}

/// If-Match / If-None-Match of a write (PUT or completing an upload).
pub fn check_write_conditions(
    root: &Root,
    bucket: &str,
    key: &str,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    if if_match.is_none() && if_none_match.is_none() {
        return Ok(());
    }
    let current = existing_etag(root, bucket, key)?;
    match (if_match, &current) {
        (Some(_), None) => return Err(s3_error!(PreconditionFailed, "the object does not exist")),
        (Some(ETagCondition::ETag(expected)), Some(etag))
            if !ETag::Strong(etag.clone()).strong_cmp(expected) =>
        {
            return Err(s3_error!(PreconditionFailed, "ETag does not match"));
        }
        _ => {}
    }
    match (if_none_match, &current) {
        (Some(ETagCondition::Any), Some(_)) => {
            Err(s3_error!(PreconditionFailed, "the object already exists"))
        }
        (Some(ETagCondition::ETag(expected)), Some(etag))
            if ETag::Strong(etag.clone()).strong_cmp(expected) =>
        {
            Err(s3_error!(PreconditionFailed, "ETag matches"))
        }
        _ => Ok(()),
    }
}

pub fn bucket_must_exist(root: &Root, bucket: &str) -> S3Result<()> {
    match root.bucket_path(bucket) {
        Some(path) if path.is_dir() => Ok(()),
        _ => Err(s3_error!(NoSuchBucket)),
    }
}

/// A PUT's body: small and in memory, or already written to its temporary file.
enum Body {
    Small(bytes::Bytes, Box<Digests>),
    Written(Box<body::Written>),
}

/// A PUT of a whole object (not a directory marker: those go to s3s-fs).
pub async fn put_object(
    root: &Root,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let mut input = req.input;
    if let Some(class) = &input.storage_class
        && !["STANDARD", "REDUCED_REDUNDANCY"].contains(&class.as_str())
    {
        return Err(s3_error!(InvalidStorageClass));
    }
    let path = root.object_path(&input.bucket, &input.key).ok_or_else(|| {
        s3_error!(
            InvalidArgument,
            "the key is not a plain path: {}",
            input.key
        )
    })?;
    // Conditions are checked before the body is read; without any, the bucket is checked
    // in the same call that publishes the object.
    if input.if_match.is_some() || input.if_none_match.is_some() {
        let (root, bucket, key) = (root.clone(), input.bucket.clone(), input.key.clone());
        let (if_match, if_none_match) = (input.if_match.clone(), input.if_none_match.clone());
        blocking(move || {
            bucket_must_exist(&root, &bucket)?;
            check_write_conditions(
                &root,
                &bucket,
                &key,
                if_match.as_ref(),
                if_none_match.as_ref(),
            )
        })
        .await?;
    }
    let body = input.body.take().ok_or_else(|| s3_error!(IncompleteBody))?;
    let headers = body::checksum_headers!(input);
    let digests = Digests {
        md5: true,
        xxh3: false,
        checksums: body::checksums_for(
            &headers,
            input.checksum_algorithm.as_ref().map(|a| a.as_str()),
        )?,
    };
    let tmp = root.temp_path();
    // A small body is read whole and written in the one blocking call of its PUT; a large
    // one streams to its file as it arrives.
    let small = input
        .content_length
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n as u64 <= SMALL);
    let body = match small {
        Some(len) => Body::Small(body::read_small(body, len).await?, Box::new(digests)),
        None => Body::Written(Box::new(
            body::write_body(body, tmp.clone(), digests).await?,
        )),
    };
    let sent = body::sent_checksums(headers, req.trailing_headers)?;
    let attributes = meta::attributes_of!(input);
    let root = root.clone();
    let (bucket, key, content_md5) = (input.bucket, input.key, input.content_md5);
    // Checked before the body was read, and again, atomically, as the object is put in place.
    let create_only = matches!(input.if_none_match, Some(ETagCondition::Any));
    let written = blocking(move || {
        let discard = |e: s3s::S3Error| {
            let _ = std::fs::remove_file(&tmp);
            e
        };
        let written = match body {
            Body::Small(bytes, digests) => {
                body::write_bytes(&tmp, &bytes, *digests).map_err(|e| discard(internal(e)))?
            }
            Body::Written(written) => *written,
        };
        body::verify_md5(content_md5.as_deref(), written.md5.as_ref(), &key)
            .and_then(|()| body::verify(&sent, &written.checksum, &key))
            .and_then(|()| bucket_must_exist(&root, &bucket))
            .map_err(discard)?;
        let info = Info {
            etag: hex::encode(written.md5.unwrap_or_default()),
            checksum: written.checksum.clone(),
        };
        let save_meta = || {
            meta::save_attributes(
                &root,
                &root.attributes_path(&bucket, &key, None),
                &attributes,
            )
            .and_then(|()| meta::save_info(&root, &bucket, &key, &info, &written.meta))
        };
        if create_only {
            // The object first: its metadata must not replace an existing object's.
            root.publish_new(&tmp, &path).map_err(|e| {
                discard(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    s3_error!(PreconditionFailed, "the object already exists")
                } else {
                    key_and_prefix(e, &key)
                })
            })?;
            save_meta().map_err(|e| key_and_prefix(e, &key))?;
        } else {
            save_meta()
                .and_then(|()| root.publish(&tmp, &path))
                .map_err(|e| discard(key_and_prefix(e, &key)))?;
        }
        Ok(written)
    })
    .await?;
    let output = body::with_checksums!(
        PutObjectOutput {
            e_tag: Some(ETag::Strong(hex::encode(written.md5.unwrap_or_default()))),
            size: i64::try_from(written.size).ok(),
        },
        written.checksum
    );
    Ok(S3Response::new(output))
}
