//! Whole jobs through the real `sluice` binary against real S3 servers (embedded s3s-fs
//! and moto): outputs, rejects, accounting, manifests and every exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::job_yaml::JobYaml;
use crate::support::state::{self, json};
use crate::support::{self, TestServer, sluice};

/// The job every test here runs.
const JOB: &str = "trips";

/// What a generated CSV object holds.
struct Expected {
    rows: u64,
    malformed: u64,
    negative: u64,
}

/// `id,name,fare,ts` rows; every 10th fare is negative, rows listed in `bad` are malformed
/// (alternately a missing field and a fare that is not a number).
fn csv_object(rows: u64, bad: &[u64]) -> (Vec<u8>, Expected) {
    let mut out = b"id,name,fare,ts\n".to_vec();
    let mut expected = Expected {
        rows,
        malformed: 0,
        negative: 0,
    };
    for i in 0..rows {
        if let Some(pos) = bad.iter().position(|b| *b == i) {
            expected.malformed += 1;
            if pos % 2 == 0 {
                writeln!(out, "{i},missing-fields").unwrap();
            } else {
                writeln!(out, "{i},\"bad, fare\",abc,2026-01-01 00:00:00").unwrap();
            }
            continue;
        }
        let fare = if i % 10 == 0 {
            -(i as f64)
        } else {
            i as f64 + 0.5
        };
        if fare < 0.0 {
            expected.negative += 1;
        }
        writeln!(
            out,
            "{i},\"rider {i}, \"\"vip\"\"\",{fare},2026-01-{:02} 10:{:02}:00",
            1 + i % 28,
            i % 60
        )
        .unwrap();
    }
    (out, expected)
}

fn job_file(
    dir: &Path,
    bucket: &str,
    extra_validate: &str,
    sink_extra: &str,
    sql: &str,
) -> PathBuf {
    JobYaml::new(JOB)
        .source(format!("s3://{bucket}/in/"), "csv")
        .schema(&[
            ("id", "int64"),
            ("name", "string"),
            ("fare", "float64"),
            ("ts", "string"),
        ])
        .transform(sql)
        .validate(extra_validate)
        .sink(format!("s3://{bucket}/out/"))
        .sink_lines(sink_extra)
        .set("parallelism", 2)
        .set("shards", 2)
        .set("retries", 1)
        .write(dir.join("job.yaml"))
}

const FILTER_SQL: &str = r#"    - name: typed
      sql: |
        SELECT id, name, fare, to_timestamp(ts, '%Y-%m-%d %H:%M:%S') AS ts FROM input WHERE fare >= 0
      filters: true"#;

async fn no_incomplete_uploads(storage: &Storage, bucket: &str, server: &TestServer) {
    let uploads = storage
        .list_multipart_uploads(&S3Uri::new(bucket, ""))
        .await
        .unwrap();
    assert!(
        uploads.is_empty(),
        "{}: incomplete uploads left: {uploads:?}",
        server.name
    );
}

