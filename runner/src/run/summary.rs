//! The short, readable summary a run prints at its end.

use std::fmt::Write;

use crate::spec::size::human_bytes;
use crate::state::RunLayout;
use crate::state::report::{ReportStatus, RunReport};
use crate::storage::uri::S3Uri;

/// Renders the summary of a finished run.
pub fn render(report: &RunReport, layout: &RunLayout, sink: &S3Uri) -> String {
    let mut out = String::new();
    let verdict = match report.status {
        ReportStatus::Succeeded => "succeeded",
        ReportStatus::Failed => "FAILED",
    };
    let r = &report.records;
    let _ = writeln!(
        out,
        "run {} {verdict} in {:.1}s",
        report.run_id, report.seconds
    );
    let _ = writeln!(
        out,
        "  objects   {} of {} done, {} failed",
        report.objects_done,
        report.objects,
        report.failures.len()
    );
    let _ = writeln!(
        out,
        "  bytes     {} read, {} written, {}/s",
        human_bytes(report.bytes),
        human_bytes(report.output_bytes),
        human_bytes(report.throughput as u64)
    );
    let _ = writeln!(
        out,
        "  records   in {}  out {}  rejected {}  skipped {}  filtered {}",
        r.input, r.output, r.rejected, r.skipped, r.filtered
    );
    let _ = writeln!(out, "  outputs   {sink} ({} objects)", report.outputs);
    if r.rejected > 0 {
        let _ = writeln!(out, "  rejects   {}", sink.join("_rejected/"));
    }
    let _ = writeln!(out, "  report    {}", layout.report());
    let _ = writeln!(out, "  page      {}", layout.report_html());
    let checks = crate::state::checks::table(&report.checks);
    if !checks.is_empty() {
        let _ = writeln!(
            out,
            "  checks    {} failed or warned:",
            report.checks.iter().filter(|c| !c.passed).count()
        );
        out.push_str(&checks);
    }
    match report.status {
        ReportStatus::Succeeded => {
            let _ = writeln!(out, "  manifest  {}", layout.success());
        }
        ReportStatus::Failed => {
            let _ = writeln!(out, "  nothing was published (no _SUCCESS.json)");
            for failure in report.failures.iter().take(20) {
                let _ = writeln!(
                    out,
                    "  failed    {} (exit {}): {}",
                    failure.key, failure.exit_code, failure.error
                );
            }
            if report.failures.len() > 20 {
                let _ = writeln!(
                    out,
                    "  ... and {} more in the report",
                    report.failures.len() - 20
                );
            }
            for shard in report.shards.iter().filter(|s| s.exit_code != 0) {
                let _ = writeln!(
                    out,
                    "  shard {}   exit {} after {} attempt(s){}",
                    shard.index,
                    shard.exit_code,
                    shard.attempts,
                    shard
                        .last_lines
                        .last()
                        .map(|line| format!(": {line}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    out
}
