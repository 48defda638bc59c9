//! End to end on a real cluster, when one is given:
//!
//! - `SLUICE_TEST_KUBECONFIG`: the kubeconfig of a cluster (kind, k3d, ...) on which
//!   `kubectl apply -k manifests/` was run;
//! - `SLUICE_TEST_IMAGE`: a sluice image the cluster can pull (see docs/kubernetes.md);
//! - `SLUICE_TEST_S3_ENDPOINT`: an S3 endpoint that both this machine and the pods reach,
//!   with `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` for it here and in the Secret
//!   `sluice-test-s3` (keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) in the namespace.
//!
//! Without them the test is skipped, and fails instead when `SLUICE_REQUIRE_KUBERNETES=1`.

use std::process::Command;

use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

struct Cluster {
    kubeconfig: String,
    image: String,
    endpoint: String,
    access_key: String,
    secret_key: String,
}

fn cluster() -> Option<Cluster> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(Cluster {
            kubeconfig: get("SLUICE_TEST_KUBECONFIG")?,
            image: get("SLUICE_TEST_IMAGE")?,
            endpoint: get("SLUICE_TEST_S3_ENDPOINT")?,
            access_key: get("AWS_ACCESS_KEY_ID")?,
            secret_key: get("AWS_SECRET_ACCESS_KEY")?,
        })
    })();
    if found.is_none() {
        assert!(
            get("SLUICE_REQUIRE_KUBERNETES").as_deref() != Some("1"),
            "SLUICE_REQUIRE_KUBERNETES=1 but SLUICE_TEST_KUBECONFIG, SLUICE_TEST_IMAGE, SLUICE_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not set"
        );
        eprintln!("skipped: no cluster (set SLUICE_TEST_KUBECONFIG and friends to run it)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_runs_a_job_on_a_real_cluster_and_publishes_it() {
    let Some(cluster) = cluster() else { return };
    let storage =
        Storage::with_endpoint(&cluster.endpoint, &cluster.access_key, &cluster.secret_key).await;
    let bucket = crate::support::fresh_bucket(&storage).await;
    for i in 0..4 {
        let uri: S3Uri = format!("s3://{bucket}/in/{i}.csv").parse().unwrap();
        let mut body = String::from("id,value\n");
        for row in 0..1000 {
            body.push_str(&format!("{row},{}\n", row * i));
        }
        storage.put_bytes(&uri, body.into()).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("e2e.yaml");
    std::fs::write(
        &job,
        format!(
            "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata: {{name: e2e}}
spec:
  source: {{uri: s3://{bucket}/in/, format: csv}}
  sink: {{uri: s3://{bucket}/out/, format: parquet}}
  endpoint: {}
  shards: 2
  kubernetes:
    envFrom:
      - secretRef: {{name: sluice-test-s3}}
",
            cluster.endpoint
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "submit",
            job.to_str().unwrap(),
            "--image",
            &cluster.image,
            "--poll",
            "2",
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("AWS_ENDPOINT_URL", &cluster.endpoint)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4000"), "{stdout}");
    let outputs = storage
        .list(&format!("s3://{bucket}/out/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(outputs.len(), 4, "{outputs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_and_a_schedule_of_it_run_on_a_real_cluster_with_their_exit_codes_and_logs() {
    let Some(cluster) = cluster() else { return };
    let storage =
        Storage::with_endpoint(&cluster.endpoint, &cluster.access_key, &cluster.secret_key).await;
    let bucket = crate::support::fresh_bucket(&storage).await;
    let dir = tempfile::tempdir().unwrap();
    // busybox: prints its arguments and exits with the last one.
    std::fs::write(
        dir.path().join("echo-exit.yaml"),
        "apiVersion: sluice.dev/v1alpha1
kind: TaskDefinition
metadata: {name: e2e-echo-exit}
spec:
  cpu: 128
  memory: 64
  containerDefinitions:
    - name: main
      image: busybox:1.36
      entryPoint: [sh, -c, 'echo \"args: $*\"; for a; do last=$a; done; exit $last', echo-exit]
      command: ['0']
",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("echo-hourly.yaml"),
        format!(
            "apiVersion: sluice.dev/v1alpha1
kind: Schedule
metadata: {{name: e2e-echo-hourly}}
spec:
  cron: '@hourly'
  target: echo-exit.yaml
  args: [\"{{{{ interval.start | format('%H') }}}}\", '5']
  state: s3://{bucket}/schedules/
"
        ),
    )
    .unwrap();
    let sluice = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .current_dir(dir.path())
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("AWS_ENDPOINT_URL", &cluster.endpoint)
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let run = sluice(&[
        "task",
        "run",
        "echo-exit.yaml",
        "--kube",
        "--",
        "a",
        "b",
        "3",
    ]);
    assert_eq!(run.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&run.stdout).contains("args: a b 3"));
    let once = sluice(&["scheduler", "--schedules", ".", "--once", "--kube"]);
    assert_eq!(once.status.code(), Some(5));
    let history = storage
        .list(
            &format!("s3://{bucket}/schedules/schedules/e2e-echo-hourly/history/")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
}

/// `kubectl` against the test cluster; its stdout.
fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(["-n", "sluice"])
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `kubectl` until `done` holds for its output (two minutes at most).
fn eventually(cluster: &Cluster, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    for _ in 0..120 {
        let out = kubectl(cluster, args);
        if done(&out) {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("kubectl {args:?} never got there");
}

/// On a real API server: a 58-character job name submits (the worker Job's name
/// leaves room for the index), the run's ConfigMap is owned by its Job and goes with it at
/// cancel, and a launcher that exits 2 fails its Job at once (podFailurePolicy) instead of
/// running three more pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_config_map_cleanup_and_the_launcher_policy_hold_on_a_real_cluster() {
    let Some(cluster) = cluster() else { return };
    let storage =
        Storage::with_endpoint(&cluster.endpoint, &cluster.access_key, &cluster.secret_key).await;
    let bucket = crate::support::fresh_bucket(&storage).await;
    let uri: S3Uri = format!("s3://{bucket}/in/0.csv").parse().unwrap();
    storage.put_bytes(&uri, "id\n1\n".into()).await.unwrap();
    let name = "nightly-taxi-trips-from-the-raw-landing-zone-to-the-lake-x";
    assert_eq!(name.len(), 58);
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, source_bucket: &str| {
        std::fs::write(
            dir.path().join(file),
            format!(
                "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata: {{name: {name}}}
spec:
  source: {{uri: s3://{source_bucket}/in/, format: csv}}
  sink: {{uri: s3://{bucket}/out/, format: csv}}
  endpoint: {}
  kubernetes:
    envFrom:
      - secretRef: {{name: sluice-test-s3}}
",
                cluster.endpoint
            ),
        )
        .unwrap();
    };
    write("long.yaml", &bucket);
    let sluice = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .current_dir(dir.path())
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("AWS_ENDPOINT_URL", &cluster.endpoint)
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let run_id = format!("{name}-20261122T020000Z");
    let submit = sluice(&[
        "submit",
        "long.yaml",
        "--image",
        &cluster.image,
        "--run-id",
        &run_id,
        "--poll",
        "2",
    ]);
    assert_eq!(submit.status.code(), Some(0));
    let map = sluice::kubernetes::render::config_map_name(&run_id);
    let owner = kubectl(
        &cluster,
        &[
            "get",
            "configmap",
            &map,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}",
        ],
    );
    assert_eq!(owner, "Job");
    let cancel = sluice(&["cancel", &run_id, "--namespace", "sluice"]);
    assert_eq!(cancel.status.code(), Some(0));
    eventually(&cluster, &["get", "configmaps", "-o", "name"], |out| {
        !out.contains(&map)
    });

    // A source bucket that does not exist: the launcher exits 2, once.
    write("broken.yaml", "sluice-e2e-no-such-bucket");
    let broken_run = "launcher-policy-20261122T020000Z";
    let rendered = sluice(&[
        "render",
        "broken.yaml",
        "--image",
        &cluster.image,
        "--run-id",
        broken_run,
    ]);
    let mut apply = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(&rendered.stdout)
        .unwrap();
    assert!(apply.wait().unwrap().success());
    let launcher = sluice::kubernetes::render::launcher_job_name(broken_run);
    let reason = eventually(
        &cluster,
        &[
            "get",
            "job",
            &launcher,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
        ],
        |out| !out.is_empty(),
    );
    assert_eq!(reason, "PodFailurePolicy");
    let failed = kubectl(
        &cluster,
        &["get", "job", &launcher, "-o", "jsonpath={.status.failed}"],
    );
    assert_eq!(failed, "1");
    kubectl(&cluster, &["delete", "job", &launcher]);
}

/// A pipeline of two job steps, the second reading what the first published, driven by its
/// launcher inside the cluster (`submit --detach` creates the ConfigMap and launcher Job)
/// with the rights of `sluice-pipeline`; published once both steps are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_through_its_launcher_on_a_real_cluster() {
    let Some(cluster) = cluster() else { return };
    let storage =
        Storage::with_endpoint(&cluster.endpoint, &cluster.access_key, &cluster.secret_key).await;
    let bucket = crate::support::fresh_bucket(&storage).await;
    for i in 0..3 {
        let uri: S3Uri = format!("s3://{bucket}/in/{i}.csv").parse().unwrap();
        storage
            .put_bytes(&uri, format!("id,value\n{i}1,1\n{i}2,2\n").into())
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let job = |name: &str, source: &str, format: &str, extra: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata: {{name: {name}}}
spec:
  params: {{input: none, expected: 0}}
  source: {{uri: \"{source}\", format: {format}}}
{extra}  sink: {{uri: s3://{bucket}/{name}/, format: jsonl}}
  endpoint: {}
  shards: 1
  kubernetes:
    envFrom:
      - secretRef: {{name: sluice-test-s3}}
",
            cluster.endpoint
        )
    };
    std::fs::write(
        dir.path().join("first.yaml"),
        job("first", &format!("s3://{bucket}/in/"), "csv", ""),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("second.yaml"),
        job(
            "second",
            "{{ params.input }}",
            "jsonl",
            "  validate:\n    rules:\n      - {name: all, scope: run, sql: \"SELECT count(*) = {{ params.expected }} FROM output\"}\n",
        ),
    )
    .unwrap();
    let pipeline = dir.path().join("pipeline.yaml");
    std::fs::write(
        &pipeline,
        "apiVersion: sluice.dev/v1alpha1
kind: Pipeline
metadata: {name: e2e-pipeline}
spec:
  steps:
    - {name: first, job: first.yaml}
    - name: second
      job: second.yaml
      depends_on: [first]
      params: {input: \"{{ steps.first.output }}\", expected: \"{{ steps.first.records_out }}\"}
",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "submit",
            pipeline.to_str().unwrap(),
            "--image",
            &cluster.image,
            "--detach",
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let state: S3Uri = format!("s3://{bucket}/_sluice/").parse().unwrap();
    let layout = sluice::state::pipeline::PipelineLayout::new(&state, "e2e-pipeline", &run_id);
    for _ in 0..300 {
        if sluice::state::pipeline::is_published(&storage, &layout)
            .await
            .unwrap()
        {
            let record = sluice::state::pipeline::read_record(&storage, &layout)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(record.steps[1].params["expected"], "6");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    panic!(
        "pipeline run {run_id} was not published within 5 minutes:\n{}",
        kubectl(&cluster, &["get", "jobs,pods", "-o", "wide"])
    );
}
