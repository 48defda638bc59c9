//! The templates of a pipeline's steps (`params` and `args`): minijinja over the pipeline's
//! params, the pipeline run, and the results of the steps upstream. Checked when the file is
//! loaded (every variable must name a param, a field of the pipeline run, or a field of an
//! upstream step), rendered when a step starts.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, UndefinedBehavior, context};
use serde::{Deserialize, Serialize};

/// What a finished step gives the steps after it (`{{ steps.NAME.FIELD }}`), and what a
/// pipeline's state records of it. A task step gives only `run_id` and `exit_code`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step's run id.
    pub run_id: String,
    /// The run's exit code (a task's: its essential container's).
    pub exit_code: i32,
    /// A job step's sink prefix (`s3://bucket/prefix/`), where its published output is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// A job step's run state directory (`s3://bucket/_sluice/runs/<job>/<run>/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

impl StepResult {
    /// The fields the step has, as a template value (a field it lacks stays undefined).
    fn to_value(&self) -> minijinja::Value {
        let mut pairs = vec![
            ("run_id", minijinja::Value::from(self.run_id.clone())),
            ("exit_code", minijinja::Value::from(self.exit_code)),
        ];
        for (name, text) in [("output", &self.output), ("state", &self.state)] {
            if let Some(text) = text {
                pairs.push((name, minijinja::Value::from(text.clone())));
            }
        }
        for (name, count) in [
            ("records_in", self.records_in),
            ("records_out", self.records_out),
            ("rejected", self.rejected),
            ("objects", self.objects),
            ("outputs", self.outputs),
            ("output_bytes", self.output_bytes),
        ] {
            if let Some(count) = count {
                pairs.push((name, minijinja::Value::from(count)));
            }
        }
        minijinja::Value::from_pairs(pairs)
    }
}

/// The fields a job step gives, in the order the docs list them.
pub const JOB_FIELDS: &[&str] = &[
    "run_id",
    "exit_code",
    "output",
    "state",
    "records_in",
    "records_out",
    "rejected",
    "objects",
    "outputs",
    "output_bytes",
];
/// The fields a task step gives.
pub const TASK_FIELDS: &[&str] = &["run_id", "exit_code"];
/// The fields of `pipeline`.
const PIPELINE_FIELDS: &[&str] = &["name", "run_id"];

/// What the templates of one step may refer to, for checking them.
pub(crate) struct Scope<'a> {
    pub params: &'a BTreeMap<String, String>,
    /// Every step's name and fields.
    pub steps: &'a BTreeMap<String, &'static [&'static str]>,
    /// The steps upstream of this one (its dependencies, theirs, ...).
    pub upstream: &'a BTreeSet<String>,
}

/// Compiles `source` and checks every variable it uses; the problems come back as text.
pub(crate) fn check(source: &str, scope: &Scope) -> Vec<String> {
    let env = environment();
    let template = match env.template_from_str(source) {
        Ok(t) => t,
        Err(e) => return vec![format!("invalid template: {}", describe(&e))],
    };
    let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    used.sort();
    used.iter()
        .filter_map(|v| check_variable(v, scope))
        .collect()
}

