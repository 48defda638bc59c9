//! Task definitions: `sluice task run` on this machine (overrides, exit codes, output,
//! sidecars), located field errors, the rendered Job against the strict schema and a
//! golden file, and `--kube` against an in-memory Kubernetes API whose test controller
//! executes the Job locally.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use kube::api::Api;
use sluice::kubernetes::cluster::Cluster;
use sluice::kubernetes::render::to_yaml;
use sluice::spec;
use sluice::spec::kubernetes::DEFAULT_IMAGE;
use sluice::task::{self, Logs, Overrides, Where};

use crate::support::controller::{Controller, Kubelet, Script};
use crate::support::kubeval::check_manifests;

const EXAMPLE: &str = "jobs/backfill-range.yaml";
const RUN_ID: &str = "backfill-range-20261122T020000Z";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a task definition into a fresh directory.
fn task_file(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn the_example_runs_locally_with_the_arguments_given_after_the_dashes() {
    let out = tempfile::tempdir().unwrap();
    let env = format!("BACKFILL_OUT={}", out.path().display());
    let run = sluice(&[
        "task",
        "run",
        EXAMPLE,
        "--env",
        &env,
        "--",
        "2018-01-01",
        "2019-01-01",
    ]);
    let stdout = text(&run.stdout);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&run.stderr)
    );
    assert!(
        stdout.starts_with("backfilling 2018-01-01 .. 2019-01-01 (info)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("month 2018-12\n"), "{stdout}");
    let written = std::fs::read_to_string(out.path().join("2018-01-01_2019-01-01.txt")).unwrap();
    assert_eq!(written.lines().count(), 12);
    assert_eq!(written.lines().next(), Some("2018-01"));
    // The script's own refusal is the command's exit code.
    let run = sluice(&[
        "task",
        "run",
        EXAMPLE,
        "--env",
        &env,
        "--",
        "2019-01-01",
        "2018-01-01",
    ]);
    assert_eq!(run.status.code(), Some(3));
    assert!(
        text(&run.stderr).contains("nothing to backfill"),
        "{}",
        text(&run.stderr)
    );
}

const ECHO_TASK: &str = "apiVersion: sluice.dev/v1alpha1
kind: TaskDefinition
metadata: {name: echo}
spec:
  retries: 1
  containerDefinitions:
    - name: main
      image: example/echo:1
      command: [default, args]
      environment:
        - {name: EXIT_CODE, value: '0'}
      local:
        command: [sh, -c, 'echo \"args: $*\"; echo \"to stderr\" >&2; exit \"$EXIT_CODE\"', sh]
";

#[test]
fn overridden_command_and_exit_codes_come_back_from_a_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = task_file(dir.path(), "echo.yaml", ECHO_TASK);
    let file = file.to_str().unwrap();

    let run = sluice(&["task", "run", file]);
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(text(&run.stdout), "args: default args\n");
    assert!(text(&run.stderr).contains("to stderr\n"));

    let run = sluice(&["task", "run", file, "--", "2018-01-01", "2019-01-01"]);
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(text(&run.stdout), "args: 2018-01-01 2019-01-01\n");

    let run = sluice(&["task", "run", file, "--command", "'one arg' two"]);
    assert_eq!(text(&run.stdout), "args: one arg two\n");

    // A failing container is retried (retries: 1) and its own exit code is sluice's.
    let run = sluice(&["task", "run", file, "--env", "EXIT_CODE=7", "--", "x"]);
    assert_eq!(run.status.code(), Some(7));
    assert_eq!(text(&run.stdout), "args: x\nargs: x\n");

    // The entrypoint override runs instead of local.command.
    let run = sluice(&[
        "task",
        "run",
        file,
        "--entrypoint",
        "echo",
        "--",
        "from",
        "echo",
    ]);
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(text(&run.stdout), "from echo\n");

    // Usage mistakes are exit 2 and say what is wrong.
    let run = sluice(&["task", "run", file, "--container", "nope"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(text(&run.stderr).contains("the task has no such container (it has main)"));
    let run = sluice(&["task", "run", file, "--env", "API_TOKEN=x"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(text(&run.stderr).contains("looks like a credential"));
    let run = sluice(&["task", "run", file, "--command", "a", "--", "b"]);
    assert_eq!(run.status.code(), Some(2));
}

#[test]
fn a_sidecar_starts_before_the_main_container_and_stops_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let marks = dir.path().display().to_string();
    let yaml = format!(
        "apiVersion: sluice.dev/v1alpha1
kind: TaskDefinition
metadata: {{name: with-sidecar}}
spec:
  containerDefinitions:
    - name: proxy
      image: example/proxy:1
      essential: false
      environment: [{{name: MARKS, value: '{marks}'}}]
      local:
        command: [sh, -c, 'echo $$ > $MARKS/proxy.pid.tmp; mv $MARKS/proxy.pid.tmp $MARKS/proxy.pid; while :; do sleep 0.05; done']
    - name: main
      image: example/main:1
      environment: [{{name: MARKS, value: '{marks}'}}]
      local:
        command: [sh, -c, 'for i in $(seq 100); do [ -f $MARKS/proxy.pid ] && break; sleep 0.05; done; kill -0 $(cat $MARKS/proxy.pid) && echo proxy running; echo main done > $MARKS/main.done']
"
    );
    let file = task_file(dir.path(), "sidecar.yaml", &yaml);
    let run = sluice(&["task", "run", file.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "proxy running\n");
    assert!(dir.path().join("main.done").exists());
    let pid = std::fs::read_to_string(dir.path().join("proxy.pid")).unwrap();
    let alive = Command::new("kill")
        .args(["-0", pid.trim()])
        .status()
        .unwrap();
    assert!(
        !alive.success(),
        "the sidecar {pid} still runs after the task"
    );
}

#[test]
fn field_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = task_file(
        dir.path(),
        "typos.yaml",
        "apiVersion: sluice.dev/v1alpha1
kind: TaskDefinition
metadata: {name: typos}
spec:
  cpu: lots
  containerDefinitions:
    - name: main
      image: app
      entrypoint: [run]
",
    );
    let run = sluice(&["task", "run", file.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = text(&run.stderr);
    let origin = file.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{origin}:5:8: spec.cpu: invalid type: string \"lots\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{origin}:9:7: spec.containerDefinitions[0].entrypoint: unknown field; did you mean `entryPoint`?"
        )),
        "{stderr}"
    );

    let file = task_file(
        dir.path(),
        "rules.yaml",
        "apiVersion: sluice.dev/v1alpha1
kind: TaskDefinition
metadata: {name: rules}
spec:
  containerDefinitions:
    - name: main
      image: app
      environment:
        - name: DB_PASSWORD
          value: hunter2
    - name: second
      image: app
",
    );
    let run = sluice(&["check", file.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = text(&run.stderr);
    let origin = file.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{origin}:10:18: spec.containerDefinitions[0].environment[0].value: DB_PASSWORD looks like a credential"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{origin}:11:11: spec.containerDefinitions[1]: a second essential container"
        )),
        "{stderr}"
    );
    let run = sluice(&["schema", "--kind", "TaskDefinition"]);
    let schema: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(schema["$defs"]["ContainerDefinition"]["properties"]["entryPoint"].is_object());
    let run = sluice(&["check", EXAMPLE]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).contains("ok (task backfill-range: 1 container, essential backfill)")
    );
}

