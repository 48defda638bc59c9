//! Run metrics in the OpenMetrics text form (prometheus-client): records, bytes, objects,
//! failures, rejects and time per phase of a run, by job. The scheduler serves them for the
//! runs it fires; `sluice run` and `sluice submit` write them for their run to a file or push
//! them to a Pushgateway.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use crate::state::report::{ReportStatus, RunReport};

/// A label set: `job`, `run` where one run is exported alone, and a `kind`.
type Labels = Vec<(&'static str, String)>;

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The run families, registered in a registry.
#[derive(Clone)]
pub struct RunMetrics {
    runs: Family<Labels, Counter>,
    records: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    objects: Family<Labels, Counter>,
    phase_seconds: Family<Labels, FloatCounter>,
    duration_seconds: Family<Labels, FloatGauge>,
    finished: Family<Labels, Gauge>,
    exit_code: Family<Labels, Gauge>,
}

impl RunMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> RunMetrics {
        let r = registry;
        RunMetrics {
            runs: registered(
                r,
                "sluice_runs",
                "Runs ended, by outcome (succeeded, failed)",
            ),
            records: registered(
                r,
                "sluice_run_records",
                "Records by kind: in, out, rejected, skipped, filtered",
            ),
            bytes: registered(
                r,
                "sluice_run_bytes",
                "Bytes read from the source and written to the sink",
            ),
            objects: registered(
                r,
                "sluice_run_objects",
                "Source objects (tasks) by outcome: done, failed",
            ),
            phase_seconds: registered(
                r,
                "sluice_run_phase_seconds",
                "Busy time of the objects' pipelines by phase (phases overlap)",
            ),
            duration_seconds: registered(
                r,
                "sluice_run_duration_seconds",
                "Wall time of the latest run",
            ),
            finished: registered(
                r,
                "sluice_run_finished_timestamp_seconds",
                "When the latest run was published (Unix time)",
            ),
            exit_code: registered(r, "sluice_run_exit_code", "The exit code of the latest run"),
        }
    }

    /// Adds a run's figures; `run` labels them with the run id too (one run exported alone).
    pub fn record(&self, report: &RunReport, with_run: bool) {
        let mut base: Labels = vec![("job", report.job.clone())];
        if with_run {
            base.push(("run", report.run_id.clone()));
        }
        let kind = |kind: &str| {
            let mut labels = base.clone();
            labels.push(("kind", kind.to_string()));
            labels
        };
        let outcome = match report.status {
            ReportStatus::Succeeded => "succeeded",
            ReportStatus::Failed => "failed",
        };
        self.runs.get_or_create(&kind(outcome)).inc();
        let r = &report.records;
        for (name, n) in [
            ("in", r.input),
            ("out", r.output),
            ("rejected", r.rejected),
            ("skipped", r.skipped),
            ("filtered", r.filtered),
        ] {
            self.records.get_or_create(&kind(name)).inc_by(n);
        }
        self.bytes.get_or_create(&kind("read")).inc_by(report.bytes);
        self.bytes
            .get_or_create(&kind("written"))
            .inc_by(report.output_bytes);
        self.objects
            .get_or_create(&kind("done"))
            .inc_by(report.objects_done);
        self.objects
            .get_or_create(&kind("failed"))
            .inc_by(report.failures.len() as u64);
        for (phase, seconds) in report.phases.named() {
            self.phase_seconds
                .get_or_create(&kind(phase))
                .inc_by(seconds);
        }
        self.duration_seconds
            .get_or_create(&base)
            .set(report.seconds);
        self.finished
            .get_or_create(&base)
            .set(report.finished.timestamp());
        self.exit_code
            .get_or_create(&base)
            .set(i64::from(report.exit_code));
    }
}

/// A new metric (a family, a counter, a gauge) registered in `registry` as `name`.
pub fn registered<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// The OpenMetrics text of `registry`.
pub fn text(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}

/// The metrics of one run, labelled with its job and run id, as OpenMetrics text.
pub fn run_text(report: &RunReport) -> String {
    let mut registry = Registry::default();
    RunMetrics::register(&mut registry).record(report, true);
    text(&registry)
}

