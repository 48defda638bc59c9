//! Multipart uploads. Opening one records its bucket and key (`.uploads/<id>/upload.json`),
//! the attributes its object will have, and last who opened it, in `.upload-<id>.json`
//! (where s3s-fs, which still serves UploadPartCopy, looks for it): the upload is open
//! while that file is there. A part is written and hashed once, off the request thread, to
//! `.uploads/<id>/part-<n>`, with what it is (ETag, size, checksums) beside it in
//! `.uploads/<id>/part-<n>.json`. An upload's parts are found by reading its own
//! directory, and open uploads by reading `.uploads/`, never the served directory.
//! Completion checks the parts the client names against those, joins them with in-kernel
//! copies, and publishes the object by a rename.

use std::io;
use std::path::PathBuf;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::body::{self, Digests};
use super::meta::{self, Info, Root};
use super::objects::{blocking, bucket_must_exist, check_write_conditions};

/// S3's smallest part, except the last.
const MIN_PART: u64 = 5 << 20;
const MAX_PART_NUMBER: i32 = 10_000;

fn internal(error: io::Error) -> s3s::S3Error {
    s3_error!(error, InternalError)
}

/// What is recorded of a part.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PartRecord {
    etag: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc32: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc32c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc64nvme: Option<String>,
}

impl PartRecord {
    fn checksum(&self) -> Checksum {
        Checksum {
            checksum_crc32: self.crc32.clone(),
            checksum_crc32c: self.crc32c.clone(),
            checksum_sha1: self.sha1.clone(),
            checksum_sha256: self.sha256.clone(),
            checksum_crc64nvme: self.crc64nvme.clone(),
            ..Default::default()
        }
    }
}

/// The directory of every open upload's parts.
fn uploads_dir(root: &Root) -> PathBuf {
    root.dir().join(".uploads")
}

/// The directory of an upload's parts.
fn parts_dir(root: &Root, upload: &str) -> PathBuf {
    uploads_dir(root).join(upload)
}

/// What an open upload is for.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct UploadRecord {
    bucket: String,
    key: String,
}

fn upload_record_path(root: &Root, upload: &str) -> PathBuf {
    parts_dir(root, upload).join("upload.json")
}

/// Who opened an upload (the access key, JSON), as s3s-fs records it; there while it is open.
fn owner_path(root: &Root, upload: &str) -> PathBuf {
    root.dir().join(format!(".upload-{upload}.json"))
}

/// Opens an upload: its owner, the attributes its object will have, and its bucket and key.
pub async fn create_multipart_upload(
    root: &Root,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let owner = access_key(&req);
    let input = req.input;
    if root.object_path(&input.bucket, &input.key).is_none() {
        return Err(s3_error!(
            InvalidArgument,
            "the key is not a plain path: {}",
            input.key
        ));
    }
    let attributes = meta::attributes_of!(input);
    let upload = uuid::Uuid::new_v4().to_string();
    {
        let (root, upload) = (root.clone(), upload.clone());
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        blocking(move || {
            bucket_must_exist(&root, &bucket)?;
            let owner = serde_json::to_vec(&owner).map_err(|e| internal(io::Error::other(e)))?;
            record_upload(&root, &upload, &bucket, &key)
                .and_then(|()| {
                    meta::save_attributes(
                        &root,
                        &root.attributes_path(&bucket, &key, Some(&upload)),
                        &attributes,
                    )
                })
                .and_then(|()| root.write_atomically(&owner_path(&root, &upload), &owner))
                .map_err(internal)
        })
        .await?;
    }
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload),
        checksum_algorithm: input.checksum_algorithm,
        ..Default::default()
    }))
}

/// Records the bucket and key of an upload, in its directory.
fn record_upload(root: &Root, upload: &str, bucket: &str, key: &str) -> io::Result<()> {
    uuid_like(upload).ok_or_else(|| io::Error::other("an upload id that is not a UUID"))?;
    let record = UploadRecord {
        bucket: bucket.to_string(),
        key: key.to_string(),
    };
    root.write_atomically(
        &upload_record_path(root, upload),
        &serde_json::to_vec(&record).map_err(io::Error::other)?,
    )
}

