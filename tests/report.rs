//! report.html: publish writes the page beside report.json for every run, failed or not, and
//! `sluice report` writes it again from the run's state. The page is checked here for its
//! content; tests/browser/check_report.py opens the one this test leaves behind in headless
//! Chromium.

use std::io::Write;

use bytes::Bytes;
use sluice::storage::uri::S3Uri;

use crate::support::job_yaml::JobYaml;
use crate::support::state::{self, json};
use crate::support::{self, sluice};

/// `id,name` rows, every `bad_every`-th id not a number.
fn rows(first: u64, count: u64, bad_every: u64) -> Vec<u8> {
    let mut out = b"id,name\n".to_vec();
    for i in first..first + count {
        if i % bad_every == 0 {
            writeln!(out, "oops-{i},name {i}").unwrap();
        } else {
            writeln!(out, "{i},name {i}").unwrap();
        }
    }
    out
}

/// A run over two shards with rejected records and a failed rule: the page shows its
/// shards, phases, throughput, accounting, the failed rule and the rejected records, loads
/// nothing from the network, and is served as HTML.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_with_rejects_over_two_shards_gets_its_page() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    for (i, key) in ["in/a.csv", "in/b.csv"].iter().enumerate() {
        storage
            .put_bytes(
                &S3Uri::new(bucket.as_str(), *key),
                Bytes::from(rows(i as u64 * 1_000, 1_000, 97)),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let job = JobYaml::new("paged")
        .source(format!("s3://{bucket}/in/"), "csv")
        .schema(&[("id", "int64"), ("name", "string")])
        .validate(
            "    on_bad_record: reject
    max_bad_records: 50
    rules:
      - name: small-ids
        range:
          id: { max: 1500 }",
        )
        .sink(format!("s3://{bucket}/out/"))
        .set("shards", 2)
        .write(dir.path().join("paged.yaml"));
    let out = sluice(
        &["run", job.to_str().unwrap(), "--run-id", "r1"],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let layout = state::run(&bucket, "paged", "r1");
    assert!(
        stdout.contains(&layout.report_html().to_string()),
        "{stdout}"
    );

    let page = storage
        .get_bytes(&layout.report_html())
        .await
        .unwrap()
        .expect("report.html");
    let page = String::from_utf8(page.to_vec()).unwrap();
    let report = json(&storage, &layout.report()).await.unwrap();
    assert_eq!(report["shards"].as_array().unwrap().len(), 2);
    // Per-phase timings are in the report, per shard and in total, and add up.
    let phase_sum = |v: &serde_json::Value| -> f64 {
        v.as_object()
            .unwrap()
            .values()
            .map(|s| s.as_f64().unwrap())
            .sum()
    };
    let shards: f64 = report["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| phase_sum(&s["phases"]))
        .sum();
    assert!(shards > 0.0);
    assert!((phase_sum(&report["phases"]) - shards).abs() < 1e-6);

    for text in [
        "<title>paged · r1 · failed</title>",
        "failed · exit 3",
        "Shards over time",
        "shard 0",
        "shard 1",
        "Throughput",
        "Where the time went",
        "small-ids",
        "Rejected records (a sample)",
        "oops-97",
        "in/a.csv",
        "in/b.csv",
        "none: the run did not publish",
    ] {
        assert!(page.contains(text), "missing {text:?}");
    }
    // Two timeline bars, a stacked bar per shard and the run's, two throughput lines.
    assert_eq!(page.matches("<svg").count(), 4);
    assert_eq!(page.matches("<polyline").count(), 2);
    // in/a.csv (ids 0 to 999) passes with its bad ids rejected; in/b.csv fails the rule, so
    // only a.csv's records are accounted: 1,000 in, the bad ones rejected, the rest out.
    let rejected = (0..1_000u64).filter(|i| i % 97 == 0).count();
    assert_eq!(report["records"]["rejected"], rejected);
    assert!(page.contains(&format!(
        "<td>1000</td><td>{}</td><td>{rejected}</td>",
        1_000 - rejected
    )));
    assert!(page.contains("Failed objects"));
    // Self-contained: nothing to fetch.
    for reference in ["src=", "href=", "url(", "@import"] {
        assert!(!page.contains(reference), "{reference}");
    }

    // `sluice report` writes the same page again, to a local file.
    let local = dir.path().join("page.html");
    let out = sluice(
        &[
            "report",
            "r1",
            "--job",
            job.to_str().unwrap(),
            "--output",
            local.to_str().unwrap(),
        ],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let again = std::fs::read_to_string(&local).unwrap();
    assert_eq!(again, page);
    // Left for the browser check (tests/browser/check_report.py).
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("report.html"), &page).unwrap();

    // Resumed, the failed shard runs again (and fails again): its first attempt is in the
    // report and drawn beside the second.
    let out = sluice(
        &["resume", "r1", "--local", job.to_str().unwrap()],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(3));
    let report = json(&storage, &layout.report()).await.unwrap();
    let retried: Vec<&serde_json::Value> = report["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["exit_code"] == 3)
        .collect();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0]["earlier"].as_array().unwrap().len(), 1);
    assert_eq!(retried[0]["earlier"][0]["finished"], true);
    let page = storage
        .get_bytes(&layout.report_html())
        .await
        .unwrap()
        .expect("report.html");
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(
        page.contains("attempt 1 of 2: finished with failures and was retried"),
        "{page}"
    );
    assert_eq!(page.matches("<svg").count(), 4);

    // A run that was never published has no report to write.
    let out = sluice(
        &["report", "nope", "--job", job.to_str().unwrap()],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no report.json"));
}

/// A one-request HTTP server on loopback standing in for a Pushgateway: it answers 200 and
/// hands over the request line and body it got.
fn one_request_server() -> (u16, std::thread::JoinHandle<(String, String)>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        (
            request_line.trim().to_string(),
            String::from_utf8(body).unwrap(),
        )
    });
    (port, handle)
}

