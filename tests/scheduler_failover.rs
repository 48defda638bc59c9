//! Scheduler failover with a run in flight on a cluster: which runs are running
//! was kept only in the leader's memory, so a replica taking over the Lease started the
//! next fire beside the old leader's run (Forbid broken) and the old run stayed `started`
//! in the history for ever. The new leader now adopts it from the history and the cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice::schedule::daemon::Scheduler;
use sluice::schedule::fire::Executor;
use sluice::schedule::leader::LeaseLock;
use sluice::schedule::metrics::Metrics;
use sluice::spec::schedule::load_schedule_file;
use sluice::state::history::FireStatus;
use sluice::storage::uri::S3Uri;

use crate::support::controller::{Controller, Kubelet, Script};
use crate::support::scheduling::{history, utc};
use crate::support::{self, state};

const NAMESPACE: &str = "etl";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_adopts_the_run_in_flight_and_forbid_holds_the_next_fire() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    for i in 0..2 {
        let uri = S3Uri::new(bucket.clone(), format!("in/{i}.csv"));
        let body = format!("id,fare\n{i}1,1.5\n{i}2,2.5\n");
        storage.put_bytes(&uri, body.into()).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fares.yaml"),
        format!(
            r#"apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: fares
spec:
  params:
    hour: none
  source:
    uri: s3://{bucket}/in/
    format: csv
  sink:
    uri: s3://{bucket}/out/{{{{ params.hour }}}}/
    format: jsonl
  shards: 1
  retries: 0
  kubernetes:
    namespace: {NAMESPACE}
"#
        ),
    )
    .unwrap();
    let schedule_file = dir.path().join("fares-hourly.yaml");
    std::fs::write(
        &schedule_file,
        r#"apiVersion: sluice.dev/v1alpha1
kind: Schedule
metadata:
  name: fares-hourly
spec:
  cron: "@hourly"
  target: fares.yaml
  params:
    hour: "{{ interval.start | format('%Y%m%dT%H', 'UTC') }}"
  concurrencyPolicy: Forbid
"#,
    )
    .unwrap();

    let client = support::atomic_fake_api().await;
    // The 10:00 run's Job stays pending until the gate opens; later Jobs run at once.
    let gate = Arc::new(tokio::sync::Notify::new());
    let kubelet = Kubelet {
        sluice_image: None,
        local_commands: BTreeMap::new(),
        env: server.env(),
    };
    let controller = Controller::start(
        client.clone(),
        NAMESPACE,
        "sluice.dev/component=worker",
        kubelet,
        vec![Script::Gate(gate.clone())],
    );
    let replica = |id: &str| {
        let executor = Executor::Cluster {
            client: client.clone(),
            image: Some("sluice:test".into()),
            namespace: None,
            poll: Duration::from_millis(100),
        };
        Scheduler::new(
            vec![load_schedule_file(&schedule_file).unwrap()],
            storage.clone(),
            executor,
            Arc::new(Metrics::default()),
        )
        .with_lease(LeaseLock::new(
            client.clone(),
            NAMESPACE,
            "sluice-scheduler",
            id,
            15,
        ))
    };
    let state_prefix = format!("s3://{bucket}/_sluice/");
    let records = || history(&storage, &state_prefix, "fares-hourly");
    let ten = "fares-20261122T1000Z";

    // a leads and starts 10:00, whose Job is pending; then a goes away.
    let mut a = replica("a");
    let fired = a.tick(utc("2026-11-22T10:00:05Z")).await.unwrap();
    assert_eq!(fired.started, [ten]);
    drop(a);

    // b takes the expired Lease: it adopts 10:00 and does not fire it again.
    let mut b = replica("b");
    let outcome = b.tick(utc("2026-11-22T10:00:30Z")).await.unwrap();
    assert_eq!(outcome.adopted, [ten]);
    assert!(outcome.started.is_empty(), "{outcome:?}");
    // 11:00 is due while 10:00 still runs: Forbid makes it wait.
    let outcome = b.tick(utc("2026-11-22T11:00:05Z")).await.unwrap();
    assert!(outcome.started.is_empty(), "{outcome:?}");
    assert_eq!(outcome.waiting, 1);
    assert_eq!(b.running()["fares-hourly"], [ten]);
    assert_eq!(records().await[0].status, FireStatus::Started);

    // The Job runs; b watches it to its end, publishes the run once and records it.
    gate.notify_one();
    let exits = b.wait_idle().await;
    assert_eq!(exits[ten], 0, "{exits:?}");
    let layout = state::run(&bucket, "fares", ten);
    assert!(storage.head(&layout.success()).await.unwrap().is_some());
    let report = state::json(&storage, &layout.report()).await.unwrap();
    assert_eq!(report["records"]["output"], 4);
    let ended = records().await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].status, FireStatus::Succeeded);
    assert_eq!(ended[0].exit_code, Some(0));

    // Now 11:00 starts; 10:00 had one worker Job, never a second.
    let outcome = b.tick(utc("2026-11-22T11:00:10Z")).await.unwrap();
    assert_eq!(outcome.started, ["fares-20261122T1100Z"]);
    b.wait_idle().await;
    let statuses: Vec<(String, FireStatus)> = records()
        .await
        .into_iter()
        .map(|r| (r.run_id, r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (ten.to_string(), FireStatus::Succeeded),
            ("fares-20261122T1100Z".to_string(), FireStatus::Succeeded)
        ]
    );
    assert_eq!(
        controller.jobs_handled(),
        ["fares-20261122t1000z", "fares-20261122t1100z"]
    );
}
