//! `metadata:` of every kind of file (a name and labels), and the Kubernetes naming rules it
//! is checked by: DNS-1123 labels, label keys and label values.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::error::Problem;
use crate::spec::span::FieldPath;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The job's name: a DNS-1123 label (lowercase letters, digits and `-`, starting and
    /// ending with a letter or digit, at most 63 characters). It names the Kubernetes Job
    /// and the job's run state.
    pub name: String,
    /// Labels copied onto the Kubernetes Job and its pods (Kubernetes label syntax).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Checks the header every kind of file shares: `apiVersion` is this version's, `kind` is
/// `expected`.
pub(crate) fn check_header(
    api_version: &str,
    kind: &str,
    expected: &str,
    problems: &mut Vec<Problem>,
) {
    if api_version != crate::spec::file::API_VERSION {
        problems.push(Problem::new(
            FieldPath::parse("apiVersion"),
            format!(
                "must be {} (got {api_version:?})",
                crate::spec::file::API_VERSION
            ),
        ));
    }
    if kind != expected {
        problems.push(Problem::new(
            FieldPath::parse("kind"),
            format!("must be {expected} (got {kind:?})"),
        ));
    }
}

/// Checks `metadata`: the name is a DNS-1123 label, the labels are Kubernetes labels.
pub(crate) fn check_metadata(m: &Metadata, problems: &mut Vec<Problem>) {
    if !is_dns_label(&m.name) {
        problems.push(Problem::new(
            FieldPath::parse("metadata.name"),
            format!(
                "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (got {:?})",
                m.name
            ),
        ));
    }
    for (key, value) in &m.labels {
        let at = FieldPath::parse("metadata.labels").key(key);
        if let Err(why) = check_label_key(key) {
            problems.push(Problem::at_key(at.clone(), why));
        }
        if !value.is_empty() && !is_label_name(value) {
            problems.push(Problem::new(
                at,
                format!(
                    "is not a valid label value: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit (got {value:?})"
                ),
            ));
        }
    }
}

/// A DNS-1123 label: 1 to 63 of a-z, 0-9 and '-', starting and ending alphanumeric.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A Kubernetes label name (the part after an optional prefix) or a non-empty label value.
fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid =
            !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(is_dns_label);
        if !valid {
            return Err(format!(
                "is not a valid label key: the prefix before '/' must be a DNS subdomain (got {key:?})"
            ));
        }
    }
    if !is_label_name(name) {
        return Err(format!(
            "is not a valid label key: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit, after an optional DNS prefix and '/' (got {key:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_label("taxi-csv-to-parquet"));
        assert!(!is_dns_label("Taxi"));
        assert!(!is_dns_label("-x"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert_eq!(check_label_key("app.kubernetes.io/name"), Ok(()));
        assert!(check_label_key("bad key").is_err());
    }
}
