//! State across runs: the ledger of incremental jobs (what a run plans, `--full`, repair
//! after a crash between `_SUCCESS.json` and the ledger) and `sluice gc` removing the state
//! of abandoned runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::job_yaml::JobYaml;
use crate::support::state::{self, json};
use crate::support::{self, TestServer, sluice};

/// The incremental job of the ledger tests.
const JOB: &str = "inc";

fn job_file(dir: &Path, bucket: &str) -> PathBuf {
    JobYaml::new(JOB)
        .source(format!("s3://{bucket}/in/"), "csv")
        .schema(&[("id", "int64"), ("name", "string")])
        .sink(format!("s3://{bucket}/out/"))
        .sink_lines("    format: jsonl")
        .set("mode", "incremental")
        .set("shards", 2)
        .set("retries", 0)
        .write(dir.join("job.yaml"))
}

async fn put(storage: &Storage, bucket: &str, key: &str, rows: u64) {
    let mut body = String::from("id,name\n");
    for i in 0..rows {
        body.push_str(&format!("{i},{key} {i}\n"));
    }
    storage
        .put_bytes(&S3Uri::new(bucket, key), Bytes::from(body))
        .await
        .unwrap();
}

/// Runs the job and returns the source keys its manifest lists.
async fn run(
    storage: &Storage,
    server: &TestServer,
    bucket: &str,
    job: &Path,
    run_id: &str,
    extra: &[&str],
) -> (BTreeSet<String>, Value) {
    let mut args = vec!["run", job.to_str().unwrap(), "--run-id", run_id];
    args.extend_from_slice(extra);
    let out = sluice(&args, server, job.parent().unwrap());
    assert_eq!(out.status.code(), Some(0), "{run_id}");
    let manifest = json(storage, &state::run(bucket, JOB, run_id).success())
        .await
        .expect("published");
    let sources = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["source"].as_str().unwrap().to_string())
        .collect();
    (sources, manifest)
}

fn keys(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|k| k.to_string()).collect()
}

/// Twice with nothing new: the second run processes nothing and publishes an empty
/// manifest. Then only the changed and the new object; `--full` all of them; and a ledger
/// lost to a crash after `_SUCCESS.json` is written again from the run's plan.
#[tokio::test(flavor = "multi_thread")]
async fn incremental_runs_process_only_new_and_changed_objects() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        put(&storage, &bucket, "in/a.csv", 5).await;
        put(&storage, &bucket, "in/b.csv", 7).await;
        let dir = tempfile::tempdir().unwrap();
        let job = job_file(dir.path(), &bucket);
        let ledger = state::ledger(&bucket, JOB);

        let (first, manifest) = run(&storage, server, &bucket, &job, "r1", &[]).await;
        assert_eq!(first, keys(&["in/a.csv", "in/b.csv"]), "{}", server.name);
        assert_eq!(manifest["records"]["output"], 12);
        let r1 = storage.get_bytes(&ledger.run("r1")).await.unwrap().unwrap();
        assert_eq!(String::from_utf8_lossy(&r1).lines().count(), 2);

        let (second, manifest) = run(&storage, server, &bucket, &job, "r2", &[]).await;
        assert!(second.is_empty(), "{}: {second:?}", server.name);
        assert_eq!(manifest["records"]["input"], 0);
        let plan = json(&storage, &state::run(&bucket, JOB, "r2").plan())
            .await
            .unwrap();
        assert_eq!(plan["objects"], 0);

        put(&storage, &bucket, "in/b.csv", 9).await;
        put(&storage, &bucket, "in/c.csv", 3).await;
        let (third, manifest) = run(&storage, server, &bucket, &job, "r3", &[]).await;
        assert_eq!(third, keys(&["in/b.csv", "in/c.csv"]), "{}", server.name);
        assert_eq!(manifest["records"]["output"], 12);

        let (full, manifest) = run(&storage, server, &bucket, &job, "r4", &["--full"]).await;
        assert_eq!(
            full,
            keys(&["in/a.csv", "in/b.csv", "in/c.csv"]),
            "{}",
            server.name
        );
        assert_eq!(manifest["records"]["output"], 17);

        // A crash between r3's `_SUCCESS.json` and its ledger: the next plan repairs it and
        // still processes nothing.
        put(&storage, &bucket, "in/d.csv", 2).await;
        storage.delete(&ledger.run("r3")).await.unwrap();
        storage.delete(&ledger.run("r4")).await.unwrap();
        let (fifth, _) = run(&storage, server, &bucket, &job, "r5", &[]).await;
        assert_eq!(fifth, keys(&["in/d.csv"]), "{}", server.name);
        for run_id in ["r3", "r4", "r5"] {
            assert!(
                storage.head(&ledger.run(run_id)).await.unwrap().is_some(),
                "{}: ledger of {run_id}",
                server.name
            );
        }
    }
}

