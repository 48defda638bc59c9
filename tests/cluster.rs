//! Submit, watch, status, logs, cancel and resume against an in-memory Kubernetes API
//! (kube-fake-client). The test Job controller (support/controller.rs) plays the cluster's
//! part: it executes each worker Job with the local pod runner (real workers against the embedded S3 server) and
//! moves the Job's status through success, failed indexes and disruptions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::api::Api;
use sluice::exit::ExitCode;
use sluice::kubernetes::cluster::{COMPLETION_INDEX_LABEL, Cluster};
use sluice::kubernetes::render::Target;
use sluice::run::submit;
use sluice::spec;
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::controller::{Controller, Kubelet, Script};
use crate::support::{self, TestServer};

const NAMESPACE: &str = "etl";
const POLL: Duration = Duration::from_millis(100);

/// A bucket with `objects` small CSV objects and a job file over it.
async fn setup(objects: usize) -> (Storage, spec::Loaded, &'static TestServer) {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    for i in 0..objects {
        let mut body = String::from("id,name\n");
        for row in 0..50 {
            body.push_str(&format!("{row},object-{i}-row-{row}\n"));
        }
        let uri: S3Uri = format!("s3://{bucket}/in/part-{i}.csv").parse().unwrap();
        storage.put_bytes(&uri, body.into()).await.unwrap();
    }
    let yaml = format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: cluster-test
spec:
  source:
    uri: s3://{bucket}/in/
    format: csv
  sink:
    uri: s3://{bucket}/out/
    format: jsonl
  shards: {objects}
  parallelism: 2
  retries: 1
  kubernetes:
    namespace: {NAMESPACE}
"
    );
    let loaded = spec::load_str(&yaml, "cluster-test.yaml", &[]).unwrap();
    (storage, loaded, server)
}

async fn fake_client() -> kube::Client {
    kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap()
}

