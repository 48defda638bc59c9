//! The pipeline file (`kind: Pipeline`): a DAG of job and task steps. Raw structs, loading
//! with located errors, and validation into a `Pipeline`: step names, `depends_on` (unknown
//! steps, cycles), templates (every variable known and upstream), and every step's target
//! loaded as it would run, with the pipeline's params and placeholder results upstream.

pub mod dag;
mod target;
pub mod templates;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::error::{Problem, SpecError, SpecErrors};
use crate::spec::file::scalar_string_map;
use crate::spec::kubernetes::{DEFAULT_TTL_SECONDS, PodSettings, is_credential_name};
use crate::spec::metadata::{Metadata, check_header, check_metadata};
use crate::spec::span::FieldPath;
use crate::spec::task::TaskDefinition;
use crate::spec::{Loaded, load_str, load_task_str};
use crate::storage::uri::S3Uri;

use dag::Dag;
use target::{preview, read_target};
use templates::{JOB_FIELDS, RenderContext, Scope, StepResult, TASK_FIELDS};

/// The `kind` of a pipeline file.
pub const KIND: &str = "Pipeline";
/// The longest step name: a step's run id is the pipeline's run id and the step's name.
const MAX_STEP_NAME: usize = 40;

/// A pipeline: job and task steps, each run once per pipeline run after the steps it
/// depends on succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// The version of the file format. Must be `sluice.dev/v1alpha1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The kind of file. Must be `Pipeline`.
    pub kind: String,
    /// The pipeline's name (a DNS-1123 label): it names its runs and its state.
    pub metadata: Metadata,
    /// The steps and how they run.
    pub spec: PipelineSpecConfig,
}

/// The `spec:` section of a pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpecConfig {
    /// Named values the steps' templates read as `{{ params.NAME }}`. `--param NAME=VALUE`
    /// (and a schedule's params) replace or add values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[serde(deserialize_with = "scalar_string_map")]
    #[schemars(with = "BTreeMap<String, crate::spec::file::ParamValueSchema>")]
    pub params: BTreeMap<String, String>,
    /// How many steps run at the same time, among those whose dependencies succeeded
    /// (at least 1). Each job step runs its own `parallelism` workers.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// Where the pipeline's runs are recorded (`s3://bucket/prefix/`). Default: the `state`
    /// of its first job step. Required when no step is a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The steps, each a job or a task definition.
    pub steps: Vec<StepConfig>,
}

fn default_parallelism() -> u32 {
    2
}

/// One entry of `spec.steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// The step's name, unique in the pipeline: a lowercase letter, then lowercase letters,
    /// digits and `_` (at most 40), so that templates can name it as `steps.NAME`.
    pub name: String,
    /// A job to run: a job file's path (relative to the pipeline file) or the job inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<TargetConfig>,
    /// A task definition to run: its path (relative to the pipeline file) or inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TargetConfig>,
    /// Params of the step, each a template over `params`, `pipeline` and the results of
    /// upstream steps (`steps.NAME.FIELD`): a job step gets them as `--param NAME=VALUE`, a
    /// task step as environment variables of its essential container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[serde(deserialize_with = "scalar_string_map")]
    #[schemars(with = "BTreeMap<String, crate::spec::file::ParamValueSchema>")]
    pub params: BTreeMap<String, String>,
    /// A task step's arguments for its essential container (they replace its `command`),
    /// each a template like `params`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl StepConfig {
    pub const FIELDS: &'static [&'static str] =
        &["name", "job", "task", "params", "args", "depends_on"];
}

/// A step's target: a path, or the file's content inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TargetConfig {
    /// A path relative to the pipeline file.
    Path(String),
    /// The job file or task definition itself.
    Inline(serde_json::Map<String, serde_json::Value>),
}

/// What a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Job,
    Task,
}

impl StepKind {
    fn key(self) -> &'static str {
        match self {
            StepKind::Job => "job",
            StepKind::Task => "task",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            StepKind::Job => JOB_FIELDS,
            StepKind::Task => TASK_FIELDS,
        }
    }
}

/// The text of a step's target and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSource {
    /// Names the target in errors: its path, or the pipeline file and the step's field.
    pub origin: String,
    pub text: String,
}

