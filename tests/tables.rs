//! Tables: Hive-style partitioned output (`sink.partition_by`) through the binary against
//! the embedded S3 server and moto: keys, escaping, the default partition, bounded open
//! partitions spilling into numbered objects, accounting, verify, deterministic keys on a
//! rerun, and check-time errors.

use std::collections::{BTreeMap, BTreeSet};

use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::job_yaml::JobYaml;
use crate::support::{self, TestServer, sluice};

/// Rows of `id,city,day,fare`: the city cycles through a plain name, one to escape and an
/// empty value, the day changes every `block` rows.
fn rows(from: usize, count: usize, block: usize) -> String {
    let cities = ["Köln", "a/b=c", ""];
    let mut text = String::from("id,city,day,fare\n");
    for id in from..from + count {
        let city = cities[id % cities.len()];
        let day = 1 + (id / block) % 2;
        text.push_str(&format!("{id},{city},2026-01-0{day},{}.5\n", id % 7));
    }
    text
}

async fn put(storage: &Storage, bucket: &str, key: &str, body: String) {
    storage
        .put_bytes(
            &S3Uri::new(bucket.to_string(), key.to_string()),
            body.into(),
        )
        .await
        .unwrap();
}

/// `sluice run JOB --run-id RUN` in `dir` against `server`: its exit code.
fn run_job(
    server: &TestServer,
    dir: &std::path::Path,
    job: &std::path::Path,
    run: &str,
) -> Option<i32> {
    sluice(
        &["run", job.to_str().unwrap(), "--run-id", run],
        server,
        dir,
    )
    .status
    .code()
}

fn job(bucket: &str, sink_lines: &str) -> JobYaml {
    JobYaml::new("by-city")
        .source(format!("s3://{bucket}/in/"), "csv")
        .schema(&[
            ("id", "int64"),
            ("city", "string"),
            ("day", "date"),
            ("fare", "float64"),
        ])
        .sink(format!("s3://{bucket}/out/"))
        .sink_lines(sink_lines)
        .set("shards", 2)
}

/// Every JSON lines object under `out/`: its key below `out/` and its records.
async fn outputs(storage: &Storage, bucket: &str) -> BTreeMap<String, Vec<serde_json::Value>> {
    let prefix = S3Uri::new(bucket.to_string(), "out/".to_string());
    let mut out = BTreeMap::new();
    for object in storage.list(&prefix).await.unwrap() {
        let relative = object.key.strip_prefix("out/").unwrap().to_string();
        if relative.starts_with("_rejected/") {
            continue;
        }
        let uri = S3Uri::new(bucket.to_string(), object.key.clone());
        let body = storage.get_bytes(&uri).await.unwrap().unwrap();
        let records = String::from_utf8(body.to_vec())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        out.insert(relative, records);
    }
    out
}

