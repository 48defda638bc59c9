//! Schedules whose target is a task definition: templated arguments and params as the
//! container's environment, catch-up after downtime, the history under `spec.state`, exit
//! codes through `scheduler --once` and `backfill`, the rendered CronJob, and `sluice check`
//! of schedule files.

use std::path::{Path, PathBuf};

use sluice::spec::schedule::load_schedule_file;
use sluice::state::history::{FireStatus, HistoryRecord, Trigger};
use sluice::storage::Storage;

use crate::support::kubeval::check_manifests;
use crate::support::scheduling::{self, scheduler, utc};
use crate::support::{self, sluice};

/// A directory with a task definition `stamp` (a shell script that writes its arguments
/// and `$MODE` to `$out/<first argument>.txt` and exits with `$code`) and an hourly
/// schedule of it whose history lives in `bucket`.
struct TaskSchedule {
    dir: tempfile::TempDir,
    schedule: PathBuf,
    out: PathBuf,
}

fn task_schedule(bucket: &str, code: &str, extra: &str) -> TaskSchedule {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let script = dir.path().join("stamp.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -eu\nprintf '%s\\n' \"$@\" \"mode=$MODE\" > \"$out/$1.txt\"\necho \"stamped $1\"\nexit \"$code\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("stamp.yaml"),
        format!(
            r#"apiVersion: sluice.dev/v1alpha1
kind: TaskDefinition
metadata:
  name: stamp
spec:
  cpu: 256
  memory: 128
  containerDefinitions:
    - name: stamp
      image: registry.example/stamp:1
      command: [never-used]
      environment:
        - {{ name: MODE, value: default }}
      local:
        command: [sh, {script}]
"#,
            script = script.display()
        ),
    )
    .unwrap();
    let schedule = dir.path().join("stamp-hourly.yaml");
    std::fs::write(
        &schedule,
        format!(
            r#"apiVersion: sluice.dev/v1alpha1
kind: Schedule
metadata:
  name: stamp-hourly
spec:
  cron: "@hourly"
  timeZone: Europe/Berlin
  target: stamp.yaml
  args:
    - "{{{{ interval.start | format('%Y-%m-%dT%H:%M') }}}}"
    - "{{{{ interval.end | format('%H:%M', 'UTC') }}}}"
  params:
    MODE: scheduled
    out: {out}
    code: "{code}"
  state: s3://{bucket}/tasks/
  concurrencyPolicy: Forbid
{extra}"#,
            out = out.display()
        ),
    )
    .unwrap();
    TaskSchedule { dir, schedule, out }
}

async fn history(storage: &Storage, bucket: &str) -> Vec<HistoryRecord> {
    scheduling::history(storage, &format!("s3://{bucket}/tasks/"), "stamp-hourly").await
}

/// The files the task wrote, by name, with their lines.
fn stamped(out: &Path) -> Vec<(String, Vec<String>)> {
    let mut files: Vec<(String, Vec<String>)> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                text.lines().map(str::to_string).collect(),
            )
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_runs_its_task_with_the_interval_as_arguments_and_catches_up_once_each() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    let t = task_schedule(&bucket, "0", "  catchUp:\n    maxRuns: 5\n");
    let mut first = scheduler(server, &storage, &t.schedule);
    let fired = first.run_once(utc("2026-11-22T10:05:00Z")).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].run_id, "stamp-20261122T1000Z");
    assert_eq!(fired[0].exit, Some(0));
    // The interval [09:00, 10:00) UTC is [10:00, 11:00) in Berlin; the second argument is
    // formatted in UTC; params are the container's environment, over its own.
    assert_eq!(
        stamped(&t.out),
        [(
            "2026-11-22T10:00.txt".to_string(),
            vec![
                "2026-11-22T10:00".to_string(),
                "10:00".to_string(),
                "mode=scheduled".to_string()
            ]
        )]
    );
    drop(first);
    // Down for 11:00 and 12:00; restarted at 12:40: both run, oldest first, then nothing.
    let mut restarted = scheduler(server, &storage, &t.schedule);
    let fired = restarted
        .run_once(utc("2026-11-22T12:40:00Z"))
        .await
        .unwrap();
    let ids: Vec<&str> = fired.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["stamp-20261122T1100Z", "stamp-20261122T1200Z"]);
    let mut again = scheduler(server, &storage, &t.schedule);
    assert!(
        again
            .run_once(utc("2026-11-22T12:50:00Z"))
            .await
            .unwrap()
            .is_empty()
    );
    let names: Vec<String> = stamped(&t.out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "2026-11-22T10:00.txt",
            "2026-11-22T11:00.txt",
            "2026-11-22T12:00.txt"
        ]
    );
    let records = history(&storage, &bucket).await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r.status == FireStatus::Succeeded && r.exit_code == Some(0)),
        "{records:?}"
    );
    assert_eq!(records[1].trigger, Trigger::CatchUp);
    assert_eq!(records[2].trigger, Trigger::Schedule);
    assert_eq!(records[2].params["MODE"], "scheduled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_exit_code_comes_back_through_once_and_backfill() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    let t = task_schedule(&bucket, "5", "");
    // What is due now fails with the container's code, which `--once` exits with.
    let out = sluice(
        &["scheduler", "--schedules", ".", "--once"],
        server,
        t.dir.path(),
    );
    assert_eq!(out.status.code(), Some(5));
    let run_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(run_id.starts_with("stamp-"), "{run_id}");
    let records = history(&storage, &bucket).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, FireStatus::Failed);
    assert_eq!(records[0].exit_code, Some(5));
    // The scheduler's log carries the task's output, labelled with its container.
    assert!(String::from_utf8_lossy(&out.stderr).contains("[stamp] stamped "));

    // Backfill of two past hours: both fail with 5; once the task succeeds they run again,
    // and a third backfill skips both as succeeded.
    let range = [
        "backfill",
        "stamp-hourly.yaml",
        "--from",
        "2026-11-20T00:00:00Z",
        "--to",
        "2026-11-20T02:00:00Z",
    ];
    let failed = sluice(&range, server, t.dir.path());
    assert_eq!(failed.status.code(), Some(5));
    let fixed = std::fs::read_to_string(&t.schedule)
        .unwrap()
        .replace("code: \"5\"", "code: \"0\"");
    std::fs::write(&t.schedule, fixed).unwrap();
    let ok = sluice(&range, server, t.dir.path());
    assert_eq!(ok.status.code(), Some(0));
    let stdout = String::from_utf8(ok.stdout).unwrap();
    assert!(
        stdout.contains("stamp-20261120T0100Z  0 (done)")
            && stdout.contains("stamp-20261120T0200Z  0 (done)"),
        "{stdout}"
    );
    let skipped = sluice(&range, server, t.dir.path());
    assert_eq!(skipped.status.code(), Some(0));
    let stdout = String::from_utf8(skipped.stdout).unwrap();
    assert_eq!(stdout.matches("published already").count(), 2, "{stdout}");
    let backfilled: Vec<_> = history(&storage, &bucket)
        .await
        .into_iter()
        .filter(|r| r.trigger == Trigger::Backfill)
        .collect();
    assert_eq!(backfilled.len(), 2);
    assert!(backfilled.iter().all(|r| r.status == FireStatus::Succeeded));
}