/// The open uploads to keys under `prefix` in `bucket`, by key and id: the recorded ones
/// whose upload record s3s-fs keeps (`.upload-<id>.json`, removed once it ends).
pub fn open_uploads(root: &Root, bucket: &str, prefix: &str) -> io::Result<Vec<MultipartUpload>> {
    let mut uploads = Vec::new();
    for name in file_names(&uploads_dir(root))? {
        let Some(upload) = name.to_str().filter(|n| uuid_like(n).is_some()) else {
            continue;
        };
        let path = upload_record_path(root, upload);
        let (raw, meta) = match std::fs::read(&path).and_then(|raw| Ok((raw, path.metadata()?))) {
            Ok(found) => found,
            // An upload that ended meanwhile, or one with no record.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let Ok(record) = serde_json::from_slice::<UploadRecord>(&raw) else {
            continue;
        };
        if record.bucket != bucket
            || !record.key.starts_with(prefix)
            || !owner_path(root, upload).exists()
        {
            continue;
        }
        uploads.push(MultipartUpload {
            key: Some(record.key),
            upload_id: Some(upload.to_string()),
            initiated: meta.modified().ok().map(Timestamp::from),
            ..Default::default()
        });
    }
    uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
    Ok(uploads)
}

fn part_path(root: &Root, upload: &str, part: i32) -> PathBuf {
    parts_dir(root, upload).join(format!("part-{part}"))
}

fn record_path(root: &Root, upload: &str, part: i32) -> PathBuf {
    parts_dir(root, upload).join(format!("part-{part}.json"))
}

/// Where s3s-fs's UploadPartCopy leaves a part, in the served directory.
fn copied_part_path(root: &Root, upload: &str, part: i32) -> PathBuf {
    root.dir().join(format!(".upload_id-{upload}.part-{part}"))
}

/// Moves the part s3s-fs's UploadPartCopy wrote beside the others, without a record (its
/// MD5 is its ETag, computed when it is needed); a record of an earlier part of the same
/// number goes.
pub fn adopt_copied_part(root: &Root, upload: &str, part: i32) -> io::Result<()> {
    meta::remove_if_present(&record_path(root, upload, part))?;
    let (copied, part) = (
        copied_part_path(root, upload, part),
        part_path(root, upload, part),
    );
    meta::in_place(&part, || std::fs::rename(&copied, &part))
}

/// An upload id is a UUID, open, and opened by the same access key.
fn check_upload(root: &Root, upload: &str, access_key: Option<&str>) -> S3Result<()> {
    if uuid_like(upload).is_none() {
        return Err(s3_error!(NoSuchUpload));
    }
    let raw = match std::fs::read(owner_path(root, upload)) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(s3_error!(NoSuchUpload)),
        Err(e) => return Err(internal(e)),
    };
    let owner: Option<String> = serde_json::from_slice(&raw).unwrap_or_default();
    if owner.as_deref() != access_key {
        return Err(s3_error!(AccessDenied));
    }
    Ok(())
}

