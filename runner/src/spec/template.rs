//! `{{ params.NAME }}` substitution in the templated fields of a job file.

use std::collections::BTreeMap;

/// How strictly text that is not a param reference is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// URIs and globs: any other `{{ ... }}` is an error.
    Strict,
    /// SQL: other `{{ ... }}` text is left as written (it may be part of a string literal).
    Lenient,
}

/// Replaces every `{{ params.NAME }}` (spaces inside the braces optional) in `text`.
/// Returns the problems found instead when a param is undefined or, when strict, when
/// other template text is present.
pub fn apply_params(
    text: &str,
    params: &BTreeMap<String, String>,
    strictness: Strictness,
) -> Result<String, Vec<String>> {
    let strict = strictness == Strictness::Strict;
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            if strict {
                problems.push("`{{` is not closed by `}}`".to_string());
            }
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let whole = &rest[start..start + 2 + end + 2];
        let expr = after[..end].trim();
        match expr.strip_prefix("params.") {
            Some(name) => match params.get(name.trim()) {
                Some(value) => out.push_str(value),
                None => {
                    problems.push(undefined(name.trim(), params));
                    out.push_str(whole);
                }
            },
            None => {
                if strict {
                    problems.push(format!(
                        "unknown template variable `{whole}`: only `{{{{ params.NAME }}}}` can be used here"
                    ));
                }
                out.push_str(whole);
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn undefined(name: &str, params: &BTreeMap<String, String>) -> String {
    if params.is_empty() {
        format!(
            "param `{name}` is not defined (spec.params is empty; define it there or pass --param {name}=VALUE)"
        )
    } else {
        let known: Vec<&str> = params.keys().map(String::as_str).collect();
        format!(
            "param `{name}` is not defined (defined: {}; or pass --param {name}=VALUE)",
            known.join(", ")
        )
    }
}

/// Whether `name` can be a param name: a letter or `_`, then letters, digits, `_` or `-`.
pub fn is_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("month".to_string(), "2026-01".to_string()),
            ("bucket".to_string(), "raw".to_string()),
        ])
    }

    #[test]
    fn substitutes_params_with_or_without_spaces() {
        let out = apply_params(
            "s3://{{params.bucket}}/trips/{{ params.month }}/{{  params.month}}",
            &params(),
            Strictness::Strict,
        );
        assert_eq!(out.unwrap(), "s3://raw/trips/2026-01/2026-01");
        assert_eq!(
            apply_params("no templates", &params(), Strictness::Strict).unwrap(),
            "no templates"
        );
    }

    #[test]
    fn undefined_params_are_errors_everywhere() {
        let err = apply_params(
            "x/{{ params.day }}/{{ params.hour }}",
            &params(),
            Strictness::Lenient,
        )
        .unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(err[0].contains("param `day` is not defined"), "{err:?}");
        assert!(err[0].contains("bucket, month"), "{err:?}");
        let none =
            apply_params("{{ params.x }}", &BTreeMap::new(), Strictness::Strict).unwrap_err();
        assert!(none[0].contains("spec.params is empty"), "{none:?}");
    }

    #[test]
    fn other_templates_are_errors_only_when_strict() {
        let text = "SELECT '{{ not a param }}' AS x, '{{' AS y FROM input";
        assert_eq!(
            apply_params(text, &params(), Strictness::Lenient).unwrap(),
            text
        );
        let err =
            apply_params("s3://b/{{ param.month }}/", &params(), Strictness::Strict).unwrap_err();
        assert!(
            err[0].contains("unknown template variable `{{ param.month }}`"),
            "{err:?}"
        );
        let err =
            apply_params("s3://b/{{ params.month", &params(), Strictness::Strict).unwrap_err();
        assert!(err[0].contains("not closed"), "{err:?}");
    }

    #[test]
    fn param_names() {
        assert!(is_param_name("month"));
        assert!(is_param_name("_x-1"));
        assert!(!is_param_name("1x"));
        assert!(!is_param_name(""));
        assert!(!is_param_name("a.b"));
    }
}
