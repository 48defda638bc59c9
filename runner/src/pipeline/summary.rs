//! A pipeline run as text: one line per step in DAG order with what it waits for, its
//! state, its run id and what it did (records, or why it failed), and where the record is.

use std::fmt::Write as _;

use crate::exit::describe_exit;
use crate::spec::pipeline::StepKind;
use crate::state::pipeline::{PipelineLayout, PipelineRecord, PipelineStatus, StepStatus};

/// What a running job step has done so far, when it is known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepProgress {
    pub objects_done: u64,
    pub objects: u64,
    pub bytes_done: u64,
    pub bytes: u64,
}

/// The run as a table; `progress` gives running steps' progress by step name.
pub fn render(
    record: &PipelineRecord,
    layout: &PipelineLayout,
    progress: &dyn Fn(&str) -> Option<StepProgress>,
) -> String {
    let mut out = String::new();
    let status = match record.status {
        PipelineStatus::Running => "running".to_string(),
        PipelineStatus::Succeeded => "succeeded, published".to_string(),
        PipelineStatus::Failed => {
            format!("FAILED ({})", describe_exit(record.exit_code.unwrap_or(1)))
        }
    };
    let _ = writeln!(
        out,
        "pipeline {} run {}: {status}",
        record.pipeline, record.run_id
    );
    let width = record
        .steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "  {:width$}  {:4}  {:9}  {:24}  DETAIL",
        "STEP", "KIND", "STATUS", "AFTER"
    );
    for step in &record.steps {
        let after = if step.depends_on.is_empty() {
            "-".to_string()
        } else {
            step.depends_on.join(", ")
        };
        let kind = match step.kind {
            StepKind::Job => "job",
            StepKind::Task => "task",
        };
        let detail = match (step.status, &step.result) {
            (StepStatus::Running, _) => match progress(&step.name) {
                Some(p) if p.objects > 0 => format!(
                    "{} ({}/{} objects, {:.0}%)",
                    step.run_id,
                    p.objects_done,
                    p.objects,
                    100.0 * p.bytes_done as f64 / p.bytes.max(1) as f64
                ),
                _ => step.run_id.clone(),
            },
            (StepStatus::Pending | StepStatus::Skipped, _) => String::new(),
            (_, Some(result)) => match (result.records_in, result.records_out) {
                (Some(records_in), Some(records_out)) => format!(
                    "{}: {records_in} records in, {records_out} out{}",
                    step.run_id,
                    exit_note(result.exit_code)
                ),
                _ => format!(
                    "{}: exit code {}",
                    step.run_id,
                    describe_exit(result.exit_code)
                ),
            },
            (_, None) => step.error.clone().unwrap_or_default(),
        };
        let _ = writeln!(
            out,
            "  {:width$}  {kind:4}  {:9}  {:24}  {}",
            step.name,
            step.status.as_str(),
            after,
            first_line(&detail)
        );
    }
    let _ = writeln!(out, "record: {}", layout.record());
    out
}

fn exit_note(exit: i32) -> String {
    if exit == 0 {
        String::new()
    } else {
        format!(", exit code {}", describe_exit(exit))
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::pipeline::templates::StepResult;
    use crate::state::pipeline::StepRecord;

    fn step(name: &str, status: StepStatus, after: &[&str]) -> StepRecord {
        StepRecord {
            name: name.into(),
            kind: StepKind::Job,
            run_id: format!("p-1-{name}"),
            depends_on: after.iter().map(|s| s.to_string()).collect(),
            status,
            params: Default::default(),
            args: None,
            state: None,
            attempts: 1,
            exit_code: None,
            started: None,
            finished: None,
            result: None,
            error: None,
        }
    }

    #[test]
    fn one_line_per_step_with_what_it_did() {
        let mut done = step("convert", StepStatus::Succeeded, &[]);
        done.result = Some(StepResult {
            run_id: "p-1-convert".into(),
            records_in: Some(10),
            records_out: Some(9),
            ..Default::default()
        });
        let mut failed = step("check", StepStatus::Failed, &["convert"]);
        failed.error = Some("params do not render\nmore".into());
        let record = PipelineRecord {
            pipeline: "p".into(),
            run_id: "p-1".into(),
            params: Default::default(),
            status: PipelineStatus::Failed,
            started: chrono::Utc::now(),
            finished: None,
            exit_code: Some(2),
            steps: vec![
                done,
                failed,
                step("load", StepStatus::Skipped, &["check"]),
                step("other", StepStatus::Running, &[]),
            ],
        };
        let state: crate::storage::uri::S3Uri = "s3://lake/_sluice/".parse().unwrap();
        let layout = PipelineLayout::new(&state, "p", "p-1");
        let progress = |name: &str| {
            (name == "other").then_some(StepProgress {
                objects_done: 1,
                objects: 4,
                bytes_done: 50,
                bytes: 100,
            })
        };
        let text = render(&record, &layout, &progress);
        assert!(text.starts_with("pipeline p run p-1: FAILED (2 "), "{text}");
        assert!(text.contains("p-1-convert: 10 records in, 9 out"), "{text}");
        assert!(
            text.contains("params do not render") && !text.contains("more"),
            "{text}"
        );
        assert!(text.contains("p-1-other (1/4 objects, 50%)"), "{text}");
        assert!(text.contains("skipped    check"), "{text}");
        assert!(text.ends_with("record: s3://lake/_sluice/pipelines/p/p-1/pipeline.json\n"));
    }
}
