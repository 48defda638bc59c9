//! Rendered Kubernetes objects: golden files (a readable diff; `SLUICE_UPDATE_GOLDEN=1`
//! rewrites them) and the Kubernetes 1.33 strict schema for every object.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice::kubernetes::render::{
    Target, WorkerPlan, config_map, launcher_job, to_yaml, worker_job,
};
use sluice::spec;
use sluice::state::RunLayout;

use crate::support::job_yaml::JobYaml;
use crate::support::kubeval::check_manifests;
use crate::support::state;

const RUN_ID: &str = "orders-nightly-20261122T020000Z";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/render")
        .join(name)
}

/// Compares `actual` with the golden file, or rewrites it with SLUICE_UPDATE_GOLDEN=1.
pub fn golden(name: &str, actual: &str) {
    let path = fixture(name);
    if std::env::var_os("SLUICE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  - {e}\n  + {a}", i + 1))
            .collect();
        panic!(
            "{} differs from the rendering ({} vs {} lines); first differences:\n{}\nrun with SLUICE_UPDATE_GOLDEN=1 to accept the new rendering",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

fn render_all(job_file: &Path) -> (String, String) {
    let loaded = spec::load_file(job_file, &[]).unwrap();
    let job = &loaded.job;
    let target = Target::new(job, None, None, RUN_ID.into());
    let map = serde_json::to_value(config_map(job, &loaded.resolved_yaml, &target)).unwrap();
    let launcher = serde_json::to_value(launcher_job(job, &target)).unwrap();
    let plan = RunLayout::new(&job.state, &job.name, RUN_ID).plan();
    let worker = serde_json::to_value(worker_job(job, &target, &WorkerPlan::all(plan, 5))).unwrap();
    (to_yaml(&[map, launcher]), to_yaml(&[worker]))
}

#[test]
fn every_kubernetes_field_renders_into_schema_valid_objects() {
    let (launcher, worker) = render_all(&fixture("full-pod.yaml"));
    check_manifests(&launcher).unwrap();
    check_manifests(&worker).unwrap();
    golden("full-pod.launcher.golden.yaml", &launcher);
    golden("full-pod.worker.golden.yaml", &worker);
    let job: serde_json::Value = serde_yaml_ng::from_str(&worker).unwrap();
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!(spec["completions"], 5);
    assert_eq!(spec["parallelism"], 4);
    assert_eq!(spec["backoffLimitPerIndex"], 3);
    assert_eq!(spec["maxFailedIndexes"], 2);
    assert_eq!(spec["podReplacementPolicy"], "Failed");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], "orders-reader");
    let container = &pod["containers"][0];
    assert_eq!(container["resources"]["requests"]["cpu"], "2000m");
    assert_eq!(container["resources"]["limits"]["memory"], "4096Mi");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "AWS_ENDPOINT_URL"
                && e["value"] == "http://minio.storage.svc:9000")
    );
    assert!(env.iter().any(|e| e["name"] == "AWS_SECRET_ACCESS_KEY"
        && e["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"));
    assert_eq!(
        job["metadata"]["labels"]["sluice.dev/run"],
        "orders-nightly-20261122T020000Z"
    );
    assert_eq!(job["metadata"]["labels"]["team"], "data");
}

#[test]
fn the_main_job_renders_through_the_binary_and_passes_the_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "render",
            "jobs/taxi-csv-to-parquet.yaml",
            "--run-id",
            RUN_ID,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    check_manifests(&yaml).unwrap();
    let kinds: Vec<String> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| {
            let value = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc).unwrap();
            value["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(kinds, ["ConfigMap", "Job"]);
    let (_, worker) =
        render_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/taxi-csv-to-parquet.yaml"));
    check_manifests(&worker).unwrap();
    golden("taxi.worker.golden.yaml", &worker);
}

#[test]
fn a_literal_credential_fails_the_check_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leaky.yaml");
    let text = std::fs::read_to_string(fixture("full-pod.yaml"))
        .unwrap()
        .replace(
            "        valueFrom: {secretKeyRef: {name: s3-credentials, key: secret}}",
            "        value: hunter2",
        );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("leaky.yaml:37:16: spec.kubernetes.env[1].value: AWS_SECRET_ACCESS_KEY looks like a credential"),
        "{stderr}"
    );
}