/// `Some` for 36 characters of hex and dashes: nothing that could leave the directory.
fn uuid_like(id: &str) -> Option<()> {
    (id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then_some(())
}

fn access_key<T>(req: &S3Request<T>) -> Option<String> {
    req.credentials.as_ref().map(|c| c.access_key.clone())
}

pub async fn upload_part(
    root: &Root,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let key = access_key(&req);
    let mut input = req.input;
    let number = input.part_number;
    if !(1..=MAX_PART_NUMBER).contains(&number) {
        return Err(s3_error!(
            InvalidArgument,
            "part number must be between 1 and 10000"
        ));
    }
    {
        let (root, upload) = (root.clone(), input.upload_id.clone());
        blocking(move || check_upload(&root, &upload, key.as_deref())).await?;
    }
    let body = input.body.take().ok_or_else(|| s3_error!(IncompleteBody))?;
    let headers = body::checksum_headers!(input);
    let with_md5 = input.content_md5.is_some();
    let digests = Digests {
        md5: with_md5,
        xxh3: !with_md5,
        checksums: body::checksums_for(
            &headers,
            input.checksum_algorithm.as_ref().map(|a| a.as_str()),
        )?,
    };
    let tmp = root.temp_path();
    let written = body::write_body(body, tmp.clone(), digests).await?;
    let what = format!("part {number}");
    let sent = body::sent_checksums(headers, req.trailing_headers)?;
    let checked = body::verify_md5(input.content_md5.as_deref(), written.md5.as_ref(), &what)
        .and_then(|()| body::verify(&sent, &written.checksum, &what));
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let digest = written.md5.or(written.xxh3).unwrap_or_default();
    let checksum = written.checksum;
    let record = PartRecord {
        etag: hex::encode(digest),
        size: written.size,
        crc32: checksum.checksum_crc32.clone(),
        crc32c: checksum.checksum_crc32c.clone(),
        sha1: checksum.checksum_sha1.clone(),
        sha256: checksum.checksum_sha256.clone(),
        crc64nvme: checksum.checksum_crc64nvme.clone(),
    };
    let output = UploadPartOutput {
        e_tag: Some(ETag::Strong(record.etag.clone())),
        checksum_crc32: record.crc32.clone(),
        checksum_crc32c: record.crc32c.clone(),
        checksum_sha1: record.sha1.clone(),
        checksum_sha256: record.sha256.clone(),
        checksum_crc64nvme: record.crc64nvme.clone(),
        ..Default::default()
    };
    let root = root.clone();
    let upload = input.upload_id;
    blocking(move || {
        // The part file first, then its record: a record always describes its part.
        let part = part_path(&root, &upload, number);
        let placed = meta::in_place(&part, || std::fs::rename(&tmp, &part)).and_then(|()| {
            root.write_atomically(
                &record_path(&root, &upload, number),
                &serde_json::to_vec(&record).map_err(io::Error::other)?,
            )
        });
        placed.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            internal(e)
        })
    })
    .await?;
    Ok(S3Response::new(output))
}

/// The names in `dir`; none when it does not exist.
fn file_names(dir: &std::path::Path) -> io::Result<Vec<std::ffi::OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.file_name())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The numbers of an upload's stored parts, in order: one read of its directory.
fn part_numbers(root: &Root, upload: &str) -> io::Result<Vec<i32>> {
    let mut numbers = Vec::new();
    for name in file_names(&parts_dir(root, upload))? {
        if let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("part-"))
            .and_then(|n| n.parse::<i32>().ok())
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The parts of an upload in order, with their records (a part written by s3s-fs, by
/// UploadPartCopy, gets its MD5 as ETag).
fn parts_of(root: &Root, upload: &str) -> io::Result<Vec<(i32, PartRecord, std::fs::Metadata)>> {
    let mut parts = Vec::new();
    for number in part_numbers(root, upload)? {
        let path = part_path(root, upload, number);
        let meta = std::fs::metadata(&path)?;
        let record = match std::fs::read(record_path(root, upload, number)) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => PartRecord {
                etag: meta::md5_of_file(&path, meta.len())?,
                size: meta.len(),
                crc32: None,
                crc32c: None,
                sha1: None,
                sha256: None,
                crc64nvme: None,
            },
            Err(e) => return Err(e),
        };
        parts.push((number, record, meta));
    }
    Ok(parts)
}

pub async fn list_parts(
    root: &Root,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let key = access_key(&req);
    let input = req.input;
    let root = root.clone();
    let upload = input.upload_id.clone();
    let after = input.part_number_marker.unwrap_or(0);
    let max = usize::try_from(input.max_parts.unwrap_or(1000).clamp(1, 1000)).unwrap_or(1000);
    let parts = blocking(move || {
        check_upload(&root, &upload, key.as_deref())?;
        parts_of(&root, &upload).map_err(internal)
    })
    .await?;
    let rest: Vec<_> = parts.into_iter().filter(|(n, ..)| *n > after).collect();
    let truncated = rest.len() > max;
    let page: Vec<Part> = rest
        .into_iter()
        .take(max)
        .map(|(number, record, meta)| {
            let checksum = record.checksum();
            Part {
                part_number: Some(number),
                size: i64::try_from(record.size).ok(),
                e_tag: Some(ETag::Strong(record.etag)),
                last_modified: meta.modified().ok().map(Timestamp::from),
                checksum_crc32: checksum.checksum_crc32,
                checksum_crc32c: checksum.checksum_crc32c,
                checksum_sha1: checksum.checksum_sha1,
                checksum_sha256: checksum.checksum_sha256,
                checksum_crc64nvme: checksum.checksum_crc64nvme,
            }
        })
        .collect();
    let next = page.last().and_then(|p| p.part_number);
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: if truncated { next } else { None },
        max_parts: Some(i32::try_from(max).unwrap_or(1000)),
        is_truncated: Some(truncated),
        parts: Some(page),
        ..Default::default()
    }))
}