#[test]
fn a_task_schedule_with_fixed_args_renders_a_valid_cron_job_and_templates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = dir.path().join("nightly.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: sluice.dev/v1alpha1
kind: Schedule
metadata:
  name: backfill-nightly
spec:
  cron: "30 1 * * *"
  timeZone: Europe/Berlin
  target: {}
  args: ["2018-01-01", "2019-01-01"]
  params:
    LOG_LEVEL: debug
  state: s3://curated/_sluice/
  concurrencyPolicy: Forbid
  startingDeadline: 1h
"#,
            root.join("jobs/backfill-range.yaml").display()
        ),
    )
    .unwrap();
    let schedule = load_schedule_file(&path).unwrap();
    let yaml = sluice::schedule::fire::render_cron_job(&schedule, None, None).unwrap();
    check_manifests(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let cron: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(cron["kind"], "CronJob");
    assert_eq!(cron["metadata"]["name"], "backfill-nightly");
    assert_eq!(cron["metadata"]["namespace"], "sluice");
    assert_eq!(cron["spec"]["schedule"], "30 1 * * *");
    assert_eq!(cron["spec"]["startingDeadlineSeconds"], 3600);
    let labels = &cron["spec"]["jobTemplate"]["metadata"]["labels"];
    assert_eq!(labels["sluice.dev/schedule"], "backfill-nightly");
    assert_eq!(labels["sluice.dev/task"], "backfill-range");
    assert!(labels.get("sluice.dev/run").is_none(), "{labels}");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "backfill-runner");
    let main = &pod["containers"][0];
    assert_eq!(
        main["args"],
        serde_json::json!(["2018-01-01", "2019-01-01"])
    );
    let env = main["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "LOG_LEVEL" && e["value"] == "debug"),
        "{env:?}"
    );

    // The example's arguments are templates: a native CronJob cannot fill them.
    let monthly = load_schedule_file(&root.join("schedules/backfill-monthly.yaml")).unwrap();
    let refused = sluice::schedule::fire::render_cron_job(&monthly, None, None).unwrap_err();
    assert!(refused.to_string().contains("spec.args use"), "{refused}");
}

#[test]
fn check_reads_schedules_and_names_the_line_of_each_problem() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = support::embedded();
    let out = sluice(
        &[
            "check",
            "schedules/taxi-hourly.yaml",
            "schedules/taxi-nightly-kubernetes.yaml",
            "schedules/backfill-monthly.yaml",
        ],
        server,
        root,
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(
            "schedules/backfill-monthly.yaml: ok (schedule backfill-monthly: task backfill-range, next "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "schedules/taxi-hourly.yaml: ok (schedule taxi-hourly: job taxi-csv-to-parquet, next "
        ),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let job = root.join("jobs/taxi-csv-to-parquet.yaml");
    let task = root.join("jobs/backfill-range.yaml");
    let write = |name: &str, target: &Path, rest: &str| {
        std::fs::write(
            dir.path().join(name),
            format!(
                "apiVersion: sluice.dev/v1alpha1\nkind: Schedule\nmetadata:\n  name: bad\nspec:\n  cron: \"@daily\"\n  target: {}\n{rest}",
                target.display()
            ),
        )
        .unwrap();
    };
    write("job-args.yaml", &job, "  args: [a]\n");
    write(
        "task-no-state.yaml",
        &task,
        "  args: [\"{{ interval.end \"]\n",
    );
    write(
        "task-bad-env.yaml",
        &task,
        "  state: s3://b/\n  params:\n    API_TOKEN: x\n",
    );
    let out = sluice(
        &[
            "check",
            "job-args.yaml",
            "task-no-state.yaml",
            "task-bad-env.yaml",
        ],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    for expected in [
        "job-args.yaml:8:3: spec.args: only a TaskDefinition target takes args",
        "task-no-state.yaml:7:11: spec.target: a TaskDefinition target has no bucket of its own",
        "task-no-state.yaml:8:10: spec.args[0]: invalid template",
        "task-bad-env.yaml:10:5: spec.params.API_TOKEN: looks like a credential",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
}