fn check_variable(variable: &str, scope: &Scope) -> Option<String> {
    let parts: Vec<&str> = variable.split('.').collect();
    let known = || {
        format!(
            "unknown template variable `{variable}`: use params.NAME, pipeline.name, pipeline.run_id or steps.STEP.FIELD"
        )
    };
    match parts.as_slice() {
        ["params", name] => (!scope.params.contains_key(*name)).then(|| {
            let defined: Vec<&str> = scope.params.keys().map(String::as_str).collect();
            if defined.is_empty() {
                format!(
                    "param `{name}` is not defined (spec.params is empty; define it there or pass --param {name}=VALUE)"
                )
            } else {
                format!(
                    "param `{name}` is not defined (defined: {}; or pass --param {name}=VALUE)",
                    defined.join(", ")
                )
            }
        }),
        ["pipeline", field] => (!PIPELINE_FIELDS.contains(field)).then(|| {
            format!(
                "`pipeline` has no field `{field}` (fields: {})",
                PIPELINE_FIELDS.join(", ")
            )
        }),
        ["steps", step, field] => match scope.steps.get(*step) {
            None => Some(format!(
                "unknown step `{step}` in `{variable}` (steps: {})",
                scope.steps.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(_) if !scope.upstream.contains(*step) => Some(format!(
                "step `{step}` is not upstream of this step: add it to depends_on (directly or through a step that depends on it) to use its results"
            )),
            Some(fields) if !fields.contains(field) => Some(format!(
                "step `{step}` gives no `{field}` (it gives: {})",
                fields.join(", ")
            )),
            Some(_) => None,
        },
        ["params"] | ["pipeline"] | ["steps"] | ["steps", _] => Some(format!(
            "`{variable}` is not a value: name a field, such as params.NAME or steps.STEP.output"
        )),
        _ => Some(known()),
    }
}

/// What one step's templates are rendered with.
pub struct RenderContext<'a> {
    pub params: &'a BTreeMap<String, String>,
    pub pipeline: &'a str,
    pub run_id: &'a str,
    pub steps: &'a BTreeMap<String, StepResult>,
}

/// Renders one template; a variable that is not there (a step that gave no such field) is
/// an error, never empty text.
pub fn render(source: &str, ctx: &RenderContext) -> Result<String, String> {
    let env = environment();
    let value = context! {
        params => ctx.params,
        pipeline => context! { name => ctx.pipeline, run_id => ctx.run_id },
        steps => minijinja::Value::from_pairs(
            ctx.steps.iter().map(|(name, result)| (name.clone(), result.to_value()))
        ),
    };
    env.render_str(source, value).map_err(|e| describe(&e))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

fn describe(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{} ({detail})", error.kind()),
        None => error.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope_check(source: &str) -> Vec<String> {
        let params = BTreeMap::from([("month".to_string(), "2026-01".to_string())]);
        let steps = BTreeMap::from([
            ("convert".to_string(), JOB_FIELDS),
            ("notify".to_string(), TASK_FIELDS),
            ("later".to_string(), JOB_FIELDS),
        ]);
        let upstream = BTreeSet::from(["convert".to_string(), "notify".to_string()]);
        check(
            source,
            &Scope {
                params: &params,
                steps: &steps,
                upstream: &upstream,
            },
        )
    }

    #[test]
    fn known_variables_pass_and_each_unknown_one_is_named() {
        assert!(scope_check("{{ params.month }}").is_empty());
        assert!(scope_check("{{ steps.convert.output }}x{{ pipeline.run_id }}").is_empty());
        assert!(scope_check("{{ steps.notify.exit_code }}").is_empty());
        assert!(scope_check("plain text").is_empty());
        let errs = scope_check("{{ params.year }}");
        assert!(errs[0].contains("param `year` is not defined"), "{errs:?}");
        let errs = scope_check("{{ steps.nope.output }}");
        assert!(errs[0].contains("unknown step `nope`"), "{errs:?}");
        let errs = scope_check("{{ steps.later.output }}");
        assert!(errs[0].contains("not upstream"), "{errs:?}");
        let errs = scope_check("{{ steps.notify.output }}");
        assert!(errs[0].contains("gives no `output`"), "{errs:?}");
        let errs = scope_check("{{ schedule.time }}");
        assert!(errs[0].contains("unknown template variable"), "{errs:?}");
        let errs = scope_check("{{ steps.convert }}");
        assert!(errs[0].contains("is not a value"), "{errs:?}");
        let errs = scope_check("{{ params.month ");
        assert!(errs[0].starts_with("invalid template"), "{errs:?}");
        assert_eq!(scope_check("{{ params.a }}{{ params.b }}").len(), 2);
    }

    #[test]
    fn renders_results_and_refuses_a_missing_field() {
        let params = BTreeMap::from([("month".to_string(), "2026-01".to_string())]);
        let steps = BTreeMap::from([(
            "convert".to_string(),
            StepResult {
                run_id: "p-1-convert".into(),
                output: Some("s3://curated/trips/".into()),
                records_out: Some(42),
                ..Default::default()
            },
        )]);
        let ctx = RenderContext {
            params: &params,
            pipeline: "p",
            run_id: "p-1",
            steps: &steps,
        };
        assert_eq!(
            render(
                "{{ steps.convert.output }}{{ params.month }}/ {{ steps.convert.records_out }} {{ pipeline.run_id }}",
                &ctx
            )
            .unwrap(),
            "s3://curated/trips/2026-01/ 42 p-1"
        );
        assert!(render("{{ steps.convert.rejected }}", &ctx).is_err());
    }
}
