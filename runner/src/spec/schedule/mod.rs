//! The schedule file (`kind: Schedule`): raw struct, loading with located errors, and
//! validation into a `Schedule` (parsed cron, time zone, target, params templates).

pub mod cron;
pub mod params;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::spec::error::{Problem, SpecError, SpecErrors};
use crate::spec::file::scalar_string_map;
use crate::spec::kubernetes::is_credential_name;
use crate::spec::metadata::Metadata;
use crate::spec::schedule::cron::CronSchedule;
use crate::spec::schedule::params::{ArgTemplates, ParamTemplates};
use crate::spec::span::{FieldPath, SpanIndex};
use crate::storage::uri::S3Uri;

/// The `kind` of a schedule file.
pub const KIND: &str = "Schedule";

/// A schedule: when to run a job (or a task definition), and with which params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// The version of the file format. Must be `sluice.dev/v1alpha1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The kind of file. Must be `Schedule`.
    pub kind: String,
    /// The schedule's name (a DNS-1123 label); it names the schedule's run history.
    pub metadata: Metadata,
    /// When and what to run.
    pub spec: ScheduleSpecConfig,
}

/// The `spec:` section of a schedule file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleSpecConfig {
    /// A five-field cron expression (minute hour day-of-month month day-of-week), or one of
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, evaluated in `timeZone`.
    pub cron: String,
    /// The IANA time zone the cron expression is read in (`Europe/Berlin`). Default `UTC`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The job file, task definition or pipeline to run, relative to this schedule file.
    /// Its `kind` decides how it is run.
    pub target: String,
    /// Params passed to the target as `--param NAME=VALUE` (a pipeline's own params), each a template over
    /// `schedule.time`, `interval.start` and `interval.end` (see docs/scheduling.md).
    #[serde(default, deserialize_with = "scalar_string_map")]
    pub params: BTreeMap<String, String>,
    /// For a TaskDefinition target: the arguments of its essential container for each fire
    /// (they replace the container's `command`, as `sluice task run FILE -- ARGS` does), each
    /// a template like `params`. A job target takes `params` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Where the schedule's run history is kept (`s3://bucket/prefix/`). Default: the job
    /// target's `state` (a pipeline's). Required for a TaskDefinition target, which has no
    /// bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// What to do when a run is due while an earlier run of this schedule is still running:
    /// `Allow` (run both), `Forbid` (the new run waits), `Replace` (stop the running one).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Runs missed while the scheduler was down.
    #[serde(default)]
    pub catch_up: CatchUpConfig,
    /// How late a run may start (`10m`, `2h`); a run due longer ago is dropped. Default: no limit.
    #[serde(default)]
    pub starting_deadline: Option<String>,
    /// Fire nothing while true; runs missed meanwhile are treated as missed runs.
    #[serde(default)]
    pub suspend: bool,
}

impl ScheduleSpecConfig {
    pub const FIELDS: &'static [&'static str] = &[
        "cron",
        "timeZone",
        "target",
        "params",
        "args",
        "state",
        "concurrencyPolicy",
        "catchUp",
        "startingDeadline",
        "suspend",
    ];
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

/// Kubernetes CronJob's concurrency policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    #[default]
    Allow,
    Forbid,
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Allow => "Allow",
            ConcurrencyPolicy::Forbid => "Forbid",
            ConcurrencyPolicy::Replace => "Replace",
        }
    }
}

/// `spec.catchUp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CatchUpConfig {
    /// At most this many runs are started for the intervals missed while the scheduler was
    /// down (the newest ones, oldest first). Default 1, as a Kubernetes CronJob does.
    #[serde(default = "default_max_runs")]
    pub max_runs: u32,
}

impl Default for CatchUpConfig {
    fn default() -> Self {
        CatchUpConfig {
            max_runs: default_max_runs(),
        }
    }
}

fn default_max_runs() -> u32 {
    1
}

