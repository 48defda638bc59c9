//! Data validation rules through `sluice run` and `sluice check`: every rule on clean and
//! on seeded bad data, at object, shard and run scope; reject routing; warn vs error.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::state::{self, json};
use crate::support::{self, sluice};

const EXAMPLE: &str = "jobs/validate-orders.yaml";
/// The name of the example job.
const JOB: &str = "validate-orders";
const FIXTURES: &str = "tests/fixtures/validation";

/// Uploads the fixture batches under `orders/` of `bucket`.
async fn upload_fixtures(storage: &Storage, bucket: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURES);
    for batch in ["clean", "dirty"] {
        for entry in std::fs::read_dir(root.join(batch)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            storage
                .put_bytes(
                    &S3Uri::new(bucket, format!("orders/{batch}/{name}")),
                    Bytes::from(std::fs::read(&path).unwrap()),
                )
                .await
                .unwrap();
        }
    }
}

/// The example job, pointed at `bucket`, with `edit` applied to its text.
fn example_job(dir: &Path, bucket: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE))
        .unwrap()
        .replace("s3://raw/orders/", &format!("s3://{bucket}/orders/"))
        .replace("s3://curated/orders/", &format!("s3://{bucket}/out/"));
    let path = dir.join("job.yaml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// The example job's text with its `rules:` list replaced by `rules` (the list items).
fn with_rules(text: &str, rules: &str) -> String {
    let start = text.find("    rules:").unwrap();
    let end = text.find("  sink:").unwrap();
    format!("{}    rules:\n{rules}{}", &text[..start], &text[end..])
}

fn check<'a>(report: &'a Value, rule: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("report.json lists checks")
        .iter()
        .find(|c| c["rule"] == rule)
        .unwrap_or_else(|| panic!("no check {rule} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_data_passes_every_rule_and_publishes() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        upload_fixtures(&storage, &bucket).await;
        let dir = tempfile::tempdir().unwrap();
        let job = example_job(dir.path(), &bucket, |t| t);
        let out = sluice(
            &["run", job.to_str().unwrap(), "--run-id", "clean"],
            server,
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "{}", server.name);
        let run = state::run(&bucket, JOB, "clean");
        let manifest = json(&storage, &run.success()).await.expect("published");
        assert_eq!(manifest["records"]["input"], 120);
        assert_eq!(manifest["records"]["output"], 120);
        let report = json(&storage, &run.report()).await.unwrap();
        let checks = report["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 12, "one entry per rule: {report:#}");
        for c in checks {
            assert_eq!(c["passed"], true, "{c:#}");
        }
        let dates = check(&report, "order-dates");
        assert_eq!(dates["scope"], "object");
        assert_eq!(dates["subjects"], 3);
        assert_eq!(dates["records_checked"], 120);
        let unique = check(&report, "one-row-per-order");
        assert_eq!(unique["scope"], "run");
        assert_eq!(unique["records_checked"], 120);
        let revenue = check(&report, "revenue-positive");
        assert!(
            revenue["details"].as_array().is_none(),
            "a passing check has no failure details: {revenue:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seeded_bad_data_fails_with_a_report_naming_each_problem() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        upload_fixtures(&storage, &bucket).await;
        let dir = tempfile::tempdir().unwrap();
        let job = example_job(dir.path(), &bucket, |t| t);
        let out = sluice(
            &[
                "run",
                job.to_str().unwrap(),
                "--run-id",
                "dirty",
                "--param",
                "batch=dirty",
            ],
            server,
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(3), "{}", server.name);
        let run = state::run(&bucket, JOB, "dirty");
        assert!(json(&storage, &run.success()).await.is_none());
        let report = json(&storage, &run.report()).await.unwrap();

        let dates = check(&report, "order-dates");
        assert_eq!(dates["passed"], false);
        assert_eq!(dates["records_failed"], 1);
        let example = &dates["examples"][0];
        assert!(example["object"].as_str().unwrap().ends_with("dirty/b.csv"));
        assert_eq!(example["row"], 5);
        assert_eq!(example["values"]["ordered_on"], "2026-02-30");

        let amounts = check(&report, "amounts");
        assert_eq!(amounts["passed"], false);
        let example = &amounts["examples"][0];
        assert!(example["object"].as_str().unwrap().ends_with("dirty/c.csv"));
        assert_eq!(example["row"], 3);
        assert_eq!(example["values"]["amount"], "-12.5");

        let unique = check(&report, "one-row-per-order");
        assert_eq!(unique["passed"], false, "{unique:#}");
        assert_eq!(unique["records_failed"], 1);
        let dup = &unique["examples"][0];
        let places = [
            (
                dup["object"].as_str().unwrap().to_string(),
                dup["row"].as_u64().unwrap(),
            ),
            (
                dup["first"]["object"].as_str().unwrap().to_string(),
                dup["first"]["row"].as_u64().unwrap(),
            ),
        ];
        assert!(
            places
                .iter()
                .any(|(o, r)| o.ends_with("dirty/a.csv") && *r == 17)
                && places
                    .iter()
                    .any(|(o, r)| o.ends_with("dirty/c.csv") && *r == 6),
            "{dup:#}"
        );

        // The unknown status was routed to the rejects object, not failed.
        let status = check(&report, "known-status");
        assert_eq!(status["passed"], true, "{status:#}");
        assert_eq!(status["records_rejected"], 1);
        let a = S3Uri::new(bucket.as_str(), "out/dirty/_rejected/a.csv.jsonl");
        let rejects = storage
            .get_bytes(&a)
            .await
            .unwrap()
            .expect("rejects of a.csv");
        let line: Value = serde_json::from_slice(rejects.trim_ascii_end()).unwrap();
        assert_eq!(line["error"], "failed rule known-status");
        assert_eq!(line["line"], 10);
        assert!(line["record"].as_str().unwrap().contains("\"lost\""));

        let stdout = String::from_utf8_lossy(&out.stdout);
        for rule in ["order-dates", "amounts", "one-row-per-order"] {
            assert!(stdout.contains(rule), "the summary names {rule}: {stdout}");
        }
        let uploads = storage
            .list_multipart_uploads(&S3Uri::new(bucket.as_str(), ""))
            .await
            .unwrap();
        assert!(uploads.is_empty(), "{uploads:?}");
    }
}

/// One object's marker: the rejected record keeps input = output + rejected.
#[tokio::test(flavor = "multi_thread")]
async fn rejected_rows_keep_the_accounting() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    upload_fixtures(&storage, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    // Only the reject rule and the count relation: the dirty batch's a.csv publishes.
    let job = example_job(dir.path(), &bucket, |t| {
        with_rules(
            &t,
            "      - name: counts-balance\n        record_count: equal\n      - name: known-status\n        allowed:\n          status: [paid, refunded, pending]\n        on_fail: reject\n",
        )
    });
    let out = sluice(
        &[
            "run",
            job.to_str().unwrap(),
            "--run-id",
            "routed",
            "--param",
            "batch=dirty",
        ],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let manifest = json(&storage, &state::run(&bucket, JOB, "routed").success())
        .await
        .unwrap();
    let r = &manifest["records"];
    assert_eq!(r["input"], 120);
    assert_eq!(r["rejected"], 1);
    assert_eq!(r["output"], 119);
    assert_eq!(manifest["rejects"].as_array().unwrap().len(), 1);
}

/// A warning is reported and publishes; the same rule as an error fails the run.
#[tokio::test(flavor = "multi_thread")]
async fn warn_reports_and_publishes_while_error_fails() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    upload_fixtures(&storage, &bucket).await;
    for (severity, code) in [("warn", 0), ("error", 3)] {
        let dir = tempfile::tempdir().unwrap();
        let job = example_job(dir.path(), &bucket, |t| {
            with_rules(
                &t,
                &format!(
                    "      - name: amounts\n        severity: {severity}\n        range:\n          amount: {{ min: 0 }}\n"
                ),
            )
        });
        let run_id = format!("sev-{severity}");
        let out = sluice(
            &[
                "run",
                job.to_str().unwrap(),
                "--run-id",
                &run_id,
                "--param",
                "batch=dirty",
            ],
            server,
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(code), "{severity}");
        let run = state::run(&bucket, JOB, &run_id);
        let published = json(&storage, &run.success()).await.is_some();
        assert_eq!(published, code == 0, "{severity}");
        let report = json(&storage, &run.report()).await.unwrap();
        let amounts = check(&report, "amounts");
        assert_eq!(amounts["passed"], false);
        assert_eq!(amounts["severity"], severity);
        assert_eq!(amounts["records_failed"], 1);
    }
}

/// Shard scope: each shard is judged on its own objects.
#[tokio::test(flavor = "multi_thread")]
async fn shard_scope_judges_each_shard() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    upload_fixtures(&storage, &bucket).await;
    for (batch, code) in [("clean", 0), ("dirty", 3)] {
        let dir = tempfile::tempdir().unwrap();
        let job = example_job(dir.path(), &bucket, |t| {
            with_rules(
                &t,
                "      - name: status-routed\n        allowed:\n          status: [paid, refunded, pending]\n        on_fail: reject\n      - name: shard-keeps-records\n        scope: shard\n        record_count: { min_ratio: 0.99 }\n      - name: shard-has-records\n        scope: shard\n        non_empty: true\n",
            )
        });
        let run_id = format!("shard-{batch}");
        let out = sluice(
            &[
                "run",
                job.to_str().unwrap(),
                "--run-id",
                &run_id,
                "--param",
                &format!("batch={batch}"),
            ],
            server,
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(code), "{batch}");
        let report = json(&storage, &state::run(&bucket, JOB, &run_id).report())
            .await
            .unwrap();
        let keeps = check(&report, "shard-keeps-records");
        assert_eq!(keeps["scope"], "shard");
        assert_eq!(keeps["subjects"], 3);
        assert_eq!(keeps["subjects_failed"], if code == 0 { 0 } else { 1 });
        if code != 0 {
            let detail = keeps["details"][0].as_str().unwrap();
            assert!(detail.starts_with("shard "), "{detail}");
            assert!(detail.contains("output 39 < 0.99 x input 40"), "{detail}");
        }
        assert_eq!(check(&report, "shard-has-records")["passed"], true);
    }
}

/// `sluice check` finds rule problems before anything runs, with file and line.
#[test]
fn check_refuses_bad_rules_with_file_and_line() {
    let server = support::embedded();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("      - not_null: [order_id, nope]\n", "no column \"nope\""),
        (
            "      - format:\n          customer: { regex: \"([a-z\" }\n",
            "is not a valid regex",
        ),
        (
            "      - sql: SELECT count(*) FROM output\n",
            "must be a boolean",
        ),
        (
            "      - range:\n          amount: { min: cheap }\n",
            "\"cheap\" is not a Float64",
        ),
        (
            "      - unique: [order_id]\n        on_fail: reject\n",
            "reject applies to row rules",
        ),
    ];
    for (rule, message) in cases {
        let job = example_job(dir.path(), "bucket", |t| with_rules(&t, rule));
        let out = sluice(&["check", job.to_str().unwrap()], server, dir.path());
        assert_eq!(out.status.code(), Some(2), "{rule}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{rule}: {stderr}");
        // The problem is located in the file: job.yaml:LINE:COLUMN.
        let located = stderr
            .lines()
            .any(|l| l.contains("job.yaml:") && l.contains("spec.validate.rules[0]"));
        assert!(located, "{stderr}");
    }
    let job = example_job(dir.path(), "bucket", |t| t);
    let out = sluice(&["check", job.to_str().unwrap()], server, dir.path());
    assert_eq!(out.status.code(), Some(0));
}

/// Each remaining kind fails on data seeded for it (here made by a step over the clean
/// batch), at the scope it is written for, and names what failed.
#[tokio::test(flavor = "multi_thread")]
async fn every_kind_fails_on_data_seeded_for_it() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    upload_fixtures(&storage, &bucket).await;
    let nickname = "  transform:\n    - name: seeded\n      sql: SELECT *, CASE WHEN order_id = 7 THEN NULL ELSE customer END AS nickname FROM input\n";
    let drop_five = "  transform:\n    - name: seeded\n      sql: SELECT * FROM input WHERE order_id <> 5\n      filters: true\n";
    let drop_all = "  transform:\n    - name: seeded\n      sql: SELECT * FROM input WHERE order_id < 0\n      filters: true\n";
    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "nulls",
            nickname,
            "      - name: nulls\n        not_null: [nickname]\n",
            "\"row\":7",
        ),
        (
            "counts",
            drop_five,
            "      - name: counts\n        record_count: equal\n",
            "filtered 1",
        ),
        (
            "empty",
            drop_all,
            "      - name: empty\n        non_empty: true\n        scope: run\n",
            "no records",
        ),
        (
            "types",
            "",
            "      - name: types\n        schema:\n          amount: int64\n",
            "expected int64",
        ),
        (
            "sizes",
            "",
            "      - name: sizes\n        size:\n          output: { max: 100 }\n",
            "> max 100",
        ),
        (
            "object-sql",
            "",
            "      - name: object-sql\n        sql: SELECT max(amount) < 100, concat('max ', max(amount)) FROM output\n",
            "max ",
        ),
        (
            "run-sql",
            "",
            "      - name: run-sql\n        scope: run\n        sql: SELECT count(*) = 3, concat(count(*), ' orders') FROM output\n",
            "120 orders",
        ),
    ];
    for (rule, step, rules, detail) in cases {
        let dir = tempfile::tempdir().unwrap();
        let job = example_job(dir.path(), &bucket, |t| {
            // The step goes before `validate:`, the rules replace the example's.
            let start = t.find("  validate:").unwrap();
            with_rules(&format!("{}{step}{}", &t[..start], &t[start..]), rules)
        });
        let run_id = format!("kind-{rule}");
        let out = sluice(
            &["run", job.to_str().unwrap(), "--run-id", &run_id],
            server,
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(3), "{rule}");
        let run = state::run(&bucket, JOB, &run_id);
        assert!(json(&storage, &run.success()).await.is_none());
        let report = json(&storage, &run.report()).await.unwrap();
        let c = check(&report, rule);
        assert_eq!(c["passed"], false, "{rule}: {c:#}");
        let text = c.to_string();
        assert!(text.contains(detail), "{rule}: {detail:?} not in {c:#}");
    }
}

