//! A step's target as a run loads it: its file read and checked to be of the step's kind,
//! and, at check time, every step loaded with its params rendered over placeholder results
//! of the steps upstream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::spec::Loaded;
use crate::spec::error::SpecError;
use crate::spec::pipeline::templates::{self, RenderContext, StepResult};
use crate::spec::pipeline::{
    PipelineFile, PipelineStep, StepKind, StepSource, TargetConfig, step_run_id,
};
use crate::spec::span::FieldPath;

/// Every step's target loaded as a run would load it: job steps with their params rendered
/// over placeholder results upstream (a job's sink as its `output`, zero counts), task steps
/// with their args and params applied. A step whose upstream did not load is not tried (its
/// params could not be rendered). Returns the loaded jobs by step.
pub(super) fn preview(
    file: &PipelineFile,
    steps: &[PipelineStep],
    order: &[usize],
    errors: &mut Vec<SpecError>,
) -> Vec<Option<Loaded>> {
    let pipeline_run = format!("{}-check", file.metadata.name);
    let mut results: BTreeMap<String, StepResult> = BTreeMap::new();
    let mut loaded: Vec<Option<Loaded>> = vec![None; steps.len()];
    let mut broken = vec![false; steps.len()];
    let ctx_params = &file.spec.params;
    for &i in order {
        let step = &steps[i];
        if step.depends_on.iter().any(|&d| broken[d]) {
            broken[i] = true;
            continue;
        }
        let ctx = RenderContext {
            params: ctx_params,
            pipeline: &file.metadata.name,
            run_id: &pipeline_run,
            steps: &results,
        };
        let params: Result<Vec<(String, String)>, String> = step
            .params
            .iter()
            .map(|(k, v)| templates::render(v, &ctx).map(|v| (k.clone(), v)))
            .collect();
        let run_id = step_run_id(&pipeline_run, &step.name);
        let mut result = StepResult {
            run_id: run_id.clone(),
            ..Default::default()
        };
        let params = match params {
            Ok(params) => params,
            Err(why) => {
                errors.push(SpecError {
                    origin: step.source.origin.clone(),
                    line: 0,
                    column: 0,
                    path: String::new(),
                    message: format!("step {}: params do not render: {why}", step.name),
                });
                broken[i] = true;
                continue;
            }
        };
        match step.kind {
            StepKind::Job => match step.load_job(&params) {
                Ok(job) => {
                    result.output = Some(job.job.sink.uri.to_string());
                    result.state = Some(job.job.state.to_string());
                    for field in [
                        &mut result.records_in,
                        &mut result.records_out,
                        &mut result.rejected,
                        &mut result.objects,
                        &mut result.outputs,
                        &mut result.output_bytes,
                    ] {
                        *field = Some(0);
                    }
                    loaded[i] = Some(job);
                }
                Err(e) => {
                    errors.extend(e.errors);
                    broken[i] = true;
                }
            },
            StepKind::Task => {
                if let Err(e) = step.load_task() {
                    errors.extend(e.errors);
                    broken[i] = true;
                }
            }
        }
        results.insert(step.name.clone(), result);
    }
    loaded
}

/// Reads a step's target and checks that it is of the step's kind.
pub(super) fn read_target(
    target: &TargetConfig,
    kind: StepKind,
    base: &Path,
    origin: &str,
    at: &FieldPath,
) -> Result<StepSource, String> {
    let (source, value) = match target {
        TargetConfig::Path(path) => {
            if path.trim().is_empty() {
                return Err("must name a file".into());
            }
            let full: PathBuf = base.join(path);
            let text = std::fs::read_to_string(&full)
                .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
            let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
                .map_err(|e| format!("{} is not YAML: {e}", full.display()))?;
            let source = StepSource {
                origin: full.display().to_string(),
                text,
            };
            (source, value)
        }
        TargetConfig::Inline(map) => {
            let text = serde_yaml_ng::to_string(map).expect("a mapping serializes");
            let value = serde_yaml_ng::to_value(map).expect("a mapping converts");
            let source = StepSource {
                origin: format!("{origin} ({}.{}, inline)", at, kind.key()),
                text,
            };
            (source, value)
        }
    };
    let expected = match kind {
        StepKind::Job => crate::spec::file::KIND,
        StepKind::Task => crate::spec::task::KIND,
    };
    match value.get("kind").and_then(serde_yaml_ng::Value::as_str) {
        Some(k) if k == expected => Ok(source),
        Some(other) => Err(format!(
            "{} has kind {other:?}; `{}` takes a {expected}",
            source.origin,
            kind.key()
        )),
        None => Err(format!(
            "{} has no `kind`; `{}` takes a {expected}",
            source.origin,
            kind.key()
        )),
    }
}