/// CSV (one object gzip-compressed) -> SQL (typed timestamps, negative fares filtered) ->
/// Parquet, with malformed rows rejected; on both servers.
#[tokio::test(flavor = "multi_thread")]
async fn csv_to_parquet_job_publishes_outputs_rejects_and_manifest() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let inputs = [
            ("in/a.csv", csv_object(500, &[7, 120]), false),
            ("in/b.csv.gz", csv_object(800, &[3]), true),
            ("in/sub/c.csv", csv_object(50, &[]), false),
        ];
        let (mut rows, mut malformed, mut negative) = (0, 0, 0);
        for (key, (body, expected), compress) in &inputs {
            let body = if *compress {
                support::gzip(body)
            } else {
                body.clone()
            };
            storage
                .put_bytes(&S3Uri::new(bucket.as_str(), *key), Bytes::from(body))
                .await
                .unwrap();
            rows += expected.rows;
            malformed += expected.malformed;
            negative += expected.negative;
        }
        let dir = tempfile::tempdir().unwrap();
        let job = job_file(
            dir.path(),
            &bucket,
            "    on_bad_record: reject\n    max_bad_records: 5",
            "    format: parquet",
            FILTER_SQL,
        );
        let out = sluice(
            &["run", job.to_str().unwrap(), "--run-id", "r1"],
            server,
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "{}", server.name);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("succeeded"), "{stdout}");

        let run = state::run(&bucket, JOB, "r1");
        let manifest = json(&storage, &run.success()).await.expect("_SUCCESS.json");
        let records = &manifest["records"];
        assert_eq!(records["input"], rows, "{}", server.name);
        assert_eq!(records["rejected"], malformed);
        assert_eq!(records["filtered"], negative);
        assert_eq!(records["output"], rows - malformed - negative);
        let outputs = manifest["outputs"].as_array().unwrap();
        let keys: Vec<&str> = outputs.iter().map(|o| o["uri"].as_str().unwrap()).collect();
        let expect_key = |k: &str| format!("s3://{bucket}/out/{k}");
        for k in ["a.parquet", "b.parquet", "sub/c.parquet"] {
            assert!(keys.contains(&expect_key(k).as_str()), "{keys:?}");
        }

        // Every listed output holds what the manifest says, read back independently.
        let mut total = 0;
        for output in outputs {
            let uri: S3Uri = output["uri"].as_str().unwrap().parse().unwrap();
            let body = storage.get_bytes(&uri).await.unwrap().unwrap();
            assert_eq!(body.len() as u64, output["size"].as_u64().unwrap());
            let crc = format!("{:08x}", crc32c::crc32c(&body));
            assert_eq!(output["crc32c"].as_str().unwrap(), crc);
            let reader = ParquetRecordBatchReaderBuilder::try_new(body).unwrap();
            let schema = reader.schema().clone();
            assert!(matches!(
                schema.field_with_name("ts").unwrap().data_type(),
                arrow::datatypes::DataType::Timestamp(..)
            ));
            let n: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
            assert_eq!(n as u64, output["rows"].as_u64().unwrap());
            total += n as u64;
        }
        assert_eq!(total, rows - malformed - negative);

        // The rejects hold the raw records with their line numbers.
        let rejects = storage
            .get_bytes(&S3Uri::new(bucket.as_str(), "out/_rejected/a.csv.jsonl"))
            .await
            .unwrap()
            .expect("rejects object");
        let lines: Vec<Value> = rejects
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["line"], 9, "row 7 is on line 9 (header is line 1)");
        assert_eq!(lines[0]["record"], "7,missing-fields");
        assert!(lines[1]["record"].as_str().unwrap().contains("abc"));

        let report = json(&storage, &run.report()).await.unwrap();
        assert_eq!(report["status"], "succeeded");
        no_incomplete_uploads(&storage, &bucket, server).await;

        // Resume: a worker re-run of a shard skips every object whose marker matches.
        let plan = run.plan().to_string();
        let again = sluice(
            &["worker", "--plan", &plan, "--shard", "0"],
            server,
            dir.path(),
        );
        assert_eq!(again.status.code(), Some(0));
        let progress = json(&storage, &run.progress(0)).await.unwrap();
        assert_eq!(progress["objects_skipped"], progress["objects_total"]);

        // A comment in the run's job file changes nothing; a changed value redoes the
        // objects, whose markers carry the old fingerprint.
        let job_uri = run.job();
        let text = String::from_utf8(storage.get_bytes(&job_uri).await.unwrap().unwrap().to_vec())
            .unwrap();
        for (edited, skipped) in [
            (format!("# reviewed\n{text}"), true),
            (text.replace("retries: 1", "retries: 2"), false),
        ] {
            assert_ne!(edited, text);
            storage.put_bytes(&job_uri, edited.into()).await.unwrap();
            let again = sluice(
                &["worker", "--plan", &plan, "--shard", "0"],
                server,
                dir.path(),
            );
            assert_eq!(again.status.code(), Some(0));
            let progress = json(&storage, &run.progress(0)).await.unwrap();
            let total = progress["objects_total"].as_u64().unwrap();
            let expect = if skipped { total } else { 0 };
            assert_eq!(progress["objects_skipped"], expect, "{}", server.name);
        }
        storage.put_bytes(&job_uri, text.into()).await.unwrap();

        // `sluice runs` lists the run from the state in the bucket.
        let runs = sluice(&["runs", job.to_str().unwrap()], server, dir.path());
        assert_eq!(runs.status.code(), Some(0));
        let listing = String::from_utf8_lossy(&runs.stdout);
        let line = listing
            .lines()
            .find(|l| l.starts_with("r1 "))
            .unwrap_or_default();
        assert!(line.contains("published"), "{listing}");
        assert!(
            line.ends_with(&(rows - malformed - negative).to_string()),
            "{listing}"
        );
    }
}

