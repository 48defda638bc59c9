//! The local pod runner executing rendered worker Jobs against the embedded S3 server:
//! sidecars started first and stopped after, readiness, retries judged by the Job's own
//! podFailurePolicy and backoffLimitPerIndex, maxFailedIndexes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice::exit::ExitCode;
use sluice::kubernetes::render::{Target, WorkerPlan, launcher_job, worker_job};
use sluice::pod::{LocalPodRunner, PodOutput, ShardOutcome};
use sluice::run::start::{make_plan, write_run};
use sluice::spec;
use sluice::state::RunLayout;
use sluice::storage::uri::S3Uri;

use crate::support::{self, free_port, kubeval::check_manifests};

const SLUICE_IMAGE: &str = "sluice:test";

/// A planned run of `objects` CSV objects and its rendered worker Job (one shard each).
async fn rendered(objects: usize, retries: u32) -> KubeJob {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    for i in 0..objects {
        let uri: S3Uri = format!("s3://{bucket}/in/{i}.csv").parse().unwrap();
        storage
            .put_bytes(&uri, format!("id\n{i}\n").into())
            .await
            .unwrap();
    }
    let yaml = format!(
        "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata: {{name: pods}}
spec:
  source: {{uri: s3://{bucket}/in/, format: csv}}
  sink: {{uri: s3://{bucket}/out/, format: csv}}
  shards: {objects}
  parallelism: 2
  retries: {retries}
"
    );
    let loaded = spec::load_str(&yaml, "pods.yaml", &[]).unwrap();
    let job = &loaded.job;
    let run_id = "pods-20261122T000000Z";
    let layout = RunLayout::new(&job.state, &job.name, run_id);
    let plan = make_plan(&storage, job, run_id, false).await.unwrap();
    write_run(&storage, &layout, &plan, &loaded.resolved_yaml)
        .await
        .unwrap();
    let target = Target::new(job, Some(SLUICE_IMAGE), None, run_id.into());
    worker_job(
        job,
        &target,
        &WorkerPlan::all(layout.plan(), plan.shards.len() as u32),
    )
}

fn runner(
    local_commands: BTreeMap<String, Vec<String>>,
    extra: &[(&str, String)],
) -> LocalPodRunner {
    let mut env = support::embedded().env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    LocalPodRunner {
        sluice_image: SLUICE_IMAGE.into(),
        program: PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
        local_commands,
        env,
        bar: false,
        cpus: None,
        output: PodOutput::Prefixed,
    }
}

/// A native sidecar serving HTTP on `port`, with a readiness probe on it.
fn add_sidecar(job: &mut KubeJob, probe_port: u16, failure_threshold: i32) {
    let pod = job.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.init_containers = Some(vec![Container {
        name: "transformer".into(),
        image: Some("python:3-slim".into()),
        restart_policy: Some("Always".into()),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/".into()),
                port: IntOrString::Int(probe_port as i32),
                ..Default::default()
            }),
            period_seconds: Some(1),
            failure_threshold: Some(failure_threshold),
            ..Default::default()
        }),
        ..Default::default()
    }]);
}

fn http_server(port: u16) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([(
        "transformer".to_string(),
        [
            "python3",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ]
        .map(String::from)
        .to_vec(),
    )])
}

