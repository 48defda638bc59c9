//! Jobs through a fault-injecting proxy in front of the embedded S3 server and moto:
//! transient faults (500, 503, broken GET and upload bodies, latency) are survived with
//! outputs byte-identical to a clean run's and no multipart upload left open, even when a
//! fault outlasts the client's own attempts; faults that do not go away (403, a missing
//! bucket) fail fast with exit code 2 and a message naming the bucket or key.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::fault_proxy::{FaultProxy, FaultRates};
use crate::support::job_yaml::JobYaml;
use crate::support::state::{self, json};
use crate::support::{self, TestServer};

/// The job of the fault and crash tests.
pub(crate) const JOB: &str = "trips";

/// `id,name,fare,ts` rows, deterministic per `seed`.
pub(crate) fn csv_rows(rows: u64, seed: u64) -> Vec<u8> {
    let mut out = b"id,name,fare,ts\n".to_vec();
    for i in 0..rows {
        let n = i.wrapping_mul(2654435761).wrapping_add(seed) % 100_000;
        writeln!(
            out,
            "{i},\"rider {n}\",{}.{:02},2026-01-{:02} 10:{:02}:00",
            n % 500,
            n % 100,
            1 + i % 28,
            i % 60
        )
        .unwrap();
    }
    out
}

/// Rows of the big source object: its JSON lines output (about 12 MiB) takes three
/// 5 MiB parts.
const BIG_ROWS: u64 = 170_000;

/// The source objects of the fault and crash tests: a few small ones and one whose JSON
/// lines output takes three 5 MiB parts.
pub(crate) fn inputs() -> Vec<(String, Bytes)> {
    let mut objects = vec![("in/big.csv".to_string(), Bytes::from(csv_rows(BIG_ROWS, 7)))];
    for (i, rows) in [300u64, 1_200, 40].into_iter().enumerate() {
        objects.push((
            format!("in/small-{i}.csv"),
            Bytes::from(csv_rows(rows, i as u64)),
        ));
    }
    objects
}

pub(crate) const INPUT_RECORDS: u64 = BIG_ROWS + 300 + 1_200 + 40;

pub(crate) async fn put_inputs(storage: &Storage, bucket: &str, inputs: &[(String, Bytes)]) {
    for (key, body) in inputs {
        storage
            .put_bytes(&S3Uri::new(bucket, key), body.clone())
            .await
            .unwrap();
    }
}

/// A CSV -> JSON lines job over `s3://bucket/in/`, in 5 MiB parts, two shards, no retries.
pub(crate) fn job_file(dir: &Path, bucket: &str) -> PathBuf {
    job_with_retries(dir, bucket, 0)
}

/// [`job_file`] whose shards are retried `retries` times.
pub(crate) fn job_with_retries(dir: &Path, bucket: &str, retries: u32) -> PathBuf {
    JobYaml::new(JOB)
        .source(format!("s3://{bucket}/in/"), "csv")
        .schema(&[
            ("id", "int64"),
            ("name", "string"),
            ("fare", "float64"),
            ("ts", "string"),
        ])
        .validate("    on_bad_record: fail")
        .sink(format!("s3://{bucket}/out/"))
        .sink_lines("    format: jsonl\n    part_size: 5MiB\n    parts_in_flight: 2")
        .set("parallelism", 2)
        .set("shards", 2)
        .set("retries", retries)
        .write(dir.join(format!("{bucket}.yaml")))
}

/// The environment that points the binary at `url` with the server's credentials.
pub(crate) fn env_for(server: &TestServer, url: &str) -> Vec<(String, String)> {
    let mut env = server.env();
    for (name, value) in &mut env {
        if name == "AWS_ENDPOINT_URL" {
            *value = url.to_string();
        }
    }
    env
}

pub(crate) fn sluice(args: &[&str], env: &[(String, String)], dir: &Path) -> Output {
    let output = Command::new(support::sluice_bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "sluice=info,warn")
        .current_dir(dir)
        .output()
        .expect("running sluice");
    eprintln!(
        "sluice {args:?} -> {:?}\nstdout:\n{}\nstderr (last lines):\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        last_lines(&output.stderr, 30)
    );
    output
}

