//! The embedded server's `S3` implementation: the hot operations are sluice's own, the
//! rest is delegated to s3s-fs.

use std::path::PathBuf;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;

use super::copy;
use super::list::{Query, list_page};
use super::meta::{self, Root};
use super::multipart;
use super::objects::{self, blocking};

pub struct Store {
    fs: FileSystem,
    root: Root,
}

impl Store {
    pub fn new(fs: FileSystem, dir: PathBuf) -> std::io::Result<Store> {
        Ok(Store {
            fs,
            root: Root::open(dir)?,
        })
    }

    /// Removes what is recorded of a deleted object, so that a file put there later by
    /// hand does not inherit its attributes.
    async fn forget(&self, bucket: &str, key: &str) {
        let root = self.root.clone();
        let (bucket, key) = (bucket.to_string(), key.to_string());
        let _ = blocking(move || {
            let gone = root.object_path(&bucket, &key).is_none_or(|p| !p.is_file());
            if gone {
                let _ = meta::remove_if_present(&root.info_path(&bucket, &key));
                let _ = meta::remove_if_present(&root.attributes_path(&bucket, &key, None));
            }
            Ok(())
        })
        .await;
    }

    /// One page of a listing: the walk and every key's ETag, in one blocking call.
    async fn list(
        &self,
        bucket: &str,
        prefix: Option<String>,
        delimiter: Option<String>,
        after: Option<String>,
        max_keys: i32,
    ) -> S3Result<Listed> {
        let root = self.root.clone();
        let bucket = bucket.to_string();
        blocking(move || {
            let bucket_dir = match root.bucket_path(&bucket) {
                Some(dir) if dir.is_dir() => dir,
                _ => return Err(s3_error!(NoSuchBucket)),
            };
            let prefix = prefix.unwrap_or_default();
            let delimiter = delimiter.filter(|d| !d.is_empty());
            let page = list_page(
                &bucket_dir,
                &Query {
                    prefix: prefix.trim_start_matches('/'),
                    delimiter: delimiter.as_deref(),
                    after: after.as_deref(),
                    max_keys: usize::try_from(max_keys.max(0)).unwrap_or(1000),
                },
            )
            .map_err(io_error)?;
            let mut objects = Vec::with_capacity(page.objects.len());
            for (key, file) in page.objects {
                let etag = meta::current_info(&root, &bucket, &key, &file)
                    .map_err(io_error)?
                    .etag;
                objects.push((key, file, etag));
            }
            Ok(Listed {
                objects,
                prefixes: page.prefixes,
                truncated: page.truncated,
                last: page.last,
            })
        })
        .await
    }
}

/// A page of a listing with the objects' ETags.
struct Listed {
    objects: Vec<(String, std::fs::Metadata, String)>,
    prefixes: Vec<String>,
    truncated: bool,
    last: Option<String>,
}

impl Listed {
    fn contents(&self, url: bool) -> Option<Vec<Object>> {
        let contents: Vec<Object> = self
            .objects
            .iter()
            .map(|(key, file, etag)| Object {
                key: Some(if url { url_encoded(key) } else { key.clone() }),
                last_modified: file.modified().ok().map(Timestamp::from),
                size: Some(i64::try_from(file.len()).unwrap_or(i64::MAX)),
                e_tag: Some(ETag::Strong(etag.clone())),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        (!contents.is_empty()).then_some(contents)
    }

    fn common_prefixes(&self, url: bool) -> Option<Vec<CommonPrefix>> {
        let prefixes: Vec<CommonPrefix> = self
            .prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(if url { url_encoded(p) } else { p.clone() }),
            })
            .collect();
        (!prefixes.is_empty()).then_some(prefixes)
    }
}

