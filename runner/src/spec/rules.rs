//! `spec.validate.rules`: data validation rules as written, and their checked runtime form.
//!
//! Each rule has one kind (`record_count`, `not_null`, `unique`, `format`, `range`,
//! `allowed`, `non_empty`, `size`, `schema`, `sql`), a severity, a scope and, for row rules,
//! what a failing row does (`on_fail`). See docs/validation.md.

use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::error::Problem;
use crate::spec::metadata::is_dns_label;
use crate::spec::size::ByteSizeConfig;
use crate::spec::source::{ColumnType, check_strftime};
use crate::spec::span::FieldPath;
use crate::spec::sql::check_read_only_query;

/// One rule of `spec.validate.rules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name in reports (lowercase letters, digits and '-'). Default: the kind
    /// and the rule's position, such as `unique-3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `error` (default) fails the object or run and publishes nothing (exit 3); `warn` is
    /// only reported.
    #[serde(default)]
    pub severity: Severity,
    /// Where the rule is judged: `object` (default), `shard` or `run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// Row rules only (`not_null`, `format`, `range`, `allowed`): `fail` (default) judges
    /// the rule; `reject` sends each failing row to the rejects object instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_fail: Option<OnFail>,
    /// The relation between input and output records: `equal` (output + rejected = input),
    /// `at_most` (output <= input) or `{min_ratio: 0.95}` (output >= 0.95 x input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_count: Option<RecordCountConfig>,
    /// Columns that must hold a value in every output record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_null: Option<Vec<String>>,
    /// Columns that together form a key no two output records share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Vec<String>>,
    /// Per column, the shape its text must have: `{datetime: "%Y-%m-%d"}` (a chrono
    /// strftime pattern) or `{regex: "^[A-Z]{3}$"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<BTreeMap<String, FormatConfig>>,
    /// Per column, inclusive bounds: `{min: 0, max: 500}`; dates and timestamps as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<BTreeMap<String, RangeConfig>>,
    /// Per column, the only values it may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<BTreeMap<String, Vec<ScalarConfig>>>,
    /// `true`: the object (or shard, or run) must produce at least one record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_empty: Option<bool>,
    /// Bounds on the size of each input object and of each output object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeRuleConfig>,
    /// Output columns that must exist, with their types (other columns may exist too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<BTreeMap<String, ColumnType>>,
    /// A read-only query over the table `output` that returns one row: a boolean (true
    /// passes) and optionally a message as the second column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
}

impl RuleConfig {
    /// The keys of a rule (kept equal to the JSON Schema by a test).
    pub const KINDS: &'static [&'static str] = &[
        "record_count",
        "not_null",
        "unique",
        "format",
        "range",
        "allowed",
        "non_empty",
        "size",
        "schema",
        "sql",
    ];
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Error,
    Warn,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Object,
    Shard,
    Run,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Object => "object",
            Scope::Shard => "shard",
            Scope::Run => "run",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    #[default]
    Fail,
    Reject,
}

/// `record_count`: `equal`, `at_most` or `{min_ratio: R}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RecordCountConfig {
    Relation(Relation),
    Ratio(MinRatio),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// output + rejected = input: nothing filtered or skipped.
    Equal,
    /// output <= input.
    AtMost,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MinRatio {
    /// output >= min_ratio x input.
    pub min_ratio: f64,
}

/// A column's expected shape: exactly one of `datetime` or `regex`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// A chrono strftime pattern the whole text must match, such as `%Y-%m-%d`; the date
    /// or time it describes must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datetime: Option<String>,
    /// A regular expression (Rust `regex` syntax) the text must match; anchor it with `^`
    /// and `$` to match the whole text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<ScalarConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<ScalarConfig>,
}