pub(crate) fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every object under `out/`, by key relative to it, with its bytes.
pub(crate) async fn outputs(storage: &Storage, bucket: &str) -> BTreeMap<String, Bytes> {
    let mut out = BTreeMap::new();
    for object in storage.list(&S3Uri::new(bucket, "out/")).await.unwrap() {
        let body = storage
            .get_bytes(&S3Uri::new(bucket, &object.key))
            .await
            .unwrap()
            .unwrap();
        out.insert(object.key["out/".len()..].to_string(), body);
    }
    out
}

/// The multipart uploads open anywhere in the bucket.
pub(crate) async fn open_uploads(storage: &Storage, bucket: &str) -> Vec<(String, String)> {
    storage
        .list_multipart_uploads(&S3Uri::new(bucket, ""))
        .await
        .unwrap()
}

/// Fails if any multipart upload is open in the bucket, or if a record of one is left in
/// the state of any run.
pub(crate) async fn assert_no_open_uploads(storage: &Storage, bucket: &str, context: &str) {
    let open = open_uploads(storage, bucket).await;
    assert!(open.is_empty(), "{context}: uploads left open: {open:?}");
    let records: Vec<String> = storage
        .list(&state::root(bucket))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.contains("/uploads/"))
        .collect();
    assert!(
        records.is_empty(),
        "{context}: upload records left: {records:?}"
    );
}

/// Asserts that two sets of outputs hold the same keys with the same bytes.
pub(crate) fn assert_same_outputs(
    got: &BTreeMap<String, Bytes>,
    want: &BTreeMap<String, Bytes>,
    context: &str,
) {
    let got_keys: Vec<&String> = got.keys().collect();
    let want_keys: Vec<&String> = want.keys().collect();
    assert_eq!(got_keys, want_keys, "{context}: output keys differ");
    for (key, body) in want {
        assert!(
            got[key] == *body,
            "{context}: {key} differs ({} bytes, expected {})",
            got[key].len(),
            body.len()
        );
    }
}

/// A clean run of the test job on `server`: its outputs and record counts.
pub(crate) async fn clean_run(server: &TestServer) -> (BTreeMap<String, Bytes>, Value) {
    let (storage, bucket) = server.fresh().await;
    put_inputs(&storage, &bucket, &inputs()).await;
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), &bucket);
    let out = sluice(
        &["run", job.to_str().unwrap(), "--run-id", "clean"],
        &server.env(),
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "the clean run failed");
    let manifest = json(&storage, &state::run(&bucket, JOB, "clean").success())
        .await
        .expect("the clean run is published");
    let outputs = outputs(&storage, &bucket).await;
    assert!(
        outputs["big.jsonl"].len() > 10 << 20,
        "the big output must take at least three parts"
    );
    assert_no_open_uploads(&storage, &bucket, "the clean run").await;
    (outputs, manifest["records"].clone())
}

/// 500s, 503s, GET and upload bodies broken halfway, completions whose answer is lost
/// (so the client retries a completed upload) and added latency, at seeded rates:
/// the run succeeds with the clean run's outputs byte for byte, the same record counts
/// and no upload left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_s3_faults_are_survived_with_identical_outputs() {
    for server in support::servers() {
        survives_transient_faults(server).await;
    }
}

async fn survives_transient_faults(server: &TestServer) {
    let context = format!("under faults on {}", server.name);
    let (clean, clean_records) = clean_run(server).await;
    assert_eq!(clean_records["input"], INPUT_RECORDS);
    assert_eq!(clean_records["output"], INPUT_RECORDS);

    let rates = FaultRates {
        seed: 20261201,
        internal_error: 0.08,
        slow_down: 0.08,
        reset_get_body: 0.25,
        reset_upload_body: 0.15,
        lose_complete_answer: 1.0,
        latency: 0.2,
        max_latency: Duration::from_millis(40),
        max_in_a_row: 2,
        state_burst: 0,
    };
    let Proxied {
        proxy,
        env,
        storage,
        bucket,
        dir,
    } = proxied(server, rates, &inputs()).await;
    let job = job_file(dir.path(), &bucket);
    let out = run_timed(
        &job,
        "faulty",
        &env,
        dir.path(),
        &proxy,
        &format!("fault proxy on {}", server.name),
    );
    let counts = proxy.counts();
    assert_eq!(out.status.code(), Some(0), "the run {context} failed");
    assert!(counts.faults() > 0, "no fault was injected");
    for (kind, n) in [
        ("500", &counts.internal_error),
        ("503", &counts.slow_down),
        ("GET body reset", &counts.reset_get_body),
        ("upload body reset", &counts.reset_upload_body),
        ("lost completion answer", &counts.lost_complete_answer),
    ] {
        assert!(
            n.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "no {kind} injected"
        );
    }

    let manifest = json(&storage, &state::run(&bucket, JOB, "faulty").success())
        .await
        .unwrap_or_else(|| panic!("the run {context} is not published"));
    assert_eq!(manifest["records"], clean_records, "{context}");
    assert_same_outputs(&outputs(&storage, &bucket).await, &clean, &context);
    assert_no_open_uploads(&storage, &bucket, &context).await;
}