fn example_overrides() -> Overrides {
    Overrides {
        command: Some(vec!["2018-01-01".into(), "2019-01-01".into()]),
        run_id: Some(RUN_ID.into()),
        ..Default::default()
    }
}

#[test]
fn the_rendered_job_passes_the_strict_schema_and_matches_its_golden_file() {
    let def = spec::load_task_file(&root().join(EXAMPLE)).unwrap();
    let job = task::render(&def, &example_overrides()).unwrap();
    let yaml = to_yaml(&[serde_json::to_value(&job).unwrap()]);
    check_manifests(&yaml).unwrap();
    crate::render::golden("backfill-range.task.golden.yaml", &yaml);
    let value: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let spec = &value["spec"];
    assert_eq!(spec["backoffLimit"], 1);
    assert_eq!(spec["activeDeadlineSeconds"], 7200);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(
        spec["template"]["spec"]["serviceAccountName"],
        "backfill-runner"
    );
    let main = &spec["template"]["spec"]["containers"][0];
    assert_eq!(
        main["command"],
        serde_json::json!(["/bin/sh", "/app/backfill-range.sh"])
    );
    assert_eq!(
        main["args"],
        serde_json::json!(["2018-01-01", "2019-01-01"])
    );
    assert_eq!(main["resources"]["requests"]["cpu"], "1000m");
    assert_eq!(main["resources"]["limits"]["memory"], "1024Mi");
    assert_eq!(
        main["env"][2]["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "warehouse", "key": "password"})
    );
    assert_eq!(
        value["metadata"]["labels"]["sluice.dev/task"],
        "backfill-range"
    );
    assert_eq!(value["metadata"]["labels"]["sluice.dev/run"], RUN_ID);

    // `sluice render` dispatches on the kind and takes the same overrides.
    let run = sluice(&[
        "render",
        EXAMPLE,
        "--run-id",
        RUN_ID,
        "--",
        "2018-01-01",
        "2019-01-01",
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), yaml);
}

#[test]
fn sidecars_render_as_native_sidecars_and_pass_the_strict_schema() {
    let def = spec::load_task_str(
        "apiVersion: sluice.dev/v1alpha1
kind: TaskDefinition
metadata: {name: proxied}
spec:
  cpu: 2048
  memory: 2048
  containerDefinitions:
    - {name: proxy, image: envoy:1, essential: false, cpu: 512, memory: 256}
    - {name: main, image: app:1, command: [go]}
  kubernetes:
    nodeSelector: {pool: batch}
    tolerations: [{key: batch, operator: Exists, effect: NoSchedule}]
",
        "proxied.yaml",
    )
    .unwrap();
    let job = task::render(&def, &Overrides::default()).unwrap();
    let yaml = to_yaml(&[serde_json::to_value(&job).unwrap()]);
    check_manifests(&yaml).unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    let proxy = &pod.init_containers.unwrap()[0];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    let main = &pod.containers[0];
    assert_eq!(main.name, "main");
    let requests = main.resources.clone().unwrap().requests.unwrap();
    assert_eq!(requests["cpu"].0, "1500m");
    assert_eq!(requests["memory"].0, "1792Mi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runs_the_job_on_the_cluster_and_returns_the_containers_exit_code() {
    const NAMESPACE: &str = "tasks";
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    let def = spec::load_task_file(&root().join(EXAMPLE)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let kubelet = Kubelet {
        sluice_image: Some(DEFAULT_IMAGE.into()),
        local_commands: task::local_commands(&def),
        env: Vec::new(),
    };
    let controller = Controller::start(
        client.clone(),
        NAMESPACE,
        "sluice.dev/component=task",
        kubelet,
        vec![Script::Run, Script::Run],
    );
    let cluster = Cluster::new(client.clone(), NAMESPACE);
    let mut overrides = example_overrides();
    overrides.env = vec![("BACKFILL_OUT".into(), out.path().display().to_string())];
    let how = Where::Cluster {
        cluster: cluster.clone(),
        poll: Duration::from_millis(100),
    };
    let outcome = task::run_task(&def, &overrides, how).await.unwrap();
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(outcome.run_id, RUN_ID);
    assert_eq!(
        outcome.logs,
        Logs::Pod {
            namespace: NAMESPACE.into(),
            pod: "backfill-range-20261122t020000z-0".into(),
            container: "backfill".into(),
        }
    );
    let written = std::fs::read_to_string(out.path().join("2018-01-01_2019-01-01.txt")).unwrap();
    assert_eq!(written.lines().count(), 12);
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), NAMESPACE);
    let job = jobs.get(&outcome.job).await.unwrap();
    let labels = job.metadata.labels.unwrap();
    assert_eq!(labels["sluice.dev/task"], "backfill-range");
    assert_eq!(labels["sluice.dev/run"], RUN_ID);

    // A container that fails: its exit code comes back, the Job is Failed.
    overrides.command = Some(vec!["2019-01-01".into(), "2018-01-01".into()]);
    overrides.run_id = Some("backfill-range-20261122T030000Z".into());
    let how = Where::Cluster {
        cluster,
        poll: Duration::from_millis(100),
    };
    let outcome = task::run_task(&def, &overrides, how).await.unwrap();
    assert_eq!(outcome.exit_code, 3);
    assert_eq!(controller.jobs_handled().len(), 2);
}
