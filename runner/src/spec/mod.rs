//! The file formats: job files (raw structs, loading with located errors, validation into
//! `Job`), task definitions (task.rs), schedules (schedule/) and pipelines (pipeline/).
//!
//! Loading reads the text twice: yaml-rust2's event parser records where every field path
//! is written, and serde_yaml_ng gives the value that each part of the file is deserialized
//! from (through serde_path_to_error, so problems carry their field path). Validation is a
//! pure function of the raw `JobFile`.
//!
//! A job file's top level is file.rs; each section keeps its raw structs beside its checks
//! (metadata.rs, source.rs, steps.rs with container.rs, validation.rs with rules.rs, sink.rs,
//! shards.rs, kubernetes.rs). load.rs reads the parts, validate.rs turns them into a `Job`.

mod collect;
pub mod container;
pub mod error;
pub mod file;
pub mod job;
pub mod kubernetes;
mod load;
pub mod metadata;
mod number_or_text;
pub mod pipeline;
pub mod rules;
pub mod schedule;
pub mod shards;
pub mod sink;
pub mod size;
pub mod source;
pub mod span;
pub mod sql;
pub mod steps;
pub mod task;
pub mod template;
pub mod validate;
pub mod validation;

use std::path::Path;

pub use error::{SpecError, SpecErrors};
pub use file::JobFile;
pub use job::Job;

/// A loaded job and the text it was loaded from, with `--param` overrides merged in.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub job: Job,
    /// The file with the overrides merged into `spec.params` (the file's own text when there
    /// are none), so that loading it again without overrides gives the same `Job`.
    pub resolved_yaml: String,
}

/// Loads and validates a job file. `overrides` replace or add params (`--param NAME=VALUE`).
pub fn load_file(path: &Path, overrides: &[(String, String)]) -> Result<Loaded, SpecErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecErrors::unreadable(&origin, format!("cannot read the job file: {e}")))?;
    load_str(&text, &origin, overrides)
}

/// Loads and validates a task definition file (`kind: TaskDefinition`).
pub fn load_task_file(path: &Path) -> Result<task::TaskDefinition, SpecErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecErrors::unreadable(&origin, format!("cannot read the task definition: {e}"))
    })?;
    load::load_task(&text, &origin)
}

/// Loads and validates task definition text; `origin` names it in errors.
pub fn load_task_str(text: &str, origin: &str) -> Result<task::TaskDefinition, SpecErrors> {
    load::load_task(text, origin)
}

/// The `kind` a file declares (`Job`, `TaskDefinition`), if it is YAML with a text `kind`;
/// commands that read either kind dispatch on it.
pub fn kind_of(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    value.get("kind")?.as_str().map(str::to_string)
}

/// Loads and validates job text; `origin` names it in errors (usually the file path).
pub fn load_str(
    text: &str,
    origin: &str,
    overrides: &[(String, String)],
) -> Result<Loaded, SpecErrors> {
    load::load(text, origin, overrides)
}

/// A short hash of everything in a job file that shapes its outputs: the file's content
/// as data (comments, layout and key order within the text do not count; any value does,
/// transformer images included). Done markers record it, so a changed job redoes objects.
pub fn fingerprint(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_yaml_ng::from_str::<serde_json::Value>(text)
        .map(|v| serde_json::to_string(&v).expect("JSON values serialize"))
        .unwrap_or_else(|_| text.to_string());
    hex::encode(&Sha256::digest(canonical.as_bytes())[..16])
}

/// Parses a `--param NAME=VALUE` argument (the value may be empty and may contain `=`).
pub fn parse_param_override(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE (got {s:?})"))?;
    let name = name.trim();
    if !template::is_param_name(name) {
        return Err(format!(
            "{name:?} is not a valid param name: a letter or '_', then letters, digits, '_' or '-'"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// The JSON Schema of the job file format.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(JobFile).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_overrides() {
        assert_eq!(
            parse_param_override("month=2026-02"),
            Ok(("month".into(), "2026-02".into()))
        );
        assert_eq!(
            parse_param_override("q=a=b"),
            Ok(("q".into(), "a=b".into()))
        );
        assert_eq!(
            parse_param_override("empty="),
            Ok(("empty".into(), String::new()))
        );
        assert!(parse_param_override("month").is_err());
        assert!(parse_param_override("=x").is_err());
        assert!(parse_param_override("a b=x").is_err());
    }

    /// The key lists used to report unknown fields must match the structs.
    #[test]
    fn field_lists_match_the_schema() {
        let schema = json_schema();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            k.sort();
            k
        };
        let sorted = |fields: &[&str]| {
            let mut f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
            f.sort();
            f
        };
        assert_eq!(keys(&schema), sorted(JobFile::FIELDS));
        assert_eq!(
            keys(&schema["$defs"]["SpecConfig"]),
            sorted(file::SpecConfig::FIELDS)
        );
        // Every property of a rule other than its common fields is a kind.
        let mut kinds = keys(&schema["$defs"]["RuleConfig"]);
        kinds.retain(|k| !["name", "severity", "scope", "on_fail"].contains(&k.as_str()));
        assert_eq!(kinds, sorted(rules::RuleConfig::KINDS));
    }
}

#[cfg(test)]
mod fingerprint_tests {
    use super::fingerprint;

    #[test]
    fn comments_layout_and_key_order_do_not_count_values_do() {
        let base = fingerprint("a: 1\nb: {c: x}\n");
        assert_eq!(base, fingerprint("# note\nb:\n  c: x\na: 1\n"));
        assert_ne!(base, fingerprint("a: 2\nb: {c: x}\n"));
        assert_ne!(base, fingerprint("a: 1\nb: {c: y}\n"));
        assert_eq!(base.len(), 32);
    }
}
