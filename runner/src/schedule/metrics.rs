//! The scheduler's metrics (prometheus-client, OpenMetrics text), served with `/healthz`
//! over HTTP: per schedule its fires and their outcomes, and per job the figures of the runs
//! it fired (records, bytes, objects, phases: `run::metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::run::metrics::{RunMetrics, registered, text};
use crate::state::report::RunReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
}

/// Shared by the scheduler loop and the HTTP server.
pub struct Metrics {
    registry: Registry,
    started: Family<ScheduleLabels, Counter>,
    succeeded: Family<ScheduleLabels, Counter>,
    failed: Family<ScheduleLabels, Counter>,
    missed: Family<ScheduleLabels, Counter>,
    last_success: Family<ScheduleLabels, Gauge>,
    lag: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    /// 1 while this replica fires: always without leader election.
    leader: Gauge,
    runs: RunMetrics,
}

/// How a fire went, as the scheduler counts it.
#[derive(Debug, Clone, Copy)]
pub enum Fire {
    /// A run started, `lag_seconds` after its scheduled time.
    Started {
        lag_seconds: f64,
    },
    Succeeded {
        finished: Option<DateTime<Utc>>,
    },
    /// A run failed, or could not be started.
    Failed,
    /// Dropped: past the starting deadline or beyond `catchUp.maxRuns`.
    Missed,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let started = registered(
            r,
            "sluice_schedule_runs_started",
            "Runs started by the scheduler",
        );
        let succeeded = registered(
            r,
            "sluice_schedule_runs_succeeded",
            "Runs that finished with exit code 0",
        );
        let failed = registered(
            r,
            "sluice_schedule_runs_failed",
            "Runs that failed (or could not be started)",
        );
        let missed = registered(
            r,
            "sluice_schedule_runs_missed",
            "Fires dropped: past the starting deadline or beyond catchUp.maxRuns",
        );
        let last_success = registered(
            r,
            "sluice_schedule_last_success_timestamp_seconds",
            "When the latest successful run finished (Unix time)",
        );
        let lag = registered(
            r,
            "sluice_schedule_lag_seconds",
            "Seconds between the scheduled time and the start of the latest run",
        );
        let leader: Gauge = registered(
            r,
            "sluice_scheduler_leader",
            "Whether this replica fires: 1 without leader election, else whether it holds the Lease",
        );
        leader.set(1);
        let runs = RunMetrics::register(r);
        Metrics {
            registry,
            started,
            succeeded,
            failed,
            missed,
            last_success,
            lag,
            leader,
            runs,
        }
    }
}

impl Metrics {
    /// Counts a fire of `schedule`.
    pub fn fire(&self, schedule: &str, fire: Fire) {
        let labels = ScheduleLabels {
            schedule: schedule.to_string(),
        };
        match fire {
            Fire::Started { lag_seconds } => {
                self.started.get_or_create(&labels).inc();
                self.lag.get_or_create(&labels).set(lag_seconds);
            }
            Fire::Succeeded { finished } => {
                self.succeeded.get_or_create(&labels).inc();
                if let Some(at) = finished {
                    self.last_success.get_or_create(&labels).set(at.timestamp());
                }
            }
            Fire::Failed => {
                self.failed.get_or_create(&labels).inc();
            }
            Fire::Missed => {
                self.missed.get_or_create(&labels).inc();
            }
        }
    }

    /// Adds a fired run's figures to its job's.
    pub fn run(&self, report: &RunReport) {
        self.runs.record(report, false);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        text(&self.registry)
    }
}

/// Serves `/healthz` and `/metrics` on `addr` until the task is dropped; returns the bound
/// address (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fires_per_schedule() {
        let m = Metrics::default();
        m.fire("nightly", Fire::Started { lag_seconds: 1.5 });
        m.fire("nightly", Fire::Started { lag_seconds: 1.5 });
        m.fire("nightly", Fire::Succeeded { finished: None });
        let text = m.render();
        for line in [
            "sluice_schedule_runs_started_total{schedule=\"nightly\"} 2",
            "sluice_schedule_runs_succeeded_total{schedule=\"nightly\"} 1",
            "sluice_schedule_lag_seconds{schedule=\"nightly\"} 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // No success time yet: no sample for it.
        assert!(
            !text.contains("sluice_schedule_last_success_timestamp_seconds{"),
            "{text}"
        );
        // Without leader election a scheduler fires; with it, while it holds the Lease.
        assert!(
            text.lines().any(|l| l == "sluice_scheduler_leader 1"),
            "{text}"
        );
        m.set_leader(false);
        let text = m.render();
        assert!(
            text.lines().any(|l| l == "sluice_scheduler_leader 0"),
            "{text}"
        );
    }
}