/// Removes an upload's parts (`numbers`), their records, its attributes and its record.
fn remove_upload(
    root: &Root,
    bucket: &str,
    key: &str,
    upload: &str,
    numbers: &[i32],
) -> io::Result<()> {
    for &number in numbers {
        meta::remove_if_present(&part_path(root, upload, number))?;
        meta::remove_if_present(&record_path(root, upload, number))?;
    }
    meta::remove_if_present(&upload_record_path(root, upload))?;
    match std::fs::remove_dir(parts_dir(root, upload)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    meta::remove_if_present(&root.attributes_path(bucket, key, Some(upload)))?;
    meta::remove_if_present(&owner_path(root, upload))
}

pub async fn abort_multipart_upload(
    root: &Root,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let key = access_key(&req);
    let input = req.input;
    let root = root.clone();
    blocking(move || {
        check_upload(&root, &input.upload_id, key.as_deref())?;
        let numbers = part_numbers(&root, &input.upload_id).map_err(internal)?;
        remove_upload(&root, &input.bucket, &input.key, &input.upload_id, &numbers)
            .map_err(internal)
    })
    .await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub async fn complete_multipart_upload(
    root: &Root,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let access = access_key(&req);
    let input = req.input;
    let named: Vec<CompletedPart> = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default();
    if named.is_empty() {
        return Err(s3_error!(
            InvalidRequest,
            "you must specify at least one part"
        ));
    }
    let root = root.clone();
    let (bucket, key, upload) = (input.bucket, input.key, input.upload_id);
    let (if_match, if_none_match) = (input.if_match, input.if_none_match);
    let (etag, checksum_crc32c) = blocking(move || {
        bucket_must_exist(&root, &bucket)?;
        check_upload(&root, &upload, access.as_deref())?;
        let path = root
            .object_path(&bucket, &key)
            .ok_or_else(|| s3_error!(InvalidArgument, "the key is not a plain path: {key}"))?;
        check_write_conditions(
            &root,
            &bucket,
            &key,
            if_match.as_ref(),
            if_none_match.as_ref(),
        )?;
        let stored = parts_of(&root, &upload).map_err(internal)?;
        // As S3 checks: the order of the list first, then each part, then the sizes.
        let numbers = named
            .iter()
            .map(|p| {
                p.part_number
                    .ok_or_else(|| s3_error!(InvalidPart, "a part without a part number"))
            })
            .collect::<S3Result<Vec<i32>>>()?;
        if numbers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(s3_error!(
                InvalidPartOrder,
                "parts must be listed in ascending order"
            ));
        }
        let mut chosen = Vec::with_capacity(named.len());
        for (part, &number) in named.iter().zip(&numbers) {
            let Some((_, record, _)) = stored.iter().find(|(n, ..)| *n == number) else {
                return Err(s3_error!(InvalidPart, "part {number} was not uploaded"));
            };
            if let Some(given) = &part.e_tag
                && given.value() != record.etag
            {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number}: the ETag does not match"
                ));
            }
            chosen.push((number, record.clone()));
        }
        if let Some((number, record)) = chosen[..chosen.len() - 1]
            .iter()
            .find(|(_, r)| r.size < MIN_PART)
        {
            return Err(s3_error!(
                EntityTooSmall,
                "part {number} is {} bytes; every part but the last must be at least 5 MiB",
                record.size
            ));
        }
        let etag = multipart_etag(chosen.iter().map(|(_, r)| r.etag.as_str()))?;
        let crc32c = composite_crc32c(chosen.iter().map(|(_, r)| r.crc32c.as_deref()));
        let joined = join_parts(&root, &upload, &chosen).map_err(internal)?;
        let meta = std::fs::metadata(&joined).map_err(internal)?;
        let info = Info {
            etag: etag.clone(),
            checksum: Checksum::default(),
        };
        // The upload's attributes become the object's (or none: an old object's go).
        let attributes = meta::load_attributes(&root.attributes_path(&bucket, &key, Some(&upload)))
            .map_err(internal)?;
        let placed = meta::save_attributes(
            &root,
            &root.attributes_path(&bucket, &key, None),
            &attributes,
        )
        .and_then(|()| meta::save_info(&root, &bucket, &key, &info, &meta))
        .and_then(|()| root.publish(&joined, &path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&joined);
            return Err(super::objects::key_and_prefix(e, &key));
        }
        // Every stored part goes, those left out of the object too (the first was moved).
        let numbers: Vec<i32> = stored.iter().map(|(n, ..)| *n).collect();
        remove_upload(&root, &bucket, &key, &upload, &numbers).map_err(internal)?;
        Ok((etag, crc32c))
    })
    .await?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        e_tag: Some(ETag::Strong(etag)),
        checksum_crc32c,
        ..Default::default()
    }))
}

