//! The cluster path against the strict API layer (support/strict_api.rs): what a real API
//! server would refuse or do that the in-memory fake does not. Names (a 58-character job
//! name), RBAC from manifests/ for every call the launcher and the scheduler make, and the
//! run's ConfigMap going with its Job (TTL and cancel).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use sluice::kubernetes::cluster::Cluster;
use sluice::kubernetes::render::{Target, config_map, config_map_name, worker_job_name};
use sluice::run::submit;
use sluice::spec;
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::controller::{Controller, Kubelet, Script};
use crate::support::strict_api::StrictApi;
use crate::support::{self, TestServer};

const NAMESPACE: &str = "sluice";
const POLL: Duration = Duration::from_millis(100);
/// 58 characters: the worker Job's name used to leave no room for the completion index.
const LONG_NAME: &str = "nightly-taxi-trips-from-the-raw-landing-zone-to-the-lake-x";

async fn setup(
    server: &'static TestServer,
    name: &str,
    objects: usize,
) -> (Storage, spec::Loaded, &'static TestServer) {
    let (storage, bucket) = server.fresh().await;
    for i in 0..objects {
        let uri: S3Uri = format!("s3://{bucket}/in/part-{i}.csv").parse().unwrap();
        storage
            .put_bytes(&uri, format!("id,name\n{i},row-{i}\n").into())
            .await
            .unwrap();
    }
    let yaml = format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: {name}
spec:
  source: {{uri: s3://{bucket}/in/, format: csv}}
  sink: {{uri: s3://{bucket}/out/, format: jsonl}}
  shards: {objects}
  kubernetes:
    namespace: {NAMESPACE}
    ttlSecondsAfterFinished: 600
"
    );
    let loaded = spec::load_str(&yaml, "strict.yaml", &[]).unwrap();
    (storage, loaded, server)
}

/// The Job controller, acting with the cluster's own rights.
fn workers(api: &StrictApi, server: &'static TestServer) -> Controller {
    let kubelet = Kubelet {
        sluice_image: None,
        local_commands: BTreeMap::new(),
        env: server.env(),
    };
    Controller::start(
        api.client_as(None),
        NAMESPACE,
        "sluice.dev/component=worker",
        kubelet,
        vec![Script::Run],
    )
}

async fn config_map_exists(api: &StrictApi, run_id: &str) -> bool {
    let maps: Api<ConfigMap> = Api::namespaced(api.client_as(None), NAMESPACE);
    maps.get_opt(&config_map_name(run_id))
        .await
        .unwrap()
        .is_some()
}

#[test]
fn the_layer_reads_the_roles_of_manifests() {
    let rbac = crate::support::strict_api::Rbac::from_manifests();
    assert_eq!(
        rbac.accounts(),
        ["sluice-launcher", "sluice-pipeline", "sluice-scheduler"]
    );
}

/// The scheduler's path (it creates the ConfigMap): a 58-character job name submits, every
/// call is granted, and the ConfigMap goes when the Job's TTL deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_58_character_job_name_submits_and_its_config_map_goes_with_its_job() {
    assert_eq!(LONG_NAME.len(), 58);
    // moto: the embedded server (s3s-fs) keeps each key's metadata in a file named by the
    // key in base64, which a key this long (the state keys hold the job name twice) makes
    // longer than a file name may be.
    let Some(server) = support::moto() else {
        return;
    };
    let (storage, loaded, server) = setup(server, LONG_NAME, 2).await;
    let api = StrictApi::new().await;
    let _controller = workers(&api, server);
    let cluster = Cluster::new(api.client_as(Some("sluice-scheduler")), NAMESPACE);
    let run_id = format!("{LONG_NAME}-20261122T0200Z");
    let target = Target::new(&loaded.job, Some("sluice:test"), None, run_id.clone());
    let started = chrono::Utc::now();
    let submitted = submit::submit(&storage, &cluster, &loaded, &target, true)
        .await
        .unwrap();
    assert_eq!(submitted.job, worker_job_name(&run_id, None));
    let report = submit::watch_and_publish(&storage, &cluster, &run_id, None, started, POLL, false)
        .await
        .unwrap();
    assert_eq!(report.exit_code, 0, "{report:?}");
    assert_eq!(api.denied(), Vec::<String>::new());
    assert!(config_map_exists(&api, &run_id).await);
    // ttlSecondsAfterFinished passes: the Job goes, and its ConfigMap and pods with it.
    api.advance(Duration::from_secs(601)).await;
    let jobs: Api<KubeJob> = Api::namespaced(api.client_as(None), NAMESPACE);
    assert!(jobs.get_opt(&submitted.job).await.unwrap().is_none());
    assert!(!config_map_exists(&api, &run_id).await);
    let pods = cluster.worker_pods(&run_id, None).await.unwrap();
    assert!(pods.is_empty(), "{pods:?}");
}

/// The launcher's path: the ConfigMap comes from `kubectl apply` of `sluice render`, the
/// launcher's calls are all granted to sluice-launcher, and cancel (the scheduler's
/// Replace, `sluice cancel`) takes the ConfigMap with the Jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_needs_only_its_role_and_cancel_takes_the_config_map() {
    let (storage, loaded, server) = setup(support::embedded(), "strict-launcher", 2).await;
    let api = StrictApi::new().await;
    let _controller = workers(&api, server);
    let run_id = "strict-launcher-20261122T030000Z";
    let target = Target::new(&loaded.job, Some("sluice:test"), None, run_id.into());
    let maps: Api<ConfigMap> = Api::namespaced(api.client_as(None), NAMESPACE);
    maps.create(
        &PostParams::default(),
        &config_map(&loaded.job, &loaded.resolved_yaml, &target),
    )
    .await
    .unwrap();
    let launcher = Cluster::new(api.client_as(Some("sluice-launcher")), NAMESPACE);
    let started = chrono::Utc::now();
    submit::submit(&storage, &launcher, &loaded, &target, false)
        .await
        .unwrap();
    let report = submit::watch_and_publish(&storage, &launcher, run_id, None, started, POLL, false)
        .await
        .unwrap();
    assert_eq!(report.exit_code, 0, "{report:?}");
    assert_eq!(api.denied(), Vec::<String>::new());
    // The launcher may not delete Jobs; the scheduler (and a user's `sluice cancel`) may.
    assert!(launcher.delete_run(run_id).await.is_err());
    assert_eq!(api.denied().len(), 1, "{:?}", api.denied());
    let scheduler = Cluster::new(api.client_as(Some("sluice-scheduler")), NAMESPACE);
    let deleted = scheduler.delete_run(run_id).await.unwrap();
    assert_eq!(deleted, [worker_job_name(run_id, None)]);
    assert!(!config_map_exists(&api, run_id).await);
}

/// The layer refuses what a real API server refuses: an Indexed Job whose pods' hostname
/// `<job>-<highest index>` is longer than 63 characters, a CronJob name over 52.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_a_real_api_server_refuses_are_refused() {
    let api = StrictApi::new().await;
    let jobs: Api<KubeJob> = Api::namespaced(api.client_as(None), NAMESPACE);
    let job = |name: &str| -> KubeJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name},
            "spec": {"completionMode": "Indexed", "completions": 10, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap()
    };
    let error = jobs
        .create(&PostParams::default(), &job(&"j".repeat(62)))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("hostname"), "{error}");
    jobs.create(&PostParams::default(), &job(&"j".repeat(61)))
        .await
        .unwrap();
}