fn exits(outcomes: &[ShardOutcome]) -> Vec<(ExitCode, u32)> {
    outcomes.iter().map(|o| (o.exit, o.attempts)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_runs_beside_each_worker_until_it_exits() {
    let mut job = rendered(2, 0).await;
    let port = free_port();
    add_sidecar(&mut job, port, 30);
    check_manifests(&serde_yaml_ng::to_string(&job).unwrap()).unwrap();
    let outcomes = runner(http_server(port), &[])
        .run(&job, None)
        .await
        .unwrap();
    assert_eq!(exits(&outcomes), [(ExitCode::Done, 1), (ExitCode::Done, 1)]);
    // The sidecar is stopped once the last worker exited.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_never_gets_ready_fails_the_pod_with_the_reason() {
    let mut job = rendered(1, 0).await;
    let port = free_port();
    // The probe looks at a port nobody listens on.
    add_sidecar(&mut job, free_port(), 2);
    let outcomes = runner(http_server(port), &[])
        .run(&job, None)
        .await
        .unwrap();
    assert_eq!(exits(&outcomes), [(ExitCode::Transient, 1)]);
    assert!(
        outcomes[0].last_lines[0].contains("not ready after"),
        "{:?}",
        outcomes[0].last_lines
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_a_local_command_is_refused_before_anything_runs() {
    let mut job = rendered(1, 0).await;
    add_sidecar(&mut job, free_port(), 1);
    let error = runner(BTreeMap::new(), &[])
        .run(&job, None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("python:3-slim"), "{error}");
    assert!(error.to_string().contains("local.command"), "{error}");
}

/// The worker container through a shell that exits with `$FAIL_WITH` on the first attempt
/// of each index (marked in `$FLAGS`), then runs the real worker.
fn flaky(job: &mut KubeJob) -> BTreeMap<String, Vec<String>> {
    let pod = job.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers[0].image = Some("flaky".into());
    pod.containers[0].command = Some(vec!["ignored".into()]);
    let script = r#"flag="$FLAGS/$JOB_COMPLETION_INDEX"
if [ -e "$flag" ]; then exec "$SLUICE" "$@"; fi
touch "$flag"; exit "$FAIL_WITH""#;
    BTreeMap::from([(
        "worker".to_string(),
        vec!["sh".into(), "-c".into(), script.into(), "sh".into()],
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_within_backoff_limit_per_index() {
    let mut job = rendered(2, 1).await;
    let commands = flaky(&mut job);
    let flags = tempfile::tempdir().unwrap();
    let env = [
        ("FLAGS", flags.path().display().to_string()),
        ("SLUICE", env!("CARGO_BIN_EXE_sluice").to_string()),
        ("FAIL_WITH", "1".to_string()),
    ];
    let outcomes = runner(commands, &env).run(&job, None).await.unwrap();
    assert_eq!(exits(&outcomes), [(ExitCode::Done, 2), (ExitCode::Done, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_exit_fails_the_index_at_once_and_max_failed_indexes_stops_the_job() {
    let mut job = rendered(3, 2).await;
    let commands = flaky(&mut job);
    let flags = tempfile::tempdir().unwrap();
    let env = [
        ("FLAGS", flags.path().display().to_string()),
        ("SLUICE", env!("CARGO_BIN_EXE_sluice").to_string()),
        ("FAIL_WITH", "3".to_string()),
    ];
    // Exit 3 is FailIndex in the rendered podFailurePolicy: no retry despite retries: 2.
    let outcomes = runner(commands.clone(), &env)
        .run(&job, None)
        .await
        .unwrap();
    assert_eq!(
        exits(&outcomes),
        [
            (ExitCode::Validation, 1),
            (ExitCode::Validation, 1),
            (ExitCode::Validation, 1)
        ]
    );
    // With maxFailedIndexes 0 and one pod at a time, the first failure stops the Job.
    let flags = tempfile::tempdir().unwrap();
    let env = [
        ("FLAGS", flags.path().display().to_string()),
        ("SLUICE", env!("CARGO_BIN_EXE_sluice").to_string()),
        ("FAIL_WITH", "3".to_string()),
    ];
    let spec = job.spec.as_mut().unwrap();
    spec.max_failed_indexes = Some(0);
    spec.parallelism = Some(1);
    let outcomes = runner(commands, &env).run(&job, None).await.unwrap();
    let started: Vec<u32> = outcomes.iter().map(|o| o.attempts).collect();
    assert_eq!(
        started.iter().filter(|a| **a > 0).count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| o.exit != ExitCode::Done));
}

/// A permanent failure of the launcher (exit 2, 3 or 4) fails its Job at once: its
/// podFailurePolicy says FailJob, so a run that failed validation is not run again three
/// times; a transient one is retried up to `backoffLimit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_does_not_relaunch_a_permanent_failure() {
    let yaml = "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata: {name: pods}
spec:
  source: {uri: s3://bucket/in/, format: csv}
  sink: {uri: s3://bucket/out/, format: csv}
";
    let loaded = spec::load_str(yaml, "pods.yaml", &[]).unwrap();
    let target = Target::new(
        &loaded.job,
        Some(SLUICE_IMAGE),
        None,
        "pods-20261122T000000Z".into(),
    );
    let mut job = launcher_job(&loaded.job, &target);
    check_manifests(&serde_yaml_ng::to_string(&job).unwrap()).unwrap();
    let pod = job.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers[0].image = Some("launcher-stub".into());
    let count = tempfile::tempdir().unwrap();
    let commands = BTreeMap::from([(
        "launcher".to_string(),
        [
            "sh",
            "-c",
            r#"echo run >> "$COUNT/runs"; exit "$FAIL_WITH""#,
        ]
        .map(String::from)
        .to_vec(),
    )]);
    let runs = |code: &str| {
        let env = [
            ("COUNT", count.path().display().to_string()),
            ("FAIL_WITH", code.to_string()),
        ];
        let (runner, job) = (runner(commands.clone(), &env), job.clone());
        let file = count.path().join("runs");
        let _ = std::fs::remove_file(&file);
        async move {
            let outcomes = runner.run(&job, None).await.unwrap();
            let lines = std::fs::read_to_string(&file).unwrap();
            (exits(&outcomes), lines.lines().count())
        }
    };
    assert_eq!(runs("3").await, (vec![(ExitCode::Validation, 1)], 1));
    assert_eq!(runs("2").await, (vec![(ExitCode::Config, 1)], 1));
    // backoffLimit 3: the first pod and three more.
    assert_eq!(runs("1").await, (vec![(ExitCode::Transient, 4)], 4));
}
