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