/// Run-scope SQL reads the outputs of every structured sink format, compressed or not, with
/// the column types of the data (a sum over a number column).
#[tokio::test(flavor = "multi_thread")]
async fn run_scope_sql_reads_csv_and_json_lines_outputs() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    upload_fixtures(&storage, &bucket).await;
    let sinks = [
        ("csv", "    format: csv\n"),
        ("csv-gz", "    format: csv\n    compression: gzip\n"),
        (
            "csv-semicolon",
            "    format: csv\n    csv:\n      delimiter: \";\"\n",
        ),
        ("jsonl-zst", "    format: jsonl\n    compression: zstd\n"),
    ];
    for (name, sink) in sinks {
        for (expect, count) in [(0, 120), (3, 3)] {
            let dir = tempfile::tempdir().unwrap();
            let rules = format!(
                "      - name: run-sql\n        scope: run\n        sql: SELECT count(*) = {count} AND sum(amount) > 0, concat(count(*), ' orders') FROM output\n"
            );
            let job = example_job(dir.path(), &bucket, |t| {
                with_rules(&t, &rules).replace("    format: parquet\n", sink)
            });
            let run_id = format!("{name}-{count}");
            let out = sluice(
                &["run", job.to_str().unwrap(), "--run-id", &run_id],
                server,
                dir.path(),
            );
            let run = state::run(&bucket, JOB, &run_id);
            let report = json(&storage, &run.report()).await.unwrap();
            let c = check(&report, "run-sql");
            assert_eq!(out.status.code(), Some(expect), "{name}: {c:#}");
            assert_eq!(c["passed"], expect == 0, "{name}: {c:#}");
            if expect != 0 {
                assert!(c.to_string().contains("120 orders"), "{name}: {c:#}");
            }
            assert_eq!(json(&storage, &run.success()).await.is_some(), expect == 0);
        }
    }
}