/// What a schedule runs, by the `kind` of its target file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleTarget {
    /// A job file (`kind: Job`).
    Job(PathBuf),
    /// A task definition (`kind: TaskDefinition`).
    TaskDefinition(PathBuf),
    /// A pipeline (`kind: Pipeline`): the schedule's params become the pipeline's params.
    Pipeline(PathBuf),
}

impl ScheduleTarget {
    pub fn path(&self) -> &Path {
        match self {
            ScheduleTarget::Job(p)
            | ScheduleTarget::TaskDefinition(p)
            | ScheduleTarget::Pipeline(p) => p,
        }
    }
}

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    /// The schedule file as the user named it.
    pub origin: String,
    pub cron: CronSchedule,
    pub time_zone: Tz,
    pub target: ScheduleTarget,
    pub params: ParamTemplates,
    /// The arguments of a TaskDefinition target's essential container, when given.
    pub args: Option<ArgTemplates>,
    /// Where the history is kept, when the schedule names it.
    pub state: Option<S3Uri>,
    pub concurrency: ConcurrencyPolicy,
    pub max_catch_up_runs: u32,
    pub starting_deadline: Option<Duration>,
    pub suspend: bool,
}

/// Loads and validates a schedule file; the target file is read to learn its kind.
pub fn load_schedule_file(path: &Path) -> Result<Schedule, SpecErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecErrors::unreadable(&origin, format!("cannot read the schedule file: {e}"))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    load_schedule_str(&text, &origin, base)
}

/// Loads schedule text; `base` is the directory the target path is relative to.
pub fn load_schedule_str(text: &str, origin: &str, base: &Path) -> Result<Schedule, SpecErrors> {
    let spans = SpanIndex::build(text)
        .map_err(|(pos, message)| SpecErrors::invalid_yaml(origin, pos, &message))?;
    let value: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| SpecErrors::unreadable(origin, format!("invalid YAML: {e}")))?;
    let mut problems = Vec::new();
    for (path, _) in &spans.duplicates {
        problems.push(Problem::at_key(path.clone(), "is given more than once"));
    }
    let file = crate::spec::collect::read_collecting::<ScheduleFile>(
        &value,
        &FieldPath::root(),
        &mut problems,
    );
    let schedule = file.and_then(|file| validate(&file, origin, base, &mut problems));
    let mut errors: Vec<SpecError> = problems.iter().map(|p| p.locate(origin, &spans)).collect();
    errors.sort_by_key(|e| (e.line, e.column));
    match schedule {
        Some(schedule) if errors.is_empty() => Ok(schedule),
        _ => Err(SpecErrors { errors }),
    }
}

