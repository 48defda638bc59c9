//! The report page: the summary, the charts and the tables, as one HTML document.

use std::fmt::Write;

use html_escape::encode_text as esc;
use serde::Deserialize;

use super::chart::{self, Span, seconds_label};
use crate::exit::{ExitCode, describe_exit};
use crate::spec::size::human_bytes as show;
use crate::state::marker::{DoneMarker, RecordCounts};
use crate::state::report::{ReportStatus, RunReport};

/// Object rows shown in the accounting table; the totals count every object.
const OBJECT_ROWS: usize = 300;

const PHASE_COLORS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

/// Everything the page shows.
pub struct Page<'a> {
    pub report: &'a RunReport,
    pub markers: Vec<&'a DoneMarker>,
    /// The sink prefix, when the run's job could be read.
    pub sink: Option<String>,
    /// The run's state prefix.
    pub state: String,
    /// `_SUCCESS.json`, for a published run.
    pub manifest: Option<String>,
    pub rejects: Vec<RejectSample>,
}

/// One line of a rejects object.
#[derive(Debug, Clone, Deserialize)]
pub struct RejectSample {
    pub source: String,
    pub line: u64,
    pub error: String,
    pub record: String,
}

fn exit_color(code: i32) -> &'static str {
    match code {
        0 => "#2e7d32",
        1 => "#ef6c00",
        2 => "#6a1b9a",
        3 => "#c62828",
        _ => "#ad1457",
    }
}

/// The page for a run.
pub fn render(page: &Page<'_>) -> String {
    let r = page.report;
    let mut out = String::with_capacity(64 * 1024);
    let status = match r.status {
        ReportStatus::Succeeded => "succeeded",
        ReportStatus::Failed => "failed",
    };
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{job} · {run} · {status}</title><style>{STYLE}</style></head><body><header><h1>{job} <span class="run">{run}</span></h1><span class="badge" style="background:{color}">{status} · exit {exit}</span></header>"#,
        job = esc(&r.job),
        run = esc(&r.run_id),
        color = exit_color(r.exit_code),
        exit = esc(&describe_exit(r.exit_code)),
    );
    summary(&mut out, page);
    timeline(&mut out, r);
    throughput(&mut out, r);
    phases(&mut out, r);
    accounting(&mut out, page);
    rules(&mut out, r);
    failures(&mut out, r);
    rejects(&mut out, page);
    out.push_str("</body></html>\n");
    out
}

