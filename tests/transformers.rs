//! Container steps end to end through `sluice run` against the embedded S3 server: the
//! record accounting around a transformer, and every way a transformer can misbehave
//! (refusal, undecodable output, a hang, a crash mid-stream, never ready, dropped
//! records, a transient 503), each failing with its exit code and leaving nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sluice::state::RunLayout;
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::job_yaml::JobYaml;
use crate::support::state::{self, json};
use crate::support::{self, TestServer, free_port, sluice};

const RECORDS: usize = 40;

fn misbehave() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/transformers/misbehave.py")
        .display()
        .to_string()
}

/// Two JSON-lines objects of `RECORDS` records each.
async fn source(storage: &Storage, bucket: &str) {
    for object in 0..2 {
        let mut body = String::new();
        for i in 0..RECORDS {
            body.push_str(&format!(
                "{{\"id\":{i},\"email\":\"user{i}@example.com\",\"object\":{object}}}\n"
            ));
        }
        storage
            .put_bytes(
                &S3Uri::new(bucket, format!("in/part-{object}.jsonl")),
                body.into(),
            )
            .await
            .unwrap();
    }
}

/// A job whose one step is `step` (YAML at the indentation of a list item's fields).
fn tx_job(bucket: &str, step: &str) -> JobYaml {
    JobYaml::new("tx")
        .source(format!("s3://{bucket}/in/"), "jsonl")
        .transform(&format!("    - name: tx\n{step}"))
        .sink(format!("s3://{bucket}/out/"))
        .sink_lines("    format: jsonl")
        .set("shards", 1)
        .set("parallelism", 1)
        .set("retries", 0)
}

fn job_file(dir: &Path, bucket: &str, step: &str) -> PathBuf {
    tx_job(bucket, step).write(dir.join("job.yaml"))
}