/// `sluice run --metrics-file --pushgateway`: the run's figures as OpenMetrics text, in a
/// file and pushed (PUT, grouped by job and run) to a Pushgateway.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_writes_and_pushes_its_metrics() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    storage
        .put_bytes(
            &S3Uri::new(bucket.as_str(), "in/a.csv"),
            Bytes::from(rows(0, 500, 97)),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = JobYaml::new("counted")
        .source(format!("s3://{bucket}/in/"), "csv")
        .schema(&[("id", "int64"), ("name", "string")])
        .validate("    on_bad_record: reject\n    max_bad_records: 10")
        .sink(format!("s3://{bucket}/out/"))
        .write(dir.path().join("counted.yaml"));
    let (port, pushed) = one_request_server();
    let file = dir.path().join("counted.prom");
    let out = sluice(
        &[
            "run",
            job.to_str().unwrap(),
            "--run-id",
            "m1",
            "--metrics-file",
            file.to_str().unwrap(),
            "--pushgateway",
            &format!("http://127.0.0.1:{port}"),
        ],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&file).unwrap();
    // Ids 0, 97, ..., 485 are not numbers: 6 rejected of 500.
    for line in [
        r#"sluice_run_records_total{job="counted",run="m1",kind="in"} 500"#,
        r#"sluice_run_records_total{job="counted",run="m1",kind="out"} 494"#,
        r#"sluice_run_records_total{job="counted",run="m1",kind="rejected"} 6"#,
        r#"sluice_run_objects_total{job="counted",run="m1",kind="done"} 1"#,
        r#"sluice_runs_total{job="counted",run="m1",kind="succeeded"} 1"#,
        r#"sluice_run_exit_code{job="counted",run="m1"} 0"#,
        "# EOF",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let (request, body) = pushed.join().unwrap();
    assert_eq!(request, "PUT /metrics/job/counted/run/m1 HTTP/1.1");
    assert_eq!(body, text);

    // Only plain HTTP: anything else is refused before the run.
    let out = sluice(
        &[
            "run",
            job.to_str().unwrap(),
            "--pushgateway",
            "https://gw:9091",
        ],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}