fn holds_a_file(dir: &std::path::Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() || holds_a_file(&entry.path())? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn io_error(error: std::io::Error) -> s3s::S3Error {
    s3_error!(error, InternalError)
}

/// Gives an error without a message S3's message for its code, so that clients show what
/// went wrong instead of "Unknown".
fn described(mut error: s3s::S3Error) -> s3s::S3Error {
    if error.message().is_none() {
        let message = match error.code().as_str() {
            "NoSuchKey" => "The specified key does not exist.",
            "NoSuchBucket" => "The specified bucket does not exist.",
            "NoSuchUpload" => "The specified multipart upload does not exist.",
            "BucketNotEmpty" => "The bucket you tried to delete is not empty.",
            "BucketAlreadyOwnedByYou" | "BucketAlreadyExists" => {
                "The requested bucket name is not available."
            }
            "PreconditionFailed" => "At least one of the preconditions you specified did not hold.",
            "NotModified" => "Not modified.",
            "InvalidRange" => "The requested range is not satisfiable.",
            "AccessDenied" => "Access denied.",
            "InvalidPart" => "One or more of the specified parts could not be found.",
            "IncompleteBody" => "The request body is shorter than its Content-Length.",
            _ => "The embedded S3 server could not serve the request.",
        };
        error.set_message(message);
    }
    error
}

/// Percent-encodes a key for `EncodingType=url`: everything but unreserved characters and `/`.
fn url_encoded(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

#[async_trait::async_trait]
impl S3 for Store {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await.map_err(described)
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        copy::copy_object(&self.root, req).await.map_err(described)
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let root = self.root.clone();
        let bucket = req.input.bucket.clone();
        blocking(move || {
            objects::bucket_must_exist(&root, &bucket)?;
            let dir = root
                .bucket_path(&bucket)
                .ok_or_else(|| s3_error!(NoSuchBucket))?;
            // Directories left by deleted keys hold no object: only a file does.
            if holds_a_file(&dir).map_err(io_error)? {
                return Err(s3_error!(BucketNotEmpty));
            }
            Ok(())
        })
        .await
        .map_err(described)?;
        let records = self.root.bucket_records(&req.input.bucket);
        let response = self.fs.delete_bucket(req).await.map_err(described)?;
        blocking(move || match std::fs::remove_dir_all(&records) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(e)),
            _ => Ok(()),
        })
        .await?;
        Ok(response)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.delete_object(req).await.map_err(described)?;
        self.forget(&bucket, &key).await;
        Ok(response)
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        let response = self.fs.delete_objects(req).await.map_err(described)?;
        for deleted in response.output.deleted.iter().flatten() {
            if let Some(key) = &deleted.key {
                self.forget(&bucket, key).await;
            }
        }
        Ok(response)
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await.map_err(described)
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        objects::get_object(&self.root, req)
            .await
            .map_err(described)
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await.map_err(described)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        objects::head_object(&self.root, req)
            .await
            .map_err(described)
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await.map_err(described)
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(1000);
        let listed = self
            .list(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                input.marker.clone(),
                max_keys,
            )
            .await
            .map_err(described)?;
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == "url");
        let encode = |text: Option<String>| {
            if url {
                text.map(|t| url_encoded(&t))
            } else {
                text
            }
        };
        let next_marker = listed.truncated.then(|| listed.last.clone()).flatten();
        Ok(S3Response::new(ListObjectsOutput {
            max_keys: Some(max_keys),
            is_truncated: Some(listed.truncated),
            contents: listed.contents(url),
            common_prefixes: listed.common_prefixes(url),
            next_marker: encode(next_marker),
            marker: encode(input.marker),
            delimiter: encode(input.delimiter),
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: encode(input.prefix),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(1000);
        // Resume after the later of the token (the last key or prefix sent) and start-after.
        let after = match (input.continuation_token.clone(), input.start_after.clone()) {
            (Some(token), Some(start)) => Some(token.max(start)),
            (token, start) => token.or(start),
        };
        let listed = self
            .list(
                &input.bucket,
                input.prefix.clone(),
                input.delimiter.clone(),
                after,
                max_keys,
            )
            .await
            .map_err(described)?;
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == "url");
        let encode = |text: Option<String>| {
            if url {
                text.map(|t| url_encoded(&t))
            } else {
                text
            }
        };
        let contents = listed.contents(url);
        let common_prefixes = listed.common_prefixes(url);
        let key_count =
            contents.as_ref().map_or(0, Vec::len) + common_prefixes.as_ref().map_or(0, Vec::len);
        Ok(S3Response::new(ListObjectsV2Output {
            key_count: Some(i32::try_from(key_count).unwrap_or(i32::MAX)),
            max_keys: Some(max_keys),
            is_truncated: Some(listed.truncated),
            contents,
            common_prefixes,
            continuation_token: input.continuation_token,
            // The token is the last key or prefix returned, as sent: not encoded.
            next_continuation_token: listed.truncated.then(|| listed.last.clone()).flatten(),
            delimiter: encode(input.delimiter),
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: encode(input.prefix),
            start_after: encode(input.start_after),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        if req.input.key.ends_with('/') {
            // A directory marker: s3s-fs makes it a directory.
            return self.fs.put_object(req).await.map_err(described);
        }
        objects::put_object(&self.root, req)
            .await
            .map_err(described)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(&self.root, req)
            .await
            .map_err(described)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(&self.root, req)
            .await
            .map_err(described)
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let (upload, part) = (req.input.upload_id.clone(), req.input.part_number);
        let copied = self.fs.upload_part_copy(req).await.map_err(described)?;
        let root = self.root.clone();
        blocking(move || multipart::adopt_copied_part(&root, &upload, part).map_err(io_error))
            .await?;
        Ok(copied)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(&self.root, req)
            .await
            .map_err(described)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(&self.root, req)
            .await
            .map_err(described)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(&self.root, req)
            .await
            .map_err(described)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let root = self.root.clone();
        let bucket = input.bucket.clone();
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads = blocking(move || {
            objects::bucket_must_exist(&root, &bucket)?;
            multipart::open_uploads(&root, &bucket, &prefix).map_err(io_error)
        })
        .await?;
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