/// A validated step.
#[derive(Debug, Clone)]
pub struct PipelineStep {
    pub name: String,
    pub kind: StepKind,
    pub source: StepSource,
    /// Templates, by param name.
    pub params: BTreeMap<String, String>,
    /// A task step's argument templates.
    pub args: Option<Vec<String>>,
    /// Indexes of the steps this one depends on.
    pub depends_on: Vec<usize>,
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// The pipeline file as the user named it.
    pub origin: String,
    /// Where the pipeline's runs are recorded.
    pub state: S3Uri,
    /// The S3 endpoint of the first job step that names one.
    pub endpoint: Option<String>,
    /// The first job step's `kubernetes` settings (namespace, image, environment,
    /// placement): the pipeline's launcher runs with them.
    pub kubernetes: PodSettings,
    /// The sink and state buckets of the job steps as loaded with the pipeline's params (a
    /// step whose sink depends on results upstream may use others).
    pub buckets: Vec<String>,
    pub steps: Vec<PipelineStep>,
    /// Step indexes, every step after its dependencies.
    pub order: Vec<usize>,
    /// The file as read, with the overrides merged into its params.
    pub raw: PipelineFile,
}

/// The run id of a step of a pipeline run.
pub fn step_run_id(pipeline_run: &str, step: &str) -> String {
    format!("{pipeline_run}-{}", step.replace('_', "-"))
}

impl Pipeline {
    /// The file's params with the overrides merged in.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.raw.spec.params
    }

    /// How many steps run at the same time.
    pub fn parallelism(&self) -> usize {
        self.raw.spec.parallelism as usize
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&PipelineStep> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Renders a step's params for a run, given the results of the steps before it.
    pub fn render_params(
        &self,
        step: &PipelineStep,
        run_id: &str,
        results: &BTreeMap<String, StepResult>,
    ) -> Result<Vec<(String, String)>, String> {
        let ctx = self.context(run_id, results);
        step.params
            .iter()
            .map(|(name, source)| {
                templates::render(source, &ctx)
                    .map(|value| (name.clone(), value))
                    .map_err(|e| format!("steps.{}.params.{name}: {e}", step.name))
            })
            .collect()
    }

    /// Renders a task step's args, when it has any.
    pub fn render_args(
        &self,
        step: &PipelineStep,
        run_id: &str,
        results: &BTreeMap<String, StepResult>,
    ) -> Result<Option<Vec<String>>, String> {
        let Some(args) = &step.args else {
            return Ok(None);
        };
        let ctx = self.context(run_id, results);
        args.iter()
            .enumerate()
            .map(|(i, source)| {
                templates::render(source, &ctx)
                    .map_err(|e| format!("steps.{}.args[{i}]: {e}", step.name))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn context<'a>(
        &'a self,
        run_id: &'a str,
        results: &'a BTreeMap<String, StepResult>,
    ) -> RenderContext<'a> {
        RenderContext {
            params: self.params(),
            pipeline: &self.name,
            run_id,
            steps: results,
        }
    }

    /// The pipeline as files for a ConfigMap: `pipeline.yaml`, whose steps name
    /// `step-<name>.yaml`, and each step's target under that key. The launcher in a cluster
    /// reads the pipeline from the mounted directory.
    pub fn bundle(&self) -> BTreeMap<String, String> {
        let mut raw = self.raw.clone();
        let mut files = BTreeMap::new();
        for (config, step) in raw.spec.steps.iter_mut().zip(&self.steps) {
            let key = format!("step-{}.yaml", step.name.replace('_', "-"));
            let target = Some(TargetConfig::Path(key.clone()));
            match step.kind {
                StepKind::Job => config.job = target,
                StepKind::Task => config.task = target,
            }
            files.insert(key, step.source.text.clone());
        }
        let text = serde_yaml_ng::to_string(&raw).expect("a pipeline file serializes");
        files.insert(BUNDLE_KEY.to_string(), text);
        files
    }
}

/// The key of the pipeline file in a bundle.
pub const BUNDLE_KEY: &str = "pipeline.yaml";

impl PipelineStep {
    /// Loads a job step's target with the step's rendered params.
    pub fn load_job(&self, params: &[(String, String)]) -> Result<Loaded, SpecErrors> {
        load_str(&self.source.text, &self.source.origin, params)
    }

    /// Loads a task step's definition.
    pub fn load_task(&self) -> Result<TaskDefinition, SpecErrors> {
        load_task_str(&self.source.text, &self.source.origin)
    }
}

/// Loads and validates a pipeline file; the steps' files are read and checked too.
/// `overrides` replace or add params.
pub fn load_pipeline_file(
    path: &Path,
    overrides: &[(String, String)],
) -> Result<Pipeline, SpecErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecErrors::unreadable(&origin, format!("cannot read the pipeline file: {e}"))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    load_pipeline_str(&text, &origin, base, overrides)
}

