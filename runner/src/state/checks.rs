//! What a rule found: per subject (an object, a shard, the run), and aggregated per rule
//! for report.json and the run summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::spec::rules::{Rule, Scope, Severity};

/// A rule's outcome on one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleOutcome {
    pub rule: String,
    pub kind: String,
    pub scope: Scope,
    pub severity: Severity,
    pub passed: bool,
    /// Records the rule looked at (0 for rules on whole objects).
    #[serde(default)]
    pub checked: u64,
    /// Offending records (or 1 for a failed relation, size or query).
    #[serde(default)]
    pub failed: u64,
    /// Offending records routed to the rejects object (`on_fail: reject`).
    #[serde(default)]
    pub rejected: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Offending>,
}

impl RuleOutcome {
    pub fn new(rule: &Rule) -> RuleOutcome {
        RuleOutcome {
            rule: rule.name.clone(),
            kind: rule.check.kind().to_string(),
            scope: rule.scope,
            severity: rule.severity,
            passed: true,
            checked: 0,
            failed: 0,
            rejected: 0,
            detail: String::new(),
            examples: Vec::new(),
        }
    }

    /// Marks the outcome failed with `detail`.
    pub fn fail(mut self, detail: impl Into<String>) -> RuleOutcome {
        self.passed = false;
        self.failed = self.failed.max(1);
        self.detail = detail.into();
        self
    }

    /// Whether this outcome stops a publish.
    pub fn is_blocking(&self) -> bool {
        !self.passed && self.severity == Severity::Error
    }
}

/// One offending record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offending {
    /// The source object whose output holds the record.
    pub object: String,
    /// The record's 1-based position in the object's output.
    pub row: u64,
    /// The values the rule looked at.
    pub values: serde_json::Value,
    /// For a duplicate: where the same key was seen first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub object: String,
    pub row: u64,
}

/// A rule's outcome over the whole run, as report.json shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub rule: String,
    pub kind: String,
    pub scope: Scope,
    pub severity: Severity,
    pub passed: bool,
    /// Subjects judged: objects, shards or 1 for the run.
    pub subjects: u64,
    pub subjects_failed: u64,
    pub records_checked: u64,
    pub records_failed: u64,
    pub records_rejected: u64,
    /// The failing subjects and why (the first few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Offending>,
}

impl CheckReport {
    pub fn is_blocking(&self) -> bool {
        !self.passed && self.severity == Severity::Error
    }
}

/// Details kept per rule in the report.
const DETAILS: usize = 20;

/// Folds per-subject outcomes into one report per rule (in rule order), keeping up to
/// `examples` offending rows per rule.
pub fn aggregate<'a>(
    rules: &[Rule],
    outcomes: impl IntoIterator<Item = (&'a str, &'a RuleOutcome)>,
    examples: usize,
) -> Vec<CheckReport> {
    let mut by_rule: BTreeMap<(usize, Scope), CheckReport> = BTreeMap::new();
    let position = |name: &str| rules.iter().position(|r| r.name == name);
    for (subject, o) in outcomes {
        let Some(index) = position(&o.rule) else {
            continue;
        };
        let entry = by_rule
            .entry((index, o.scope))
            .or_insert_with(|| CheckReport {
                rule: o.rule.clone(),
                kind: o.kind.clone(),
                scope: o.scope,
                severity: o.severity,
                passed: true,
                subjects: 0,
                subjects_failed: 0,
                records_checked: 0,
                records_failed: 0,
                records_rejected: 0,
                details: Vec::new(),
                examples: Vec::new(),
            });
        entry.subjects += 1;
        entry.records_checked += o.checked;
        entry.records_failed += o.failed;
        entry.records_rejected += o.rejected;
        if !o.passed {
            entry.passed = false;
            entry.subjects_failed += 1;
            if entry.details.len() < DETAILS {
                entry.details.push(format!("{subject}: {}", o.detail));
            }
        }
        let room = examples.saturating_sub(entry.examples.len());
        entry.examples.extend(o.examples.iter().take(room).cloned());
    }
    by_rule.into_values().collect()
}

/// The short table of failed (and warned) checks a run prints.
pub fn table(checks: &[CheckReport]) -> String {
    let failed: Vec<&CheckReport> = checks.iter().filter(|c| !c.passed).collect();
    if failed.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<24} {:<12} {:<7} {:<6} {:>10}  first offender",
        "check", "kind", "scope", "level", "failed"
    );
    for c in failed {
        let level = match c.severity {
            Severity::Error => "error",
            Severity::Warn => "warn",
        };
        let first = c
            .examples
            .first()
            .map(|e| match &e.first {
                Some(first) => format!(
                    "{} row {}: {} (first at {} row {})",
                    e.object, e.row, e.values, first.object, first.row
                ),
                None => format!("{} row {}: {}", e.object, e.row, e.values),
            })
            .or_else(|| c.details.first().cloned())
            .unwrap_or_default();
        let failed = if c.records_failed > 0 {
            c.records_failed
        } else {
            c.subjects_failed
        };
        let _ = writeln!(
            out,
            "  {:<24} {:<12} {:<7} {:<6} {:>10}  {}",
            c.rule,
            c.kind,
            c.scope.name(),
            level,
            failed,
            truncate(&first, 120)
        );
    }
    out
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}
