//! Schedules against the embedded S3 server: `sluice scheduler --once` end to end, catch-up
//! after simulated downtime, the concurrency policies, backfill, Lease contention between
//! two schedulers, schedule file errors, and the rendered CronJob against the strict schema.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sluice::schedule::daemon::{Clock, FiredRun, Scheduler};
use sluice::schedule::leader::LeaseLock;
use sluice::schedule::metrics::Metrics;
use sluice::spec::schedule::load_schedule_file;
use sluice::state::history::{FireStatus, HistoryRecord, Trigger};
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::kubeval::check_manifests;
use crate::support::scheduling::{self, local, scheduler, scheduler_counting, utc};
use crate::support::sluice;
use crate::support::state;
use crate::support::{self, TestServer};

/// The run ids of what `run_once` started.
fn ids(runs: Vec<FiredRun>) -> Vec<String> {
    runs.into_iter().map(|r| r.run_id).collect()
}

/// A job over two small CSV objects whose sink is one prefix per `hour` param, and a
/// schedule running it hourly with `hour` from the interval.
async fn setup(
    server: &TestServer,
    policy: &str,
    extra: &str,
) -> (Storage, String, tempfile::TempDir, PathBuf) {
    let (storage, bucket) = server.fresh().await;
    for i in 0..2 {
        let body = format!("id,fare\n{i}1,1.5\n{i}2,2.5\n{i}3,3.5\n");
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
    std::fs::create_dir_all(dir.path().join("schedules")).unwrap();
    std::fs::write(
        dir.path().join("jobs/fares.yaml"),
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
    schema:
      - {{ name: id, type: int64 }}
      - {{ name: fare, type: float64 }}
  sink:
    uri: s3://{bucket}/out/{{{{ params.hour }}}}/
    format: jsonl
  parallelism: 1
  shards: 1
  retries: 0
"#
        ),
    )
    .unwrap();
    let schedule = dir.path().join("schedules/fares-hourly.yaml");
    std::fs::write(
        &schedule,
        format!(
            r#"apiVersion: sluice.dev/v1alpha1
kind: Schedule
metadata:
  name: fares-hourly
spec:
  cron: "@hourly"
  timeZone: Europe/Berlin
  target: ../jobs/fares.yaml
  params:
    hour: "{{{{ interval.start | format('%Y%m%dT%H', 'UTC') }}}}"
  concurrencyPolicy: {policy}
{extra}"#
        ),
    )
    .unwrap();
    (storage, bucket, dir, schedule)
}

async fn history(storage: &Storage, bucket: &str) -> Vec<HistoryRecord> {
    scheduling::history(storage, &format!("s3://{bucket}/_sluice/"), "fares-hourly").await
}

async fn published(storage: &Storage, bucket: &str, run_id: &str) -> bool {
    let uri = state::run(bucket, "fares", run_id).success();
    storage.head(&uri).await.unwrap().is_some()
}

