//! Where the embedded server keeps what an object is besides its bytes. Each object has up
//! to two records below `.sluice-records/<bucket>/<hh>/<h>`, where `<h>` is the SHA-256 of
//! the key in hex and `<hh>` its first two digits: `<h>.internal.json` holds the ETag, the
//! checksums and the stamp of the file version they belong to; `<h>.metadata.json` holds
//! the content type, user metadata and the other attributes given at PUT
//! (`<h>.upload-<id>.metadata.json` while a multipart upload is open). A record's name has
//! the same length whatever the key, so a key of S3's full 1,024 bytes has records, and the
//! served directory itself holds only the buckets. Records in s3s-fs's older layout (flat in
//! the served directory, the key in base64 in the name) are moved in when a server opens
//! the directory.
//!
//! Everything here is blocking file I/O: callers run it on the blocking pool, one hop per
//! request rather than one per file touched.

use std::fs::{File, Metadata};
use std::io::{self, Read as _};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use base64::prelude::{BASE64_URL_SAFE_NO_PAD, Engine as _};
use s3s::dto::{Checksum, Metadata as UserMetadata, Timestamp, TimestampFormat};
use sha2::{Digest as _, Sha256};

/// The key under which the info file records which file version its ETag belongs to.
const STAMP: &str = "sluice_stamp";
const ETAG: &str = "e_tag";

/// The checksum fields of the info file, as s3s-fs names them.
const CHECKSUM_FIELDS: [&str; 5] = [
    "checksum_crc32",
    "checksum_crc32c",
    "checksum_sha1",
    "checksum_sha256",
    "checksum_crc64nvme",
];

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The served directory and its naming rules.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

/// The directory of the records, below the served directory.
const RECORDS: &str = ".sluice-records";

/// Temporary files are spread over this many directories: creating and renaming files takes
/// a lock on their directory, and concurrent PUTs should not all wait for one.
const TEMP_SHARDS: u64 = 16;

/// Where this process keeps its temporary files, below the served directory.
fn temp_dir(dir: &Path) -> PathBuf {
    dir.join(".sluice-tmp").join(std::process::id().to_string())
}

