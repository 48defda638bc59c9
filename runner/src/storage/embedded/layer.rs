//! The embedded server's `S3` implementation: the hot operations are sluice's own, the
//! rest is delegated to s3s-fs.

use std::path::PathBuf;

use base64::prelude::{BASE64_URL_SAFE_NO_PAD, Engine as _};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;

use super::list::{Query, list_page};
use super::meta::{self, Root};
use super::multipart;
use super::objects::{self, blocking};

pub struct Store {
    fs: FileSystem,
    root: Root,
}

impl Store {
    pub fn new(fs: FileSystem, dir: PathBuf) -> Store {
        Store {
            fs,
            root: Root::new(dir),
        }
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

    /// Unfinished uploads, from the attribute files s3s-fs writes when an upload starts
    /// (`.bucket-B.object-K.upload-U.metadata.json`) and the upload record removed when
    /// the upload completes or is aborted (`.upload-U.json`).
    fn unfinished_uploads(
        root: &Root,
        bucket: &str,
        prefix: &str,
    ) -> std::io::Result<Vec<MultipartUpload>> {
        let mut uploads = Vec::new();
        for entry in std::fs::read_dir(root.dir())? {
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
            if !root.dir().join(format!(".upload-{u}.json")).exists() {
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

fn io_error(error: std::io::Error) -> s3s::S3Error {
    s3_error!(error, InternalError)
}

#[async_trait::async_trait]
impl S3 for Store {
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
        // s3s-fs records the copy's ETag unstamped; the first read stamps it.
        self.fs.copy_object(req).await
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
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.delete_object(req).await?;
        self.forget(&bucket, &key).await;
        Ok(response)
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        let response = self.fs.delete_objects(req).await?;
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
        self.fs.get_bucket_location(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        objects::get_object(&self.root, req).await
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
        objects::head_object(&self.root, req).await
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
        let max_keys = input.max_keys.unwrap_or(1000);
        // Resume after the later of the token (the last key or prefix sent) and start-after.
        let after = match (input.continuation_token.clone(), input.start_after.clone()) {
            (Some(token), Some(start)) => Some(token.max(start)),
            (token, start) => token.or(start),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let root = self.root.clone();
        let bucket = input.bucket.clone();
        // One blocking call for the page: the walk and every key's ETag.
        let (page, contents) = blocking(move || {
            let bucket_dir = match root.bucket_path(&bucket) {
                Some(dir) if dir.is_dir() => dir,
                _ => return Err(s3_error!(NoSuchBucket)),
            };
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
            let mut contents = Vec::with_capacity(page.objects.len());
            for (key, file) in &page.objects {
                let info = meta::current_info(&root, &bucket, key, file).map_err(io_error)?;
                contents.push(Object {
                    key: Some(key.clone()),
                    last_modified: file.modified().ok().map(Timestamp::from),
                    size: Some(i64::try_from(file.len()).unwrap_or(i64::MAX)),
                    e_tag: Some(ETag::Strong(info.etag)),
                    ..Default::default()
                });
            }
            Ok((page, contents))
        })
        .await?;
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
        if req.input.key.ends_with('/') {
            // A directory marker: s3s-fs makes it a directory.
            return self.fs.put_object(req).await;
        }
        objects::put_object(&self.root, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let bucket = req.input.bucket.clone();
        let root = self.root.clone();
        blocking(move || objects::bucket_must_exist(&root, &bucket)).await?;
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(&self.root, req).await
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
        multipart::list_parts(&self.root, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(&self.root, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(&self.root, req).await
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
            Store::unfinished_uploads(&root, &bucket, &prefix).map_err(io_error)
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