/// Loads pipeline text; step paths are relative to `base`.
pub fn load_pipeline_str(
    text: &str,
    origin: &str,
    base: &Path,
    overrides: &[(String, String)],
) -> Result<Pipeline, SpecErrors> {
    let (spans, value) = crate::spec::load::parse(text, origin)?;
    let mut problems = Vec::new();
    let file = crate::spec::collect::read_collecting::<PipelineFile>(
        &value,
        &FieldPath::root(),
        &mut problems,
    );
    let mut targets = Vec::new();
    let pipeline = file.and_then(|mut file| {
        file.spec
            .params
            .extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        validate(file, origin, base, &mut problems, &mut targets)
    });
    let mut errors: Vec<SpecError> = problems.iter().map(|p| p.locate(origin, &spans)).collect();
    errors.sort_by_key(|e| (e.line, e.column));
    errors.extend(targets);
    match pipeline {
        Some(pipeline) if errors.is_empty() => Ok(pipeline),
        _ => Err(SpecErrors { errors }),
    }
}

/// Every check of the file, then every step's target loaded (its errors, located in its own
/// file, go to `targets`).
fn validate(
    file: PipelineFile,
    origin: &str,
    base: &Path,
    problems: &mut Vec<Problem>,
    targets: &mut Vec<SpecError>,
) -> Option<Pipeline> {
    let top = FieldPath::root();
    let spec = top.key("spec");
    let before = problems.len();
    check_header(&file.api_version, &file.kind, KIND, problems);
    check_metadata(&file.metadata, problems);
    let s = &file.spec;
    if s.parallelism == 0 {
        problems.push(Problem::new(spec.key("parallelism"), "must be at least 1"));
    }
    let state = match &s.state {
        None => None,
        Some(text) => text
            .parse::<S3Uri>()
            .map_err(|e| problems.push(Problem::new(spec.key("state"), e.to_string())))
            .ok(),
    };
    if s.steps.is_empty() {
        problems.push(Problem::new(
            spec.key("steps"),
            "must list at least one step",
        ));
    }
    for name in s.params.keys() {
        if !crate::spec::template::is_param_name(name) {
            problems.push(Problem::at_key(
                spec.key("params").key(name),
                "not a valid param name: a letter or '_', then letters, digits, '_' or '-'",
            ));
        }
    }

    // Names first: depends_on and templates refer to them.
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, step) in s.steps.iter().enumerate() {
        let at = spec.key("steps").index(i).key("name");
        if !is_step_name(&step.name) {
            problems.push(Problem::new(
                at,
                format!(
                    "must be a lowercase letter, then lowercase letters, digits and '_', at most {MAX_STEP_NAME} characters (got {:?})",
                    step.name
                ),
            ));
        } else if index.insert(&step.name, i).is_some() {
            problems.push(Problem::new(
                at,
                format!("another step is named {:?} already", step.name),
            ));
        }
    }
    let mut depends_on = Vec::with_capacity(s.steps.len());
    for (i, step) in s.steps.iter().enumerate() {
        let at = spec.key("steps").index(i).key("depends_on");
        let mut deps = Vec::new();
        for (j, name) in step.depends_on.iter().enumerate() {
            match index.get(name.as_str()) {
                Some(&d) if deps.contains(&d) => problems.push(Problem::new(
                    at.index(j),
                    format!("{name:?} is listed twice"),
                )),
                Some(&d) => deps.push(d),
                None => {
                    let known: Vec<&str> = index.keys().copied().collect();
                    let hint = crate::spec::collect::unknown_field(name, &known);
                    let hint = hint.trim_start_matches("unknown field");
                    problems.push(Problem::new(
                        at.index(j),
                        format!("unknown step {name:?}{hint}"),
                    ))
                }
            }
        }
        depends_on.push(deps);
    }
    let dag = Dag {
        depends_on: &depends_on,
    };
    let order = match dag.order() {
        Ok(order) => Some(order),
        Err(cycle) => {
            let names: Vec<&str> = cycle.iter().map(|&i| s.steps[i].name.as_str()).collect();
            problems.push(Problem::new(
                spec.key("steps").index(cycle[0]).key("depends_on"),
                format!(
                    "the steps depend on each other in a cycle: {}",
                    names.join(" -> ")
                ),
            ));
            None
        }
    };

    let mut kinds: BTreeMap<String, &'static [&'static str]> = BTreeMap::new();
    let mut sources = Vec::with_capacity(s.steps.len());
    for (i, step) in s.steps.iter().enumerate() {
        let at = spec.key("steps").index(i);
        let (kind, target) = match (&step.job, &step.task) {
            (Some(t), None) => (StepKind::Job, t),
            (None, Some(t)) => (StepKind::Task, t),
            (Some(_), Some(_)) => {
                problems.push(Problem::at_key(
                    at.key("task"),
                    "a step runs a job or a task, not both",
                ));
                sources.push(None);
                continue;
            }
            (None, None) => {
                problems.push(Problem::new(
                    at.clone(),
                    "names neither a `job` nor a `task` to run",
                ));
                sources.push(None);
                continue;
            }
        };
        kinds.insert(step.name.clone(), kind.fields());
        if kind == StepKind::Task {
            for name in step.params.keys().filter(|n| is_credential_name(n)) {
                problems.push(Problem::at_key(
                    at.key("params").key(name),
                    "looks like a credential; a task step's params are environment variables in plain text in the Job's pod spec: put it in the container's `secrets`",
                ));
            }
        }
        if kind == StepKind::Job && step.args.is_some() {
            problems.push(Problem::at_key(
                at.key("args"),
                "only a task step takes args; give a job its values as `params`",
            ));
        }
        match read_target(target, kind, base, origin, &at) {
            Ok(source) => sources.push(Some((kind, source))),
            Err(why) => {
                problems.push(Problem::new(at.key(kind.key()), why));
                sources.push(None);
            }
        }
    }

    let upstream = dag.upstream();
    for (i, step) in s.steps.iter().enumerate() {
        let names: BTreeSet<String> = upstream[i]
            .iter()
            .map(|&u| s.steps[u].name.clone())
            .collect();
        let scope = Scope {
            params: &s.params,
            steps: &kinds,
            upstream: &names,
        };
        let at = spec.key("steps").index(i);
        for (name, source) in &step.params {
            if !crate::spec::template::is_param_name(name) {
                problems.push(Problem::at_key(
                    at.key("params").key(name),
                    "not a valid param name: a letter or '_', then letters, digits, '_' or '-'",
                ));
            }
            for why in templates::check(source, &scope) {
                problems.push(Problem::new(at.key("params").key(name), why));
            }
        }
        for (j, source) in step.args.iter().flatten().enumerate() {
            for why in templates::check(source, &scope) {
                problems.push(Problem::new(at.key("args").index(j), why));
            }
        }
    }
    if problems.len() > before {
        return None;
    }

    let steps: Vec<PipelineStep> = s
        .steps
        .iter()
        .zip(sources)
        .zip(depends_on)
        .map(|((step, source), depends_on)| {
            let (kind, source) = source.expect("every target was read");
            PipelineStep {
                name: step.name.clone(),
                kind,
                source,
                params: step.params.clone(),
                args: step.args.clone(),
                depends_on,
            }
        })
        .collect();
    let order = order.expect("no cycle");
    let previews = preview(&file, &steps, &order, targets);
    let first_job = steps
        .iter()
        .position(|s| s.kind == StepKind::Job)
        .and_then(|i| previews[i].as_ref());
    let state = match (state, first_job) {
        (Some(state), _) => state,
        (None, Some(loaded)) => loaded.job.state.clone(),
        (None, None) => {
            if !steps.iter().any(|s| s.kind == StepKind::Job) {
                problems.push(Problem::new(
                    spec.clone(),
                    "no step is a job, whose state the pipeline's runs could be recorded beside: name where in `spec.state` (s3://bucket/prefix/)",
                ));
            }
            return None;
        }
    };
    let endpoint = previews
        .iter()
        .flatten()
        .find_map(|loaded| loaded.job.endpoint.clone());
    let kubernetes = first_job
        .map(|loaded| loaded.job.kubernetes.clone())
        .unwrap_or_else(|| PodSettings {
            ttl_seconds_after_finished: DEFAULT_TTL_SECONDS,
            ..Default::default()
        });
    if !targets.is_empty() {
        return None;
    }
    let mut buckets: Vec<String> = previews
        .iter()
        .flatten()
        .flat_map(|l| [l.job.sink.uri.bucket.clone(), l.job.state.bucket.clone()])
        .chain([state.bucket.clone()])
        .collect();
    buckets.sort();
    buckets.dedup();
    Some(Pipeline {
        name: file.metadata.name.clone(),
        origin: origin.to_string(),
        state,
        endpoint,
        kubernetes,
        buckets,
        steps,
        order,
        raw: file,
    })
}

fn is_step_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_STEP_NAME
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// The JSON Schema of the pipeline file format.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(PipelineFile).to_value()
}
