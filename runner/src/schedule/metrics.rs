//! The scheduler's counters in the Prometheus text format, served with `/healthz` over HTTP.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Per schedule counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleCounters {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Fires dropped: past the starting deadline or beyond `catchUp.maxRuns`.
    pub missed: u64,
    pub last_success: Option<DateTime<Utc>>,
    /// Seconds between the scheduled time and the start of the latest run.
    pub lag_seconds: f64,
}

/// Shared by the scheduler loop and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    schedules: Mutex<BTreeMap<String, ScheduleCounters>>,
    leader: Mutex<Option<bool>>,
}

impl Metrics {
    pub fn update(&self, schedule: &str, f: impl FnOnce(&mut ScheduleCounters)) {
        let mut all = self.schedules.lock().expect("metrics lock");
        f(all.entry(schedule.to_string()).or_default());
    }

    pub fn get(&self, schedule: &str) -> ScheduleCounters {
        self.schedules
            .lock()
            .expect("metrics lock")
            .get(schedule)
            .cloned()
            .unwrap_or_default()
    }

    pub fn set_leader(&self, leader: bool) {
        *self.leader.lock().expect("metrics lock") = Some(leader);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let all = self.schedules.lock().expect("metrics lock").clone();
        let mut out = String::new();
        let mut family =
            |name: &str,
             kind: &str,
             help: &str,
             value: &dyn Fn(&ScheduleCounters) -> Option<f64>| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                for (schedule, c) in &all {
                    if let Some(v) = value(c) {
                        let _ = writeln!(out, "{name}{{schedule=\"{}\"}} {v}", escape(schedule));
                    }
                }
            };
        family(
            "sluice_schedule_runs_started_total",
            "counter",
            "Runs started by the scheduler.",
            &|c| Some(c.started as f64),
        );
        family(
            "sluice_schedule_runs_succeeded_total",
            "counter",
            "Runs that finished with exit code 0.",
            &|c| Some(c.succeeded as f64),
        );
        family(
            "sluice_schedule_runs_failed_total",
            "counter",
            "Runs that failed (or could not be started).",
            &|c| Some(c.failed as f64),
        );
        family(
            "sluice_schedule_runs_missed_total",
            "counter",
            "Fires dropped: past the starting deadline or beyond catchUp.maxRuns.",
            &|c| Some(c.missed as f64),
        );
        family(
            "sluice_schedule_last_success_timestamp_seconds",
            "gauge",
            "When the latest successful run finished (Unix time).",
            &|c| c.last_success.map(|t| t.timestamp() as f64),
        );
        family(
            "sluice_schedule_lag_seconds",
            "gauge",
            "Seconds between the scheduled time and the start of the latest run.",
            &|c| Some(c.lag_seconds),
        );
        if let Some(leader) = *self.leader.lock().expect("metrics lock") {
            let _ = writeln!(
                out,
                "# HELP sluice_scheduler_leader Whether this replica holds the Lease."
            );
            let _ = writeln!(out, "# TYPE sluice_scheduler_leader gauge");
            let _ = writeln!(out, "sluice_scheduler_leader {}", u8::from(leader));
        }
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"")
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
            "text/plain; version=0.0.4",
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
    fn renders_counters_per_schedule() {
        let m = Metrics::default();
        m.update("nightly", |c| {
            c.started += 2;
            c.succeeded += 1;
            c.lag_seconds = 1.5;
        });
        let text = m.render();
        assert!(
            text.contains("sluice_schedule_runs_started_total{schedule=\"nightly\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_schedule_runs_succeeded_total{schedule=\"nightly\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_schedule_lag_seconds{schedule=\"nightly\"} 1.5\n"),
            "{text}"
        );
        // No success yet: no sample for the timestamp.
        assert!(
            !text.contains("sluice_schedule_last_success_timestamp_seconds{"),
            "{text}"
        );
    }
}