fn misbehaving_step(mode: &str, port: u16, extra: &str) -> String {
    format!(
        "      container:
        image: misbehave
        comm: hpush
        port: {port}
        input: jsonl
        init_timeout: 3s
        timeout: 3s
        retries: 1
        local: {{command: [python3, {}, {mode}, \"{port}\"]}}
{extra}",
        misbehave()
    )
}

/// Runs the job as run r1.
fn run(job: &Path, server: &TestServer, dir: &Path) -> Output {
    sluice(
        &["run", job.to_str().unwrap(), "--run-id", "r1"],
        server,
        dir,
    )
}

/// The state of run r1 of job tx, the run of every test here.
fn r1(bucket: &str) -> RunLayout {
    state::run(bucket, "tx", "r1")
}

async fn report(storage: &Storage, bucket: &str) -> Value {
    json(storage, &r1(bucket).report())
        .await
        .expect("report.json")
}

/// Nothing of a failed run is visible: no outputs, no `_SUCCESS.json`, no open uploads.
async fn nothing_left(storage: &Storage, bucket: &str) {
    let outputs = storage
        .list(&format!("s3://{bucket}/out/").parse().unwrap())
        .await
        .unwrap();
    assert!(outputs.is_empty(), "{outputs:?}");
    let success = r1(bucket).success();
    assert!(storage.head(&success).await.unwrap().is_none());
    let uploads = storage
        .list_multipart_uploads(&S3Uri::new(bucket, ""))
        .await
        .unwrap();
    assert!(uploads.is_empty(), "{uploads:?}");
}

/// Runs the job with a misbehaving transformer and returns the exit code and the report's
/// first failure.
async fn misbehaving(mode: &str, extra: &str) -> (Option<i32>, String, Storage, String) {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    source(&storage, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(
        dir.path(),
        &bucket,
        &misbehaving_step(mode, free_port(), extra),
    );
    let out = run(&job, server, dir.path());
    let report = report(&storage, &bucket).await;
    let failure = report["failures"]
        .get(0)
        .map(|f| f["error"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    (out.status.code(), failure, storage, bucket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_object_is_bad_data_named_by_step_and_key() {
    let (code, failure, storage, bucket) = misbehaving("refuse", "").await;
    assert_eq!(code, Some(4));
    assert!(failure.contains("step tx, object in/part-"), "{failure}");
    assert!(failure.contains("400"), "{failure}");
    assert!(failure.contains("cannot transform in/part-"), "{failure}");
    nothing_left(&storage, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_does_not_decode_is_a_configuration_error() {
    let (code, failure, storage, bucket) = misbehaving("garbage", "").await;
    assert_eq!(code, Some(2));
    assert!(failure.contains("not valid jsonl"), "{failure}");
    assert!(failure.contains("line 2"), "{failure}");
    nothing_left(&storage, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_transformer_times_out_and_is_retried_then_fails_transiently() {
    let (code, failure, storage, bucket) = misbehaving("hang", "").await;
    assert_eq!(code, Some(1));
    assert!(failure.contains("timeout of 3s"), "{failure}");
    nothing_left(&storage, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_stream_leaves_no_partial_output() {
    let (code, failure, storage, bucket) = misbehaving("crash", "").await;
    assert_eq!(code, Some(1));
    assert!(!failure.is_empty());
    nothing_left(&storage, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformer_that_never_gets_ready_fails_the_pod() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    source(&storage, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(
        dir.path(),
        &bucket,
        &misbehaving_step("never", free_port(), ""),
    );
    let out = run(&job, server, dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not ready"), "{stdout}");
    nothing_left(&storage, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_records_fail_validation_unless_the_step_declares_filters() {
    let (code, failure, storage, bucket) = misbehaving("drop", "").await;
    assert_eq!(code, Some(3));
    assert!(
        failure.contains(&format!(
            "step tx turned {RECORDS} records into {}",
            RECORDS / 2
        )),
        "{failure}"
    );
    nothing_left(&storage, &bucket).await;

    let (code, _, storage, bucket) = misbehaving("drop", "      filters: true\n").await;
    assert_eq!(code, Some(0));
    let report = report(&storage, &bucket).await;
    assert_eq!(report["records"]["input"], 2 * RECORDS);
    assert_eq!(report["records"]["output"], RECORDS);
    assert_eq!(report["records"]["filtered"], RECORDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_503_is_retried_and_the_run_succeeds_with_every_record() {
    let (code, _, storage, bucket) = misbehaving("flaky", "").await;
    assert_eq!(code, Some(0));
    let report = report(&storage, &bucket).await;
    assert_eq!(report["records"]["input"], 2 * RECORDS);
    assert_eq!(report["records"]["output"], 2 * RECORDS);
    let out = storage
        .get_bytes(&S3Uri::new(bucket.as_str(), "out/part-1.jsonl"))
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<Value> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), RECORDS);
    assert_eq!(lines[7]["email"], "user7@example.com");
    assert_eq!(lines[7]["object"], 1);
}

fn mask_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("jobs/transformers/mask.py")
        .display()
        .to_string()
}

fn masked(value: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value.as_bytes()))[..16].to_string()
}

/// The Python example runs as hpush, hpull, hrev and io; followed by a SQL step, every
/// record comes out masked and accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_masks_records_over_every_comm_type() {
    let server = support::embedded();
    for comm in ["hpush", "hpull", "hrev", "io"] {
        let (storage, bucket) = server.fresh().await;
        source(&storage, &bucket).await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (port_line, local) = match comm {
            "io" => (
                String::new(),
                format!("[python3, {}, --comm, io]", mask_script()),
            ),
            _ => (
                format!("        port: {port}\n"),
                format!(
                    "[python3, {}, --comm, {comm}, --port, \"{port}\"]",
                    mask_script()
                ),
            ),
        };
        let step = format!(
            "      container:
        image: mask
        comm: {comm}
{port_line}        input: jsonl
        local: {{command: {local}}}
    - name: typed
      sql: SELECT id, email, object FROM input WHERE id >= 0
"
        );
        let job = job_file(dir.path(), &bucket, &step);
        let out = run(&job, server, dir.path());
        assert_eq!(out.status.code(), Some(0), "{comm}");
        let report = report(&storage, &bucket).await;
        assert_eq!(report["records"]["input"], 2 * RECORDS, "{comm}");
        assert_eq!(report["records"]["output"], 2 * RECORDS, "{comm}");
        let body = storage
            .get_bytes(&S3Uri::new(bucket.as_str(), "out/part-0.jsonl"))
            .await
            .unwrap()
            .unwrap();
        let lines: Vec<Value> = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), RECORDS, "{comm}");
        assert_eq!(lines[3]["id"], 3);
        assert_eq!(lines[3]["email"], masked("user3@example.com"), "{comm}");
        nothing_open(&storage, &bucket).await;
    }
}

async fn nothing_open(storage: &Storage, bucket: &str) {
    let uploads = storage
        .list_multipart_uploads(&S3Uri::new(bucket, ""))
        .await
        .unwrap();
    assert!(uploads.is_empty(), "{uploads:?}");
}

/// A step served by the built-in transformer server of the sluice image.
fn builtin_step(op: &str, comm: &str, port: u16, rest: &str) -> String {
    format!(
        "      container:
        image: sluice
        comm: {comm}
        port: {port}
        command: [sluice, transformer, serve, --op, {op}, --listen, \"127.0.0.1:{port}\"]
{rest}"
    )
}

fn raw_job(dir: &Path, bucket: &str, step: &str) -> PathBuf {
    tx_job(bucket, step)
        .source(format!("s3://{bucket}/in/"), "raw")
        .source_lines("    compression: none")
        .write(dir.join("job.yaml"))
}

/// The md5 example: one digest per object, of the stored bytes, over hpush, hpull and
/// hrev (the same digests as hpush).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_outputs_hold_one_digest_per_object_over_hpush_hpull_and_hrev() {
    let server = support::embedded();
    for (comm, op) in [("hpush", "md5"), ("hpull", "sha256"), ("hrev", "md5")] {
        let (storage, bucket) = server.fresh().await;
        let bodies: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                (0..100_000u32)
                    .map(|j| (j as u8).wrapping_mul(i + 1))
                    .collect()
            })
            .collect();
        for (i, body) in bodies.iter().enumerate() {
            storage
                .put_bytes(
                    &S3Uri::new(bucket.as_str(), format!("in/blob-{i}.bin.gz")),
                    body.clone().into(),
                )
                .await
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let step = builtin_step(
            op,
            comm,
            free_port(),
            "        output: {format: opaque, extension: digest}\n",
        );
        let job = raw_job(dir.path(), &bucket, &step);
        let out = run(&job, server, dir.path());
        assert_eq!(out.status.code(), Some(0), "{comm}");
        for (i, body) in bodies.iter().enumerate() {
            let digest = storage
                .get_bytes(&S3Uri::new(bucket.as_str(), format!("out/blob-{i}.digest")))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{comm}: no digest of blob-{i}"));
            let expected = match op {
                "md5" => hex::encode(<md5::Md5 as md5::Digest>::digest(body)),
                _ => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body)),
            };
            assert_eq!(
                String::from_utf8_lossy(&digest),
                format!("{expected}\n"),
                "{comm}"
            );
        }
        let manifest = json(&storage, &r1(&bucket).success()).await.unwrap();
        assert_eq!(manifest["outputs"].as_array().unwrap().len(), 3);
        nothing_open(&storage, &bucket).await;
    }
}

/// Arrow IPC both ways: the identity transformer hands the batches back untouched, so the
/// Parquet output keeps the decoded types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_ipc_carries_typed_batches_through_a_transformer() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    source(&storage, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let step = builtin_step(
        "identity",
        "hpush",
        free_port(),
        "        input: arrow\n        output: {format: arrow}\n",
    );
    let job = tx_job(&bucket, &step)
        .sink_lines("    format: parquet")
        .write(dir.path().join("job.yaml"));
    let out = run(&job, server, dir.path());
    assert_eq!(out.status.code(), Some(0));
    let body = storage
        .get_bytes(&S3Uri::new(bucket.as_str(), "out/part-0.parquet"))
        .await
        .unwrap()
        .unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body).unwrap();
    let schema = reader.schema().clone();
    assert_eq!(
        schema.field_with_name("id").unwrap().data_type(),
        &arrow::datatypes::DataType::Int64
    );
    let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, RECORDS);
}

fn harness(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["transformer", "test"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running sluice");
    eprintln!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `sluice transformer test`: the example's contract passes, and a wrong expectation shows
/// a readable diff with exit 3.
#[test]
fn the_contract_harness_passes_the_example_and_diffs_a_wrong_expectation() {
    let input = "tests/fixtures/transformers/customers.jsonl";
    let expected = "tests/fixtures/transformers/customers.masked.jsonl";
    let ports = tempfile::tempdir().unwrap();
    let mask_job = on_free_port(ports.path(), "jobs/mask-customers.yaml", "8801");
    let md5_job = on_free_port(ports.path(), "jobs/md5-objects.yaml", "8802");
    let (mask_job, md5_job) = (mask_job.to_str().unwrap(), md5_job.to_str().unwrap());
    let out = harness(&[
        mask_job, "--step", "mask", "--input", input, "--expect", expected,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: the reply matches"));

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.jsonl");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(expected))
        .unwrap()
        .replace("\"name\":\"Grace\"", "\"name\":\"Grace Hopper\"");
    std::fs::write(&wrong, text).unwrap();
    let out = harness(&[
        mask_job,
        "--step",
        "mask",
        "--input",
        input,
        "--expect",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("-{\"id\":2,\"name\":\"Grace Hopper\""),
        "{diff}"
    );
    assert!(diff.contains("+{\"id\":2,\"name\":\"Grace\""), "{diff}");

    // Without --expect the reply goes to stdout; an unknown step names the steps.
    let out = harness(&[md5_job, "--step", "md5", "--input", input]);
    assert_eq!(out.status.code(), Some(0));
    let digest = <md5::Md5 as md5::Digest>::digest(
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(input)).unwrap(),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", hex::encode(digest))
    );
    let out = harness(&[md5_job, "--step", "nope", "--input", input]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[\"md5\"]"));
}

/// A copy of the example job `example` in `dir` whose transformer listens on a free port
/// instead of `port`.
fn on_free_port(dir: &Path, example: &str, port: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(example)).unwrap();
    let path = dir.join(Path::new(example).file_name().unwrap());
    std::fs::write(&path, text.replace(port, &free_port().to_string())).unwrap();
    path
}

/// The harness checks the protocol, not only one reply, over every
/// communication type asked for: chunked bodies, a dropped request, an object the
/// transformer cannot fetch (5xx), an input it must refuse (4xx).
#[test]
fn the_contract_harness_checks_the_protocol_over_every_comm_type() {
    let input = "tests/fixtures/transformers/customers.jsonl";
    // The examples with ports of their own, so tests running beside this one keep theirs.
    let dir = tempfile::tempdir().unwrap();
    let md5_job = on_free_port(dir.path(), "jobs/md5-objects.yaml", "8802");
    let mask_job = on_free_port(dir.path(), "jobs/mask-customers.yaml", "8801");
    let (md5_job, mask_job) = (md5_job.to_str().unwrap(), mask_job.to_str().unwrap());
    let out = harness(&[
        md5_job, "--step", "md5", "--input", input, "--comm", "hpush", "--comm", "hpull", "--comm",
        "hrev",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let digest = hex::encode(<md5::Md5 as md5::Digest>::digest(
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(input)).unwrap(),
    ));
    // One reply per comm type, the same digest each time.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{digest}\n").repeat(3)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for comm in ["hpush", "hpull", "hrev"] {
        assert!(
            stderr.contains(&format!("{comm}: ok: the object in 1 KiB chunks")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("{comm}: ok: a request dropped midway")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("hrev: ok: an object it cannot fetch is answered 5xx"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hpush: ok: an object it cannot fetch"),
        "{stderr}"
    );

    // md5 takes any bytes: an input it "must refuse" is a failed check, exit 3.
    let out = harness(&[
        md5_job, "--step", "md5", "--input", input, "--reject", input,
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("hpush: FAILED: the input it must refuse is answered 4xx"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Python example refuses a line that is not JSON with a 400.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": 1}\nnot json\n").unwrap();
    let out = harness(&[
        mask_job,
        "--step",
        "mask",
        "--input",
        input,
        "--reject",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("ok: the input it must refuse is answered 4xx"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sluice transform`: one object through the example job's steps into a local file, and
/// through the md5 example to stdout; nothing reaches the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_runs_one_object_through_the_steps_into_a_file() {
    let ports = tempfile::tempdir().unwrap();
    let mask_job = on_free_port(ports.path(), "jobs/mask-customers.yaml", "8801");
    let md5_job = on_free_port(ports.path(), "jobs/md5-objects.yaml", "8802");
    let (mask_job, md5_job) = (mask_job.to_str().unwrap(), md5_job.to_str().unwrap());
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let customers =
        std::fs::read(root.join("tests/fixtures/transformers/customers.jsonl")).unwrap();
    storage
        .put_bytes(
            &S3Uri::new(bucket.as_str(), "customers/c.jsonl"),
            customers.clone().into(),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("c.parquet");
    let transform = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("transform")
            .args(args)
            .envs(server.env())
            .current_dir(root)
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let object = format!("s3://{bucket}/customers/c.jsonl");
    let out = transform(&[mask_job, &object, "-o", output.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("5 records in, 5 out, 0 bad"));
    let file = std::fs::File::open(&output).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 5);
    let emails = batches[0]
        .column_by_name("email")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    assert_eq!(emails, masked("ada@example.com"));

    let out = transform(&[md5_job, &object]);
    assert_eq!(out.status.code(), Some(0));
    let digest = <md5::Md5 as md5::Digest>::digest(&customers);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", hex::encode(digest))
    );
    let outputs = storage
        .list(&format!("s3://{bucket}/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(outputs.len(), 1, "only the source object: {outputs:?}");
}

/// sql -> container -> sql: records encoded for the transformer mid-pipeline and decoded
/// again, with a filtering SQL step before it and a typing one after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_then_container_then_sql_chains_with_every_record_accounted() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    source(&storage, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let step = format!(
        "      sql: SELECT id, email, object FROM input WHERE id % 2 = 0
      filters: true
    - name: upper
      container:
        image: sluice
        comm: hpush
        port: {port}
        command: [sluice, transformer, serve, --op, upper, --listen, \"127.0.0.1:{port}\"]
        input: csv
        output: {{format: csv}}
    - name: typed
      sql: SELECT CAST(\"ID\" AS BIGINT) AS id, \"EMAIL\" AS email FROM input
"
    );
    let job = job_file(dir.path(), &bucket, &step);
    let out = run(&job, server, dir.path());
    assert_eq!(out.status.code(), Some(0));
    let report = report(&storage, &bucket).await;
    assert_eq!(report["records"]["input"], 2 * RECORDS);
    assert_eq!(report["records"]["filtered"], RECORDS);
    assert_eq!(report["records"]["output"], RECORDS);
    let body = storage
        .get_bytes(&S3Uri::new(bucket.as_str(), "out/part-1.jsonl"))
        .await
        .unwrap()
        .unwrap();
    let first: Value = serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["id"], 0);
    assert_eq!(first["email"], "USER0@EXAMPLE.COM");
}

/// `sluice resume RUN --local JOB`: a run that failed is finished with its own plan once
/// the cause is gone, and a published run is left as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_local_run_is_resumed_and_published_once() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    source(&storage, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let step = format!(
        "      container:
        image: gate
        comm: io
        input: jsonl
        local: {{command: [sh, -c, \"test -e {} && exec cat\"]}}
",
        flag.display()
    );
    let job = job_file(dir.path(), &bucket, &step);
    let out = run(&job, server, dir.path());
    assert_eq!(out.status.code(), Some(4));
    let success = r1(&bucket).success();
    assert!(storage.head(&success).await.unwrap().is_none());

    std::fs::write(&flag, "").unwrap();
    let resume = || {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["resume", "r1", "--local", job.to_str().unwrap()])
            .envs(server.env())
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = resume();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    assert!(storage.head(&success).await.unwrap().is_some());
    let report = report(&storage, &bucket).await;
    assert_eq!(report["records"]["output"], 2 * RECORDS);
    let again = resume();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("published already"));
}