fn summary(out: &mut String, page: &Page<'_>) {
    let r = page.report;
    let c = &r.records;
    let balanced = if c.balanced() {
        "in = out + rejected + skipped + filtered ✓"
    } else {
        "records are not accounted for ✗"
    };
    let mut cells = vec![
        ("duration", seconds_label(r.seconds)),
        (
            "started",
            r.started.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ),
        (
            "objects",
            format!("{} of {} done", r.objects_done, r.objects),
        ),
        ("read", show(r.bytes)),
        ("throughput", format!("{}/s", show(r.throughput as u64))),
        (
            "outputs",
            format!("{} objects, {}", r.outputs, show(r.output_bytes)),
        ),
        ("records in", c.input.to_string()),
        ("records out", c.output.to_string()),
        ("rejected", c.rejected.to_string()),
        ("skipped", c.skipped.to_string()),
        ("filtered", c.filtered.to_string()),
        ("accounting", balanced.to_string()),
    ];
    if let Some(sink) = &page.sink {
        cells.push(("outputs at", sink.clone()));
        cells.push(("rejects at", format!("{sink}_rejected/")));
    }
    cells.push((
        "manifest",
        page.manifest
            .clone()
            .unwrap_or_else(|| "none: the run did not publish".into()),
    ));
    cells.push(("state", page.state.clone()));
    out.push_str(r#"<section><h2>Summary</h2><dl class="summary">"#);
    for (name, value) in cells {
        let _ = write!(
            out,
            "<div><dt>{}</dt><dd>{}</dd></div>",
            esc(name),
            esc(&value)
        );
    }
    out.push_str("</dl></section>");
}

fn timeline(out: &mut String, r: &RunReport) {
    let offset =
        |t: chrono::DateTime<chrono::Utc>| (t - r.started).num_milliseconds() as f64 / 1000.0;
    let mut labels = Vec::new();
    let mut bars = Vec::new();
    for (row, s) in r.shards.iter().enumerate() {
        labels.push(format!("shard {}", s.index));
        let attempts = s.earlier.len() + 1;
        for (k, earlier) in s.earlier.iter().enumerate() {
            let start = offset(earlier.started);
            let end = earlier.ended.map_or(start, offset);
            bars.push(Span {
                row,
                start,
                end,
                color: exit_color(ExitCode::Transient.code()),
                title: format!(
                    "shard {}, attempt {} of {attempts}: {}, {} to {}",
                    s.index,
                    k + 1,
                    if earlier.finished {
                        "finished with failures and was retried"
                    } else {
                        "ended without finishing (killed, evicted or crashed)"
                    },
                    seconds_label(start),
                    seconds_label(end)
                ),
            });
        }
        let start = s.started.map_or(0.0, offset);
        let end = s.finished.map_or(start, offset);
        bars.push(Span {
            row,
            start,
            end,
            color: exit_color(s.exit_code),
            title: format!(
                "shard {}, attempt {attempts} of {attempts}: {} objects, {}, exit {}, {} to {}",
                s.index,
                s.objects,
                show(s.bytes),
                describe_exit(s.exit_code),
                seconds_label(start),
                seconds_label(end)
            ),
        });
    }
    let span = bars.iter().map(|b| b.end).fold(r.seconds, f64::max);
    let _ = write!(
        out,
        r#"<section><h2>Shards over time</h2><p class="note">Each bar is an attempt of a shard (a pod), coloured by how it ended: green done, orange transient (an attempt that was retried), red validation, pink bad data, purple configuration. Hover for details.</p>{}</section>"#,
        chart::timeline(&labels, &bars, span)
    );
}

fn throughput(out: &mut String, r: &RunReport) {
    if r.throughput_series.is_empty() {
        return;
    }
    let mid = |p: &crate::state::report::ThroughputPoint| p.at + p.seconds / 2.0;
    let offset = r.throughput_series.first().map_or(0.0, |p| p.at.min(0.0));
    let bytes: Vec<(f64, f64)> = r
        .throughput_series
        .iter()
        .map(|p| (mid(p) - offset, p.bytes_per_second))
        .collect();
    let records: Vec<(f64, f64)> = r
        .throughput_series
        .iter()
        .map(|p| (mid(p) - offset, p.records_per_second))
        .collect();
    let _ = write!(
        out,
        r#"<section><h2>Throughput</h2><figure><figcaption>source bytes per second</figcaption>{}</figure><figure><figcaption>records per second</figcaption>{}</figure></section>"#,
        chart::lines(&[("bytes per second", "#4e79a7", bytes)], |v| format!(
            "{}/s",
            show(v as u64)
        )),
        chart::lines(&[("records per second", "#f28e2b", records)], |v| {
            format!("{v:.0}/s")
        })
    );
}

fn phases(out: &mut String, r: &RunReport) {
    let names: Vec<(&str, &str)> = r
        .phases
        .named()
        .iter()
        .zip(PHASE_COLORS)
        .map(|((name, _), color)| (*name, color))
        .collect();
    let mut rows: Vec<(String, Vec<f64>)> = r
        .shards
        .iter()
        .map(|s| {
            (
                format!("shard {}", s.index),
                s.phases.named().iter().map(|p| p.1).collect(),
            )
        })
        .collect();
    rows.push((
        "run".to_string(),
        r.phases.named().iter().map(|p| p.1).collect(),
    ));
    let mut legend = String::new();
    for ((name, color), (_, seconds)) in names.iter().zip(r.phases.named()) {
        let _ = write!(
            legend,
            r#"<span><i style="background:{color}"></i>{} {}</span>"#,
            esc(name),
            seconds_label(seconds)
        );
    }
    let _ = write!(
        out,
        r#"<section><h2>Where the time went</h2><p class="note">Busy time per phase, per shard and for the run. Phases overlap (reading, decoding, encoding and uploading run at once), so a bar can be longer than the wall time.</p><div class="legend">{legend}</div>{}</section>"#,
        chart::stacked(&rows, &names)
    );
}

fn counts_cells(c: &RecordCounts) -> String {
    format!(
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        c.input,
        c.output,
        c.rejected,
        c.skipped,
        c.filtered,
        if c.balanced() { "✓" } else { "✗" }
    )
}

fn accounting(out: &mut String, page: &Page<'_>) {
    let mut markers = page.markers.clone();
    markers.sort_by(|a, b| {
        a.key
            .cmp(&b.key)
            .then(a.range.map(|r| r.part).cmp(&b.range.map(|r| r.part)))
    });
    out.push_str(r#"<section><h2>Record accounting</h2><table><thead><tr><th>object</th><th>in</th><th>out</th><th>rejected</th><th>skipped</th><th>filtered</th><th>balanced</th><th>time</th></tr></thead><tbody>"#);
    let _ = write!(
        out,
        r#"<tr class="total"><td>all {} objects</td>{}<td>{}</td></tr>"#,
        markers.len(),
        counts_cells(&page.report.records),
        seconds_label(page.report.seconds)
    );
    for m in markers.iter().take(OBJECT_ROWS) {
        let name = match m.range {
            Some(r) => format!("{} (part {} of {})", m.key, r.part, r.parts),
            None => m.key.clone(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td>{}<td>{}</td></tr>",
            esc(&name),
            counts_cells(&m.records),
            seconds_label(m.seconds)
        );
    }
    out.push_str("</tbody></table>");
    if markers.len() > OBJECT_ROWS {
        let _ = write!(
            out,
            r#"<p class="note">The first {OBJECT_ROWS} objects of {} are listed; the totals count all of them.</p>"#,
            markers.len()
        );
    }
    out.push_str("</section>");
}

fn rules(out: &mut String, r: &RunReport) {
    if r.checks.is_empty() {
        return;
    }
    out.push_str(r#"<section><h2>Data rules</h2><table><thead><tr><th>rule</th><th>kind</th><th>scope</th><th>outcome</th><th>records checked</th><th>failed</th><th>rejected</th><th>first examples</th></tr></thead><tbody>"#);
    for c in &r.checks {
        let outcome = match (c.passed, c.is_blocking()) {
            (true, _) => r#"<span class="ok">passed</span>"#,
            (false, true) => r#"<span class="bad">failed</span>"#,
            (false, false) => r#"<span class="warn">warned</span>"#,
        };
        let mut examples: Vec<String> = c.details.iter().take(3).cloned().collect();
        examples.extend(
            c.examples
                .iter()
                .take(3)
                .map(|e| format!("{} row {}: {}", e.object, e.row, e.values)),
        );
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{outcome}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            esc(&c.rule),
            esc(&c.kind),
            esc(c.scope.name()),
            c.records_checked,
            c.records_failed,
            c.records_rejected,
            examples
                .iter()
                .map(|e| esc(e).to_string())
                .collect::<Vec<_>>()
                .join("<br>")
        );
    }
    out.push_str("</tbody></table></section>");
}

fn failures(out: &mut String, r: &RunReport) {
    if r.failures.is_empty() {
        return;
    }
    out.push_str(r#"<section><h2>Failed objects</h2><table><thead><tr><th>object</th><th>exit</th><th>error</th></tr></thead><tbody>"#);
    for f in &r.failures {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td><span class="badge small" style="background:{}">{}</span></td><td class="mono">{}</td></tr>"#,
            esc(&f.key),
            exit_color(f.exit_code),
            esc(&describe_exit(f.exit_code)),
            esc(&f.error)
        );
    }
    out.push_str("</tbody></table></section>");
}

fn rejects(out: &mut String, page: &Page<'_>) {
    if page.rejects.is_empty() {
        return;
    }
    out.push_str(r#"<section><h2>Rejected records (a sample)</h2><table><thead><tr><th>source</th><th>line</th><th>error</th><th>record</th></tr></thead><tbody>"#);
    for s in &page.rejects {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="mono">{}</td></tr>"#,
            esc(&s.source),
            s.line,
            esc(&s.error),
            esc(&s.record)
        );
    }
    out.push_str("</tbody></table></section>");
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;margin:0 auto;max-width:1000px;padding:24px}header{display:flex;align-items:center;gap:16px;flex-wrap:wrap}h1{font-size:22px;margin:0}h1 .run{color:#59636e;font-weight:400}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #d1d9e0;padding-bottom:4px}.badge{color:#fff;border-radius:12px;padding:3px 12px;font-weight:600}.badge.small{padding:1px 8px;font-size:12px}.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:8px 16px;margin:0}.summary div{background:#f6f8fa;border-radius:6px;padding:6px 10px}dt{color:#59636e;font-size:12px}dd{margin:0;font-weight:600;overflow-wrap:anywhere}.chart{width:100%;height:auto;display:block}.chart .tick{font-size:11px;fill:#59636e}.chart .label{font-size:12px;fill:#1f2328}.note{color:#59636e;font-size:12px;margin:4px 0}figure{margin:0 0 12px}figcaption{font-size:12px;color:#59636e}.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;margin:6px 0}.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}th{background:#f6f8fa}tr.total td{font-weight:600}.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;overflow-wrap:anywhere}.ok{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}.warn{color:#ef6c00;font-weight:600}";
