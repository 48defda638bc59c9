//! Anchors: the same work done by a well-known tool, run by a script under tests/bench/ in
//! the same command, on the same machine and data. A script prints one JSON line last on
//! stdout; an anchor that cannot run (no Python package, not run from the repository) is
//! reported as skipped with the reason, never guessed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the anchor scripts are: `SLUICE_BENCH_SCRIPTS`, else tests/bench/ of the current
/// directory.
fn script(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("SLUICE_BENCH_SCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("tests").join("bench"));
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found (run from the repository, or set SLUICE_BENCH_SCRIPTS)",
            path.display()
        ))
    }
}

/// Runs `python3 tests/bench/<name> args...` with `env` and returns its JSON line.
pub fn run(
    name: &str,
    args: &[String],
    env: &[(String, String)],
) -> Result<serde_json::Value, String> {
    let path = script(name)?;
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let hint = if last.contains("ModuleNotFoundError") {
            " (python3 -m pip install boto3 duckdb polars pyarrow)"
        } else {
            ""
        };
        return Err(format!("{} failed: {last}{hint}", path.display()));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("{} printed no JSON line", path.display()))?;
    serde_json::from_str(line).map_err(|e| format!("{}: {e} in {line:?}", path.display()))
}

/// A number from an anchor's JSON.
pub fn number(value: &serde_json::Value, field: &str) -> Option<f64> {
    value.get(field).and_then(serde_json::Value::as_f64)
}

/// "tool version" from an anchor's JSON.
pub fn name(value: &serde_json::Value) -> String {
    let text = |f: &str| {
        value
            .get(f)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    format!("{} {}", text("tool"), text("version"))
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_script_is_a_reason_not_a_figure() {
        let error = run("no-such-anchor.py", &[], &[]).unwrap_err();
        assert!(error.contains("no-such-anchor.py not found"), "{error}");
    }

    #[test]
    fn names_and_numbers_come_from_the_json() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"tool":"boto3","version":"1.35","seconds":2.5}"#).unwrap();
        assert_eq!(name(&v), "boto3 1.35");
        assert_eq!(number(&v, "seconds"), Some(2.5));
        assert_eq!(number(&v, "objects"), None);
    }
}