#[test]
fn every_example_file_renders_schema_valid_objects() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if spec::kind_of(&path).as_deref() == Some(spec::task::KIND) {
                let def = spec::load_task_file(&path).unwrap();
                let job = sluice::task::render(&def, &Default::default()).unwrap();
                let yaml = to_yaml(&[serde_json::to_value(job).unwrap()]);
                check_manifests(&yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
                continue;
            }
            if spec::kind_of(&path).as_deref() == Some(spec::pipeline::KIND) {
                use sluice::kubernetes::pipeline as objects;
                let pipeline = spec::pipeline::load_pipeline_file(&path, &[]).unwrap();
                let target = objects::pipeline_target(&pipeline, None, None, "p-1".into());
                let yaml = to_yaml(&[
                    serde_json::to_value(objects::pipeline_config_map(&pipeline, &target)).unwrap(),
                    serde_json::to_value(objects::pipeline_launcher_job(&pipeline, &target))
                        .unwrap(),
                ]);
                check_manifests(&yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
                continue;
            }
            let (launcher, worker) = render_all(&path);
            check_manifests(&launcher).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            check_manifests(&worker).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 2, "{checked} job files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_launcher_plans_now_and_renders_the_worker_job_for_that_plan() {
    let server = crate::support::embedded();
    let (storage, bucket) = server.fresh().await;
    for i in 0..3 {
        let uri: sluice::storage::uri::S3Uri = format!("s3://{bucket}/in/{i}.csv").parse().unwrap();
        storage
            .put_bytes(&uri, format!("id\n{i}\n").into())
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let job = JobYaml::new("nl")
        .source(format!("s3://{bucket}/in/"), "csv")
        .sink(format!("s3://{bucket}/out/"))
        .set("shards", 3)
        .write(dir.path().join("job.yaml"));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "render",
            job.to_str().unwrap(),
            "--no-launcher",
            "--run-id",
            "nl-1",
        ])
        .envs(server.env())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    check_manifests(&yaml).unwrap();
    let worker: serde_yaml_ng::Value = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "Job")
        .unwrap();
    assert_eq!(worker["spec"]["completions"], 3);
    let plan = state::run(&bucket, "nl", "nl-1").plan();
    assert_eq!(
        worker["metadata"]["annotations"]["sluice.dev/plan"],
        plan.to_string().as_str()
    );
    assert!(storage.get_bytes(&plan).await.unwrap().is_some());
}

#[test]
fn container_steps_render_as_native_sidecars_with_exec_probes_and_the_io_bridge() {
    let (_, worker) = render_all(&fixture("sidecars.yaml"));
    check_manifests(&worker).unwrap();
    golden("sidecars.worker.golden.yaml", &worker);
    let job: serde_json::Value = serde_yaml_ng::from_str(&worker).unwrap();
    let init = job["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sluice-bin", "mask", "legacy", "digest"]);
    // The installer runs to completion first; the transformers are native sidecars.
    assert!(init[0].get("restartPolicy").is_none());
    for sidecar in &init[1..] {
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(
            sidecar["readinessProbe"]["exec"]["command"][1],
            "transformer"
        );
        assert_eq!(sidecar["readinessProbe"]["exec"]["command"][2], "probe");
    }
    assert_eq!(
        init[1]["readinessProbe"]["exec"]["command"][0],
        "/sluice-bin/sluice"
    );
    assert_eq!(init[1]["resources"]["requests"]["cpu"], "250m");
    // The io step runs its command behind the bridge, on its bridge port.
    let legacy: Vec<&str> = init[2]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        legacy,
        [
            "/sluice-bin/sluice",
            "transformer",
            "serve",
            "--listen",
            "127.0.0.1:9401",
            "--exec",
            "--",
            "/opt/legacy/run",
            "--stdin"
        ]
    );
    // The sluice image needs no installed copy.
    assert_eq!(init[3]["image"], "ghcr.io/sluice-dev/sluice:0.1.0");
    assert_eq!(init[3]["readinessProbe"]["exec"]["command"][0], "sluice");
}