/// 15 % 503 SlowDown, 10 % 500 and 5 % cut bodies, up to six faults in a row for one
/// request, and every fault on run state (plan, markers, progress, report, manifest,
/// upload records, their listings) repeated for all four of the client's attempts: shards
/// live on their retries, and planning, publishing and the clean-up of uploads on their
/// own bounded retries. The run publishes the clean run's outputs, with no upload left
/// open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_survives_faults_beyond_the_clients_attempts() {
    let server = support::embedded();
    let (clean, clean_records) = clean_run(server).await;
    let rates = FaultRates {
        seed: 20261206,
        internal_error: 0.10,
        slow_down: 0.15,
        reset_get_body: 0.05,
        reset_upload_body: 0.05,
        lose_complete_answer: 0.05,
        latency: 0.0,
        max_latency: Duration::ZERO,
        max_in_a_row: 6,
        // Every fault on run state takes all four of the client's attempts.
        state_burst: 4,
    };
    let Proxied {
        proxy,
        env,
        storage,
        bucket,
        dir,
    } = proxied(server, rates, &inputs()).await;
    let job = job_with_retries(dir.path(), &bucket, 3);
    let out = run_timed(&job, "stormy", &env, dir.path(), &proxy, "heavy faults");
    let counts = proxy.counts();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the run under heavy faults failed"
    );
    assert!(
        counts
            .state_bursts
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "no fault on run state outlasted the client's attempts"
    );
    let manifest = json(&storage, &state::run(&bucket, JOB, "stormy").success())
        .await
        .expect("the run under heavy faults is published");
    assert_eq!(manifest["records"], clean_records);
    assert_same_outputs(&outputs(&storage, &bucket).await, &clean, "heavy faults");
    assert_no_open_uploads(&storage, &bucket, "heavy faults").await;
}

/// A fresh bucket holding `inputs`, on `server` behind a fault proxy injecting `rates`, and a
/// directory for job files.
struct Proxied {
    proxy: FaultProxy,
    env: Vec<(String, String)>,
    storage: Storage,
    bucket: String,
    dir: tempfile::TempDir,
}

