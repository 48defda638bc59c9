//! Errors in a job file, each located at a file, line, column and field path.

use std::fmt;

use crate::exit::ExitCode;
use crate::spec::span::{At, FieldPath, SpanIndex};

/// One problem in a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file as the user named it.
    pub origin: String,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    /// 1-based; 0 when the file could not be read at all.
    pub column: usize,
    /// The field, such as `spec.transform[0].sql`; empty for errors about the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.origin)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found in a job file, in file order. Displays one line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.errors))]
pub struct SpecErrors {
    pub errors: Vec<SpecError>,
}

impl SpecErrors {
    /// A file that does not load or validate: 2.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

fn lines(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl SpecErrors {
    /// Text that is not YAML, at the position the parser stopped.
    pub fn invalid_yaml(origin: &str, at: crate::spec::span::Pos, message: &str) -> SpecErrors {
        SpecErrors {
            errors: vec![SpecError {
                origin: origin.to_string(),
                line: at.line,
                column: at.column,
                path: String::new(),
                message: format!("invalid YAML: {message}"),
            }],
        }
    }

    /// A problem with the file as a whole (it cannot be read): no line or column.
    pub fn unreadable(origin: &str, message: String) -> SpecErrors {
        SpecErrors {
            errors: vec![SpecError {
                origin: origin.to_string(),
                line: 0,
                column: 0,
                path: String::new(),
                message,
            }],
        }
    }
}

/// A problem before it is located: the field it is about and which part of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: FieldPath,
    pub at: At,
    pub message: String,
}

impl Problem {
    pub fn new(path: FieldPath, message: impl Into<String>) -> Problem {
        Problem {
            path,
            at: At::Value,
            message: message.into(),
        }
    }

    pub fn at_key(path: FieldPath, message: impl Into<String>) -> Problem {
        Problem {
            path,
            at: At::Key,
            message: message.into(),
        }
    }

    /// Locates the problem in the file.
    pub fn locate(&self, origin: &str, spans: &SpanIndex) -> SpecError {
        let pos = spans.locate(&self.path, self.at);
        SpecError {
            origin: origin.to_string(),
            line: pos.line,
            column: pos.column,
            path: self.path.to_string(),
            message: self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_one_line_per_error() {
        let located = SpecError {
            origin: "jobs/orders.yaml".into(),
            line: 14,
            column: 7,
            path: "spec.sink.part_size".into(),
            message: "must be at least 5 MiB (got \"1MiB\")".into(),
        };
        let unreadable = SpecErrors::unreadable("jobs/missing.yaml", "No such file".into());
        let all = SpecErrors {
            errors: vec![located, unreadable.errors[0].clone()],
        };
        assert_eq!(
            all.to_string(),
            "jobs/orders.yaml:14:7: spec.sink.part_size: must be at least 5 MiB (got \"1MiB\")\n\
             jobs/missing.yaml: No such file"
        );
    }
}
