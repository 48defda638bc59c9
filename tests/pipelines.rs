//! Pipelines (`kind: Pipeline`) against the embedded S3 server: the DAG's order and its
//! bound on steps at once, results flowing into later steps' params, a failed step stopping
//! only what depends on it, resume after a failure and after a SIGKILL of `sluice run`,
//! check errors with file:line, the rendered launcher against the strict schema, the DAG
//! on a cluster (the strict API with the RBAC of manifests/), and a scheduled pipeline
//! catching up missed intervals.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice::pipeline::{Executor, PipelineOptions, run_pipeline};
use sluice::schedule::daemon::FiredRun;
use sluice::spec::pipeline::load_pipeline_file;
use sluice::state::pipeline::{PipelineLayout, PipelineRecord, PipelineStatus, StepStatus};
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::controller::{Controller, Kubelet, Script};
use crate::support::kubeval::check_manifests;
use crate::support::scheduling::{scheduler, utc};
use crate::support::strict_api::StrictApi;
use crate::support::{self, TestServer, sluice};

/// Three CSV objects of two records each under `in/`, a job converting them to Parquet
/// under `clean/<day>/`, a job totalling that output (checking every record is counted),
/// in a fresh bucket and a temporary directory.
struct Fixture {
    server: &'static TestServer,
    storage: Storage,
    bucket: String,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let server = support::embedded();
        let (storage, bucket) = server.fresh().await;
        for i in 0..3 {
            let body = format!("id,fare\n{i}1,1.5\n{i}2,2.5\n");
            storage
                .put_bytes(
                    &S3Uri::new(bucket.clone(), format!("in/{i}.csv")),
                    body.into_bytes().into(),
                )
                .await
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join("jobs").join(name), text).unwrap();
        };
        write(
            "convert.yaml",
            format!(
                r#"apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: convert
spec:
  params:
    day: none
  source:
    uri: s3://{bucket}/in/
    format: csv
    schema:
      - {{ name: id, type: int64 }}
      - {{ name: fare, type: float64 }}
  sink:
    uri: s3://{bucket}/clean/{{{{ params.day }}}}/
    format: parquet
  parallelism: 1
  shards: 1
  retries: 0
"#
            ),
        );
        write(
            "totals.yaml",
            format!(
                r#"apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: totals
spec:
  params:
    day: none
    input: s3://{bucket}/clean/none/
    expected: 0
  source:
    uri: "{{{{ params.input }}}}"
    format: parquet
  transform:
    - name: sum
      sql: SELECT count(*) AS records, sum(fare) AS fares FROM input
      filters: true
  validate:
    rules:
      - name: all-counted
        scope: run
        sql: SELECT sum(records) = {{{{ params.expected }}}}, concat(sum(records), ' counted') FROM output
  sink:
    uri: s3://{bucket}/totals/{{{{ params.day }}}}/
    format: jsonl
  parallelism: 1
  shards: 1
  retries: 0
"#
            ),
        );
        Fixture {
            server,
            storage,
            bucket,
            dir,
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the pipeline file `name` with `steps` (YAML lines under `steps:`).
    fn pipeline(&self, name: &str, head: &str, steps: &str) -> std::path::PathBuf {
        let text = format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: {name}\nspec:\n{head}  steps:\n{steps}"
        );
        let path = self.path(&format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn sluice(&self, args: &[&str]) -> std::process::Output {
        sluice(args, self.server, self.dir.path())
    }

    fn state(&self) -> S3Uri {
        format!("s3://{}/_sluice/", self.bucket).parse().unwrap()
    }

    async fn record(&self, pipeline: &str, run_id: &str) -> Option<PipelineRecord> {
        let layout = PipelineLayout::new(&self.state(), pipeline, run_id);
        sluice::state::pipeline::read_record(&self.storage, &layout)
            .await
            .unwrap()
    }

    async fn published(&self, pipeline: &str, run_id: &str) -> bool {
        let layout = PipelineLayout::new(&self.state(), pipeline, run_id);
        sluice::state::pipeline::is_published(&self.storage, &layout)
            .await
            .unwrap()
    }

    /// The records of the JSON lines objects under `prefix`.
    async fn json_lines(&self, prefix: &str) -> Vec<serde_json::Value> {
        let uri = S3Uri::new(self.bucket.clone(), prefix.to_string());
        let mut out = Vec::new();
        for object in self.storage.list(&uri).await.unwrap() {
            let key = S3Uri::new(self.bucket.clone(), object.key.clone());
            let bytes = self.storage.get_bytes(&key).await.unwrap().unwrap();
            for line in String::from_utf8(bytes.to_vec()).unwrap().lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
        out
    }
}

/// An inline task step running `script` with `sh -c` here (arguments: `$0`, `$1`, ...).
fn task(script: &str) -> String {
    format!(
        r#"      task:
        apiVersion: sluice.dev/v1alpha1
        kind: TaskDefinition
        metadata:
          name: shell
        spec:
          containerDefinitions:
            - name: main
              image: busybox:1.37
              local:
                command: [sh, -c, '{script}']
"#
    )
}

fn statuses(record: &PipelineRecord) -> BTreeMap<String, StepStatus> {
    record
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.status))
        .collect()
}

