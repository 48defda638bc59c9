//! `sluice verify` on published runs, through the real binary against real S3 servers:
//! a clean run passes, and every kind of loss or tampering after publish is named.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use bytes::Bytes;
use serde_json::Value;
use sluice::storage::Storage;

use crate::support::job_yaml::JobYaml;
use crate::support::state;
use crate::support::{self, sluice};

/// The job every test here runs.
const JOB: &str = "trips";

/// `id,name,fare` rows; the rows listed in `bad` miss fields.
fn csv_object(rows: u64, bad: &[u64]) -> Vec<u8> {
    let mut out = b"id,name,fare\n".to_vec();
    for i in 0..rows {
        if bad.contains(&i) {
            writeln!(out, "{i},missing-fields").unwrap();
        } else {
            writeln!(out, "{i},\"rider {i}\",{}.5", i % 97).unwrap();
        }
    }
    out
}

/// A job from `s3://{source}/in/` to `sink`, rejecting bad records.
fn job_file(dir: &Path, source: &str, sink: &str, sink_extra: &str, bad: &str) -> PathBuf {
    JobYaml::new(JOB)
        .source(format!("s3://{source}/in/"), "csv")
        .schema(&[("id", "int64"), ("name", "string"), ("fare", "float64")])
        .validate(&format!("    on_bad_record: {bad}\n    max_bad_records: 5"))
        .sink(sink)
        .sink_lines(sink_extra)
        .set("parallelism", 2)
        .set("shards", 2)
        .set("retries", 0)
        .write(dir.join("job.yaml"))
}

async fn put(storage: &Storage, uri: &str, body: impl Into<Bytes>) {
    storage
        .put_bytes(&uri.parse().unwrap(), body.into())
        .await
        .unwrap();
}