async fn proxied(server: &TestServer, rates: FaultRates, inputs: &[(String, Bytes)]) -> Proxied {
    let proxy = FaultProxy::start(&server.url, "in/", rates).await;
    let env = env_for(server, proxy.url());
    let (storage, bucket) = server.fresh().await;
    put_inputs(&storage, &bucket, inputs).await;
    Proxied {
        proxy,
        env,
        storage,
        bucket,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// Runs `sluice run` of `job` as `run_id` through the proxy, and prints what it injected
/// and how long the run took.
fn run_timed(
    job: &Path,
    run_id: &str,
    env: &[(String, String)],
    dir: &Path,
    proxy: &FaultProxy,
    what: &str,
) -> Output {
    let started = Instant::now();
    let out = sluice(
        &["run", job.to_str().unwrap(), "--run-id", run_id],
        env,
        dir,
    );
    println!(
        "{what}: {}; run took {:.1}s",
        proxy.counts(),
        started.elapsed().as_secs_f64()
    );
    out
}

/// Runs `sluice run` and checks that it failed with exit code 2 within a few seconds and
/// said what it could not reach.
fn assert_fails_fast(job: &Path, env: &[(String, String)], dir: &Path, names: &[&str]) {
    let started = Instant::now();
    let out = sluice(&["run", job.to_str().unwrap()], env, dir);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "expected a configuration error");
    assert!(
        took < Duration::from_secs(10),
        "failing took {took:?}: something retried a permanent fault"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in names {
        assert!(
            said.contains(name),
            "the output does not name {name}:\n{said}"
        );
    }
}

/// A 403 AccessDenied is not retried: on the listing it stops the run before it starts,
/// on one source object it fails that object's shard without a retry; both exit 2 within
/// seconds and name the bucket or the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_fails_fast_naming_the_object() {
    let Proxied {
        proxy,
        env,
        storage,
        bucket,
        dir,
    } = proxied(support::embedded(), FaultRates::none(), &inputs()[1..]).await;
    let job = job_file(dir.path(), &bucket);

    // One source object denied: its worker fails with 2 and is not retried.
    proxy.deny(&bucket, "in/small-1.csv");
    let source = format!("s3://{bucket}/in/small-1.csv");
    assert_fails_fast(&job, &env, dir.path(), &[&source, "403"]);
    let denied_once = proxy
        .counts()
        .denied
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(denied_once >= 1);
    assert!(
        denied_once <= 2,
        "a denied request was retried ({denied_once} denials)"
    );

    // The whole bucket denied: planning fails.
    proxy.deny(&bucket, "");
    assert_fails_fast(
        &job,
        &env,
        dir.path(),
        &[&format!("s3://{bucket}/in/"), "AccessDenied"],
    );
    assert_no_open_uploads(&storage, &bucket, "after the denials").await;
}

/// The read-back: an output whose stored record count differs from what was
/// written fails its object with exit 3, its outputs are deleted, nothing is published
/// and no upload stays open. The proxy drops the last line of every output read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_back_mismatch_fails_validation_and_leaves_no_output() {
    let Proxied {
        proxy,
        env,
        storage,
        bucket,
        dir,
    } = proxied(support::embedded(), FaultRates::none(), &inputs()[1..]).await;
    let job = job_file(dir.path(), &bucket);
    proxy.tamper(&bucket, "out/");
    let out = sluice(
        &["run", job.to_str().unwrap(), "--run-id", "r1"],
        &env,
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "a lost record is a failed validation"
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("records"), "{said}");
    let layout = crate::support::state::run(&bucket, JOB, "r1");
    assert!(storage.head(&layout.success()).await.unwrap().is_none());
    let report = crate::support::state::json(&storage, &layout.report())
        .await
        .unwrap();
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(
        failures
            .iter()
            .all(|f| f["exit_code"] == 3 && f["error"].as_str().unwrap().contains("out/")),
        "{failures:?}"
    );
    let outputs = storage
        .list(&S3Uri::new(bucket.as_str(), "out/"))
        .await
        .unwrap();
    let visible: Vec<&String> = outputs
        .iter()
        .map(|o| &o.key)
        .filter(|k| !k.starts_with("out/_rejected/"))
        .collect();
    assert!(visible.is_empty(), "unverified outputs stayed: {visible:?}");
    assert_no_open_uploads(&storage, &bucket, "after the read-back failures").await;
}

/// A source or sink bucket that does not exist is a configuration error (exit 2), not
/// retried, and the message names the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_fails_fast_naming_it() {
    let server = support::embedded();
    let proxy = FaultProxy::start(&server.url, "in/", FaultRates::none()).await;
    let env = env_for(server, proxy.url());
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("no-such-bucket-{}", std::process::id());
    let job = job_file(dir.path(), &missing);
    assert_fails_fast(&job, &env, dir.path(), &[&missing, "NoSuchBucket"]);

    // The source exists, the sink (and state) bucket does not. On moto: the embedded
    // s3s-fs server creates a bucket's directory on the first PUT into it.
    let Some(moto) = support::moto() else { return };
    let (storage, bucket) = moto.fresh().await;
    put_inputs(&storage, &bucket, &inputs()[1..]).await;
    let text = std::fs::read_to_string(job_file(dir.path(), &bucket))
        .unwrap()
        .replace(
            &format!("s3://{bucket}/out/"),
            &format!("s3://{missing}/out/"),
        );
    let job = dir.path().join("sink-missing.yaml");
    std::fs::write(&job, text).unwrap();
    assert_fails_fast(&job, &moto.env(), dir.path(), &[&missing, "NoSuchBucket"]);
}
