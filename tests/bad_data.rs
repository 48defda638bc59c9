//! Bad source data is exit code 4 and names the object: corrupt or truncated compression,
//! a Parquet object that does not decode, invalid UTF-8, too many bad records; and zstd
//! sources end to end. A retry cannot fix any of these, so none of them is exit 1.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::job_yaml::JobYaml;
use crate::support::state::{self, json};
use crate::support::{self, TestServer, sluice};

const JOB: &str = "bad";

/// `id,name` rows, `bad_every`-th of them with an id that is not a number.
fn csv_rows(rows: u64, bad_every: Option<u64>) -> Vec<u8> {
    let mut out = b"id,name\n".to_vec();
    for i in 0..rows {
        let id = match bad_every {
            Some(n) if i % n == n - 1 => "x".to_string(),
            _ => i.to_string(),
        };
        writeln!(out, "{id},name {i}").unwrap();
    }
    out
}

/// One zstd frame with a content checksum, as the zstd command line writes by default.
fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    encoder.include_checksum(true).unwrap();
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A fresh bucket of a server, and a directory for job files.
struct Place<'a> {
    server: &'a TestServer,
    storage: Storage,
    bucket: String,
    dir: &'a Path,
}

async fn place<'a>(server: &'a TestServer, dir: &'a Path) -> Place<'a> {
    let (storage, bucket) = server.fresh().await;
    Place {
        server,
        storage,
        bucket,
        dir,
    }
}

/// Puts `body` at `key`, runs a job over `in/` (`format`, with `validate` lines), and
/// returns the exit code and everything the run printed.
async fn run(
    place: &Place<'_>,
    key: &str,
    body: Vec<u8>,
    format: &str,
    validate: &str,
    run_id: &str,
) -> (Option<i32>, String) {
    let mut job = JobYaml::new(JOB).source(format!("s3://{}/in/", place.bucket), format);
    if format != "parquet" {
        job = job.schema(&[("id", "int64"), ("name", "string")]);
    }
    if !validate.is_empty() {
        job = job.validate(validate);
    }
    run_job(
        place,
        key,
        body,
        job.sink_lines("    format: jsonl"),
        run_id,
    )
    .await
}

