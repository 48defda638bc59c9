//! `spec.validate`: what a record that cannot be decoded does and how many an object may
//! have, as written and as checked; its data rules are rules.rs.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::job::{BadRecordLimit, OnBadRecord, Validation};
use crate::spec::number_or_text::{NumberOrText, number_or_text};
use crate::spec::template::Strictness;
use crate::spec::validate::{Check, Params, path};

/// `spec.validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// What a record that cannot be decoded does: `fail` fails the object, `skip` drops and
    /// counts it, `reject` drops and counts it and writes it to the run's rejects.
    #[serde(default = "default_on_bad_record")]
    pub on_bad_record: OnBadRecord,
    /// How many bad records an object may have before the run fails (with `skip` or
    /// `reject`): a count (`10`) or a fraction of the object's records (`"1%"` or `0.01`).
    #[serde(default = "default_max_bad_records")]
    pub max_bad_records: BadRecordLimitConfig,
    /// Data rules judged per object, shard or run (see docs/validation.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::spec::rules::RuleConfig>,
    /// How many offending rows each rule shows in the report (default 10).
    #[serde(default = "default_examples")]
    pub examples: usize,
}

pub fn default_examples() -> usize {
    10
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            on_bad_record: default_on_bad_record(),
            max_bad_records: default_max_bad_records(),
            rules: Vec::new(),
            examples: default_examples(),
        }
    }
}

pub fn default_on_bad_record() -> OnBadRecord {
    OnBadRecord::Fail
}

pub fn default_max_bad_records() -> BadRecordLimitConfig {
    BadRecordLimitConfig::Text("1%".to_string())
}

/// `spec.validate.max_bad_records` as written.
#[derive(Debug, Clone, PartialEq)]
pub enum BadRecordLimitConfig {
    Count(u64),
    Fraction(f64),
    Text(String),
}

impl fmt::Display for BadRecordLimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecordLimitConfig::Count(n) => write!(f, "{n}"),
            BadRecordLimitConfig::Fraction(x) => write!(f, "{x}"),
            BadRecordLimitConfig::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for BadRecordLimitConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expecting = "a count like 10 or a fraction like \"1%\" or 0.01";
        match number_or_text(d, expecting, true)? {
            NumberOrText::Unsigned(n) => Ok(BadRecordLimitConfig::Count(n)),
            NumberOrText::Float(x) => Ok(BadRecordLimitConfig::Fraction(x)),
            NumberOrText::Text(s) => Ok(BadRecordLimitConfig::Text(s)),
        }
    }
}

impl Serialize for BadRecordLimitConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BadRecordLimitConfig::Count(n) => s.serialize_u64(*n),
            BadRecordLimitConfig::Fraction(x) => s.serialize_f64(*x),
            BadRecordLimitConfig::Text(t) => s.serialize_str(t),
        }
    }
}

impl JsonSchema for BadRecordLimitConfig {
    fn schema_name() -> Cow<'static, str> {
        "BadRecordLimit".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A count of bad records (10), or a fraction of an object's records: \"1%\" or 0.01 (0 to 1).",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "number", "minimum": 0, "maximum": 1 },
                { "type": "string", "pattern": "^\\s*[0-9.]+\\s*%?\\s*$" }
            ]
        })
    }
}

impl Check<'_> {
    pub(super) fn validation(&mut self, c: &ValidateConfig, params: &Params) -> Option<Validation> {
        let at = path("spec.validate.max_bad_records");
        let limit = match bad_record_limit(&c.max_bad_records) {
            Ok(limit) => Some(limit),
            Err(message) => {
                self.error(at, message);
                None
            }
        };
        // A rule's `sql` takes `{{ params.NAME }}` as a transform's does.
        let mut rules = c.rules.clone();
        for (i, rule) in rules.iter_mut().enumerate() {
            if let Some(sql) = &rule.sql {
                let at = path("spec.validate.rules").index(i).key("sql");
                rule.sql = Some(self.template(&at, sql, params, Strictness::Lenient)?);
            }
        }
        let rules = crate::spec::rules::check(&rules, &mut self.problems);
        Some(Validation {
            on_bad_record: c.on_bad_record,
            max_bad_records: limit?,
            rules: rules?,
            examples: c.examples,
        })
    }
}

fn bad_record_limit(c: &BadRecordLimitConfig) -> Result<BadRecordLimit, String> {
    let fraction = |x: f64, shown: String| {
        if x.is_finite() && (0.0..=1.0).contains(&x) {
            Ok(BadRecordLimit::Fraction(x))
        } else {
            Err(format!(
                "must be a fraction from 0 to 1 (0% to 100%) (got {shown})"
            ))
        }
    };
    match c {
        BadRecordLimitConfig::Count(n) => Ok(BadRecordLimit::Count(*n)),
        BadRecordLimitConfig::Fraction(x) => fraction(*x, c.to_string()),
        BadRecordLimitConfig::Text(text) => {
            let t = text.trim();
            if let Some(percent) = t.strip_suffix('%') {
                match percent.trim().parse::<f64>() {
                    Ok(p) => fraction(p / 100.0, c.to_string()),
                    Err(_) => Err(format!("is not a percentage (got {c})")),
                }
            } else if let Ok(n) = t.parse::<u64>() {
                Ok(BadRecordLimit::Count(n))
            } else if let Ok(x) = t.parse::<f64>() {
                fraction(x, c.to_string())
            } else {
                Err(format!(
                    "must be a count like 10 or a fraction like \"1%\" or 0.01 (got {c})"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_record_limits() {
        let text = |s: &str| bad_record_limit(&BadRecordLimitConfig::Text(s.into()));
        assert_eq!(text("1%"), Ok(BadRecordLimit::Fraction(0.01)));
        assert_eq!(text(" 2.5 % "), Ok(BadRecordLimit::Fraction(0.025)));
        assert_eq!(text("10"), Ok(BadRecordLimit::Count(10)));
        assert_eq!(text("0.5"), Ok(BadRecordLimit::Fraction(0.5)));
        assert!(text("150%").is_err());
        assert!(text("lots").is_err());
        assert!(bad_record_limit(&BadRecordLimitConfig::Fraction(1.5)).is_err());
        assert_eq!(
            bad_record_limit(&BadRecordLimitConfig::Fraction(0.01)),
            Ok(BadRecordLimit::Fraction(0.01))
        );
        assert_eq!(
            bad_record_limit(&BadRecordLimitConfig::Count(3)),
            Ok(BadRecordLimit::Count(3))
        );
    }
}