impl Root {
    /// The served directory. Temporary files left by a process that is gone are removed;
    /// this process's temporary directories are made.
    pub fn open(dir: PathBuf) -> io::Result<Root> {
        let base = dir.join(".sluice-tmp");
        if let Ok(entries) = std::fs::read_dir(&base) {
            for entry in entries.flatten() {
                let alive = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|pid| Path::new("/proc").join(pid).exists());
                if !alive {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let temp = temp_dir(&dir);
        for shard in 0..TEMP_SHARDS {
            std::fs::create_dir_all(temp.join(shard.to_string()))?;
        }
        let root = Root { dir };
        root.move_flat_records()?;
        Ok(root)
    }

    /// Moves records kept in s3s-fs's flat layout
    /// (`.bucket-<b64 bucket>.object-<b64 key>[.upload-<id>].{internal,metadata}.json` in
    /// the served directory) to their place below [`RECORDS`]. A record already there is
    /// newer and stays.
    fn move_flat_records(&self) -> io::Result<()> {
        let mut moved = 0u64;
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some((bucket, key, suffix)) = name.to_str().and_then(parse_flat_record) else {
                continue;
            };
            let from = self.dir.join(&name);
            let to = self.record_path(&bucket, &key, suffix);
            if to.exists() {
                remove_if_present(&from)?;
                continue;
            }
            if moved == 0 {
                tracing::info!(
                    dir = %self.dir.display(),
                    "moving object records written by an older sluice below {RECORDS} (once)"
                );
            }
            match in_place(&to, || std::fs::rename(&from, &to)) {
                Ok(()) => moved += 1,
                // Another server opening the directory at the same time moved it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if moved > 0 {
            tracing::info!(moved, dir = %self.dir.display(), "moved object records below {RECORDS}");
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of an object, or `None` for a key that is not a plain relative path (or a
    /// bucket name with a `/`).
    pub fn object_path(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        let relative = Path::new(key);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        (plain && !bucket.is_empty() && !bucket.contains('/') && !bucket.starts_with('.'))
            .then(|| self.dir.join(bucket).join(relative))
    }

    pub fn bucket_path(&self, bucket: &str) -> Option<PathBuf> {
        (!bucket.is_empty() && !bucket.contains('/') && !bucket.starts_with('.'))
            .then(|| self.dir.join(bucket))
    }

    /// The records of the objects of `bucket`.
    pub fn bucket_records(&self, bucket: &str) -> PathBuf {
        self.dir.join(RECORDS).join(bucket)
    }

    /// A record of the object `key`: `<h>.<suffix>` in its bucket's directory for `<hh>`.
    fn record_path(&self, bucket: &str, key: &str, suffix: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        self.bucket_records(bucket)
            .join(&digest[..2])
            .join(format!("{digest}.{suffix}"))
    }

    pub fn info_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.record_path(bucket, key, "internal.json")
    }

    /// The attributes given at PUT; with `upload`, those of an open multipart upload.
    pub fn attributes_path(&self, bucket: &str, key: &str, upload: Option<&str>) -> PathBuf {
        match upload {
            Some(upload) => {
                self.record_path(bucket, key, &format!("upload-{upload}.metadata.json"))
            }
            None => self.record_path(bucket, key, "metadata.json"),
        }
    }

    /// A temporary file of this process (removed by the next server over this directory if
    /// a crash leaves it behind).
    pub fn temp_path(&self) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        temp_dir(&self.dir)
            .join((n % TEMP_SHARDS).to_string())
            .join(n.to_string())
    }

    /// Writes `bytes` to `path` through a temporary file and a rename.
    pub fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.temp_path();
        std::fs::write(&tmp, bytes)?;
        in_place(path, || std::fs::rename(&tmp, path)).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Moves a written temporary file into place as an object.
    pub fn publish(&self, tmp: &Path, object: &Path) -> io::Result<()> {
        in_place(object, || std::fs::rename(tmp, object))
    }

    /// Moves a finished temp file into place only if no object is there (a hard link fails
    /// when the name exists, atomically): what `If-None-Match: *` promises, even to two
    /// writers at once.
    pub fn publish_new(&self, tmp: &Path, object: &Path) -> io::Result<()> {
        in_place(object, || std::fs::hard_link(tmp, object))?;
        std::fs::remove_file(tmp)
    }
}

/// Runs `put`, which puts a file at `path`; when the directory of `path` is missing (the
/// first file of a prefix, a bucket's records or an upload), makes it and runs `put` again.
/// Most files go to a directory that exists, so it is not made on every write.
pub fn in_place<T>(path: &Path, put: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match put() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match path.parent() {
            Some(parent) => {
                std::fs::create_dir_all(parent)?;
                put()
            }
            None => Err(e),
        },
        done => done,
    }
}

/// The bucket, key and suffix (`internal.json`, `metadata.json`,
/// `upload-<id>.metadata.json`) of a record name in s3s-fs's flat layout.
fn parse_flat_record(name: &str) -> Option<(String, String, &str)> {
    let rest = name.strip_prefix(".bucket-")?;
    let (bucket, rest) = rest.split_once(".object-")?;
    // Base64 (URL-safe, unpadded) has no dots: the key ends at the first one.
    let (key, suffix) = rest.split_once('.')?;
    let known = suffix == "internal.json"
        || suffix == "metadata.json"
        || suffix
            .strip_prefix("upload-")
            .and_then(|s| s.strip_suffix(".metadata.json"))
            .is_some_and(|id| !id.is_empty() && !id.contains(['/', '.']));
    let decode = |b64: &str| {
        BASE64_URL_SAFE_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
    };
    let bucket =
        decode(bucket).filter(|b| !b.is_empty() && !b.contains('/') && !b.starts_with('.'))?;
    known.then_some(())?;
    Some((bucket, decode(key)?, suffix))
}

/// Size and modification time: what tells that a file changed behind the server's back.
pub fn stamp_of(meta: &Metadata) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}:{modified}", meta.len())
}