/// Puts `body` at `key` and runs `job` (its sink set to `out-<run_id>/`, one retry).
async fn run_job(
    place: &Place<'_>,
    key: &str,
    body: Vec<u8>,
    job: JobYaml,
    run_id: &str,
) -> (Option<i32>, String) {
    let Place {
        server,
        storage,
        bucket,
        dir,
    } = place;
    let (server, bucket, dir) = (*server, bucket.as_str(), *dir);
    storage
        .put_bytes(&S3Uri::new(bucket, key), Bytes::from(body))
        .await
        .unwrap();
    let path = job
        .sink(format!("s3://{bucket}/out-{run_id}/"))
        .set("retries", 1)
        .write(dir.join(format!("{run_id}.yaml")));
    let out = sluice(
        &["run", path.to_str().unwrap(), "--run-id", run_id],
        server,
        dir,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A failed run: nothing published, no output visible (a rejects object kept for the user
/// aside), no upload open.
async fn nothing_published(storage: &Storage, bucket: &str, run_id: &str) {
    let layout = state::run(bucket, JOB, run_id);
    assert!(json(storage, &layout.success()).await.is_none(), "{run_id}");
    let report = json(storage, &layout.report()).await.unwrap();
    assert_eq!(report["exit_code"], 4, "{run_id}");
    let outputs: Vec<_> = storage
        .list(&S3Uri::new(bucket, format!("out-{run_id}/")))
        .await
        .unwrap()
        .into_iter()
        .filter(|o| !o.key.contains("/_rejected/"))
        .collect();
    assert!(outputs.is_empty(), "{run_id}: {outputs:?}");
    let uploads = storage
        .list_multipart_uploads(&S3Uri::new(bucket, ""))
        .await
        .unwrap();
    assert!(uploads.is_empty(), "{run_id}: {uploads:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_sources_exit_4_naming_the_object() {
    let server = support::embedded();
    let dir = tempfile::tempdir().unwrap();
    let rows = csv_rows(5_000, None);
    let gz = support::gzip(&rows);
    let zst = zstd(&rows);
    let mut flipped = zst.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "gz-truncated",
            "in/a.csv.gz",
            gz[..gz.len() / 2].to_vec(),
            "csv",
        ),
        (
            "zst-truncated",
            "in/a.csv.zst",
            zst[..zst.len() / 2].to_vec(),
            "csv",
        ),
        ("zst-corrupt", "in/a.csv.zst", flipped, "csv"),
        (
            "gz-not-gzip",
            "in/a.jsonl.gz",
            b"{\"id\": 1}\n".to_vec(),
            "jsonl",
        ),
        (
            "parquet-garbage",
            "in/a.parquet",
            b"PAR1 not really PAR1".to_vec(),
            "parquet",
        ),
    ];
    for (run_id, key, body, format) in cases {
        let p = place(server, dir.path()).await;
        let (storage, bucket) = (&p.storage, p.bucket.clone());
        let (code, text) = run(&p, key, body, format, "", run_id).await;
        assert_eq!(code, Some(4), "{run_id}: {text}");
        assert!(text.contains(key), "{run_id}: {text}");
        nothing_published(storage, &bucket, run_id).await;
    }
}

/// A job whose first step gets each object's bytes (decompressed) and replies its md5: the
/// built-in transformer server, on a free port.
fn md5_job(bucket: &str) -> JobYaml {
    let port = support::free_port();
    JobYaml::new(JOB)
        .source(format!("s3://{bucket}/in/"), "raw")
        .transform(&format!(
            "    - name: md5
      container:
        image: sluice
        comm: hpush
        port: {port}
        command: [sluice, transformer, serve, --op, md5, --listen, \"127.0.0.1:{port}\"]
        output: {{format: opaque, extension: md5}}"
        ))
}

/// A corrupt or truncated compressed object sent raw to a transformer (the object's bytes,
/// decompressed, as its input) is bad data too, not a broken transformer connection.
#[tokio::test(flavor = "multi_thread")]
async fn corrupt_compression_before_a_raw_step_is_bad_data() {
    let server = support::embedded();
    let dir = tempfile::tempdir().unwrap();
    let rows = csv_rows(50_000, None);
    let gz = support::gzip(&rows);
    let zst = zstd(&rows);
    let mut flipped = gz.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let cases = [
        (
            "raw-gz-truncated",
            "in/a.csv.gz",
            gz[..gz.len() / 2].to_vec(),
        ),
        ("raw-gz-corrupt", "in/a.csv.gz", flipped),
        (
            "raw-zst-truncated",
            "in/a.csv.zst",
            zst[..zst.len() / 2].to_vec(),
        ),
    ];
    for (run_id, key, body) in cases {
        let p = place(server, dir.path()).await;
        let job = md5_job(&p.bucket);
        let (code, text) = run_job(&p, key, body, job, run_id).await;
        assert_eq!(code, Some(4), "{run_id}: {text}");
        assert!(
            text.contains(key) && text.contains("corrupt or truncated"),
            "{run_id}: {text}"
        );
        nothing_published(&p.storage, &p.bucket, run_id).await;
    }

    // The same object intact is digested: the step works, only the data was at fault.
    let p = place(server, dir.path()).await;
    let job = md5_job(&p.bucket);
    let (code, text) = run_job(&p, "in/a.csv.gz", gz, job, "raw-intact").await;
    assert_eq!(code, Some(0), "{text}");
    let outputs = p
        .storage
        .list(&S3Uri::new(p.bucket.as_str(), "out-raw-intact/"))
        .await
        .unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert!(outputs[0].key.ends_with(".md5"), "{outputs:?}");
    let digest = p
        .storage
        .get_bytes(&S3Uri::new(p.bucket.as_str(), &outputs[0].key))
        .await
        .unwrap()
        .expect("the digest");
    assert_eq!(
        String::from_utf8_lossy(&digest).trim(),
        hex::encode(<md5::Md5 as md5::Digest>::digest(&rows))
    );
}

/// Invalid UTF-8 in a text column makes every record bad: over the default limit, exit 4.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_is_bad_data() {
    let server = support::embedded();
    let dir = tempfile::tempdir().unwrap();
    let p = place(server, dir.path()).await;
    let (storage, bucket) = (&p.storage, p.bucket.clone());
    let mut body = b"id,name\n".to_vec();
    for i in 0..200 {
        body.extend_from_slice(format!("{i},caf").as_bytes());
        body.extend_from_slice(b"\xe9 \xff\xfe\n");
    }
    let (code, text) = run(&p, "in/a.csv", body, "csv", "", "utf8").await;
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("in/a.csv"), "{text}");
    nothing_published(storage, &bucket, "utf8").await;
}

/// More bad records than `max_bad_records` allows: exit 4, nothing published, and the
/// rejects object kept, complete, with the bad records met until the limit stopped the
/// object, named in the error.
#[tokio::test(flavor = "multi_thread")]
async fn max_bad_records_exceeded_is_exit_4_and_publishes_nothing() {
    let server = support::embedded();
    let dir = tempfile::tempdir().unwrap();
    let p = place(server, dir.path()).await;
    let (storage, bucket) = (&p.storage, p.bucket.clone());
    let (code, text) = run(
        &p,
        "in/a.csv",
        csv_rows(100, Some(10)),
        "csv",
        "    on_bad_record: reject\n    max_bad_records: 5",
        "limit",
    )
    .await;
    assert_eq!(code, Some(4), "{text}");
    let kept = format!("s3://{bucket}/out-limit/_rejected/a.csv.jsonl");
    assert!(
        text.contains("in/a.csv")
            && text.contains("exceed max_bad_records 5; the records rejected so far are in ")
            && text.contains(&kept),
        "{text}"
    );
    nothing_published(storage, &bucket, "limit").await;
    let rejects = storage
        .get_bytes(&kept.parse().unwrap())
        .await
        .unwrap()
        .expect("the rejects object, kept");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&rejects)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every 10th row is bad. The object stops at the first batch that crosses the limit of
    // 5: the rejects hold every bad record of the batches decoded, as many as the error says.
    let met: Vec<u64> = lines.iter().map(|l| l["line"].as_u64().unwrap()).collect();
    assert!(met.len() > 5, "{met:?}");
    assert_eq!(
        met,
        (0..met.len() as u64)
            .map(|i| 11 + 10 * i)
            .collect::<Vec<_>>()
    );
    assert!(
        text.contains(&format!("{} bad records", met.len())),
        "{text}"
    );

    // Within the limit the same kind of data publishes, its rejects object complete.
    let (code, text) = run(
        &p,
        "in/a.csv",
        csv_rows(100, Some(25)),
        "csv",
        "    on_bad_record: reject\n    max_bad_records: 5",
        "within",
    )
    .await;
    assert_eq!(code, Some(0), "{text}");
    let manifest = json(storage, &state::run(&bucket, JOB, "within").success())
        .await
        .unwrap();
    assert_eq!(manifest["records"]["rejected"], 4);
    let rejects = storage
        .get_bytes(&S3Uri::new(
            bucket.as_str(),
            "out-within/_rejected/a.csv.jsonl",
        ))
        .await
        .unwrap()
        .expect("the rejects object");
    assert_eq!(String::from_utf8_lossy(&rejects).lines().count(), 4);
}

