//! Job files for tests, built from the parts a test cares about.

use std::fmt::Display;
use std::path::PathBuf;

/// The text of a job file, in block style and in the order the documentation gives the
/// fields: source, transform, validate, sink, then the spec's scalar settings in the order
/// they were set. Parts given as lines are YAML at the indentation they take in the file.
#[derive(Debug, Clone, Default)]
pub struct JobYaml {
    name: String,
    source: String,
    format: String,
    schema: String,
    source_lines: String,
    transform: Option<String>,
    validate: Option<String>,
    sink: String,
    sink_lines: String,
    settings: String,
}

impl JobYaml {
    /// A job named `name`; give it at least a source and a sink.
    pub fn new(name: &str) -> JobYaml {
        JobYaml {
            name: name.to_string(),
            ..JobYaml::default()
        }
    }

    pub fn source(mut self, uri: impl Display, format: &str) -> JobYaml {
        self.source = uri.to_string();
        self.format = format.to_string();
        self
    }

    /// The source schema: `(name, type)` of each column.
    pub fn schema(mut self, columns: &[(&str, &str)]) -> JobYaml {
        self.schema = "    schema:\n".to_string();
        for (name, kind) in columns {
            self.schema
                .push_str(&format!("      - {{ name: {name}, type: {kind} }}\n"));
        }
        self
    }

    /// More fields of the source (`    compression: none`).
    pub fn source_lines(mut self, lines: &str) -> JobYaml {
        self.source_lines = lines.to_string();
        self
    }

    /// The steps: the items of the `transform` list.
    pub fn transform(mut self, steps: &str) -> JobYaml {
        self.transform = Some(steps.to_string());
        self
    }

    /// The fields of `validate`.
    pub fn validate(mut self, lines: &str) -> JobYaml {
        self.validate = Some(lines.to_string());
        self
    }

    pub fn sink(mut self, uri: impl Display) -> JobYaml {
        self.sink = uri.to_string();
        self
    }

    /// More fields of the sink (`    format: jsonl`).
    pub fn sink_lines(mut self, lines: &str) -> JobYaml {
        self.sink_lines = lines.to_string();
        self
    }

    /// A scalar field of the spec (`shards`, `retries`, `mode`, ...).
    pub fn set(mut self, field: &str, value: impl Display) -> JobYaml {
        self.settings.push_str(&format!("  {field}: {value}\n"));
        self
    }

    pub fn text(&self) -> String {
        let lines = |text: &str| {
            if text.is_empty() {
                String::new()
            } else {
                format!("{text}\n")
            }
        };
        let section = |name: &str, text: &Option<String>| match text {
            Some(text) => format!("  {name}:\n{text}\n"),
            None => String::new(),
        };
        format!(
            "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: {}
spec:
  source:
    uri: {}
    format: {}
{}{}{}{}  sink:
    uri: {}
{}{}",
            self.name,
            self.source,
            self.format,
            self.schema,
            lines(&self.source_lines),
            section("transform", &self.transform),
            section("validate", &self.validate),
            self.sink,
            lines(&self.sink_lines),
            self.settings,
        )
    }

    /// Writes the job file to `path`, and returns the path.
    pub fn write(&self, path: PathBuf) -> PathBuf {
        std::fs::write(&path, self.text()).unwrap();
        path
    }
}