/// The run directories under the job's state prefix.
async fn runs(storage: &Storage, bucket: &str) -> Vec<String> {
    let prefix = sluice::state::RunLayout::runs_of(&state::root(bucket), "fares");
    let mut dirs: Vec<String> = storage
        .list_dirs(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            d.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    dirs.sort();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_three_missed_hours_a_restart_runs_them_in_order_each_once() {
    let server = support::embedded();
    let (storage, bucket, _dir, schedule) =
        setup(server, "Forbid", "  catchUp:\n    maxRuns: 24\n").await;
    // 10:05 UTC: the 10:00 fire is due (a new schedule starts with the latest fire).
    let mut first = scheduler(server, &storage, &schedule);
    let started = ids(first.run_once(utc("2026-11-22T10:05:00Z")).await.unwrap());
    assert_eq!(started, ["fares-20261122T1000Z"]);
    drop(first);
    // Down for 11:00, 12:00 and 13:00; restarted at 13:20 with nothing in memory.
    let metrics = Arc::new(Metrics::default());
    let mut restarted = scheduler_counting(server, &storage, &schedule, metrics.clone());
    let started = ids(restarted
        .run_once(utc("2026-11-22T13:20:00Z"))
        .await
        .unwrap());
    assert_eq!(
        started,
        [
            "fares-20261122T1100Z",
            "fares-20261122T1200Z",
            "fares-20261122T1300Z"
        ]
    );
    // Its /metrics count the three fires, and add up their runs' figures per job: 2 objects
    // of 3 records each per run.
    let text = metrics.render();
    for line in [
        r#"sluice_schedule_runs_started_total{schedule="fares-hourly"} 3"#,
        r#"sluice_schedule_runs_succeeded_total{schedule="fares-hourly"} 3"#,
        r#"sluice_runs_total{job="fares",kind="succeeded"} 3"#,
        r#"sluice_run_records_total{job="fares",kind="in"} 18"#,
        r#"sluice_run_objects_total{job="fares",kind="done"} 6"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // A third instance at the same time finds nothing to do: each interval ran once.
    let mut again = scheduler(server, &storage, &schedule);
    assert!(ids(again.run_once(utc("2026-11-22T13:30:00Z")).await.unwrap()).is_empty());

    let records = history(&storage, &bucket).await;
    let ids: Vec<&str> = records.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "fares-20261122T1000Z",
            "fares-20261122T1100Z",
            "fares-20261122T1200Z",
            "fares-20261122T1300Z"
        ]
    );
    assert!(
        records.iter().all(|r| r.status == FireStatus::Succeeded),
        "{records:?}"
    );
    assert_eq!(records[0].trigger, Trigger::Schedule);
    assert_eq!(records[1].trigger, Trigger::CatchUp);
    assert_eq!(records[3].trigger, Trigger::Schedule);
    // The interval of the 11:00 fire is [10:00, 11:00), and its param says so.
    assert_eq!(records[1].interval_start, utc("2026-11-22T10:00:00Z"));
    assert_eq!(records[1].params["hour"], "20261122T10");
    // Forbid: each catch-up run started after the previous one ended, oldest first.
    for pair in records[1..].windows(2) {
        assert!(
            pair[1].started_at >= pair[0].finished_at.unwrap(),
            "{pair:?}"
        );
    }
    assert_eq!(runs(&storage, &bucket).await, ids);
    for id in ids {
        assert!(published(&storage, &bucket, id).await, "{id} not published");
    }
    // Each run wrote its own interval's outputs: 2 objects x 3 records as JSON lines.
    let out: S3Uri = format!("s3://{bucket}/out/20261122T12/").parse().unwrap();
    let objects = storage.list(&out).await.unwrap();
    assert_eq!(objects.len(), 2, "{objects:?}");
    let mut lines = 0;
    for o in objects {
        let body = storage
            .get_bytes(&S3Uri::new(bucket.clone(), o.key))
            .await
            .unwrap()
            .unwrap();
        lines += body.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_keeps_the_newest_max_runs_and_drops_fires_past_the_deadline() {
    let server = support::embedded();
    let (storage, bucket, _dir, schedule) = setup(
        server,
        "Forbid",
        "  catchUp:\n    maxRuns: 3\n  startingDeadline: 150m\n",
    )
    .await;
    let mut s = scheduler(server, &storage, &schedule);
    ids(s.run_once(utc("2026-11-22T01:00:30Z")).await.unwrap());
    // Down from 02:00 to 06:00 (five fires). maxRuns keeps 04:00..06:00; the deadline
    // (2h30m) drops 04:00 at 06:40.
    let mut s = scheduler(server, &storage, &schedule);
    let started = ids(s.run_once(utc("2026-11-22T06:40:00Z")).await.unwrap());
    assert_eq!(started, ["fares-20261122T0500Z", "fares-20261122T0600Z"]);
    assert_eq!(
        runs(&storage, &bucket).await,
        [
            "fares-20261122T0100Z",
            "fares-20261122T0500Z",
            "fares-20261122T0600Z"
        ]
    );
}

/// Two fires due at once (the scheduler was down for one hour).
async fn two_due(policy: &str) -> (Vec<HistoryRecord>, Vec<String>, Storage, String) {
    let server = support::embedded();
    let (storage, bucket, _dir, schedule) =
        setup(server, policy, "  catchUp:\n    maxRuns: 5\n").await;
    let mut s = scheduler(server, &storage, &schedule);
    ids(s.run_once(utc("2026-11-22T08:00:10Z")).await.unwrap());
    let mut s = scheduler(server, &storage, &schedule);
    let started = ids(s.run_once(utc("2026-11-22T10:00:10Z")).await.unwrap());
    let records = history(&storage, &bucket).await;
    (records, started, storage, bucket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_runs_due_fires_side_by_side() {
    let (records, started, storage, bucket) = two_due("Allow").await;
    assert_eq!(started, ["fares-20261122T0900Z", "fares-20261122T1000Z"]);
    let (a, b) = (&records[1], &records[2]);
    assert!(
        b.started_at < a.finished_at.unwrap(),
        "not concurrent: {a:?} {b:?}"
    );
    assert!(records.iter().all(|r| r.status == FireStatus::Succeeded));
    assert!(published(&storage, &bucket, "fares-20261122T1000Z").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_starts_a_due_fire_only_after_the_running_one_ended() {
    let (records, started, _, _) = two_due("Forbid").await;
    assert_eq!(started, ["fares-20261122T0900Z", "fares-20261122T1000Z"]);
    let (a, b) = (&records[1], &records[2]);
    assert!(
        b.started_at >= a.finished_at.unwrap(),
        "overlap: {a:?} {b:?}"
    );
    assert!(records.iter().all(|r| r.status == FireStatus::Succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_stops_the_running_run_for_the_new_one() {
    let (records, started, storage, bucket) = two_due("Replace").await;
    assert_eq!(started, ["fares-20261122T0900Z", "fares-20261122T1000Z"]);
    assert_eq!(records[1].status, FireStatus::Replaced, "{records:?}");
    assert_eq!(records[2].status, FireStatus::Succeeded, "{records:?}");
    assert!(!published(&storage, &bucket, "fares-20261122T0900Z").await);
    assert!(published(&storage, &bucket, "fares-20261122T1000Z").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_runs_past_intervals_oldest_first_and_skips_published_ones() {
    let server = support::embedded();
    let (storage, bucket, _dir, schedule) = setup(server, "Forbid", "").await;
    let schedule = load_schedule_file(&schedule).unwrap();
    let from = utc("2026-11-20T00:00:00Z");
    let to = utc("2026-11-20T03:00:00Z");
    let runs1 =
        sluice::schedule::backfill::backfill(&schedule, &storage, &local(server), from, to, 2)
            .await
            .unwrap();
    let ids: Vec<&str> = runs1.iter().map(|r| r.run_id.as_str()).collect();
    // Intervals [00:00, 01:00), [01:00, 02:00), [02:00, 03:00).
    assert_eq!(
        ids,
        [
            "fares-20261120T0100Z",
            "fares-20261120T0200Z",
            "fares-20261120T0300Z"
        ]
    );
    assert!(runs1.iter().all(|r| r.exit == Some(0)));
    let runs2 =
        sluice::schedule::backfill::backfill(&schedule, &storage, &local(server), from, to, 2)
            .await
            .unwrap();
    assert!(runs2.iter().all(|r| r.exit.is_none()), "{runs2:?}");
    assert_eq!(runs(&storage, &bucket).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_once_runs_what_is_due_now_and_a_second_trigger_is_a_no_op() {
    let server = support::embedded();
    let (storage, bucket, dir, _) = setup(server, "Forbid", "").await;
    let before = Utc::now();
    let out = sluice(
        &["scheduler", "--schedules", "schedules", "--once"],
        server,
        dir.path(),
    );
    let after = Utc::now();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The latest hourly fire at or before now (the hour may turn while it runs).
    let expected: Vec<String> = [before, after]
        .iter()
        .map(|t| format!("fares-{}", t.format("%Y%m%dT%H00Z")))
        .collect();
    let run_id = stdout.trim().to_string();
    assert!(expected.contains(&run_id), "{stdout}");
    assert!(published(&storage, &bucket, &run_id).await);
    let records = history(&storage, &bucket).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, FireStatus::Succeeded);
    // The same fire again: nothing starts.
    let again = sluice(
        &["scheduler", "--schedules", "schedules", "--once"],
        server,
        dir.path(),
    );
    assert_eq!(again.status.code(), Some(0));
    if Utc::now().format("%H").to_string() == after.format("%H").to_string() {
        assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), "");
        assert_eq!(runs(&storage, &bucket).await, vec![run_id.clone()]);
    }
    // `schedule next` lists the coming fires with their run ids.
    let next = sluice(
        &[
            "schedule",
            "next",
            "schedules/fares-hourly.yaml",
            "-n",
            "2",
            "--after",
            "2026-03-29T00:30:00Z",
        ],
        server,
        dir.path(),
    );
    let text = String::from_utf8(next.stdout).unwrap();
    assert!(
        text.contains("2026-03-29 03:00 CEST (+02:00)  (2026-03-29 01:00 UTC)"),
        "{text}"
    );
    assert!(text.contains("run fares-20260329T0100Z"), "{text}");
}

#[test]
fn schedule_file_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.yaml"), "kind: Job\n").unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: sluice.dev/v1alpha1\nkind: Schedule\nmetadata:\n  name: bad\nspec:\n  cron: \"0 2 * *\"\n  timeZone: Europe/Berlinn\n  target: job.yaml\n  startingDeadline: soon\n  catchUp:\n    maxRun: 3\n",
    )
    .unwrap();
    let err = load_schedule_file(&path).unwrap_err().to_string();
    let origin = path.display().to_string();
    assert!(
        err.contains(&format!("{origin}:6:9: spec.cron: must have five fields")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{origin}:7:13: spec.timeZone: unknown time zone")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{origin}:11:5: spec.catchUp.maxRun: unknown field"
        )),
        "{err}"
    );
    let missing = dir.path().join("missing.yaml");
    std::fs::write(
        &missing,
        "apiVersion: sluice.dev/v1alpha1\nkind: Schedule\nmetadata:\n  name: m\nspec:\n  cron: \"@daily\"\n  target: nowhere.yaml\n",
    )
    .unwrap();
    let err = load_schedule_file(&missing).unwrap_err().to_string();
    assert!(err.contains(":7:11: spec.target: cannot read"), "{err}");
}

#[test]
fn example_schedules_load_and_the_kubernetes_one_renders_a_valid_cron_job() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hourly = load_schedule_file(&root.join("schedules/taxi-hourly.yaml")).unwrap();
    assert_eq!(hourly.params.templated(), ["month"]);
    // Templated params need a scheduler: rendering refuses them.
    let refused = sluice::schedule::fire::render_cron_job(&hourly, None, None).unwrap_err();
    assert!(
        refused.to_string().contains("spec.params: month"),
        "{refused}"
    );

    let nightly = load_schedule_file(&root.join("schedules/taxi-nightly-kubernetes.yaml")).unwrap();
    let yaml =
        sluice::schedule::fire::render_cron_job(&nightly, Some("sluice:test"), None).unwrap();
    check_manifests(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let docs: Vec<serde_json::Value> = yaml
        .split("---\n")
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect();
    assert_eq!(docs[0]["kind"], "ConfigMap");
    let cron = &docs[1];
    assert_eq!(cron["kind"], "CronJob");
    assert_eq!(cron["spec"]["schedule"], "0 2 * * *");
    assert_eq!(cron["spec"]["timeZone"], "Europe/Berlin");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    assert_eq!(cron["spec"]["startingDeadlineSeconds"], 7200);
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[..2], ["submit", "--in-cluster"]);
    assert!(!args.contains(&"--run-id"), "{args:?}");
    // Each fire's run id comes from the scheduled time in the Job's name: the
    // Job controller's pod label, substituted by the kubelet.
    let at = args.iter().position(|a| *a == "--scheduled-job").unwrap();
    assert_eq!(args[at + 1], "$(SLUICE_LAUNCHER_JOB)");
    let env = &pod["containers"][0]["env"];
    let var = env
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "SLUICE_LAUNCHER_JOB")
        .unwrap();
    assert_eq!(
        var["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['batch.kubernetes.io/job-name']"
    );
    // A permanent failure fails the launcher Job instead of running the fire again.
    let rules = &cron["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"];
    assert_eq!(rules[1]["action"], "FailJob");
    assert_eq!(
        rules[1]["onExitCodes"]["values"],
        serde_json::json!([2, 3, 4])
    );
    // The launcher reads the job from the schedule's ConfigMap.
    assert_eq!(
        pod["volumes"][1]["configMap"]["name"],
        docs[0]["metadata"]["name"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_contend_for_the_lease_and_exactly_one_fires() {
    let server = support::embedded();
    let (storage, bucket, _dir, schedule) = setup(server, "Forbid", "").await;
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    let lease = |id: &str| LeaseLock::new(client.clone(), "sluice", "sluice-scheduler", id, 15);
    let t0 = utc("2026-11-22T10:00:05Z");

    let mut a = scheduler(server, &storage, &schedule).with_lease(lease("a"));
    let mut b = scheduler(server, &storage, &schedule).with_lease(lease("b"));
    let fired_a = ids(a.run_once(t0).await.unwrap());
    let fired_b = ids(b.run_once(t0).await.unwrap());
    assert_eq!(fired_a, ["fares-20261122T1000Z"]);
    assert!(fired_b.is_empty(), "{fired_b:?}");
    // a renews; b still waits.
    assert!(
        lease("a")
            .try_acquire(t0 + Duration::seconds(10))
            .await
            .unwrap()
    );
    assert!(
        !lease("b")
            .try_acquire(t0 + Duration::seconds(20))
            .await
            .unwrap()
    );
    // a stops renewing; once the lease expired b takes over and fires the next hour.
    let t1 = utc("2026-11-22T11:00:05Z");
    let fired_b = ids(b.run_once(t1).await.unwrap());
    assert_eq!(fired_b, ["fares-20261122T1100Z"]);
    assert!(ids(a.run_once(t1).await.unwrap()).is_empty());
    let ids: Vec<String> = history(&storage, &bucket)
        .await
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(ids, ["fares-20261122T1000Z", "fares-20261122T1100Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedulers_racing_for_the_lease_fire_each_run_exactly_once() {
    let server = support::embedded();
    let (storage, bucket, _dir, schedule) = setup(server, "Forbid", "").await;
    let client = support::atomic_fake_api().await;
    let lease = |id: &str| LeaseLock::new(client.clone(), "sluice", "sluice-scheduler", id, 15);
    let names = ["a", "b", "c"];
    let mut replicas: Vec<Scheduler> = names
        .iter()
        .map(|id| scheduler(server, &storage, &schedule).with_lease(lease(id)))
        .collect();
    let mut expected = Vec::new();
    for hour in 10..14 {
        // The Lease expired since the last hour: every replica tries to take it at the same
        // instant, each on its own task, released together by a barrier.
        let now = utc(&format!("2026-11-22T{hour}:00:05Z"));
        let barrier = Arc::new(tokio::sync::Barrier::new(replicas.len()));
        let tasks: Vec<_> = replicas
            .drain(..)
            .map(|mut s| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let fired = ids(s.run_once(now).await.unwrap());
                    (s, fired)
                })
            })
            .collect();
        let mut fired = Vec::new();
        for task in tasks {
            let (s, f) = task.await.unwrap();
            replicas.push(s);
            fired.push(f);
        }
        let run = format!("fares-20261122T{hour}00Z");
        let firing: Vec<usize> = (0..fired.len()).filter(|i| !fired[*i].is_empty()).collect();
        assert_eq!(firing.len(), 1, "hour {hour}: {fired:?}");
        assert_eq!(fired[firing[0]], std::slice::from_ref(&run), "hour {hour}");
        // The one that fired holds the Lease.
        let held = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            client.clone(),
            "sluice",
        )
        .get("sluice-scheduler")
        .await
        .unwrap();
        assert_eq!(
            held.spec.unwrap().holder_identity.as_deref(),
            Some(names[firing[0]])
        );
        expected.push(run);
    }
    let history: Vec<String> = history(&storage, &bucket)
        .await
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(history, expected);
    assert_eq!(runs(&storage, &bucket).await, expected);
}

/// A clock the test moves: `sleep_until` returns once the test set it at or past the time.
struct ManualClock(tokio::sync::watch::Sender<DateTime<Utc>>);

#[async_trait::async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.borrow()
    }
    async fn sleep_until(&self, t: DateTime<Utc>) {
        let mut now = self.0.subscribe();
        let _ = now.wait_for(|now| *now >= t).await;
    }
}

/// Waits (up to a minute) until the history holds `n` succeeded runs.
async fn until_succeeded(storage: &Storage, bucket: &str, n: usize) -> Vec<HistoryRecord> {
    for _ in 0..300 {
        let records = history(storage, bucket).await;
        if records
            .iter()
            .filter(|r| r.status == FireStatus::Succeeded)
            .count()
            >= n
        {
            return records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!(
        "{n} runs did not succeed: {:?}",
        history(storage, bucket).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_starts_a_waiting_fire_when_a_run_ends_and_the_next_on_time() {
    let server = support::embedded();
    let (storage, bucket, _dir, schedule) =
        setup(server, "Forbid", "  catchUp:\n    maxRuns: 5\n").await;
    ids(scheduler(server, &storage, &schedule)
        .run_once(utc("2026-11-22T08:00:10Z"))
        .await
        .unwrap());
    // Restarted at 10:00:10: 09:00 runs, 10:00 waits for it (Forbid). The clock stands
    // still, so only the end of the 09:00 run can start the 10:00 one.
    let (clock, _) = tokio::sync::watch::channel(utc("2026-11-22T10:00:10Z"));
    let clock = Arc::new(ManualClock(clock));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut daemon = scheduler(server, &storage, &schedule);
    let daemon = {
        let clock = clock.clone();
        tokio::spawn(async move {
            daemon
                .run(clock, async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    let records = until_succeeded(&storage, &bucket, 3).await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(records[2].started_at >= records[1].finished_at.unwrap());
    // 11:00:02: the daemon wakes for the 11:00 fire.
    clock.0.send_replace(utc("2026-11-22T11:00:02Z"));
    let records = until_succeeded(&storage, &bucket, 4).await;
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    let fired: Vec<(&str, Trigger)> = records
        .iter()
        .map(|r| (r.run_id.as_str(), r.trigger))
        .collect();
    assert_eq!(
        fired,
        [
            ("fares-20261122T0800Z", Trigger::Schedule),
            ("fares-20261122T0900Z", Trigger::CatchUp),
            ("fares-20261122T1000Z", Trigger::Schedule),
            ("fares-20261122T1100Z", Trigger::Schedule),
        ]
    );
    assert_eq!(records[3].lag_seconds, 2.0);
}
