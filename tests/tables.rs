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
    let out = sluice(
        &["run", file.to_str().unwrap(), "--run-id", "p-1"],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
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
    let out = sluice(
        &["run", file.to_str().unwrap(), "--run-id", "p-2"],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
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
