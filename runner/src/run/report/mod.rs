//! report.html: the run report as one self-contained page (inline CSS and SVG, nothing loaded
//! from the network), written by publish beside report.json and by `sluice report` for any
//! run from its state. What the page shows comes from report.json, the objects' done markers
//! and the first lines of the rejects objects.

mod chart;
mod html;

use chrono::{DateTime, Utc};

use crate::state::marker::DoneMarker;
use crate::state::report::{RunReport, ThroughputPoint, write_report_html};
use crate::state::{RunLayout, StateError};
use crate::storage::Storage;
use crate::storage::uri::S3Uri;

pub use html::{Page, RejectSample, render};

/// Intervals of the throughput chart.
const SERIES_POINTS: usize = 60;
/// Rejected records shown, from the first rejects objects.
const REJECTS_SHOWN: usize = 20;

/// Source bytes and records per second over `[started, finished]`, each object's bytes and
/// records spread evenly over the time it took (from its marker). Objects done by an earlier
/// attempt of a resumed run widen the span back to when they ran.
pub fn throughput_series<'a>(
    markers: impl Iterator<Item = &'a DoneMarker>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
) -> Vec<ThroughputPoint> {
    let spans: Vec<(f64, f64, f64, f64)> = markers
        .map(|m| {
            let end = (m.finished - started).num_milliseconds() as f64 / 1000.0;
            (end - m.seconds, end, m.size as f64, m.records.input as f64)
        })
        .collect();
    let first = spans.iter().map(|s| s.0).fold(0.0f64, f64::min);
    let last = spans.iter().map(|s| s.1).fold(
        (finished - started).num_milliseconds() as f64 / 1000.0,
        f64::max,
    );
    if spans.is_empty() || last <= first {
        return Vec::new();
    }
    let width = (last - first) / SERIES_POINTS as f64;
    let mut points: Vec<ThroughputPoint> = (0..SERIES_POINTS)
        .map(|i| ThroughputPoint {
            at: first + i as f64 * width,
            seconds: width,
            bytes_per_second: 0.0,
            records_per_second: 0.0,
        })
        .collect();
    for (start, end, bytes, records) in spans {
        let took = (end - start).max(1e-6);
        for point in &mut points {
            let overlap = (end.min(point.at + width) - start.max(point.at)).max(0.0);
            if overlap > 0.0 {
                let share = overlap / took;
                point.bytes_per_second += bytes * share / width;
                point.records_per_second += records * share / width;
            }
        }
    }
    points
}

/// Renders the page for `report` (`sink`: the run's sink prefix, if its job could be read),
/// writes it to the run's state and returns it.
pub async fn write_html(
    storage: &Storage,
    layout: &RunLayout,
    report: &RunReport,
    markers: &[&DoneMarker],
    sink: Option<&S3Uri>,
) -> Result<String, StateError> {
    let page = gather(storage, layout, report, markers, sink).await;
    let html = render(&page);
    write_report_html(storage, layout, html.clone()).await?;
    Ok(html)
}

/// What the page needs beside the report: where things are, and a sample of rejects.
async fn gather<'a>(
    storage: &Storage,
    layout: &RunLayout,
    report: &'a RunReport,
    markers: &[&'a DoneMarker],
    sink: Option<&S3Uri>,
) -> Page<'a> {
    let mut rejects = Vec::new();
    for (uri, size) in markers
        .iter()
        .filter_map(|m| m.rejects.as_ref())
        .filter_map(|r| Some((r.uri.parse::<S3Uri>().ok()?, r.size)))
        .take(REJECTS_SHOWN)
    {
        if rejects.len() >= REJECTS_SHOWN {
            break;
        }
        match storage.get_range(&uri, 0..size.min(64 * 1024)).await {
            Ok(bytes) => rejects.extend(
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter_map(|line| serde_json::from_str::<RejectSample>(line).ok())
                    .take(REJECTS_SHOWN - rejects.len()),
            ),
            Err(error) => tracing::warn!(%error, %uri, "reading rejects for the report"),
        }
    }
    Page {
        report,
        markers: markers.to_vec(),
        sink: sink.map(ToString::to_string),
        state: layout.root().to_string(),
        manifest: (report.status == crate::state::report::ReportStatus::Succeeded)
            .then(|| layout.success().to_string()),
        rejects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::marker::RecordCounts;

    fn marker(finished_after: i64, seconds: f64, size: u64, records: u64) -> DoneMarker {
        DoneMarker {
            key: "k".into(),
            etag: "e".into(),
            range: None,
            fingerprint: String::new(),
            size,
            outputs: Vec::new(),
            rejects: None,
            records: RecordCounts {
                input: records,
                ..RecordCounts::default()
            },
            checks: Vec::new(),
            steps: Vec::new(),
            seconds,
            phases: Default::default(),
            finished: DateTime::<Utc>::from_timestamp(1_000 + finished_after, 0).unwrap(),
        }
    }

    #[test]
    fn the_series_accounts_for_every_byte_and_record() {
        let started = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let finished = DateTime::<Utc>::from_timestamp(1_060, 0).unwrap();
        let markers = [marker(10, 10.0, 600, 60), marker(55, 30.0, 3_000, 300)];
        let series = throughput_series(markers.iter(), started, finished);
        assert_eq!(series.len(), SERIES_POINTS);
        let bytes: f64 = series.iter().map(|p| p.bytes_per_second * p.seconds).sum();
        let records: f64 = series
            .iter()
            .map(|p| p.records_per_second * p.seconds)
            .sum();
        assert!((bytes - 3_600.0).abs() < 1e-6, "{bytes}");
        assert!((records - 360.0).abs() < 1e-6, "{records}");
        // Nothing ran between 10 s and 25 s.
        let idle = series
            .iter()
            .find(|p| p.at >= 12.0 && p.at + p.seconds <= 24.0);
        assert_eq!(idle.map(|p| p.bytes_per_second), Some(0.0));
        assert!(throughput_series([].iter(), started, finished).is_empty());
    }
}