/// convert -> gate (a task that succeeds once the file `$0` exists) -> totals, and `side`,
/// independent of them all.
fn gated_steps() -> String {
    format!(
        r#"    - name: convert
      job: jobs/convert.yaml
      params:
        day: "{{{{ params.day }}}}"
    - name: gate
      depends_on: [convert]
{gate}      args: ["{{{{ params.gate }}}}"]
    - name: totals
      depends_on: [gate]
      job: jobs/totals.yaml
      params:
        day: "{{{{ params.day }}}}"
        input: "{{{{ steps.convert.output }}}}"
        expected: "{{{{ steps.convert.records_out }}}}"
    - name: side
{side}"#,
        gate = task("test -f \"$0\""),
        side = task("echo side step"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_stops_only_its_dependents_and_resume_finishes_with_its_results() {
    let f = Fixture::new().await;
    let gate = f.path("gate-open");
    let head = format!(
        "  params:\n    day: d1\n    gate: {}\n  parallelism: 2\n",
        gate.display()
    );
    let file = f.pipeline("gated", &head, &gated_steps());
    let run_id = "gated-1";
    let out = f.sluice(&["run", file.to_str().unwrap(), "--run-id", run_id]);
    // The gate's shell exits 1: a code of its own, which fails the pipeline as transient.
    assert_eq!(out.status.code(), Some(1));
    let record = f.record("gated", run_id).await.unwrap();
    assert_eq!(record.status, PipelineStatus::Failed);
    assert_eq!(
        statuses(&record),
        BTreeMap::from([
            ("convert".to_string(), StepStatus::Succeeded),
            ("gate".to_string(), StepStatus::Failed),
            ("totals".to_string(), StepStatus::Skipped),
            ("side".to_string(), StepStatus::Succeeded),
        ])
    );
    assert!(!f.published("gated", run_id).await);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("skipped"), "{stdout}");
    // The step's own run is an ordinary published run under `<pipeline run>-<step>`.
    let convert_run = sluice::state::RunLayout::new(&f.state(), "convert", "gated-1-convert");
    let report = sluice::state::report::read_report(&f.storage, &convert_run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.records.output, 6);

    // Resume: only what did not succeed runs again, with the results of what did.
    std::fs::write(&gate, "").unwrap();
    let out = f.sluice(&["resume", run_id, "--local", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let record = f.record("gated", run_id).await.unwrap();
    assert_eq!(record.status, PipelineStatus::Succeeded);
    let attempts: BTreeMap<&str, u32> = record
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.attempts))
        .collect();
    assert_eq!(
        attempts,
        BTreeMap::from([("convert", 1), ("gate", 2), ("totals", 1), ("side", 1)])
    );
    let again = sluice::state::report::read_report(&f.storage, &convert_run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.started, report.started, "convert ran again");
    let totals = record.step("totals").unwrap();
    assert_eq!(
        totals.params.get("input").map(String::as_str),
        Some(format!("s3://{}/clean/d1/", f.bucket).as_str())
    );
    assert_eq!(totals.params.get("expected").map(String::as_str), Some("6"));
    assert_eq!(
        record.step("gate").unwrap().args,
        Some(vec![gate.display().to_string()])
    );
    // The totals step read convert's published output: one row per object, 6 records.
    let rows = f.json_lines("totals/d1/").await;
    let counted: i64 = rows.iter().map(|r| r["records"].as_i64().unwrap()).sum();
    assert_eq!((rows.len(), counted), (3, 6), "{rows:?}");
    assert!(f.published("gated", run_id).await);
    // A published pipeline run is not run again.
    let out = f.sluice(&["resume", run_id, "--local", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(f.record("gated", run_id).await.unwrap(), record);
    // Status reads the record from the bucket.
    let out = f.sluice(&["status", run_id, "--pipeline", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("succeeded, published"), "{text}");
    assert!(
        text.contains("gated-1-totals: 6 records in, 3 out"),
        "{text}"
    );
    // A run id that exists is refused by `run`.
    let out = f.sluice(&["run", file.to_str().unwrap(), "--run-id", run_id]);
    assert_eq!(out.status.code(), Some(2));
}

/// Two task steps that each wait for the other's file pass only when they run at the same
/// time; the step after them starts once both ended; with `parallelism: 1` they cannot meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_steps_run_side_by_side_within_the_bound_and_dependents_wait() {
    let f = Fixture::new().await;
    let meet = |me: &str, other: &str| {
        task(&format!(
            "touch \"$0/{me}\"; i=0; while [ ! -f \"$0/{other}\" ]; do i=$((i+1)); [ $i -gt 30 ] && exit 7; sleep 0.1; done"
        ))
    };
    let steps = format!(
        "    - name: left\n{}      args: [\"{{{{ params.dir }}}}\"]\n    - name: right\n{}      args: [\"{{{{ params.dir }}}}\"]\n    - name: after\n      depends_on: [left, right]\n{}",
        meet("left", "right"),
        meet("right", "left"),
        task("true")
    );
    for (parallelism, expected) in [(2, Some(0)), (1, Some(1))] {
        let dir = tempfile::tempdir().unwrap();
        let head = format!(
            "  params:\n    dir: {}\n  parallelism: {parallelism}\n  state: s3://{}/_sluice/\n",
            dir.path().display(),
            f.bucket
        );
        let name = format!("meet{parallelism}");
        let file = f.pipeline(&name, &head, &steps);
        let out = f.sluice(&["run", file.to_str().unwrap(), "--run-id", &name]);
        assert_eq!(out.status.code(), expected, "parallelism {parallelism}");
        let record = f.record(&name, &name).await.unwrap();
        if parallelism == 2 {
            let step = |n: &str| record.step(n).unwrap().clone();
            let (left, right, after) = (step("left"), step("right"), step("after"));
            assert_eq!(after.status, StepStatus::Succeeded);
            assert!(after.started >= left.finished && after.started >= right.finished);
            assert!(f.published(&name, &name).await);
        } else {
            // One at a time: the first waits in vain (exit 7); the second then finds the
            // first's file, but the step after them both is skipped.
            let s = statuses(&record);
            assert_eq!(s["left"], StepStatus::Failed);
            assert_eq!(s["right"], StepStatus::Succeeded);
            assert_eq!(s["after"], StepStatus::Skipped);
            assert_eq!(record.step("left").unwrap().exit_code, Some(7));
            let (l, r) = (record.step("left").unwrap(), record.step("right").unwrap());
            assert!(r.started >= l.finished, "{l:?} {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_killed_mid_step_resumes_without_running_what_succeeded() {
    let f = Fixture::new().await;
    let gate = f.path("gate-open");
    let head = format!("  params:\n    day: k1\n    gate: {}\n", gate.display());
    // The gate waits for its file (up to 60 s) instead of failing at once.
    let steps = gated_steps().replace(
        "test -f \"$0\"",
        "i=0; while [ ! -f \"$0\" ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.1; done",
    );
    let file = f.pipeline("killed", &head, &steps);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", file.to_str().unwrap(), "--run-id", "killed-1"])
        .envs(f.server.env())
        .current_dir(f.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = f.record("killed", "killed-1").await;
        if record.is_some_and(|r| r.step("gate").unwrap().status == StepStatus::Running) {
            break;
        }
        assert!(Instant::now() < deadline, "the gate never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on a process group we started.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    child.wait().unwrap();
    let record = f.record("killed", "killed-1").await.unwrap();
    assert_eq!(record.status, PipelineStatus::Running);
    assert_eq!(
        record.step("convert").unwrap().status,
        StepStatus::Succeeded
    );

    std::fs::write(&gate, "").unwrap();
    let out = f.sluice(&["resume", "killed-1", "--local", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let record = f.record("killed", "killed-1").await.unwrap();
    assert_eq!(record.status, PipelineStatus::Succeeded);
    assert_eq!(record.step("convert").unwrap().attempts, 1);
    assert_eq!(record.step("gate").unwrap().attempts, 2);
    assert_eq!(record.step("totals").unwrap().attempts, 1);
    assert!(f.published("killed", "killed-1").await);
    let counted: i64 = f
        .json_lines("totals/k1/")
        .await
        .iter()
        .map(|r| r["records"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_file_line_and_field_of_every_dag_and_template_problem() {
    let f = Fixture::new().await;
    let steps = "    - name: a
      job: jobs/convert.yaml
      depends_on: [c]
    - name: b
      job: jobs/totals.yaml
      depends_on: [a]
      params:
        input: \"{{ steps.d.output }}\"
        expected: \"{{ steps.a.nope }}\"
        day: \"{{ params.month }}\"
    - name: c
      job: jobs/convert.yaml
      depends_on: [a, e]
      args: [x]
    - name: d
      task: jobs/convert.yaml
";
    let file = f.pipeline("broken", "", steps);
    let out = f.sluice(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let origin = file.display().to_string();
    for expected in [
        format!(
            "{origin}:9:7: spec.steps[0].depends_on: the steps depend on each other in a cycle: a -> c -> a"
        ),
        format!(
            "{origin}:14:16: spec.steps[1].params.input: step `d` is not upstream of this step"
        ),
        format!("{origin}:15:19: spec.steps[1].params.expected: step `a` gives no `nope`"),
        format!("{origin}:16:14: spec.steps[1].params.day: param `month` is not defined"),
        format!("{origin}:19:23: spec.steps[2].depends_on[1]: unknown step \"e\""),
        format!("{origin}:20:7: spec.steps[2].args: only a task step takes args"),
        format!("{origin}:22:13: spec.steps[3].task:"),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&expected)),
            "no line starting {expected:?} in\n{stderr}"
        );
    }
    // A step's own file is checked as it would run, its problems named in that file.
    let steps = "    - name: a
      job: jobs/convert.yaml
      params:
        day: \"{{ params.x }}\"
";
    std::fs::write(
        f.path("jobs/convert.yaml"),
        std::fs::read_to_string(f.path("jobs/convert.yaml"))
            .unwrap()
            .replace("retries: 0", "retries: -1"),
    )
    .unwrap();
    let file = f.pipeline("job-broken", "  params:\n    x: y\n", steps);
    let out = f.sluice(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:19:", f.path("jobs/convert.yaml").display())),
        "{stderr}"
    );
}

#[test]
fn the_example_pipeline_checks_and_renders_a_launcher_the_strict_schema_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "render",
            "jobs/taxi-pipeline.yaml",
            "--run-id",
            "taxi-pipeline-1",
        ])
        .current_dir(root)
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
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs[0]["kind"], "ConfigMap");
    assert_eq!(docs[1]["kind"], "Job");
    let args = &docs[1]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "submit");
    assert_eq!(args[2], "/etc/sluice/pipeline.yaml");
    assert_eq!(
        docs[1]["spec"]["template"]["spec"]["serviceAccountName"],
        "sluice-pipeline"
    );
    // The ConfigMap's files are the pipeline as the launcher reads it: it loads, and its
    // steps are the example's.
    let dir = tempfile::tempdir().unwrap();
    for (key, text) in docs[0]["data"].as_object().unwrap() {
        std::fs::write(dir.path().join(key), text.as_str().unwrap()).unwrap();
    }
    let bundled = load_pipeline_file(&dir.path().join("pipeline.yaml"), &[]).unwrap();
    let example = load_pipeline_file(&root.join("jobs/taxi-pipeline.yaml"), &[]).unwrap();
    let names = |p: &sluice::spec::pipeline::Pipeline| -> Vec<String> {
        p.steps.iter().map(|s| s.name.clone()).collect()
    };
    assert_eq!(names(&bundled), names(&example));
    assert_eq!(bundled.state, example.state);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "check",
            "jobs/taxi-pipeline.yaml",
            "schedules/taxi-pipeline-monthly.yaml",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // A schedule of the pipeline with fixed params is a native CronJob of its launcher.
    let schedule = dir.path().join("monthly.yaml");
    std::fs::write(
        &schedule,
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Schedule\nmetadata:\n  name: taxi-monthly\nspec:\n  cron: \"0 3 1 * *\"\n  target: {}\n  params:\n    month: \"2026-01\"\n",
            root.join("jobs/taxi-pipeline.yaml").display()
        ),
    )
    .unwrap();
    let schedule = sluice::spec::schedule::load_schedule_file(&schedule).unwrap();
    let yaml =
        sluice::schedule::fire::render_cron_job(&schedule, Some("sluice:test"), None).unwrap();
    check_manifests(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs[0]["kind"], "ConfigMap");
    assert_eq!(docs[1]["kind"], "CronJob");
    let pod = &docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].as_array().unwrap();
    assert!(args.iter().any(|a| a == "--scheduled-job"), "{args:?}");
    assert_eq!(
        pod["volumes"][1]["configMap"]["name"],
        docs[0]["metadata"]["name"]
    );
}

/// The DAG on a cluster: each job step through the submit path, as the launcher drives it,
/// with only the rights manifests/ grants `sluice-pipeline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_launcher_drives_the_steps_with_its_role_alone() {
    let f = Fixture::new().await;
    let steps = "    - name: convert
      job: jobs/convert.yaml
      params:
        day: c1
    - name: totals
      depends_on: [convert]
      job: jobs/totals.yaml
      params:
        day: c1
        input: \"{{ steps.convert.output }}\"
        expected: \"{{ steps.convert.records_out }}\"
";
    let file = f.pipeline("clustered", "", steps);
    let pipeline = load_pipeline_file(&file, &[]).unwrap();
    let api = StrictApi::new().await;
    let kubelet = Kubelet {
        sluice_image: None,
        local_commands: BTreeMap::new(),
        env: f.server.env(),
    };
    let _workers = Controller::start(
        api.client_as(None),
        "sluice",
        "sluice.dev/component=worker",
        kubelet,
        vec![Script::Run],
    );
    let executor = Executor::Cluster {
        client: api.client_as(Some("sluice-pipeline")),
        image: Some("sluice:test".into()),
        namespace: Some("sluice".into()),
        poll: Duration::from_millis(100),
    };
    let options = PipelineOptions {
        run_id: "clustered-1".into(),
        resume: false,
        create_buckets: false,
    };
    let run = run_pipeline(&executor, &f.storage, &pipeline, options)
        .await
        .unwrap();
    assert_eq!(run.exit.code(), 0, "{:?}", run.record);
    assert_eq!(api.denied(), Vec::<String>::new());
    assert!(f.published("clustered", "clustered-1").await);
    let counted: i64 = f
        .json_lines("totals/c1/")
        .await
        .iter()
        .map(|r| r["records"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 6);
    // `submit --detach` leaves the run to a launcher in the cluster: its ConfigMap and Job.
    let target = sluice::kubernetes::pipeline::pipeline_target(
        &pipeline,
        Some("sluice:test"),
        Some("sluice"),
        "clustered-2".into(),
    );
    let admin = sluice::kubernetes::cluster::Cluster::new(api.client_as(None), "sluice");
    let launcher = sluice::kubernetes::pipeline::create_launcher(&admin, &pipeline, &target)
        .await
        .unwrap();
    assert_eq!(
        launcher.metadata.name.as_deref(),
        Some("clustered-2-pipeline-launcher")
    );
    let maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(api.client_as(None), "sluice");
    let map = maps.get("clustered-2-pipeline").await.unwrap();
    let files = map.data.unwrap();
    assert!(files.contains_key("pipeline.yaml") && files.contains_key("step-totals.yaml"));
    // Creating them again (a retried submit) finds them.
    sluice::kubernetes::pipeline::create_launcher(&admin, &pipeline, &target)
        .await
        .unwrap();
}

/// A schedule whose target is a pipeline: missed intervals are caught up, oldest first,
/// each a pipeline run with the interval's params reaching its steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_pipeline_catches_up_missed_intervals() {
    let f = Fixture::new().await;
    let steps = "    - name: convert
      job: jobs/convert.yaml
      params:
        day: \"{{ params.hour }}\"
";
    f.pipeline("hourly", "  params:\n    hour: none\n", steps);
    let schedule = f.path("hourly-schedule.yaml");
    std::fs::write(
        &schedule,
        r#"apiVersion: sluice.dev/v1alpha1
kind: Schedule
metadata:
  name: hourly-pipeline
spec:
  cron: "@hourly"
  target: hourly.yaml
  params:
    hour: "{{ interval.start | format('%Y%m%dT%H', 'UTC') }}"
  concurrencyPolicy: Forbid
  catchUp:
    maxRuns: 5
"#,
    )
    .unwrap();
    let ids = |runs: Vec<FiredRun>| -> Vec<String> { runs.into_iter().map(|r| r.run_id).collect() };
    let mut first = scheduler(f.server, &f.storage, &schedule);
    let started = ids(first.run_once(utc("2026-11-22T10:05:00Z")).await.unwrap());
    assert_eq!(started, ["hourly-20261122T1000Z"]);
    drop(first);
    let mut restarted = scheduler(f.server, &f.storage, &schedule);
    let started = ids(restarted
        .run_once(utc("2026-11-22T12:20:00Z"))
        .await
        .unwrap());
    assert_eq!(started, ["hourly-20261122T1100Z", "hourly-20261122T1200Z"]);
    for (run, hour) in [
        ("hourly-20261122T1000Z", "20261122T09"),
        ("hourly-20261122T1100Z", "20261122T10"),
        ("hourly-20261122T1200Z", "20261122T11"),
    ] {
        assert!(f.published("hourly", run).await, "{run}");
        let record = f.record("hourly", run).await.unwrap();
        assert_eq!(record.params["hour"], hour);
        let out = S3Uri::new(f.bucket.clone(), format!("clean/{hour}/"));
        assert_eq!(f.storage.list(&out).await.unwrap().len(), 3, "{run}");
    }
    let history = crate::support::scheduling::history(
        &f.storage,
        &format!("s3://{}/_sluice/", f.bucket),
        "hourly-pipeline",
    )
    .await;
    assert_eq!(history.len(), 3);
    assert!(
        history
            .iter()
            .all(|r| r.status == sluice::state::history::FireStatus::Succeeded)
    );
}
