//! Deserializing one part of a file with every problem serde finds, each at its field path,
//! and the wording of an unknown field (with the closest known name).

use std::collections::{BTreeSet, HashMap};

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::spec::error::Problem;
use crate::spec::span::{FieldPath, Seg};

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
pub(super) fn unknown_field(field: &str, known: &[&str]) -> String {
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

pub(super) fn describe(value: &Value) -> &'static str {
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
    use crate::spec::sink::SinkConfig;
    use crate::spec::source::SourceConfig;
    use crate::spec::steps::TransformStepConfig;

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
                "spec.x.format: unknown variant `xml`, expected one of `parquet`, `csv`, `jsonl`, `delta`",
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