/// S3's ETag of a multipart object: the MD5 of the parts' digests, then `-<parts>`.
fn multipart_etag<'a>(etags: impl Iterator<Item = &'a str>) -> S3Result<String> {
    use s3s::crypto::Checksum as _;
    let mut md5 = s3s::crypto::Md5::new();
    let mut count = 0;
    for etag in etags {
        let raw =
            hex::decode(etag).map_err(|_| s3_error!(InternalError, "a part's ETag is not hex"))?;
        md5.update(&raw);
        count += 1;
    }
    Ok(format!("{}-{count}", hex::encode(md5.finalize())))
}

/// The composite CRC32C of a multipart object (of the parts' CRC32Cs), when every part has one.
fn composite_crc32c<'a>(crcs: impl Iterator<Item = Option<&'a str>>) -> Option<String> {
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    let mut raw = Vec::new();
    let mut count = 0;
    for crc in crcs {
        raw.extend(BASE64_STANDARD.decode(crc?).ok()?);
        count += 1;
    }
    let crc = crc32c::crc32c(&raw);
    Some(format!(
        "{}-{count}",
        BASE64_STANDARD.encode(crc.to_be_bytes())
    ))
}

/// Joins the chosen parts into a temporary file: the first part is renamed, the others are
/// appended with copy_file_range (in the kernel, no pass through user memory).
fn join_parts(root: &Root, upload: &str, chosen: &[(i32, PartRecord)]) -> io::Result<PathBuf> {
    let tmp = root.temp_path();
    let (first, rest) = chosen
        .split_first()
        .ok_or_else(|| io::Error::other("no parts"))?;
    std::fs::rename(part_path(root, upload, first.0), &tmp)?;
    let joined = (|| {
        let mut out = std::fs::OpenOptions::new().append(true).open(&tmp)?;
        for (number, _) in rest {
            let mut part = std::fs::File::open(part_path(root, upload, *number))?;
            std::io::copy(&mut part, &mut out)?;
        }
        Ok(())
    })();
    match joined {
        Ok(()) => Ok(tmp),
        Err(e) => {
            // Put the first part back so that the upload can still be completed or aborted.
            let _ = std::fs::rename(&tmp, part_path(root, upload, first.0));
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multipart_etag_is_the_md5_of_the_part_digests() {
        // Two parts whose MD5s are those of "a" and "b".
        let a = "0cc175b9c0f1b6a831c399e269772661";
        let b = "92eb5ffee6ae2fec3ad71c777531578f";
        let mut raw = hex::decode(a).unwrap();
        raw.extend(hex::decode(b).unwrap());
        use md5::Digest as _;
        let expected = format!("{}-2", hex::encode(md5::Md5::digest(&raw)));
        assert_eq!(multipart_etag([a, b].into_iter()).unwrap(), expected);
    }

    #[test]
    fn upload_ids_cannot_name_other_files() {
        assert!(uuid_like("0b5d5c1e-8f0a-4c3b-9a57-0d5f5e7c2a11").is_some());
        assert!(uuid_like("../../../../etc/passwd/aaaaaaaaaaaaaaaaaaa").is_none());
        assert!(uuid_like("0b5d5c1e-8f0a-4c3b-9a57-0d5f5e7c2a1").is_none());
    }
}