/// Past the compaction threshold the run ledgers are merged into a snapshot, and what the
/// next run plans does not change.
#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_compacts_into_a_snapshot() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(dir.path(), &bucket);
    let runs = sluice::state::ledger::COMPACT_AFTER + 1;
    for i in 0..runs {
        put(&storage, &bucket, &format!("in/k{i:02}.csv"), 1).await;
        let (got, _) = run(&storage, server, &bucket, &job, &format!("r{i:02}"), &[]).await;
        assert_eq!(got, keys(&[&format!("in/k{i:02}.csv")]));
    }
    let ledger = state::ledger(&bucket, JOB);
    let snapshot = storage
        .get_bytes(&ledger.snapshot())
        .await
        .unwrap()
        .expect("a snapshot");
    let text = String::from_utf8(snapshot.to_vec()).unwrap();
    assert_eq!(text.lines().count(), runs + 1, "{text}");
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["runs"].as_array().unwrap().len(), runs);
    let left = storage.list(&ledger.runs_prefix()).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    put(&storage, &bucket, "in/k00.csv", 2).await;
    let (got, _) = run(&storage, server, &bucket, &job, "after", &[]).await;
    assert_eq!(got, keys(&["in/k00.csv"]));
}

/// `sluice gc` removes the state of runs never published and untouched for the retention;
/// published runs and recent ones stay. `--dry-run` lists without removing.
#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_the_state_of_abandoned_runs_only() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    let put_state = |uri: S3Uri| {
        let storage = storage.clone();
        async move {
            storage
                .put_bytes(&uri, Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
    };
    let abandoned = state::run(&bucket, "j", "abandoned");
    for uri in [
        abandoned.job(),
        abandoned.plan(),
        abandoned.progress(0),
        abandoned.done_batch(0, "x"),
    ] {
        put_state(uri).await;
    }
    let published = state::run(&bucket, "j", "published");
    for uri in [published.plan(), published.report(), published.success()] {
        put_state(uri).await;
    }
    let other_job = state::run(&bucket, "other", "abandoned");
    put_state(other_job.plan()).await;
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let recent = state::run(&bucket, "j", "recent");
    put_state(recent.plan()).await;
    put_state(recent.progress(0)).await;

    let dir = tempfile::tempdir().unwrap();
    let job = JobYaml::new("j")
        .source(format!("s3://{bucket}/in/"), "csv")
        .sink(format!("s3://{bucket}/out/"))
        .write(dir.path().join("job.yaml"));
    let state_keys = || async {
        storage
            .list(&state::root(&bucket))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect::<Vec<_>>()
    };
    let before = state_keys().await;
    let out = sluice(
        &[
            "gc",
            job.to_str().unwrap(),
            "--state-retention",
            "3s",
            "--dry-run",
        ],
        server,
        job.parent().unwrap(),
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("would remove abandoned run abandoned (")
            && stdout.contains("4 object(s)")
            && stdout.contains("would remove the state of 1 abandoned run(s); kept 1 published and 1 written to within 3s"),
        "{stdout}"
    );
    assert_eq!(state_keys().await, before);

    let out = sluice(
        &["gc", job.to_str().unwrap(), "--state-retention", "3s"],
        server,
        job.parent().unwrap(),
    );
    assert_eq!(out.status.code(), Some(0));
    let after = state_keys().await;
    let expected: Vec<String> = before
        .into_iter()
        .filter(|k| !k.starts_with(&abandoned.root().key))
        .collect();
    assert_eq!(after, expected);
    assert!(after.contains(&other_job.plan().key));
    assert!(after.contains(&recent.plan().key));
    assert!(after.contains(&published.success().key));
}