fn target(loaded: &spec::Loaded, run_id: &str) -> Target {
    Target::new(&loaded.job, Some("sluice:test"), None, run_id.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watches_a_job_to_completion_and_publishes() {
    let (storage, loaded, server) = setup(3).await;
    let client = fake_client().await;
    let cluster = Cluster::new(client.clone(), NAMESPACE);
    let controller = workers(client.clone(), server, vec![Script::Run]);
    let run_id = "cluster-test-20261122T020000Z";
    let target = target(&loaded, run_id);
    let started = chrono::Utc::now();
    let submitted = submit::submit(&storage, &cluster, &loaded, &target, true)
        .await
        .unwrap();
    assert_eq!(submitted.plan.shards.len(), 3);
    let report = submit::watch_and_publish(&storage, &cluster, run_id, None, started, POLL, false)
        .await
        .unwrap();
    assert_eq!(report.exit_code, 0, "{report:?}");
    assert_eq!(report.objects_done, 3);
    assert_eq!(report.records.output, 150);
    assert!(
        storage
            .get_bytes(&submitted.layout.success())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(controller.jobs_handled(), ["cluster-test-20261122t020000z"]);
    // The ConfigMap holds the resolved job; submitting the same run id again is a no-op.
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), NAMESPACE);
    let map = maps.get("cluster-test-20261122t020000z-job").await.unwrap();
    assert_eq!(map.data.unwrap()["job.yaml"], loaded.resolved_yaml);
    let again = submit::submit(&storage, &cluster, &loaded, &target, true)
        .await
        .unwrap();
    assert_eq!(again.job, submitted.job);
    assert_eq!(cluster.worker_jobs(run_id).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_index_fails_the_run_and_resume_reruns_only_that_shard() {
    let (storage, loaded, server) = setup(3).await;
    let client = fake_client().await;
    let cluster = Cluster::new(client.clone(), NAMESPACE);
    let controller = workers(
        client.clone(),
        server,
        vec![Script::FailIndex { index: 1, exit: 1 }, Script::Run],
    );
    let run_id = "cluster-test-20261122T030000Z";
    let started = chrono::Utc::now();
    let submitted = submit::submit(&storage, &cluster, &loaded, &target(&loaded, run_id), true)
        .await
        .unwrap();
    let report = submit::watch_and_publish(&storage, &cluster, run_id, None, started, POLL, false)
        .await
        .unwrap();
    assert_eq!(report.exit_code, ExitCode::Transient.code());
    assert!(
        storage
            .get_bytes(&submitted.layout.success())
            .await
            .unwrap()
            .is_none()
    );
    let failed_shard = report.shards.iter().find(|s| s.index == 1).unwrap();
    assert_eq!(failed_shard.exit_code, 1);
    assert!(
        failed_shard
            .last_lines
            .iter()
            .any(|l| l.contains("exited with 1")),
        "{:?}",
        failed_shard.last_lines
    );

    let status = submit::status(&storage, &cluster, run_id, None)
        .await
        .unwrap();
    assert_eq!(status.completed(), BTreeSet::from([0, 2]));
    assert_eq!(status.failed(), BTreeSet::from([1]));
    // Logs find the pods of one completion index.
    let pods = cluster.worker_pods(run_id, Some(1)).await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(
        pods[0].metadata.labels.as_ref().unwrap()[COMPLETION_INDEX_LABEL],
        "1"
    );

    let resumed = submit::resume(&storage, &cluster, run_id, None, None)
        .await
        .unwrap()
        .unwrap();
    let jobs = cluster.worker_jobs(run_id).await.unwrap();
    assert_eq!(jobs.len(), 2);
    let resume_job = jobs
        .iter()
        .find(|j| j.metadata.name.as_deref() == Some(resumed.job.as_str()))
        .unwrap();
    let spec = resume_job.spec.as_ref().unwrap();
    assert_eq!(spec.completions, Some(1));
    let args = spec.template.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args[args.len() - 2..], ["--shard-map", "1"]);
    let report = submit::watch_and_publish(&storage, &cluster, run_id, None, started, POLL, false)
        .await
        .unwrap();
    assert_eq!(report.exit_code, 0, "{report:?}");
    assert_eq!(report.records.output, 150);
    assert!(
        storage
            .get_bytes(&submitted.layout.success())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(controller.jobs_handled().len(), 2);
    // A complete run has nothing left to resume.
    assert!(
        submit::resume(&storage, &cluster, run_id, None, None)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disruption_does_not_fail_the_run_and_permanent_exits_fail_the_index() {
    let (storage, loaded, server) = setup(2).await;
    let client = fake_client().await;
    let cluster = Cluster::new(client.clone(), NAMESPACE);
    let _controller = workers(
        client.clone(),
        server,
        vec![
            Script::Disrupt { index: 0 },
            Script::FailIndex { index: 0, exit: 3 },
        ],
    );
    let run_id = "cluster-test-20261122T040000Z";
    let started = chrono::Utc::now();
    submit::submit(&storage, &cluster, &loaded, &target(&loaded, run_id), true)
        .await
        .unwrap();
    let report = submit::watch_and_publish(&storage, &cluster, run_id, None, started, POLL, false)
        .await
        .unwrap();
    assert_eq!(report.exit_code, 0, "{report:?}");
    assert_eq!(cluster.worker_pods(run_id, Some(0)).await.unwrap().len(), 2);

    let run_id = "cluster-test-20261122T050000Z";
    submit::submit(&storage, &cluster, &loaded, &target(&loaded, run_id), true)
        .await
        .unwrap();
    let report = submit::watch_and_publish(&storage, &cluster, run_id, None, started, POLL, false)
        .await
        .unwrap();
    assert_eq!(report.exit_code, ExitCode::Validation.code());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_deletes_the_runs_jobs_and_pods_and_status_names_a_missing_run() {
    let (storage, loaded, server) = setup(2).await;
    let client = fake_client().await;
    let cluster = Cluster::new(client.clone(), NAMESPACE);
    let controller = workers(client.clone(), server, vec![Script::Run]);
    let run_id = "cluster-test-20261122T060000Z";
    let started = chrono::Utc::now();
    submit::submit(&storage, &cluster, &loaded, &target(&loaded, run_id), true)
        .await
        .unwrap();
    submit::watch_and_publish(&storage, &cluster, run_id, None, started, POLL, false)
        .await
        .unwrap();
    drop(controller);
    assert_eq!(cluster.worker_pods(run_id, None).await.unwrap().len(), 2);
    let deleted = cluster.delete_run(run_id).await.unwrap();
    assert_eq!(deleted, ["cluster-test-20261122t060000z"]);
    assert!(cluster.worker_jobs(run_id).await.unwrap().is_empty());
    assert!(cluster.worker_pods(run_id, None).await.unwrap().is_empty());
    let error = submit::status(&storage, &cluster, run_id, None)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("no worker Job of run"),
        "{error}"
    );
    assert_eq!(
        sluice::cli::exit_code_of(&anyhow::Error::new(error)),
        ExitCode::Config
    );
}

/// A cancelled run is not a dead end: its state in the bucket is enough, without its worker
/// Job: status reports it and resume publishes it; a submit watching the run says it was cancelled (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_is_reported_from_the_bucket_and_resume_finishes_it() {
    let (storage, loaded, server) = setup(3).await;
    let client = fake_client().await;
    let cluster = Cluster::new(client.clone(), NAMESPACE);
    // The first Job never gets its pods (cancelled while pending); the resume Job runs.
    let controller = workers(client.clone(), server, vec![Script::Hold, Script::Run]);
    let run_id = "cluster-test-20261122T070000Z";
    let started = chrono::Utc::now();
    let submitted = submit::submit(&storage, &cluster, &loaded, &target(&loaded, run_id), true)
        .await
        .unwrap();
    let watcher = {
        let (storage, cluster) = (storage.clone(), cluster.clone());
        tokio::spawn(async move {
            submit::watch_and_publish(&storage, &cluster, run_id, None, started, POLL, false).await
        })
    };
    tokio::time::sleep(POLL * 5).await;
    assert_eq!(
        cluster.delete_run(run_id).await.unwrap(),
        ["cluster-test-20261122t070000z"]
    );
    let error = watcher.await.unwrap().unwrap_err();
    assert!(error.to_string().contains("was cancelled"), "{error}");
    assert!(
        error
            .to_string()
            .contains(&submitted.layout.root().to_string()),
        "{error}"
    );
    assert_eq!(
        sluice::cli::exit_code_of(&anyhow::Error::new(error)),
        ExitCode::Transient
    );

    // No Job is left: the bucket says what is done (nothing) and where the run is.
    let layout = submitted.layout.clone();
    let status = submit::status(&storage, &cluster, run_id, Some(&layout))
        .await
        .unwrap();
    assert!(status.jobs.is_empty());
    assert!(status.completed().is_empty());
    assert!(!status.published);
    let shown = sluice::cli::status::render(&status);
    assert!(shown.contains("no Jobs of the run are left"), "{shown}");

    let resumed = submit::resume(
        &storage,
        &cluster,
        run_id,
        Some(&layout),
        Some("sluice:test"),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resumed.job, "cluster-test-20261122t070000z-resume-1");
    let report = submit::watch_and_publish(
        &storage,
        &cluster,
        run_id,
        Some(&layout),
        started,
        POLL,
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.exit_code, 0, "{report:?}");
    assert_eq!(report.records.output, 150);
    assert!(storage.head(&layout.success()).await.unwrap().is_some());
    assert_eq!(controller.jobs_handled().len(), 2);

    // Its Jobs gone again (their TTL), the run still reads as complete and published.
    cluster.delete_run(run_id).await.unwrap();
    let status = submit::status(&storage, &cluster, run_id, Some(&layout))
        .await
        .unwrap();
    assert_eq!(status.completed(), BTreeSet::from([0, 1, 2]));
    assert!(status.published);
    assert!(
        submit::resume(&storage, &cluster, run_id, Some(&layout), None)
            .await
            .unwrap()
            .is_none()
    );
}

/// The report's attempts count pods, not Jobs: an evicted pod and its replacement are two
/// attempts of the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_every_pod_of_a_shard_as_an_attempt() {
    let (storage, loaded, server) = setup(2).await;
    let client = fake_client().await;
    let cluster = Cluster::new(client.clone(), NAMESPACE);
    let _controller = workers(client.clone(), server, vec![Script::Disrupt { index: 1 }]);
    let run_id = "cluster-test-20261122T080000Z";
    let started = chrono::Utc::now();
    submit::submit(&storage, &cluster, &loaded, &target(&loaded, run_id), true)
        .await
        .unwrap();
    let report = submit::watch_and_publish(&storage, &cluster, run_id, None, started, POLL, false)
        .await
        .unwrap();
    let attempts: Vec<(u32, u32)> = report
        .shards
        .iter()
        .map(|s| (s.index, s.attempts))
        .collect();
    assert_eq!(attempts, [(0, 1), (1, 2)]);
}

/// The test controller for the worker Jobs of `namespace`, running real workers against
/// the test's S3 server.
fn workers(client: kube::Client, server: &'static TestServer, scripts: Vec<Script>) -> Controller {
    let kubelet = Kubelet {
        sluice_image: None,
        local_commands: BTreeMap::new(),
        env: server.env(),
    };
    Controller::start(
        client,
        NAMESPACE,
        "sluice.dev/component=worker",
        kubelet,
        scripts,
    )
}