async fn get(storage: &Storage, uri: &str) -> Bytes {
    storage
        .get_bytes(&uri.parse().unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{uri} exists"))
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("verify --json prints JSON")
}

/// The problems of a `--json` result as `(problem, uri)`.
fn problems(result: &Value) -> Vec<(String, String)> {
    result["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["problem"].as_str().unwrap().to_string(),
                p["uri"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Parquet outputs in a sink at the root of its bucket (so sluice's state lies under the
/// sink): verify passes on the fresh run, then names every object deleted, overwritten,
/// truncated or added, exits 3, and exits 2 once the manifest is gone; on both servers.
#[tokio::test(flavor = "multi_thread")]
async fn verify_passes_a_published_run_and_names_every_change_after_publish() {
    for server in support::servers() {
        let (storage, source) = server.fresh().await;
        let out_bucket = support::fresh_bucket(&storage).await;
        put(
            &storage,
            &format!("s3://{source}/in/a.csv"),
            csv_object(500, &[7, 120]),
        )
        .await;
        put(
            &storage,
            &format!("s3://{source}/in/b.csv"),
            csv_object(300, &[]),
        )
        .await;
        put(
            &storage,
            &format!("s3://{source}/in/sub/c.csv"),
            csv_object(50, &[]),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let sink = format!("s3://{out_bucket}/");
        let job = job_file(dir.path(), &source, &sink, "    format: parquet", "reject");
        let job = job.to_str().unwrap();
        let run = sluice(&["run", job, "--run-id", "r1"], server, dir.path());
        assert_eq!(run.status.code(), Some(0), "{}", server.name);

        let manifest_uri = state::run(&out_bucket, JOB, "r1").success().to_string();
        let manifest: Value = serde_json::from_slice(&get(&storage, &manifest_uri).await).unwrap();
        let listed_bytes: u64 = ["outputs", "rejects"]
            .iter()
            .flat_map(|k| manifest[k].as_array().unwrap())
            .map(|o| o["size"].as_u64().unwrap())
            .sum();

        // Clean: every count is what the manifest lists, and the state under the sink is
        // not taken for extra objects.
        let clean = sluice(
            &["verify", "r1", "--job", job, "--json"],
            server,
            dir.path(),
        );
        assert_eq!(clean.status.code(), Some(0), "{}", server.name);
        let result = stdout_json(&clean);
        assert_eq!(result["clean"], true);
        assert_eq!(result["outputs"], 3);
        assert_eq!(result["rejects"], 1);
        assert_eq!(result["objects_read"], 4);
        assert_eq!(result["objects_under_sink"], 4);
        assert_eq!(result["bytes_read"], listed_bytes);
        assert_eq!(problems(&result), Vec::<(String, String)>::new());
        let table = sluice(&["verify", "r1", "--job", job], server, dir.path());
        assert_eq!(table.status.code(), Some(0));
        let text = String::from_utf8_lossy(&table.stdout);
        assert!(
            text.contains("run r1 of trips: 4 objects checked (3 outputs, 1 rejects), 4 under"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("no problems"), "{text}");
        // The manifest URI alone locates the run; the sink comes from the run's job.yaml.
        let by_uri = sluice(&["verify", &manifest_uri], server, dir.path());
        assert_eq!(by_uri.status.code(), Some(0), "{}", server.name);

        // Tamper: same size, other bytes (inside the first page, the footer intact) ...
        let b = format!("s3://{out_bucket}/b.parquet");
        let mut body = get(&storage, &b).await.to_vec();
        body[5] ^= 0xff;
        let flipped_crc = format!("{:08x}", crc32c::crc32c(&body));
        put(&storage, &b, body).await;
        // ... an output deleted ...
        let c = format!("s3://{out_bucket}/sub/c.parquet");
        storage.delete(&c.parse().unwrap()).await.unwrap();
        // ... the rejects object losing a record ...
        let rejects = format!("s3://{out_bucket}/_rejected/a.csv.jsonl");
        let body = get(&storage, &rejects).await;
        let first_line = body.iter().position(|b| *b == b'\n').unwrap() + 1;
        put(&storage, &rejects, body.slice(..first_line)).await;
        // ... and objects nobody listed, beside the outputs and beside the rejects; one
        // more object in sluice's own state is not extra.
        put(&storage, &format!("s3://{out_bucket}/stray.parquet"), "x").await;
        put(
            &storage,
            &format!("s3://{out_bucket}/_rejected/z.jsonl"),
            "{}\n",
        )
        .await;
        put(
            &storage,
            &format!("s3://{out_bucket}/_sluice/note.txt"),
            "x",
        )
        .await;

        let tampered = sluice(
            &["verify", "r1", "--job", job, "--json"],
            server,
            dir.path(),
        );
        assert_eq!(tampered.status.code(), Some(3), "{}", server.name);
        let result = stdout_json(&tampered);
        assert_eq!(result["clean"], false);
        let expected: Vec<(String, String)> = [
            ("size_changed", rejects.clone()),
            ("rows_changed", rejects.clone()),
            ("extra", format!("s3://{out_bucket}/_rejected/z.jsonl")),
            ("checksum_changed", b.clone()),
            ("extra", format!("s3://{out_bucket}/stray.parquet")),
            ("missing", c.clone()),
        ]
        .into_iter()
        .map(|(k, u)| (k.to_string(), u))
        .collect();
        assert_eq!(problems(&result), expected, "{}", server.name);
        let list = result["problems"].as_array().unwrap();
        assert_eq!(list[0]["found"], first_line as u64);
        assert_eq!(
            (&list[1]["expected"], &list[1]["found"]),
            (&2.into(), &1.into())
        );
        assert_eq!(list[3]["found"], flipped_crc.as_str());
        assert_eq!(result["objects_read"], 3);

        let table = sluice(&["verify", &manifest_uri], server, dir.path());
        assert_eq!(table.status.code(), Some(3));
        let text = String::from_utf8_lossy(&table.stdout);
        assert!(text.starts_with("problem "), "{text}");
        let row = |label: &str, uri: &str| {
            text.lines()
                .any(|l| l.starts_with(label) && l.contains(&format!(" {uri} ")))
        };
        assert!(row("missing ", &c), "{text}");
        assert!(row("checksum changed ", &b), "{text}");
        assert!(row("rows changed ", &rejects), "{text}");
        assert!(
            row("extra ", &format!("s3://{out_bucket}/stray.parquet")),
            "{text}"
        );
        assert!(
            text.trim_end().ends_with(
                "6 problems (1 missing, 1 size changed, 1 checksum changed, 1 rows changed, 2 extra)"
            ),
            "{text}"
        );

        // Not published: the manifest removed, and a run that never was.
        storage
            .delete(&manifest_uri.parse().unwrap())
            .await
            .unwrap();
        let gone = sluice(&["verify", "r1", "--job", job], server, dir.path());
        assert_eq!(gone.status.code(), Some(2), "{}", server.name);
        let stderr = String::from_utf8_lossy(&gone.stderr);
        assert!(
            stderr.contains(&format!(
                "run r1 is not published: {manifest_uri} does not exist"
            )),
            "{stderr}"
        );
        let never = sluice(&["verify", "r9", "--job", job], server, dir.path());
        assert_eq!(never.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&never.stderr).contains("there is no run at"),
            "{}",
            String::from_utf8_lossy(&never.stderr)
        );
    }
}

/// gzip-compressed CSV outputs are recounted through decompression: an output rewritten
/// with fewer records shows as rows changed; a failed run is not published (exit 2); a
/// run id without a job file is a usage error.
#[tokio::test(flavor = "multi_thread")]
async fn verify_recounts_compressed_csv_and_refuses_failed_runs() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    put(
        &storage,
        &format!("s3://{bucket}/in/a.csv"),
        csv_object(400, &[]),
    )
    .await;
    put(
        &storage,
        &format!("s3://{bucket}/in/b.csv"),
        csv_object(40, &[3]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("s3://{bucket}/out/");
    let job = job_file(
        dir.path(),
        &bucket,
        &sink,
        "    format: csv\n    compression: gzip",
        "reject",
    );
    let job = job.to_str().unwrap();
    let run = sluice(&["run", job, "--run-id", "ok"], server, dir.path());
    assert_eq!(run.status.code(), Some(0));
    let clean = sluice(
        &["verify", "ok", "--job", job, "--json"],
        server,
        dir.path(),
    );
    assert_eq!(clean.status.code(), Some(0));
    assert_eq!(stdout_json(&clean)["objects_read"], 3);

    let a = format!("s3://{bucket}/out/a.csv.gz");
    let fewer = csv_object(390, &[]);
    put(&storage, &a, support::gzip(&fewer)).await;
    let changed = sluice(
        &["verify", "ok", "--job", job, "--json"],
        server,
        dir.path(),
    );
    assert_eq!(changed.status.code(), Some(3));
    let result = stdout_json(&changed);
    let rows = result["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["problem"] == "rows_changed")
        .expect("rows changed");
    assert_eq!(rows["uri"], a.as_str());
    assert_eq!(
        (&rows["expected"], &rows["found"]),
        (&400.into(), &390.into())
    );

    // Not gzip any more: the records cannot be counted, and that is named too.
    put(&storage, &a, fewer).await;
    let plain = sluice(
        &["verify", "ok", "--job", job, "--json"],
        server,
        dir.path(),
    );
    assert_eq!(plain.status.code(), Some(3));
    let result = stdout_json(&plain);
    assert!(
        problems(&result).contains(&("unreadable".to_string(), a.clone())),
        "{result}"
    );

    let failing = job_file(dir.path(), &bucket, &sink, "    format: csv", "fail");
    let failing = failing.to_str().unwrap();
    let run = sluice(&["run", failing, "--run-id", "bad"], server, dir.path());
    assert_eq!(run.status.code(), Some(4));
    let refused = sluice(&["verify", "bad", "--job", failing], server, dir.path());
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("run bad is not published"), "{stderr}");
    assert!(stderr.contains("the run failed; see s3://"), "{stderr}");

    let usage = sluice(&["verify", "ok"], server, dir.path());
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--job JOB"));
}