/// Every cross-field check; the target file is opened only to read its `kind`.
fn validate(
    file: &ScheduleFile,
    origin: &str,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> Option<Schedule> {
    let top = FieldPath::root();
    let spec = top.key("spec");
    let before = problems.len();
    crate::spec::metadata::check_header(&file.api_version, &file.kind, KIND, problems);
    let name = &file.metadata.name;
    if !crate::spec::metadata::is_dns_label(name) {
        problems.push(Problem::new(
            top.key("metadata").key("name"),
            format!(
                "must be a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters (got {name:?})"
            ),
        ));
    }
    let s = &file.spec;
    let cron = CronSchedule::parse(&s.cron)
        .map_err(|why| problems.push(Problem::new(spec.key("cron"), why)))
        .ok();
    let time_zone = s
        .time_zone
        .parse::<Tz>()
        .map_err(|_| {
            problems.push(Problem::new(
                spec.key("timeZone"),
                format!(
                    "unknown time zone {:?}: use an IANA name such as Europe/Berlin or UTC",
                    s.time_zone
                ),
            ))
        })
        .ok();
    let params = ParamTemplates::compile(&s.params)
        .map_err(|errs| {
            for (name, why) in errs {
                problems.push(Problem::new(spec.key("params").key(&name), why));
            }
        })
        .ok();
    if s.catch_up.max_runs == 0 {
        problems.push(Problem::new(
            spec.key("catchUp").key("maxRuns"),
            "must be at least 1 (the run that is due now counts)",
        ));
    }
    let starting_deadline = match &s.starting_deadline {
        None => None,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                problems.push(Problem::new(
                    spec.key("startingDeadline"),
                    "must be longer than zero",
                ));
                None
            }
            Err(e) => {
                problems.push(Problem::new(
                    spec.key("startingDeadline"),
                    format!("not a duration such as 10m or 2h ({e}; got {text:?})"),
                ));
                None
            }
        },
    };
    let target = read_target(&s.target, base).map_err(|why| {
        problems.push(Problem::new(spec.key("target"), why));
    });
    let args = match &s.args {
        None => None,
        Some(list) => ArgTemplates::compile(list)
            .map_err(|errs| {
                for (i, why) in errs {
                    problems.push(Problem::new(spec.key("args").index(i), why));
                }
            })
            .ok(),
    };
    let state = match &s.state {
        None => None,
        Some(text) => text
            .parse::<S3Uri>()
            .map_err(|e| problems.push(Problem::new(spec.key("state"), e.to_string())))
            .ok(),
    };
    match &target {
        Ok(ScheduleTarget::Job(_) | ScheduleTarget::Pipeline(_)) if s.args.is_some() => {
            problems.push(Problem::at_key(
                spec.key("args"),
                "only a TaskDefinition target takes args; give a job or a pipeline its values as `params`",
            ))
        }
        Ok(ScheduleTarget::TaskDefinition(_)) => {
            if s.state.is_none() {
                problems.push(Problem::new(
                    spec.key("target"),
                    "a TaskDefinition target has no bucket of its own: name where the schedule's run history is kept in `spec.state` (s3://bucket/prefix/)",
                ));
            }
            for name in s.params.keys().filter(|n| is_credential_name(n)) {
                problems.push(Problem::at_key(
                    spec.key("params").key(name),
                    "looks like a credential; a task's params are environment variables in plain text in the Job's pod spec: put it in the container's `secrets`",
                ));
            }
        }
        _ => {}
    }
    if problems.len() > before {
        return None;
    }
    Some(Schedule {
        name: name.clone(),
        origin: origin.to_string(),
        cron: cron?,
        time_zone: time_zone?,
        target: target.ok()?,
        params: params?,
        args,
        state,
        concurrency: s.concurrency_policy,
        max_catch_up_runs: s.catch_up.max_runs,
        starting_deadline,
        suspend: s.suspend,
    })
}

/// The target file, classified by its `kind`.
fn read_target(target: &str, base: &Path) -> Result<ScheduleTarget, String> {
    if target.trim().is_empty() {
        return Err("must name a job file, task definition or pipeline".into());
    }
    let path = base.join(target);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("{} is not YAML: {e}", path.display()))?;
    match value.get("kind").and_then(Value::as_str) {
        Some(crate::spec::file::KIND) => Ok(ScheduleTarget::Job(path)),
        Some("TaskDefinition") => Ok(ScheduleTarget::TaskDefinition(path)),
        Some(crate::spec::pipeline::KIND) => Ok(ScheduleTarget::Pipeline(path)),
        Some(other) => Err(format!(
            "{} has kind {other:?}; a schedule runs a Job, a TaskDefinition or a Pipeline",
            path.display()
        )),
        None => Err(format!(
            "{} has no `kind`; a schedule runs a Job, a TaskDefinition or a Pipeline",
            path.display()
        )),
    }
}

/// The JSON Schema of the schedule file format.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(ScheduleFile).to_value()
}

/// Whether a YAML text declares `kind: Schedule` (for commands that take either kind).
pub fn is_schedule_file(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_yaml_ng::from_str::<Value>(&t).ok())
        .and_then(|v| v.get("kind").and_then(Value::as_str).map(|k| k == KIND))
        .unwrap_or(false)
}