/// What the info file says of one version of an object.
#[derive(Debug, Clone, Default)]
pub struct Info {
    pub etag: String,
    pub checksum: Checksum,
}

impl Info {
    fn to_json(&self, stamp: &str) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        map.insert(ETAG.into(), self.etag.clone().into());
        map.insert(STAMP.into(), stamp.into());
        for (field, value) in CHECKSUM_FIELDS.iter().zip(checksum_values(&self.checksum)) {
            if let Some(value) = value {
                map.insert((*field).into(), value.clone().into());
            }
        }
        serde_json::to_vec(&map).unwrap_or_default()
    }

    fn from_json(map: &serde_json::Map<String, serde_json::Value>) -> Option<Info> {
        let text = |field: &str| map.get(field).and_then(|v| v.as_str()).map(str::to_string);
        let etag = text(ETAG)?;
        let checksum = Checksum {
            checksum_crc32: text(CHECKSUM_FIELDS[0]),
            checksum_crc32c: text(CHECKSUM_FIELDS[1]),
            checksum_sha1: text(CHECKSUM_FIELDS[2]),
            checksum_sha256: text(CHECKSUM_FIELDS[3]),
            checksum_crc64nvme: text(CHECKSUM_FIELDS[4]),
            ..Default::default()
        };
        Some(Info { etag, checksum })
    }
}

fn checksum_values(c: &Checksum) -> [&Option<String>; 5] {
    [
        &c.checksum_crc32,
        &c.checksum_crc32c,
        &c.checksum_sha1,
        &c.checksum_sha256,
        &c.checksum_crc64nvme,
    ]
}

/// Records `info` for the object version whose metadata is `meta`.
pub fn save_info(
    root: &Root,
    bucket: &str,
    key: &str,
    info: &Info,
    meta: &Metadata,
) -> io::Result<()> {
    root.write_atomically(&root.info_path(bucket, key), &info.to_json(&stamp_of(meta)))
}

/// The object's info; a file written or changed outside S3 gets the MD5 of its content as
/// ETag, recorded for the version unless the file is small.
pub fn current_info(root: &Root, bucket: &str, key: &str, meta: &Metadata) -> io::Result<Info> {
    let info_path = root.info_path(bucket, key);
    let stamp = stamp_of(meta);
    let recorded: Option<serde_json::Map<String, serde_json::Value>> =
        match std::fs::read(&info_path) {
            Ok(raw) => serde_json::from_slice(&raw).ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
    if let Some(map) = &recorded
        && let Some(info) = Info::from_json(map)
    {
        match map.get(STAMP).and_then(|v| v.as_str()) {
            Some(s) if s == stamp => return Ok(info),
            // Written through s3s-fs (copy, directory objects) and not stamped yet: its
            // ETag is the truth.
            None => {
                save_info(root, bucket, key, &info, meta)?;
                return Ok(info);
            }
            Some(_) => {}
        }
    }
    let path = root
        .object_path(bucket, key)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an object key"))?;
    let info = Info {
        etag: md5_of_file(&path, meta.len())?,
        checksum: Checksum::default(),
    };
    // A small file's MD5 costs less than writing it down: a listing of a million files
    // dropped in by hand writes nothing.
    if meta.len() > REMEMBER_ABOVE {
        save_info(root, bucket, key, &info, meta)?;
    }
    Ok(info)
}

/// Files dropped in by hand up to this size get their ETag computed each time it is asked.
const REMEMBER_ABOVE: u64 = 64 << 10;

/// The MD5 of a file of about `len` bytes, read in chunks of at most 1 MiB (a buffer no
/// larger than the file: listing a million small files allocates no megabytes).
pub fn md5_of_file(path: &Path, len: u64) -> io::Result<String> {
    use s3s::crypto::Checksum as _;
    let mut file = File::open(path)?;
    let mut md5 = s3s::crypto::Md5::new();
    let mut buf = vec![0u8; usize::try_from(len.clamp(1, 1 << 20)).unwrap_or(1 << 20)];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
    }
    Ok(hex::encode(md5.finalize()))
}