/// A number, text or boolean in a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScalarConfig {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl ScalarConfig {
    /// The value as text, as Arrow casts it from text.
    pub fn text(&self) -> String {
        match self {
            ScalarConfig::Bool(b) => b.to_string(),
            ScalarConfig::Int(i) => i.to_string(),
            ScalarConfig::Float(f) => f.to_string(),
            ScalarConfig::Text(t) => t.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SizeRuleConfig {
    /// Bounds on each source object's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<SizeBoundsConfig>,
    /// Bounds on each output object's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<SizeBoundsConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SizeBoundsConfig {
    /// At least this many bytes (`1`, `"10KiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<ByteSizeConfig>,
    /// At most this many bytes (`"2GiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<ByteSizeConfig>,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub severity: Severity,
    pub scope: Scope,
    pub on_fail: OnFail,
    pub check: Check,
}

impl Rule {
    /// Whether the rule is judged on each output record.
    pub fn is_row_rule(&self) -> bool {
        matches!(
            self.check,
            Check::NotNull(_) | Check::Format(_) | Check::Range(_) | Check::Allowed(_)
        )
    }

    /// The output columns the rule reads.
    pub fn columns(&self) -> Vec<&str> {
        match &self.check {
            Check::NotNull(c) | Check::Unique(c) => c.iter().map(String::as_str).collect(),
            Check::Format(m) => m.iter().map(|(c, _)| c.as_str()).collect(),
            Check::Range(m) => m.iter().map(|(c, _)| c.as_str()).collect(),
            Check::Allowed(m) => m.iter().map(|(c, _)| c.as_str()).collect(),
            Check::Schema(m) => m.iter().map(|(c, _)| c.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Check {
    RecordCount(RecordCountConfig),
    NotNull(Vec<String>),
    Unique(Vec<String>),
    Format(Vec<(String, Pattern)>),
    Range(Vec<(String, Bounds)>),
    Allowed(Vec<(String, Vec<String>)>),
    NonEmpty,
    Size {
        input: (Option<u64>, Option<u64>),
        output: (Option<u64>, Option<u64>),
    },
    Schema(Vec<(String, ColumnType)>),
    Sql(String),
}

impl Check {
    pub fn kind(&self) -> &'static str {
        match self {
            Check::RecordCount(_) => "record_count",
            Check::NotNull(_) => "not_null",
            Check::Unique(_) => "unique",
            Check::Format(_) => "format",
            Check::Range(_) => "range",
            Check::Allowed(_) => "allowed",
            Check::NonEmpty => "non_empty",
            Check::Size { .. } => "size",
            Check::Schema(_) => "schema",
            Check::Sql(_) => "sql",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Pattern {
    Datetime(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone, Default)]
pub struct Bounds {
    pub min: Option<String>,
    pub max: Option<String>,
}

/// Checks `spec.validate.rules`; problems go to `problems`.
pub fn check(rules: &[RuleConfig], problems: &mut Vec<Problem>) -> Option<Vec<Rule>> {
    let base = FieldPath::parse("spec.validate.rules");
    let mut out = Vec::with_capacity(rules.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let before = problems.len();
    for (i, rule) in rules.iter().enumerate() {
        let at = base.index(i);
        if let Some(rule) = check_rule(rule, i, &at, problems) {
            if let Some(first) = names.insert(rule.name.clone(), i) {
                problems.push(Problem::new(
                    at.key("name"),
                    format!(
                        "rule name {:?} is already used by spec.validate.rules[{first}]",
                        rule.name
                    ),
                ));
            }
            out.push(rule);
        }
    }
    (problems.len() == before).then_some(out)
}

fn check_rule(
    rule: &RuleConfig,
    index: usize,
    at: &FieldPath,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let before = problems.len();
    let mut kinds = Vec::new();
    let mut error = |path: FieldPath, message: String| problems.push(Problem::new(path, message));
    let mut check = None;
    if let Some(relation) = rule.record_count {
        kinds.push("record_count");
        if let RecordCountConfig::Ratio(MinRatio { min_ratio: r }) = relation
            && !(0.0..=1.0).contains(&r)
        {
            error(
                at.key("record_count").key("min_ratio"),
                format!("must be between 0 and 1 (got {r})"),
            );
        }
        check = Some(Check::RecordCount(relation));
    }
    if let Some(columns) = &rule.not_null {
        kinds.push("not_null");
        check = Some(Check::NotNull(column_list(
            columns,
            &at.key("not_null"),
            &mut error,
        )));
    }
    if let Some(columns) = &rule.unique {
        kinds.push("unique");
        check = Some(Check::Unique(column_list(
            columns,
            &at.key("unique"),
            &mut error,
        )));
    }
    if let Some(formats) = &rule.format {
        kinds.push("format");
        let mut out = Vec::new();
        for (column, format) in formats {
            let here = at.key("format").key(column);
            match (&format.datetime, &format.regex) {
                (Some(p), None) => match check_strftime(p) {
                    Ok(()) => out.push((column.clone(), Pattern::Datetime(p.clone()))),
                    Err(why) => error(here.key("datetime"), why),
                },
                (None, Some(r)) => match regex::Regex::new(r) {
                    Ok(re) => out.push((column.clone(), Pattern::Regex(re))),
                    Err(e) => error(here.key("regex"), format!("is not a valid regex: {e}")),
                },
                _ => error(here, "give exactly one of datetime or regex".into()),
            }
        }
        if formats.is_empty() {
            error(at.key("format"), "names no column".into());
        }
        check = Some(Check::Format(out));
    }
    if let Some(ranges) = &rule.range {
        kinds.push("range");
        let mut out = Vec::new();
        for (column, bounds) in ranges {
            if bounds.min.is_none() && bounds.max.is_none() {
                error(
                    at.key("range").key(column),
                    "gives neither min nor max".into(),
                );
            }
            out.push((
                column.clone(),
                Bounds {
                    min: bounds.min.as_ref().map(ScalarConfig::text),
                    max: bounds.max.as_ref().map(ScalarConfig::text),
                },
            ));
        }
        if ranges.is_empty() {
            error(at.key("range"), "names no column".into());
        }
        check = Some(Check::Range(out));
    }
    if let Some(allowed) = &rule.allowed {
        kinds.push("allowed");
        let mut out = Vec::new();
        for (column, values) in allowed {
            if values.is_empty() {
                error(
                    at.key("allowed").key(column),
                    "lists no value: nothing would pass".into(),
                );
            }
            out.push((
                column.clone(),
                values.iter().map(ScalarConfig::text).collect(),
            ));
        }
        if allowed.is_empty() {
            error(at.key("allowed"), "names no column".into());
        }
        check = Some(Check::Allowed(out));
    }
    if let Some(non_empty) = rule.non_empty {
        kinds.push("non_empty");
        if !non_empty {
            error(
                at.key("non_empty"),
                "must be true (leave the rule out to allow empty output)".into(),
            );
        }
        check = Some(Check::NonEmpty);
    }
    if let Some(size) = &rule.size {
        kinds.push("size");
        let mut bounds = |b: &Option<SizeBoundsConfig>, key: &str| {
            let Some(b) = b else {
                return (None, None);
            };
            let mut one = |v: &Option<ByteSizeConfig>, which: &str| {
                v.as_ref().and_then(|v| match v.bytes() {
                    Ok(n) => Some(n),
                    Err(why) => {
                        error(at.key("size").key(key).key(which), why);
                        None
                    }
                })
            };
            let (min, max) = (one(&b.min, "min"), one(&b.max, "max"));
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                error(
                    at.key("size").key(key),
                    format!("min {lo} is larger than max {hi}"),
                );
            }
            (min, max)
        };
        let input = bounds(&size.input, "input");
        let output = bounds(&size.output, "output");
        if size.input.is_none() && size.output.is_none() {
            error(
                at.key("size"),
                "gives neither input nor output bounds".into(),
            );
        }
        check = Some(Check::Size { input, output });
    }
    if let Some(schema) = &rule.schema {
        kinds.push("schema");
        if schema.is_empty() {
            error(at.key("schema"), "names no column".into());
        }
        check = Some(Check::Schema(
            schema.iter().map(|(c, t)| (c.clone(), *t)).collect(),
        ));
    }
    if let Some(sql) = &rule.sql {
        kinds.push("sql");
        if let Err(problem) = check_read_only_query(sql) {
            error(at.key("sql"), problem.message);
        }
        check = Some(Check::Sql(sql.clone()));
    }
    if kinds.len() > 1 {
        error(
            at.clone(),
            format!(
                "has {} kinds ({}): give exactly one per rule",
                kinds.len(),
                kinds.join(", ")
            ),
        );
    }
    let Some(check) = check else {
        error(
            at.clone(),
            format!("has no kind: give one of {}", RuleConfig::KINDS.join(", ")),
        );
        return None;
    };
    let name = match &rule.name {
        Some(name) => {
            if !is_dns_label(name) {
                error(
                    at.key("name"),
                    format!("must be lowercase letters, digits and '-' (got {name:?})"),
                );
            }
            name.clone()
        }
        None => format!("{}-{}", check.kind().replace('_', "-"), index + 1),
    };
    let scope = rule.scope.unwrap_or(Scope::Object);
    let allowed_scopes: &[Scope] = match &check {
        Check::Size { .. } | Check::Schema(_) => &[Scope::Object],
        Check::Sql(_) => &[Scope::Object, Scope::Run],
        _ => &[Scope::Object, Scope::Shard, Scope::Run],
    };
    if !allowed_scopes.contains(&scope) {
        error(
            at.key("scope"),
            format!(
                "{} rules can be judged per {} only",
                check.kind(),
                allowed_scopes
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        );
    }
    let on_fail = rule.on_fail.unwrap_or_default();
    let row_rule = matches!(
        check,
        Check::NotNull(_) | Check::Format(_) | Check::Range(_) | Check::Allowed(_)
    );
    if on_fail == OnFail::Reject && !row_rule {
        error(
            at.key("on_fail"),
            format!(
                "reject applies to row rules (not_null, format, range, allowed), not to {}",
                check.kind()
            ),
        );
    }
    if on_fail == OnFail::Reject && scope != Scope::Object {
        error(
            at.key("on_fail"),
            "reject routes each failing row as the object is written: use scope object".into(),
        );
    }
    (problems.len() == before).then_some(Rule {
        name,
        severity: rule.severity,
        scope,
        on_fail,
        check,
    })
}

fn column_list(
    columns: &[String],
    at: &FieldPath,
    error: &mut impl FnMut(FieldPath, String),
) -> Vec<String> {
    if columns.is_empty() {
        error(at.clone(), "names no column".into());
    }
    let mut seen = HashMap::new();
    for (i, c) in columns.iter().enumerate() {
        if let Some(first) = seen.insert(c.as_str(), i) {
            error(
                at.index(i),
                format!("column {c:?} is already listed at [{first}]"),
            );
        }
    }
    columns.to_vec()
}
