//! CopyObject: the source's bytes are copied to a temporary file that a rename puts in
//! place, the source's ETag and checksums go with them, and its attributes too unless the
//! request replaces them (`x-amz-metadata-directive: REPLACE`).

use std::io;
use std::time::{Duration, SystemTime};

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::body;
use super::meta::{self, Root};
use super::objects::{blocking, bucket_must_exist, is_absent, key_and_prefix, missing_object};

fn internal(error: io::Error) -> s3s::S3Error {
    s3_error!(error, InternalError)
}

pub async fn copy_object(
    root: &Root,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let input = req.input;
    let (source_bucket, source_key) = match &input.copy_source {
        CopySource::Bucket {
            bucket,
            key,
            version_id: None,
        } => (bucket.to_string(), key.to_string()),
        CopySource::Bucket { .. } => {
            return Err(s3_error!(
                NotImplemented,
                "the embedded server keeps one version of an object"
            ));
        }
        _ => {
            return Err(s3_error!(
                NotImplemented,
                "the embedded server copies from buckets only"
            ));
        }
    };
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    let replacement = replace.then(|| meta::attributes_of!(input));
    let root = root.clone();
    let result = blocking(move || {
        let target = root.object_path(&input.bucket, &input.key).ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "the key is not a plain path: {}",
                input.key
            )
        })?;
        let source = root
            .object_path(&source_bucket, &source_key)
            .ok_or_else(|| s3_error!(NoSuchKey))?;
        let source_meta = match std::fs::metadata(&source) {
            Ok(found) if found.is_file() => found,
            Ok(_) => return Err(s3_error!(NoSuchKey)),
            Err(e) if is_absent(&e) => return Err(missing_object(&root, &source_bucket)),
            Err(e) => return Err(internal(e)),
        };
        bucket_must_exist(&root, &input.bucket)?;
        if source == target && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to \
                 itself without changing the object's metadata, storage class, website \
                 redirect location or encryption attributes."
            ));
        }
        let info = meta::current_info(&root, &source_bucket, &source_key, &source_meta)
            .map_err(internal)?;
        check_source_conditions(&input, &info.etag, &source_meta)?;
        let attributes = match replacement {
            Some(attributes) => attributes,
            None => meta::load_attributes(&root.attributes_path(&source_bucket, &source_key, None))
                .map_err(internal)?,
        };
        let tmp = root.temp_path();
        let copied = std::fs::copy(&source, &tmp)
            .and_then(|_| std::fs::metadata(&tmp))
            .and_then(|copied| {
                meta::save_attributes(
                    &root,
                    &root.attributes_path(&input.bucket, &input.key, None),
                    &attributes,
                )?;
                meta::save_info(&root, &input.bucket, &input.key, &info, &copied)?;
                Ok(copied)
            })
            .and_then(|copied| root.publish(&tmp, &target).map(|()| copied));
        let copied = copied.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            key_and_prefix(e, &input.key)
        })?;
        Ok((info, copied))
    })
    .await;
    let (info, copied) = result?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(body::with_checksums!(
            CopyObjectResult {
                e_tag: Some(ETag::Strong(info.etag)),
                last_modified: copied.modified().ok().map(Timestamp::from),
            },
            info.checksum
        )),
        ..Default::default()
    }))
}

/// The `x-amz-copy-source-if-*` conditions, as S3 weighs them: a matching ETag condition
/// decides over the date beside it. Dates compare at whole seconds, the precision of the
/// `Last-Modified` a client was given.
fn check_source_conditions(
    input: &CopyObjectInput,
    etag: &str,
    source: &std::fs::Metadata,
) -> S3Result<()> {
    let current = ETag::Strong(etag.to_string());
    let modified = Timestamp::from(whole_seconds(
        source.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    ));
    let failed = || Err(s3_error!(PreconditionFailed));
    match &input.copy_source_if_match {
        Some(ETagCondition::ETag(expected)) if !current.strong_cmp(expected) => return failed(),
        Some(_) => {}
        None => {
            if input
                .copy_source_if_unmodified_since
                .as_ref()
                .is_some_and(|since| modified > *since)
            {
                return failed();
            }
        }
    }
    match &input.copy_source_if_none_match {
        Some(ETagCondition::Any) => return failed(),
        Some(ETagCondition::ETag(expected)) if current.weak_cmp(expected) => return failed(),
        Some(_) => {}
        None => {
            if input
                .copy_source_if_modified_since
                .as_ref()
                .is_some_and(|since| modified <= *since)
            {
                return failed();
            }
        }
    }
    Ok(())
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    let seconds = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}