/// Text output beyond max_object_size spills into numbered objects, each a multipart
/// upload of 5 MiB parts; nothing is lost across the split.
#[tokio::test(flavor = "multi_thread")]
async fn large_output_spills_into_numbered_multipart_objects() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    let (body, expected) = csv_object(300_000, &[]);
    assert!(body.len() > 12 << 20, "input is {} bytes", body.len());
    storage
        .put_bytes(
            &S3Uri::new(bucket.as_str(), "in/big.csv"),
            Bytes::from(body),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(
        dir.path(),
        &bucket,
        "    on_bad_record: fail",
        "    format: csv\n    part_size: 5MiB\n    max_object_size: 5MiB",
        "    []",
    );
    let out = sluice(
        &["run", job.to_str().unwrap(), "--run-id", "big"],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let manifest = json(&storage, &state::run(&bucket, JOB, "big").success())
        .await
        .unwrap();
    let outputs = manifest["outputs"].as_array().unwrap();
    assert!(outputs.len() >= 3, "{outputs:?}");
    let mut rows = 0;
    for (i, output) in outputs.iter().enumerate() {
        let name = if i == 0 {
            "big.csv".to_string()
        } else {
            format!("big-{i:05}.csv")
        };
        assert_eq!(output["uri"], format!("s3://{bucket}/out/{name}"));
        rows += output["rows"].as_u64().unwrap();
        let info = storage
            .head(&output["uri"].as_str().unwrap().parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.size, output["size"].as_u64().unwrap());
    }
    assert_eq!(rows, expected.rows);
    assert!(outputs[0]["size"].as_u64().unwrap() >= 5 << 20);
    no_incomplete_uploads(&storage, &bucket, server).await;

    // The object shrinks; the next run writes fewer parts and removes the ones left over,
    // so the sink holds exactly what its manifest lists.
    let (body, expected) = csv_object(1_000, &[]);
    storage
        .put_bytes(
            &S3Uri::new(bucket.as_str(), "in/big.csv"),
            Bytes::from(body),
        )
        .await
        .unwrap();
    let out = sluice(
        &["run", job.to_str().unwrap(), "--run-id", "small"],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let manifest = json(&storage, &state::run(&bucket, JOB, "small").success())
        .await
        .unwrap();
    assert_eq!(manifest["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["records"]["output"], expected.rows);
    let keys: Vec<String> = storage
        .list(&S3Uri::new(bucket.as_str(), "out/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["out/big.csv"]);
}

/// Exit codes 2, 3 and 4 from whole runs; a failed run publishes nothing and leaves no
/// incomplete upload.
#[tokio::test(flavor = "multi_thread")]
async fn failed_runs_exit_with_the_contract_codes_and_publish_nothing() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let (body, _) = csv_object(200, &[50]);
        storage
            .put_bytes(&S3Uri::new(bucket.as_str(), "in/a.csv"), Bytes::from(body))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();

        // 4: a malformed record with on_bad_record: fail.
        let job = job_file(
            dir.path(),
            &bucket,
            "    on_bad_record: fail",
            "    format: parquet",
            FILTER_SQL,
        );
        let out = sluice(
            &["run", job.to_str().unwrap(), "--run-id", "bad"],
            server,
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(4), "{}", server.name);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("in/a.csv") && stdout.contains("line 52"),
            "{stdout}"
        );
        let run = state::run(&bucket, JOB, "bad");
        assert!(json(&storage, &run.success()).await.is_none());
        assert_eq!(
            json(&storage, &run.report()).await.unwrap()["status"],
            "failed"
        );

        // 3: a step drops records without declaring `filters: true`.
        let sql = "    - sql: SELECT * FROM input WHERE fare >= 0";
        let job = job_file(
            dir.path(),
            &bucket,
            "    on_bad_record: skip",
            "    format: jsonl",
            sql,
        );
        let out = sluice(
            &["run", job.to_str().unwrap(), "--run-id", "lossy"],
            server,
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(3), "{}", server.name);
        assert!(String::from_utf8_lossy(&out.stdout).contains("filters: true"));
        assert!(
            json(&storage, &state::run(&bucket, JOB, "lossy").success())
                .await
                .is_none()
        );
        // No output of a failed object is visible.
        let outputs = storage
            .list(&S3Uri::new(bucket.as_str(), "out/"))
            .await
            .unwrap();
        assert!(outputs.is_empty(), "{outputs:?}");

        // 2: a job file with an error; 2 also for a source bucket that does not exist.
        std::fs::write(
            dir.path().join("broken.yaml"),
            "apiVersion: sluice.dev/v1alpha1\nkind: Job\n",
        )
        .unwrap();
        let out = sluice(&["run", "broken.yaml"], server, dir.path());
        assert_eq!(out.status.code(), Some(2));
        let job = job_file(
            dir.path(),
            "no-such-bucket-here",
            "    on_bad_record: fail",
            "    format: csv",
            "    []",
        );
        let out = sluice(&["run", job.to_str().unwrap()], server, dir.path());
        assert_eq!(out.status.code(), Some(2), "{}", server.name);

        no_incomplete_uploads(&storage, &bucket, server).await;
    }
}

/// Exit code 1: a worker that cannot reach S3 fails transiently (and would be retried).
#[test]
fn unreachable_s3_is_a_transient_failure() {
    let port = support::free_port();
    let plan = state::run("somewhere", "j", "r").plan().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["worker", "--plan", &plan, "--shard", "0"])
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_MAX_ATTEMPTS", "2")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the binary with no AWS configuration at all (and instance metadata off, so the
/// chain never calls the metadata address) in `dir`, with `extra` variables.
fn sluice_without_aws(args: &[&str], dir: &Path, extra: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(extra.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    eprintln!("sluice {args:?} -> {:?}\n{stderr}", output.status.code());
    (output.status.code().unwrap_or(-1), stderr)
}

/// No silent embedded server where the data cannot be on a local disk: a worker, the
/// launcher and anything in a pod use the AWS default chain and fail with exit 2 naming
/// the sources tried; elsewhere the embedded server says why it was chosen.
#[test]
fn the_embedded_server_never_stands_in_for_a_worker_a_launcher_or_a_pod() {
    let dir = tempfile::tempdir().unwrap();
    let plan = "s3://data/_sluice/runs/trips/trips-1/plan.json";
    let (code, stderr) =
        sluice_without_aws(&["worker", "--plan", plan, "--shard", "0"], dir.path(), &[]);
    assert_eq!(code, 2, "{stderr}");
    for said in [
        "`sluice worker`",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "EC2 instance metadata",
        "AWS_EC2_METADATA_DISABLED=true",
    ] {
        assert!(stderr.contains(said), "{said:?} in {stderr}");
    }
    let job = JobYaml::new("trips")
        .source("s3://data/in/", "csv")
        .sink("s3://data/out/")
        .text();
    std::fs::write(dir.path().join("job.yaml"), job).unwrap();
    let (code, stderr) = sluice_without_aws(
        &["submit", "--in-cluster", "job.yaml", "--run-id", "trips-1"],
        dir.path(),
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--in-cluster"), "{stderr}");
    let in_pod = [("KUBERNETES_SERVICE_HOST", "127.0.0.1")];
    let (code, stderr) = sluice_without_aws(&["plan", "job.yaml"], dir.path(), &in_pod);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("KUBERNETES_SERVICE_HOST"), "{stderr}");
    assert!(
        !dir.path().join(".sluice").exists(),
        "no embedded server in a pod"
    );
    // On a laptop the embedded server stands in, and says why.
    let (_, stderr) = sluice_without_aws(&["plan", "job.yaml"], dir.path(), &[]);
    assert!(stderr.contains("no AWS credentials"), "{stderr}");
    assert!(stderr.contains("serves .sluice/s3 as S3"), "{stderr}");
}

/// What names nothing that exists is a usage error (2), not a transient failure a caller
/// would retry: `transform` of a missing object, `transformer test` of a step
/// the job does not have or of an input file that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_step_or_file_exits_2_not_1() {
    let server = support::embedded();
    let (_storage, bucket) = server.fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let job = JobYaml::new("trips")
        .source(format!("s3://{bucket}/in/"), "csv")
        .sink(format!("s3://{bucket}/out/"))
        .text();
    std::fs::write(dir.path().join("job.yaml"), job).unwrap();
    let missing = format!("s3://{bucket}/in/nope.csv");
    let run = sluice(&["transform", "job.yaml", &missing], server, dir.path());
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("does not exist"));
    let args = [
        "transformer",
        "test",
        "job.yaml",
        "--step",
        "nope",
        "--input",
        "job.yaml",
    ];
    let run = sluice(&args, server, dir.path());
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no step named"));
}
