//! Text -> raw `JobFile` with every problem located: syntax, unknown and missing fields,
//! wrong types. Each part of the file is read on its own so one mistake does not hide others.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use crate::spec::collect::{describe, read_collecting, unknown_field};
use crate::spec::error::{Problem, SpecError, SpecErrors};
use crate::spec::file::{JobFile, SpecConfig, Unit, scalar_string_map};
use crate::spec::span::{FieldPath, SpanIndex};
use crate::spec::steps::TransformStepConfig;
use crate::spec::task::{self, TaskDefinition, TaskFile};
use crate::spec::validate::{Broken, validate_parts};
use crate::spec::{Loaded, template};

/// Loads job text: parse, read, merge overrides into params, validate.
pub fn load(
    text: &str,
    origin: &str,
    overrides: &[(String, String)],
) -> Result<Loaded, SpecErrors> {
    let (spans, value) = parse(text, origin)?;

    let mut problems = Vec::new();
    for (name, _) in overrides {
        if !template::is_param_name(name) {
            problems.push(SpecError {
                origin: origin.to_string(),
                line: 0,
                column: 0,
                path: String::new(),
                message: format!("--param {name}: not a valid param name"),
            });
        }
    }

    let mut reader = Reader::default();
    let mut file = reader.job_file(&value);
    file.spec
        .params
        .extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    let validated = validate_parts(&file, &reader.broken);
    let mut located: Vec<SpecError> = reader
        .problems
        .iter()
        .chain(validated.as_ref().err().into_iter().flatten())
        .map(|p| p.locate(origin, &spans))
        .collect();
    located.sort_by_key(|e| (e.line, e.column));
    problems.extend(located);
    match validated {
        Ok(job) if problems.is_empty() => Ok(Loaded {
            job,
            resolved_yaml: resolved_yaml(text, value, overrides),
        }),
        _ => Err(SpecErrors { errors: problems }),
    }
}

/// Loads task definition text: parse, read every part with its problems, validate.
pub fn load_task(text: &str, origin: &str) -> Result<TaskDefinition, SpecErrors> {
    let (spans, value) = parse(text, origin)?;
    let mut problems = Vec::new();
    let task = read_collecting::<TaskFile>(&value, &FieldPath::root(), &mut problems)
        .and_then(|file| task::check(&file, &mut problems));
    let mut located: Vec<SpecError> = problems.iter().map(|p| p.locate(origin, &spans)).collect();
    located.sort_by_key(|e| (e.line, e.column));
    match task {
        Some(task) if located.is_empty() => Ok(task),
        _ => Err(SpecErrors { errors: located }),
    }
}

/// Reads text as YAML: where every field is written, and its value. A syntax error or a
/// key given twice is reported with its position.
pub(crate) fn parse(text: &str, origin: &str) -> Result<(SpanIndex, Value), SpecErrors> {
    let spans = SpanIndex::build(text)
        .map_err(|(pos, message)| SpecErrors::invalid_yaml(origin, pos, &message))?;
    if !spans.duplicates.is_empty() {
        let errors = spans
            .duplicates
            .iter()
            .map(|(path, pos)| SpecError {
                origin: origin.to_string(),
                line: pos.line,
                column: pos.column,
                path: path.to_string(),
                message: "is given more than once".to_string(),
            })
            .collect();
        return Err(SpecErrors { errors });
    }
    let value: Value = match serde_yaml_ng::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            return Err(SpecErrors {
                errors: vec![SpecError {
                    origin: origin.to_string(),
                    line,
                    column,
                    path: String::new(),
                    message: format!("invalid YAML: {}", without_position(&e.to_string())),
                }],
            });
        }
    };

    Ok((spans, value))
}