/// zstd sources (CSV and JSON lines, several frames) decode end to end.
#[tokio::test(flavor = "multi_thread")]
async fn zstd_sources_end_to_end() {
    let server = support::embedded();
    let dir = tempfile::tempdir().unwrap();
    let p = place(server, dir.path()).await;
    let (storage, bucket) = (&p.storage, p.bucket.clone());
    let rows = csv_rows(3_000, None);
    let (head, tail) = rows.split_at(rows.len() / 2 + 7);
    let mut frames = zstd(head);
    frames.extend(zstd(tail));
    let (code, text) = run(&p, "in/a.csv.zst", frames, "csv", "", "zcsv").await;
    assert_eq!(code, Some(0), "{text}");
    let manifest = json(storage, &state::run(&bucket, JOB, "zcsv").success())
        .await
        .unwrap();
    assert_eq!(manifest["records"]["output"], 3_000);

    let p = place(server, dir.path()).await;
    let (storage, bucket) = (&p.storage, p.bucket.clone());
    let mut lines = Vec::new();
    for i in 0..1_000 {
        writeln!(lines, "{{\"id\": {i}, \"name\": \"n{i}\"}}").unwrap();
    }
    let (code, text) = run(&p, "in/a.jsonl.zst", zstd(&lines), "jsonl", "", "zjsonl").await;
    assert_eq!(code, Some(0), "{text}");
    let manifest = json(storage, &state::run(&bucket, JOB, "zjsonl").success())
        .await
        .unwrap();
    assert_eq!(manifest["records"]["output"], 1_000);
}