async fn partitioned_run(server: &'static TestServer) {
    let (storage, bucket) = server.fresh().await;
    put(&storage, &bucket, "in/a.csv", rows(0, 30, 10)).await;
    put(&storage, &bucket, "in/b.csv", rows(100, 6, 3)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = job(&bucket, "    format: jsonl\n    partition_by: [day, city]")
        .write(dir.path().join("job.yaml"));
    assert_eq!(run_job(server, dir.path(), &file, "p-1"), Some(0));
    let first = outputs(&storage, &bucket).await;
    let keys: BTreeSet<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "day=2026-01-01/city=Köln/a.jsonl",
            "day=2026-01-01/city=a%2Fb%3Dc/a.jsonl",
            "day=2026-01-01/city=__HIVE_DEFAULT_PARTITION__/a.jsonl",
            "day=2026-01-02/city=Köln/a.jsonl",
            "day=2026-01-02/city=a%2Fb%3Dc/a.jsonl",
            "day=2026-01-02/city=__HIVE_DEFAULT_PARTITION__/a.jsonl",
            "day=2026-01-01/city=Köln/b.jsonl",
            "day=2026-01-01/city=a%2Fb%3Dc/b.jsonl",
            "day=2026-01-01/city=__HIVE_DEFAULT_PARTITION__/b.jsonl",
            "day=2026-01-02/city=Köln/b.jsonl",
            "day=2026-01-02/city=a%2Fb%3Dc/b.jsonl",
            "day=2026-01-02/city=__HIVE_DEFAULT_PARTITION__/b.jsonl",
        ]),
        "{keys:?}"
    );
    // Every record once, in the partition of its values, without the partition columns.
    let mut ids = Vec::new();
    for (key, records) in &first {
        for record in records {
            assert!(
                record.get("city").is_none() && record.get("day").is_none(),
                "{record}"
            );
            let id = record["id"].as_u64().unwrap() as usize;
            let block = if id >= 100 { 3 } else { 10 };
            let day = 1 + (id / block) % 2;
            let city = ["Köln", "a%2Fb%3Dc", "__HIVE_DEFAULT_PARTITION__"][id % 3];
            assert!(
                key.starts_with(&format!("day=2026-01-0{day}/city={city}/")),
                "{id} in {key}"
            );
            ids.push(id);
        }
    }
    ids.sort();
    let expected: Vec<usize> = (0..30).chain(100..106).collect();
    assert_eq!(ids, expected);
    // The manifest lists every partition file, and verify finds them all.
    let manifest = crate::support::state::json(
        &storage,
        &crate::support::state::run(&bucket, "by-city", "p-1").success(),
    )
    .await
    .unwrap();
    let listed = manifest["outputs"].as_array().unwrap().len();
    assert_eq!(listed, 12, "{manifest}");
    let out = sluice(
        &["verify", "p-1", "--job", file.to_str().unwrap()],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    // A second run writes the same keys (a retry overwrites, never duplicates).
    assert_eq!(run_job(server, dir.path(), &file, "p-2"), Some(0));
    assert_eq!(outputs(&storage, &bucket).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_output_lands_under_escaped_hive_paths_once_each() {
    partitioned_run(support::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_output_lands_under_escaped_hive_paths_once_each_on_moto() {
    let Some(moto) = support::moto() else { return };
    partitioned_run(moto).await;
}

/// With one partition open at a time, records alternating between partitions spill into
/// numbered objects per partition; every record is still written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_open_partitions_spill_into_numbered_objects() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    // Days alternate every 5000 rows: several switches within and across batches.
    put(&storage, &bucket, "in/big.csv", rows(0, 40_000, 5000)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = job(
        &bucket,
        "    format: jsonl\n    partition_by: [day]\n    max_open_partitions: 1",
    )
    .write(dir.path().join("job.yaml"));
    let out = sluice(&["run", file.to_str().unwrap()], server, dir.path());
    assert_eq!(out.status.code(), Some(0));
    let written = outputs(&storage, &bucket).await;
    let per_day = |day: &str| {
        written
            .keys()
            .filter(|k| k.starts_with(&format!("day={day}/")))
            .count()
    };
    assert!(
        per_day("2026-01-01") > 1 && per_day("2026-01-02") > 1,
        "{:?}",
        written.keys()
    );
    assert!(
        written.contains_key("day=2026-01-01/big-00001.jsonl"),
        "{:?}",
        written.keys()
    );
    let total: usize = written.values().map(Vec::len).sum();
    assert_eq!(total, 40_000);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("40000"), "{stdout}");
}

#[test]
fn partition_columns_the_output_lacks_or_cannot_name_fail_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = job(
        "bucket-x",
        "    format: parquet\n    partition_by: [city, fare, city]",
    )
    .transform("    - name: drop-city\n      sql: SELECT id, day, fare FROM input")
    .write(dir.path().join("job.yaml"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.sink.partition_by[2]: \"city\" is listed twice"),
        "{stderr}"
    );
    let file = job("bucket-x", "    format: parquet\n    partition_by: [city]")
        .transform("    - name: drop-city\n      sql: SELECT id, day, fare FROM input")
        .write(dir.path().join("job.yaml"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.sink.partition_by: partition column \"city\" is not in the output (it has: id, day, fare)"),
        "{stderr}"
    );
    let file = job("bucket-x", "    format: parquet\n    partition_by: [fare]")
        .write(dir.path().join("job.yaml"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("partition column \"fare\" is Float64"),
        "{stderr}"
    );
}

/// A Delta table job over `in/`: typed records partitioned by day.
fn delta_job(bucket: &str, mode: &str) -> JobYaml {
    job(bucket, "    format: delta\n    partition_by: [day]")
        .set("mode", mode)
        .set("retries", 0)
}

/// The data files of `version` of the table at `out/` (read with the deltalake crate), and
/// the records they hold (from their footers).
async fn table_at(storage: &Storage, bucket: &str, version: u64) -> (Vec<String>, u64) {
    let uri = S3Uri::new(bucket.to_string(), "out/".to_string());
    let files = sluice::run::table::files_at(storage, &uri, version)
        .await
        .unwrap();
    let mut rows = 0;
    for file in &files {
        let key = S3Uri::new(bucket.to_string(), format!("out/{file}"));
        let size = storage.head(&key).await.unwrap().unwrap().size;
        let footer = sluice::storage::parquet_metadata(storage, &key, size)
            .await
            .unwrap();
        rows += footer.file_metadata().num_rows() as u64;
    }
    (files, rows)
}

async fn manifest_table(storage: &Storage, bucket: &str, run: &str) -> serde_json::Value {
    let manifest = crate::support::state::json(
        storage,
        &crate::support::state::run(bucket, "by-city", run).success(),
    )
    .await
    .unwrap();
    manifest["table"].clone()
}

async fn delta_versions(server: &'static TestServer) {
    let (storage, bucket) = server.fresh().await;
    put(&storage, &bucket, "in/a.csv", rows(0, 30, 10)).await;
    put(&storage, &bucket, "in/b.csv", rows(100, 6, 3)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = delta_job(&bucket, "full").write(dir.path().join("job.yaml"));
    let run = |id: &str| {
        assert_eq!(
            run_job(server, dir.path(), &file, id),
            Some(0),
            "{}",
            server.name
        );
    };
    // A full run creates the table: version 0 holds every record, in its partitions.
    run("d-1");
    let (files, records) = table_at(&storage, &bucket, 0).await;
    assert_eq!(records, 36, "{files:?}");
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.starts_with("day=2026-01-0") && f.contains("/d-1/")),
        "{files:?}"
    );
    assert_eq!(manifest_table(&storage, &bucket, "d-1").await["version"], 0);
    // A second full run is a new version that replaces the rows.
    run("d-2");
    let (files, records) = table_at(&storage, &bucket, 1).await;
    assert_eq!(records, 36);
    assert!(files.iter().all(|f| f.contains("/d-2/")), "{files:?}");
    // The first version is still readable as it was (its files are its own).
    assert_eq!(table_at(&storage, &bucket, 0).await.1, 36);
    let out = sluice(
        &["verify", "d-2", "--job", file.to_str().unwrap()],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    // An incremental run appends only what is new.
    let file = delta_job(&bucket, "incremental").write(dir.path().join("job.yaml"));
    assert_eq!(run_job(server, dir.path(), &file, "d-3"), Some(0));
    put(&storage, &bucket, "in/c.csv", rows(200, 4, 2)).await;
    assert_eq!(run_job(server, dir.path(), &file, "d-4"), Some(0));
    let (files, records) = table_at(&storage, &bucket, 3).await;
    assert_eq!(records, 36 + 4, "{files:?}");
    assert_eq!(files.iter().filter(|f| f.contains("/d-4/")).count(), 2);
    // An independent reader sees the same table.
    let read = crate::support::delta_reader::read(server, &format!("s3://{bucket}/out"), "day");
    assert_eq!(read["version"], 3, "{read}");
    assert_eq!(read["rows"], 40, "{read}");
    assert_eq!(read["distinct"], 2, "{read}");
    assert_eq!(read["partitions"], serde_json::json!(["day"]), "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_runs_commit_one_version_each_full_replaces_incremental_appends() {
    delta_versions(support::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_runs_commit_one_version_each_on_moto() {
    let Some(moto) = support::moto() else { return };
    delta_versions(moto).await;
}

/// `sluice run` killed just before its commit reaches the store leaves the table as it was;
/// killed just after, before `_SUCCESS.json`, the commit stands. Either way resume leaves
/// exactly one version of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_around_its_commit_resumes_to_exactly_one_version() {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI32, Ordering};

    use crate::support::fault_proxy::{FaultProxy, FaultRates, Point, Trap};

    let server = support::embedded();
    for after in [false, true] {
        let (storage, bucket) = server.fresh().await;
        put(&storage, &bucket, "in/a.csv", rows(0, 30, 10)).await;
        let dir = tempfile::tempdir().unwrap();
        let file = delta_job(&bucket, "full").write(dir.path().join("job.yaml"));
        // A first version, so that the killed run's is the second.
        assert_eq!(run_job(server, dir.path(), &file, "k-0"), Some(0));

        let proxy = FaultProxy::start(&server.url, "in/", FaultRates::none()).await;
        let pgid = Arc::new(AtomicI32::new(0));
        let target = pgid.clone();
        proxy.arm(Trap {
            point: Point::TableCommit,
            occurrence: 1,
            after,
            action: Box::new(move || {
                let pgid = target.load(Ordering::SeqCst);
                if pgid > 0 {
                    // SAFETY: kill(2) on a process group we started.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
            }),
        });
        let mut env = server.env();
        env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
        env.push(("AWS_ENDPOINT_URL".into(), proxy.url().to_string()));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", file.to_str().unwrap(), "--run-id", "k-1"])
            .envs(env)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        pgid.store(child.id() as i32, Ordering::SeqCst);
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "after: {after}");
        let log = S3Uri::new(bucket.clone(), "out/_delta_log/".to_string());
        let entries = |list: Vec<sluice::storage::ObjectInfo>| {
            list.iter().filter(|o| o.key.ends_with(".json")).count()
        };
        assert_eq!(
            entries(storage.list(&log).await.unwrap()),
            if after { 2 } else { 1 },
            "after: {after}"
        );
        let out = sluice(
            &["resume", "k-1", "--local", file.to_str().unwrap()],
            server,
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "after: {after}");
        assert_eq!(
            entries(storage.list(&log).await.unwrap()),
            2,
            "after: {after}"
        );
        assert_eq!(manifest_table(&storage, &bucket, "k-1").await["version"], 1);
        let (files, records) = table_at(&storage, &bucket, 1).await;
        assert_eq!(records, 30, "after: {after}");
        assert!(files.iter().all(|f| f.contains("/k-1/")), "{files:?}");
    }
}

/// A run whose columns differ from the table's is refused at publish (exit 2), before any
/// commit: the table keeps its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_other_columns_than_its_table_does_not_commit() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    put(&storage, &bucket, "in/a.csv", rows(0, 6, 3)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = delta_job(&bucket, "full").write(dir.path().join("job.yaml"));
    assert_eq!(run_job(server, dir.path(), &file, "s-1"), Some(0));
    let wider = delta_job(&bucket, "full")
        .transform(
            "    - name: wider\n      sql: SELECT id, city, day, fare, 1 AS extra FROM input",
        )
        .write(dir.path().join("wider.yaml"));
    let out = sluice(
        &["run", wider.to_str().unwrap(), "--run-id", "s-2"],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        format!("{stdout}{stderr}").contains("extra is new"),
        "{stdout}\n{stderr}"
    );
    let log = S3Uri::new(bucket.clone(), "out/_delta_log/".to_string());
    let entries = storage.list(&log).await.unwrap();
    assert_eq!(
        entries.iter().filter(|o| o.key.ends_with(".json")).count(),
        1
    );
    let manifest = crate::support::state::run(&bucket, "by-city", "s-2").success();
    assert!(
        crate::support::state::json(&storage, &manifest)
            .await
            .is_none()
    );
}