/// The file with the overrides merged into `spec.params`; the text itself when there are none.
fn resolved_yaml(text: &str, mut value: Value, overrides: &[(String, String)]) -> String {
    if overrides.is_empty() {
        return text.to_string();
    }
    if let Some(Value::Mapping(spec)) = value.get_mut("spec") {
        let params = spec
            .entry(Value::String("params".into()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if !params.is_mapping() {
            *params = Value::Mapping(Mapping::new());
        }
        if let Value::Mapping(params) = params {
            for (k, v) in overrides {
                params.insert(Value::String(k.clone()), Value::String(v.clone()));
            }
        }
    }
    serde_yaml_ng::to_string(&value).unwrap_or_else(|_| text.to_string())
}

/// serde_yaml_ng appends " at line L column C" to messages; the position is reported apart.
fn without_position(message: &str) -> &str {
    match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
    broken: Broken,
}

impl Reader {
    fn job_file(&mut self, root: &Value) -> JobFile {
        let top = FieldPath::root();
        let mut file = placeholder();
        let Some(map) = self.mapping(root, &top, JobFile::FIELDS, true) else {
            self.broken
                .0
                .extend([Unit::ApiVersion, Unit::Kind, Unit::Metadata]);
            self.broken_spec();
            return file;
        };
        keep(
            &mut file.api_version,
            self.required(map, &top, Unit::ApiVersion),
        );
        keep(&mut file.kind, self.required(map, &top, Unit::Kind));
        keep(&mut file.metadata, self.required(map, &top, Unit::Metadata));
        let spec_path = top.key("spec");
        let spec = match map.get("spec") {
            None => {
                self.problems
                    .push(Problem::new(spec_path.clone(), "is required"));
                None
            }
            Some(v) => self.mapping(v, &spec_path, SpecConfig::FIELDS, false),
        };
        let Some(spec) = spec else {
            self.broken_spec();
            return file;
        };
        let (s, p) = (&mut file.spec, &spec_path);
        let params = self.optional::<ParamsUnit>(spec, p, Unit::Params);
        keep(&mut s.params, params.map(|params| params.0));
        keep(&mut s.source, self.required(spec, p, Unit::Source));
        s.transform = self.steps(spec, p);
        keep(&mut s.validate, self.optional(spec, p, Unit::Validate));
        keep(&mut s.sink, self.required(spec, p, Unit::Sink));
        keep(
            &mut s.parallelism,
            self.optional(spec, p, Unit::Parallelism),
        );
        keep(&mut s.shards, self.optional(spec, p, Unit::Shards));
        keep(&mut s.split_size, self.optional(spec, p, Unit::SplitSize));
        keep(&mut s.mode, self.optional(spec, p, Unit::Mode));
        keep(&mut s.retries, self.optional(spec, p, Unit::Retries));
        keep(&mut s.state, self.optional(spec, p, Unit::State));
        keep(&mut s.endpoint, self.optional(spec, p, Unit::Endpoint));
        keep(&mut s.kubernetes, self.optional(spec, p, Unit::Kubernetes));
        file
    }

    fn broken(&mut self, unit: Unit) {
        self.broken.0.insert(unit);
    }

    /// Every unit of `spec:`, when `spec:` itself cannot be read.
    fn broken_spec(&mut self) {
        self.broken
            .0
            .extend(SpecConfig::UNITS.map(|(_, unit)| unit));
    }

    /// `spec.transform`, each step read on its own.
    fn steps(&mut self, spec: &Mapping, parent: &FieldPath) -> Vec<TransformStepConfig> {
        let at = parent.key("transform");
        match spec.get("transform") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    read_collecting(item, &at.index(i), &mut self.problems).unwrap_or_else(|| {
                        self.broken.0.insert(Unit::Step(i));
                        TransformStepConfig {
                            name: None,
                            sql: None,
                            container: None,
                            filters: false,
                        }
                    })
                })
                .collect(),
            Some(other) => {
                self.problems.push(Problem::new(
                    at,
                    format!("must be a list of steps (got {})", describe(other)),
                ));
                self.broken(Unit::Transform);
                Vec::new()
            }
        }
    }

    /// The mapping at `path`, with a problem for every key that is not in `fields`.
    fn mapping<'v>(
        &mut self,
        value: &'v Value,
        path: &FieldPath,
        fields: &[&str],
        is_root: bool,
    ) -> Option<&'v Mapping> {
        let map = match value {
            Value::Mapping(map) => map,
            Value::Null if is_root => {
                self.problems.push(Problem::new(
                    path.clone(),
                    "the file is empty; a job file starts with `apiVersion: sluice.dev/v1alpha1`",
                ));
                return None;
            }
            other => {
                let what = if is_root { "the file" } else { "must be" };
                let message = if is_root {
                    format!(
                        "{what} must be a mapping of fields (got {})",
                        describe(other)
                    )
                } else {
                    format!("{what} a mapping of fields (got {})", describe(other))
                };
                self.problems.push(Problem::new(path.clone(), message));
                return None;
            }
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if fields.contains(&k) => {}
                Some(k) => self
                    .problems
                    .push(Problem::at_key(path.key(k), unknown_field(k, fields))),
                None => self.problems.push(Problem::new(
                    path.clone(),
                    format!("has a key that is not text ({})", describe(key)),
                )),
            }
        }
        Some(map)
    }

    fn required<T: DeserializeOwned>(
        &mut self,
        map: &Mapping,
        parent: &FieldPath,
        unit: Unit,
    ) -> Option<T> {
        let key = unit.key();
        match map.get(key) {
            None => {
                self.problems
                    .push(Problem::new(parent.key(key), "is required"));
                self.broken(unit);
                None
            }
            Some(value) => self.read(value, &parent.key(key), unit),
        }
    }

    /// `None` when absent (the caller keeps the default) or unreadable (the unit is broken).
    fn optional<T: DeserializeOwned>(
        &mut self,
        map: &Mapping,
        parent: &FieldPath,
        unit: Unit,
    ) -> Option<T> {
        let key = unit.key();
        map.get(key)
            .and_then(|value| self.read(value, &parent.key(key), unit))
    }

    fn read<T: DeserializeOwned>(
        &mut self,
        value: &Value,
        at: &FieldPath,
        unit: Unit,
    ) -> Option<T> {
        let out = read_collecting(value, at, &mut self.problems);
        if out.is_none() {
            self.broken(unit);
        }
        out
    }
}

/// `spec.params`, whose values may be numbers or booleans.
#[derive(serde::Deserialize)]
struct ParamsUnit(#[serde(deserialize_with = "scalar_string_map")] BTreeMap<String, String>);

/// Puts what was read into its slot; a part that is absent or unreadable keeps the default.
fn keep<T>(slot: &mut T, read: Option<T>) {
    if let Some(value) = read {
        *slot = value;
    }
}

/// Stands in for the parts that could not be read; validation skips those parts. Every field
/// it leaves out takes its default, as in a file that leaves it out.
fn placeholder() -> JobFile {
    serde_yaml_ng::from_str(
        "{apiVersion: '', kind: '', metadata: {name: ''}, \
         spec: {source: {uri: '', format: csv}, sink: {uri: ''}}}",
    )
    .expect("the placeholder is a job file")
}
