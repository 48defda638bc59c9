//! Text -> raw `JobFile` with every problem located: syntax, unknown and missing fields,
//! wrong types. Each part of the file is read on its own so one mistake does not hide others.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use crate::format::options::SourceFormat;
use crate::spec::error::{Problem, SpecError, SpecErrors};
use crate::spec::file::{
    JobFile, Metadata, SinkConfig, SourceConfig, SpecConfig, default_parallelism, default_retries,
    default_shards, default_split_size, scalar_string_map,
};
use crate::spec::span::{FieldPath, Seg, SpanIndex};
use crate::spec::task::{self, TaskDefinition, TaskFile};
use crate::spec::validate::{Broken, Unit, validate_parts};
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
    let spans = match SpanIndex::build(text) {
        Ok(spans) => spans,
        Err((pos, message)) => {
            return Err(SpecErrors {
                errors: vec![SpecError {
                    origin: origin.to_string(),
                    line: pos.line,
                    column: pos.column,
                    path: String::new(),
                    message: format!("invalid YAML: {message}"),
                }],
            });
        }
    };
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
            self.broken.0.extend(ALL_UNITS);
            return file;
        };
        match self.required(map, &top, "apiVersion", Unit::ApiVersion) {
            Some(v) => file.api_version = v,
            None => self.broken(Unit::ApiVersion),
        }
        match self.required(map, &top, "kind", Unit::Kind) {
            Some(v) => file.kind = v,
            None => self.broken(Unit::Kind),
        }
        match self.required::<Metadata>(map, &top, "metadata", Unit::Metadata) {
            Some(v) => file.metadata = v,
            None => self.broken(Unit::Metadata),
        }
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
            self.broken.0.extend(SPEC_UNITS);
            return file;
        };
        let s = &mut file.spec;
        let p = &spec_path;
        if let Some(params) = self.optional::<ParamsUnit>(spec, p, "params", Unit::Params) {
            s.params = params.0;
        }
        match self.required::<SourceConfig>(spec, p, "source", Unit::Source) {
            Some(v) => s.source = v,
            None => self.broken(Unit::Source),
        }
        s.transform = self.steps(spec, p);
        if let Some(v) = self.optional(spec, p, "validate", Unit::Validate) {
            s.validate = v;
        }
        match self.required::<SinkConfig>(spec, p, "sink", Unit::Sink) {
            Some(v) => s.sink = v,
            None => self.broken(Unit::Sink),
        }
        s.parallelism = self
            .optional(spec, p, "parallelism", Unit::Parallelism)
            .unwrap_or_else(default_parallelism);
        s.shards = self
            .optional(spec, p, "shards", Unit::Shards)
            .unwrap_or_else(default_shards);
        s.split_size = self
            .optional(spec, p, "split_size", Unit::SplitSize)
            .unwrap_or_else(default_split_size);
        s.mode = self
            .optional(spec, p, "mode", Unit::Mode)
            .unwrap_or_default();
        s.retries = self
            .optional(spec, p, "retries", Unit::Retries)
            .unwrap_or_else(default_retries);
        s.state = self.optional(spec, p, "state", Unit::State).flatten();
        s.endpoint = self.optional(spec, p, "endpoint", Unit::Endpoint).flatten();
        if let Some(v) = self.optional(spec, p, "kubernetes", Unit::Kubernetes) {
            s.kubernetes = v;
        }
        file
    }

    fn broken(&mut self, unit: Unit) {
        self.broken.0.insert(unit);
    }

    /// `spec.transform`, each step read on its own.
    fn steps(
        &mut self,
        spec: &Mapping,
        parent: &FieldPath,
    ) -> Vec<crate::spec::file::TransformStepConfig> {
        let at = parent.key("transform");
        match spec.get("transform") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    read_collecting(item, &at.index(i), &mut self.problems).unwrap_or_else(|| {
                        self.broken.0.insert(Unit::Step(i));
                        crate::spec::file::TransformStepConfig {
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
        key: &str,
        unit: Unit,
    ) -> Option<T> {
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

    /// `None` when absent (the caller takes the default) or unreadable (the unit is broken).
    fn optional<T: DeserializeOwned>(
        &mut self,
        map: &Mapping,
        parent: &FieldPath,
        key: &str,
        unit: Unit,
    ) -> Option<T> {
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

const SPEC_UNITS: [Unit; 13] = [
    Unit::Params,
    Unit::Source,
    Unit::Transform,
    Unit::Validate,
    Unit::Sink,
    Unit::Parallelism,
    Unit::Shards,
    Unit::SplitSize,
    Unit::Mode,
    Unit::Retries,
    Unit::State,
    Unit::Endpoint,
    Unit::Kubernetes,
];

const ALL_UNITS: [Unit; 16] = [
    Unit::ApiVersion,
    Unit::Kind,
    Unit::Metadata,
    Unit::Params,
    Unit::Source,
    Unit::Transform,
    Unit::Validate,
    Unit::Sink,
    Unit::Parallelism,
    Unit::Shards,
    Unit::SplitSize,
    Unit::Mode,
    Unit::Retries,
    Unit::State,
    Unit::Endpoint,
    Unit::Kubernetes,
];

/// Stands in for the parts that could not be read; validation skips those parts.
fn placeholder() -> JobFile {
    JobFile {
        api_version: String::new(),
        kind: String::new(),
        metadata: Metadata {
            name: String::new(),
            labels: BTreeMap::new(),
        },
        spec: SpecConfig {
            params: BTreeMap::new(),
            source: SourceConfig {
                uri: String::new(),
                include: Vec::new(),
                exclude: Vec::new(),
                format: SourceFormat::Csv,
                compression: Default::default(),
                csv: None,
                schema: None,
                infer_records: crate::spec::file::default_infer_records(),
            },
            transform: Vec::new(),
            validate: Default::default(),
            sink: SinkConfig {
                uri: String::new(),
                format: crate::spec::file::default_sink_format(),
                parquet: None,
                csv: None,
                compression: None,
                part_size: crate::spec::file::default_part_size(),
                parts_in_flight: crate::spec::file::default_parts_in_flight(),
                max_object_size: None,
                key: crate::spec::file::default_key(),
            },
            parallelism: default_parallelism(),
            shards: default_shards(),
            split_size: crate::spec::file::default_split_size(),
            mode: Default::default(),
            retries: default_retries(),
            state: None,
            endpoint: None,
            kubernetes: Default::default(),
        },
    }
}

/// How many problems one part may report before reading it stops.
const MAX_PROBLEMS_PER_PART: usize = 50;

/// Deserializes `value` as `T`, reporting every problem serde finds: after each one the
/// offending entry is taken out and reading starts again. What remains is returned, so that
/// validation can still report the problems of the sound fields (the load fails anyway);
/// `None` when nothing sound remains or list elements had to be taken out (validation
/// would name the wrong elements).
///
/// Taking out a required field makes its struct fail as "missing"; that is not reported
/// again, the struct is taken out instead (its other fields were read already, because
/// missing fields are noticed at the end of a struct). Taking out a list element shifts
/// the indexes after it; `Removed` maps them back to the file's.
pub(crate) fn read_collecting<T: DeserializeOwned>(
    value: &Value,
    base: &FieldPath,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut current = value.clone();
    let mut removed = Removed::default();
    let mut taken: BTreeSet<FieldPath> = BTreeSet::new();
    let mut reported = 0;
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(current.clone()) {
            Ok(v) => return removed.0.is_empty().then_some(v),
            Err(e) => e,
        };
        let reduced = FieldPath(
            error
                .path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                    _ => None,
                })
                .collect(),
        );
        let original = removed.to_original(&reduced);
        let message = error.inner().to_string();
        let target = if let Some(field) = quoted_after(&message, "missing field ") {
            let missing = original.key(&field);
            if !taken.contains(&missing) {
                problems.push(Problem::new(base.join(&missing), "is required"));
                reported += 1;
            }
            original
        } else if let Some(field) = quoted_after(&message, "unknown field ") {
            let expected = backticked(message.split_once("expected").map_or("", |(_, e)| e));
            let names: Vec<&str> = expected.iter().map(String::as_str).collect();
            problems.push(Problem::at_key(
                base.join(&original),
                unknown_field(&field, &names),
            ));
            reported += 1;
            original
        } else {
            problems.push(Problem::new(base.join(&original), message));
            reported += 1;
            original
        };
        if target.is_root() || reported >= MAX_PROBLEMS_PER_PART {
            return None;
        }
        if !removed.take(&mut current, &target) {
            return None;
        }
        taken.insert(target);
    }
}

/// List elements taken out of a value, to translate paths between the value as it is now
/// (reduced) and as it is in the file (original).
#[derive(Default)]
struct Removed(HashMap<FieldPath, BTreeSet<usize>>);

impl Removed {
    fn to_original(&self, reduced: &FieldPath) -> FieldPath {
        let mut out = FieldPath::root();
        for seg in &reduced.0 {
            let seg = match seg {
                Seg::Index(i) => match self.0.get(&out) {
                    Some(gone) => {
                        Seg::Index((0..).filter(|j| !gone.contains(j)).nth(*i).unwrap_or(*i))
                    }
                    None => Seg::Index(*i),
                },
                key => key.clone(),
            };
            out.0.push(seg);
        }
        out
    }

    fn to_reduced(&self, original: &FieldPath) -> FieldPath {
        let mut prefix = FieldPath::root();
        let mut out = FieldPath::root();
        for seg in &original.0 {
            let reduced = match seg {
                Seg::Index(i) => match self.0.get(&prefix) {
                    Some(gone) => Seg::Index(i - gone.range(..*i).count()),
                    None => Seg::Index(*i),
                },
                key => key.clone(),
            };
            prefix.0.push(seg.clone());
            out.0.push(reduced);
        }
        out
    }

    /// Takes the entry at `original` out of `value`; false if it is not there.
    fn take(&mut self, value: &mut Value, original: &FieldPath) -> bool {
        let reduced = self.to_reduced(original);
        let Some((last, parents)) = reduced.0.split_last() else {
            return false;
        };
        let mut node = value;
        for seg in parents {
            let next = match (seg, node) {
                (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
                (Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return false,
            }
        }
        match (last, node) {
            (Seg::Key(k), Value::Mapping(m)) => m.shift_remove(k.as_str()).is_some(),
            (Seg::Index(i), Value::Sequence(s)) if *i < s.len() => {
                s.remove(*i);
                if let (Some(parent), Seg::Index(orig)) =
                    (original.parent(), original.0.last().unwrap_or(last))
                {
                    self.0.entry(parent).or_default().insert(*orig);
                }
                true
            }
            _ => false,
        }
    }
}

/// The text between the first pair of backticks after `prefix`, if the message starts so.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    backticked(rest).into_iter().next()
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// "unknown field", with the closest known name or the list of known names.
fn unknown_field(field: &str, known: &[&str]) -> String {
    let normalize = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    let (field_n, field_l) = (normalize(field), field.to_ascii_lowercase());
    let close = known.iter().find(|k| {
        let (known_n, known_l) = (normalize(k), k.to_ascii_lowercase());
        known_n == field_n
            || edit_distance(&known_l, &field_l) <= 2
            || (field_n.len() >= 4 && (known_n.contains(&field_n) || field_n.contains(&known_n)))
    });
    match close {
        Some(k) => format!("unknown field; did you mean `{k}`?"),
        None if known.is_empty() => "unknown field".to_string(),
        None => format!("unknown field; expected one of {}", known.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::file::TransformStepConfig;

    fn problems_of<T: DeserializeOwned>(yaml: &str) -> Vec<String> {
        let value: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        read_collecting::<T>(&value, &FieldPath::parse("spec.x"), &mut problems);
        problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn collects_every_problem_in_one_part() {
        let got = problems_of::<SinkConfig>(
            "uri: 5\nformat: xml\npartsize: 1\nparquet: {compression: lz4, rows: 1}\n",
        );
        assert_eq!(
            got,
            [
                "spec.x.uri: invalid type: integer `5`, expected a string",
                "spec.x.format: unknown variant `xml`, expected one of `parquet`, `csv`, `jsonl`",
                "spec.x.partsize: unknown field; did you mean `part_size`?",
                "spec.x.parquet.compression: unknown variant `lz4`, expected one of `zstd`, `snappy`, `none`",
                "spec.x.parquet.rows: unknown field; did you mean `row_group_rows`?",
            ]
        );
    }

    #[test]
    fn what_remains_sound_is_returned() {
        let value: Value = serde_yaml_ng::from_str(
            "uri: s3://a/b/
partsize: 1
key: k
",
        )
        .unwrap();
        let mut problems = Vec::new();
        let sink = read_collecting::<SinkConfig>(&value, &FieldPath::root(), &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(sink.map(|s| s.key), Some("k".to_string()));
        // Taking out a list element would shift the indexes validation reports.
        let value: Value = serde_yaml_ng::from_str(
            "uri: x
format: csv
schema: [{name: a}]
",
        )
        .unwrap();
        let source = read_collecting::<SourceConfig>(&value, &FieldPath::root(), &mut problems);
        assert!(source.is_none());
    }

    #[test]
    fn list_indexes_stay_those_of_the_file() {
        let got = problems_of::<Vec<TransformStepConfig>>(
            "- 3\n- {sql: 4}\n- {name: ok}\n- {filters: maybe}\n",
        );
        assert_eq!(
            got,
            [
                "spec.x[0]: invalid type: integer `3`, expected struct TransformStepConfig",
                "spec.x[1].sql: invalid type: integer `4`, expected a string",
                "spec.x[3].filters: invalid type: string \"maybe\", expected a boolean",
            ]
        );
    }

    #[test]
    fn missing_fields_are_reported_once() {
        let got = problems_of::<SourceConfig>(
            "include: [1]\nschema:\n  - {name: a}\n  - {name: b, type: text}\n",
        );
        assert_eq!(
            got,
            [
                "spec.x.include[0]: invalid type: integer `1`, expected a string",
                "spec.x.schema[0].type: is required",
                "spec.x.schema[1].type: unknown variant `text`, expected one of `string`, `int32`, `int64`, `float32`, `float64`, `boolean`, `date`, `timestamp`",
                "spec.x.uri: is required",
            ]
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            unknown_field("partSize", &["part_size", "uri"]),
            "unknown field; did you mean `part_size`?"
        );
        assert_eq!(
            unknown_field("zzz", &["uri", "key"]),
            "unknown field; expected one of uri, key"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