/// The attributes given when an object was written, in s3s-fs's JSON.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Attributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<UserMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website_redirect_location: Option<String>,
}

impl Attributes {
    pub fn is_empty(&self) -> bool {
        self.user_metadata.as_ref().is_none_or(|m| m.is_empty())
            && self.content_encoding.is_none()
            && self.content_type.is_none()
            && self.content_disposition.is_none()
            && self.content_language.is_none()
            && self.cache_control.is_none()
            && self.expires.is_none()
            && self.website_redirect_location.is_none()
    }

    pub fn set_expires(&mut self, expires: Option<Timestamp>) {
        self.expires = expires.and_then(|ts| {
            let mut buf = Vec::new();
            ts.format(TimestampFormat::DateTime, &mut buf).ok()?;
            String::from_utf8(buf).ok()
        });
    }

    pub fn expires(&self) -> Option<Timestamp> {
        self.expires
            .as_ref()
            .and_then(|s| Timestamp::parse(TimestampFormat::DateTime, s).ok())
    }
}

/// The attributes a request gives its object (PutObject, CreateMultipartUpload, CopyObject
/// with the `REPLACE` directive: their inputs name the fields alike).
macro_rules! attributes_of {
    ($input:expr) => {{
        let mut attributes = $crate::storage::embedded::meta::Attributes {
            user_metadata: $input.metadata.clone(),
            content_encoding: $input.content_encoding.clone(),
            content_type: $input.content_type.clone(),
            content_disposition: $input.content_disposition.clone(),
            content_language: $input.content_language.clone(),
            cache_control: $input.cache_control.clone(),
            expires: None,
            website_redirect_location: $input.website_redirect_location.clone(),
        };
        attributes.set_expires($input.expires.clone());
        attributes
    }};
}
pub(crate) use attributes_of;

pub fn load_attributes(path: &Path) -> io::Result<Attributes> {
    match std::fs::read(path) {
        Ok(raw) => Ok(serde_json::from_slice::<Attributes>(&raw)
            .or_else(|_| {
                serde_json::from_slice::<UserMetadata>(&raw).map(|m| Attributes {
                    user_metadata: Some(m),
                    ..Default::default()
                })
            })
            .unwrap_or_default()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Attributes::default()),
        Err(e) => Err(e),
    }
}

/// Saves the attributes, or removes a stale file when there are none.
pub fn save_attributes(root: &Root, path: &Path, attributes: &Attributes) -> io::Result<()> {
    if attributes.is_empty() {
        // Looking costs no lock on the directory; an unlink of nothing would.
        return if path.exists() {
            remove_if_present(path)
        } else {
            Ok(())
        };
    }
    root.write_atomically(
        path,
        &serde_json::to_vec(attributes).map_err(io::Error::other)?,
    )
}

pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changed_outside_s3_gets_the_md5_of_its_new_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path().to_path_buf()).unwrap();
        let path = root.object_path("b", "k/x.csv").unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"hello").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let first = current_info(&root, "b", "k/x.csv", &meta).unwrap();
        assert_eq!(first.etag, "5d41402abc4b2a76b9719d911017c592");
        std::fs::write(&path, b"hello, world").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let second = current_info(&root, "b", "k/x.csv", &meta).unwrap();
        assert_eq!(second.etag, "e4d7f1b4ed2e42d15898f4b27b019da4");
    }

    #[test]
    fn keys_that_leave_the_bucket_are_not_objects() {
        let root = Root {
            dir: PathBuf::from("/srv"),
        };
        assert!(root.object_path("b", "../x").is_none());
        assert!(root.object_path("b", "/etc/passwd").is_none());
        assert!(root.object_path("b/c", "x").is_none());
        assert!(root.object_path(".hidden", "x").is_none());
        assert_eq!(
            root.object_path("b", "a/b.csv").unwrap(),
            PathBuf::from("/srv/b/a/b.csv")
        );
    }

    #[test]
    fn records_in_the_flat_layout_move_below_the_records_directory() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = |s: &str| BASE64_URL_SAFE_NO_PAD.encode(s);
        let flat = |suffix: &str| {
            dir.path().join(format!(
                ".bucket-{}.object-{}.{suffix}",
                b64("bkt"),
                b64("a/b.csv")
            ))
        };
        let upload = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        std::fs::write(flat("internal.json"), br#"{"e_tag":"abc"}"#).unwrap();
        std::fs::write(flat("metadata.json"), br#"{"content_type":"text/csv"}"#).unwrap();
        std::fs::write(
            flat(&format!("upload-{upload}.metadata.json")),
            br#"{"content_type":"text/plain"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join(format!(".upload-{upload}.json")), b"null").unwrap();
        std::fs::write(dir.path().join(".bucket-bad.object-x.txt"), b"?").unwrap();

        let root = Root::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(
            std::fs::read(root.info_path("bkt", "a/b.csv")).unwrap(),
            br#"{"e_tag":"abc"}"#
        );
        let attributes = |upload| {
            load_attributes(&root.attributes_path("bkt", "a/b.csv", upload))
                .unwrap()
                .content_type
        };
        assert_eq!(attributes(None).as_deref(), Some("text/csv"));
        assert_eq!(attributes(Some(upload)).as_deref(), Some("text/plain"));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != ".sluice-tmp" && n != RECORDS)
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".bucket-bad.object-x.txt".to_string(),
                format!(".upload-{upload}.json")
            ]
        );
    }

    #[test]
    fn two_servers_opening_a_directory_at_once_both_move_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = |s: &str| BASE64_URL_SAFE_NO_PAD.encode(s);
        for i in 0..2000 {
            let name = format!(
                ".bucket-{}.object-{}.internal.json",
                b64("bkt"),
                b64(&format!("k/{i}"))
            );
            std::fs::write(dir.path().join(name), format!(r#"{{"e_tag":"{i}"}}"#)).unwrap();
        }
        let opened: Vec<_> = (0..2)
            .map(|_| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || Root::open(path).map(|_| ()))
            })
            .collect();
        for opened in opened {
            opened.join().unwrap().unwrap();
        }
        let root = Root::open(dir.path().to_path_buf()).unwrap();
        for i in [0, 999, 1999] {
            assert_eq!(
                std::fs::read_to_string(root.info_path("bkt", &format!("k/{i}"))).unwrap(),
                format!(r#"{{"e_tag":"{i}"}}"#)
            );
        }
        let flat = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".bucket-")
            })
            .count();
        assert_eq!(flat, 0);
    }

    #[test]
    fn a_record_name_has_the_same_length_for_any_key() {
        let root = Root {
            dir: PathBuf::from("/srv"),
        };
        let long = "k/".repeat(512);
        for key in ["a", long.as_str()] {
            let path =
                root.attributes_path("bkt", key, Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"));
            assert_eq!(
                path.file_name().unwrap().len(),
                64 + 1 + 57,
                "{}",
                path.display()
            );
            assert!(path.starts_with("/srv/.sluice-records/bkt/"));
        }
    }

    #[test]
    fn attributes_without_values_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path().to_path_buf()).unwrap();
        let path = root.attributes_path("b", "k", None);
        let typed = Attributes {
            content_type: Some("text/csv".into()),
            ..Default::default()
        };
        save_attributes(&root, &path, &typed).unwrap();
        assert_eq!(
            load_attributes(&path).unwrap().content_type.as_deref(),
            Some("text/csv")
        );
        save_attributes(&root, &path, &Attributes::default()).unwrap();
        assert!(!path.exists());
    }
}