/// Why a run's metrics could not be exported. The run itself is not failed for it.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing the metrics to {path}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pushing the metrics to {url}: {detail}")]
    Push { url: String, detail: String },
}

/// Writes the run's metrics to `file` (through a temporary file beside it, renamed, so a
/// node exporter's textfile collector never reads half of it) and pushes them to a
/// Pushgateway at `pushgateway` (`http://host:port`), grouped by job and run.
pub async fn export(
    report: &RunReport,
    file: Option<&std::path::Path>,
    pushgateway: Option<&str>,
) -> Result<(), ExportError> {
    let text = run_text(report);
    if let Some(path) = file {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &text)
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|source| ExportError::File {
                path: path.to_path_buf(),
                source,
            })?;
    }
    if let Some(base) = pushgateway {
        push(base, report, text).await?;
    }
    Ok(())
}

/// PUT to `<base>/metrics/job/<job>/run/<run>`: replaces what an earlier push of the same
/// run left.
async fn push(base: &str, report: &RunReport, text: String) -> Result<(), ExportError> {
    use http_body_util::{BodyExt, Full};
    let url = format!(
        "{}/metrics/job/{}/run/{}",
        base.trim_end_matches('/'),
        report.job,
        report.run_id
    );
    let failed = |detail: String| ExportError::Push {
        url: url.clone(),
        detail,
    };
    let request = hyper::Request::put(&url)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(bytes::Bytes::from(text)))
        .map_err(|e| failed(e.to_string()))?;
    let client = crate::transform::container::transport::http_client();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(30), client.request(request))
            .await
            .map_err(|_| failed("no answer within 30 s".into()))?
            .map_err(|e| failed(crate::exit::error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(failed(format!("{status}: {}", body.trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::marker::RecordCounts;
    use crate::state::phases::PhaseTimes;
    use chrono::{DateTime, Utc};

    pub(crate) fn report(job: &str, run: &str, input: u64) -> RunReport {
        let at = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        RunReport {
            job: job.into(),
            run_id: run.into(),
            status: ReportStatus::Succeeded,
            started: at,
            finished: at,
            seconds: 12.5,
            objects: 3,
            objects_done: 3,
            bytes: 4_096,
            throughput: 0.0,
            records: RecordCounts {
                input,
                output: input - 2,
                rejected: 2,
                ..RecordCounts::default()
            },
            outputs: 3,
            output_bytes: 1_024,
            rejects: 2,
            shards: Vec::new(),
            failures: Vec::new(),
            checks: Vec::new(),
            exit_code: 0,
            phases: PhaseTimes {
                decode: 1.5,
                ..PhaseTimes::default()
            },
            throughput_series: Vec::new(),
        }
    }

    #[test]
    fn one_run_is_labelled_with_its_job_and_run() {
        let text = run_text(&report("taxi", "taxi-1", 100));
        for line in [
            "# TYPE sluice_run_records counter",
            r#"sluice_run_records_total{job="taxi",run="taxi-1",kind="in"} 100"#,
            r#"sluice_run_records_total{job="taxi",run="taxi-1",kind="rejected"} 2"#,
            r#"sluice_run_bytes_total{job="taxi",run="taxi-1",kind="read"} 4096"#,
            r#"sluice_run_phase_seconds_total{job="taxi",run="taxi-1",kind="decode"} 1.5"#,
            r#"sluice_runs_total{job="taxi",run="taxi-1",kind="succeeded"} 1"#,
            r#"sluice_run_duration_seconds{job="taxi",run="taxi-1"} 12.5"#,
            r#"sluice_run_finished_timestamp_seconds{job="taxi",run="taxi-1"} 1800000000"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn runs_of_a_job_add_up() {
        let mut registry = Registry::default();
        let metrics = RunMetrics::register(&mut registry);
        metrics.record(&report("taxi", "taxi-1", 100), false);
        metrics.record(&report("taxi", "taxi-2", 50), false);
        let text = text(&registry);
        assert!(
            text.contains("sluice_run_records_total{job=\"taxi\",kind=\"in\"} 150\n"),
            "{text}"
        );
        assert!(text.contains("sluice_runs_total{job=\"taxi\",kind=\"succeeded\"} 2\n"));
    }
}
