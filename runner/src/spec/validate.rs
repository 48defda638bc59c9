//! The pure step from the raw file to the runtime `Job`: every cross-field check, every
//! problem collected before failing, no I/O.
//!
//! `Check` walks the parts of the file in order; each section's own checks sit beside its
//! structs (metadata.rs, source.rs, steps.rs, validation.rs, sink.rs, shards.rs,
//! kubernetes.rs), and the checks across sections are here.

use std::collections::{BTreeMap, BTreeSet};

use crate::format::options::SourceFormat;
use crate::spec::error::Problem;
use crate::spec::file::{API_VERSION, JobFile, KIND, Unit};
use crate::spec::job::{Job, StepKind};
use crate::spec::metadata::{Metadata, check_metadata};
use crate::spec::span::FieldPath;
use crate::spec::template::{Strictness, apply_params, is_param_name};
use crate::storage::uri::S3Uri;

/// A bound that catches typos; a job that needs more retries has another problem.
pub const MAX_RETRIES: u32 = 100;

/// The units that could not be read; their problems are already reported and validation
/// skips them (and every check that needs them).
#[derive(Debug, Default, Clone)]
pub struct Broken(pub BTreeSet<Unit>);

impl Broken {
    pub(super) fn has(&self, unit: Unit) -> bool {
        self.0.contains(&unit)
    }
}

/// Validates a whole job file (params already merged with any overrides).
pub fn validate(file: &JobFile) -> Result<Job, Vec<Problem>> {
    validate_parts(file, &Broken::default())
}

/// Validates the parts of `file` that are not broken; fails if any part is broken.
pub fn validate_parts(file: &JobFile, broken: &Broken) -> Result<Job, Vec<Problem>> {
    let mut v = Check {
        problems: Vec::new(),
        broken,
    };
    let job = v.job(file);
    match job {
        Some(job) if v.problems.is_empty() && broken.0.is_empty() => Ok(job),
        _ => Err(v.problems),
    }
}

/// The walk from raw parts to runtime parts, with the problems found so far. Each section's
/// checks are methods of it, beside the section's structs.
pub(super) struct Check<'a> {
    pub(super) problems: Vec<Problem>,
    pub(super) broken: &'a Broken,
}

pub(super) fn path(text: &str) -> FieldPath {
    FieldPath::parse(text)
}

impl Check<'_> {
    pub(super) fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    /// Runs `check` unless `unit` is broken; `None` when broken or when it found problems.
    pub(super) fn unit<T>(
        &mut self,
        unit: Unit,
        check: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        if self.broken.has(unit) {
            return None;
        }
        let before = self.problems.len();
        let out = check(self);
        if self.problems.len() > before {
            None
        } else {
            out
        }
    }

    fn job(&mut self, file: &JobFile) -> Option<Job> {
        self.unit(Unit::ApiVersion, |v| {
            if file.api_version != API_VERSION {
                v.error(
                    path("apiVersion"),
                    format!("must be {API_VERSION} (got {:?})", file.api_version),
                );
            }
            Some(())
        });
        self.unit(Unit::Kind, |v| {
            if file.kind != KIND {
                v.error(
                    path("kind"),
                    format!("must be {KIND} (got {:?})", file.kind),
                );
            }
            Some(())
        });
        let metadata = self.unit(Unit::Metadata, |v| v.metadata(&file.metadata));
        let spec = &file.spec;
        let params_ok = self
            .unit(Unit::Params, |v| {
                for name in spec.params.keys() {
                    if !is_param_name(name) {
                        v.problems.push(Problem::at_key(
                            path("spec.params").key(name),
                            "is not a valid param name: a letter or '_', then letters, digits, '_' or '-'",
                        ));
                    }
                }
                Some(())
            })
            .is_some();
        let params = Params {
            values: &spec.params,
            complete: params_ok,
        };
        let source = self.unit(Unit::Source, |v| v.source(&spec.source, &params));
        let steps = self.steps(&spec.transform, &params);
        let validation = self.unit(Unit::Validate, |v| v.validation(&spec.validate, &params));
        let sink = self.unit(Unit::Sink, |v| v.sink(&spec.sink, &params));
        let parallelism = self.unit(Unit::Parallelism, |v| {
            if spec.parallelism < 1 {
                v.error(path("spec.parallelism"), "must be at least 1 (got 0)");
            }
            Some(spec.parallelism)
        });
        let shards = self.unit(Unit::Shards, |v| v.shards(&spec.shards));
        let split_size = self.unit(Unit::SplitSize, |v| v.split_size(&spec.split_size));
        let mode = self.unit(Unit::Mode, |_| Some(spec.mode));
        let retries = self.unit(Unit::Retries, |v| {
            if spec.retries > MAX_RETRIES {
                v.error(
                    path("spec.retries"),
                    format!("must be at most {MAX_RETRIES} (got {})", spec.retries),
                );
            }
            Some(spec.retries)
        });
        let state = self.unit(Unit::State, |v| match &spec.state {
            Some(text) => v.uri(path("spec.state"), text, &params),
            // The default needs the sink; it is filled in below.
            None => Some(S3Uri::new("", "")),
        });
        let endpoint = self.unit(Unit::Endpoint, |v| {
            if let Some(url) = &spec.endpoint {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                    v.error(
                        path("spec.endpoint"),
                        format!("must be an http:// or https:// URL with a host (got {url:?})"),
                    );
                }
            }
            Some(spec.endpoint.clone())
        });

        if let (Some(source), Some(steps)) = (&source, &steps) {
            let raw_first = matches!(
                steps.first().map(|s| &s.kind),
                Some(StepKind::Container(c)) if c.input == crate::spec::container::StepInput::Raw
            );
            if source.format == SourceFormat::Raw && !raw_first {
                self.error(
                    path("spec.source.format"),
                    "raw objects are not decoded: the first step must be a container step with `input: raw`",
                );
            }
            if source.format == SourceFormat::Raw && source.schema.is_some() {
                self.error(
                    path("spec.source.schema"),
                    "does not apply to raw objects, which are not decoded",
                );
            }
        }
        let kubernetes = self.unit(Unit::Kubernetes, |v| {
            crate::spec::kubernetes::check(&spec.kubernetes, &mut v.problems)
        });

        // Checks across sections, only between parts that are themselves sound.
        if let (Some(source), Some(sink)) = (&source, &sink)
            && inside(&sink.uri, &source.uri)
        {
            self.error(
                path("spec.sink.uri"),
                format!(
                    "lies inside the source prefix {}: the next run would read this job's output as input",
                    source.uri.as_prefix()
                ),
            );
        }
        if let (Some(source), Some(state)) = (&source, &state)
            && spec.state.is_some()
            && inside(state, &source.uri)
        {
            self.error(
                path("spec.state"),
                format!(
                    "lies inside the source prefix {}: run state would be read as input",
                    source.uri.as_prefix()
                ),
            );
        }

        let (metadata, sink) = (metadata?, sink?);
        let opaque = steps.iter().flatten().any(|step| {
            matches!(&step.kind, crate::spec::job::StepKind::Container(c)
                if c.output == crate::spec::container::OutputFormat::Opaque)
        });
        if opaque && !sink.partition_by.is_empty() {
            self.error(
                path("spec.sink.partition_by"),
                "the last step's output is opaque (objects, not records): there are no columns to partition by",
            );
            return None;
        }
        let state = match spec.state {
            Some(_) => state?.as_prefix(),
            None => S3Uri::new(sink.uri.bucket.clone(), "_sluice/"),
        };
        Some(Job {
            name: metadata.0,
            labels: metadata.1,
            source: source?,
            steps: steps?,
            validate: validation?,
            sink,
            parallelism: parallelism?,
            shards: shards?,
            split_size: split_size?,
            mode: mode?,
            retries: retries?,
            state,
            endpoint: endpoint?,
            params: spec.params.clone(),
            kubernetes: kubernetes?,
        })
    }

    fn metadata(&mut self, m: &Metadata) -> Option<(String, BTreeMap<String, String>)> {
        check_metadata(m, &mut self.problems);
        Some((m.name.clone(), m.labels.clone()))
    }

    /// Applies params to a URI field and parses it.
    pub(super) fn uri(&mut self, at: FieldPath, text: &str, params: &Params) -> Option<S3Uri> {
        let text = self.template(&at, text, params, Strictness::Strict)?;
        match text.parse::<S3Uri>() {
            Ok(uri) => Some(uri),
            Err(e) => {
                self.error(at, format!("is not an S3 URI: {e}"));
                None
            }
        }
    }

    pub(super) fn template(
        &mut self,
        at: &FieldPath,
        text: &str,
        params: &Params,
        strictness: Strictness,
    ) -> Option<String> {
        match apply_params(text, params.values, strictness) {
            Ok(out) => Some(out),
            Err(problems) => {
                // With a broken params section, undefined names are its fault, not this field's.
                if params.complete {
                    for message in problems {
                        self.error(at.clone(), message);
                    }
                }
                None
            }
        }
    }
}

/// The params for templating, and whether they were read without problems.
pub(super) struct Params<'a> {
    values: &'a BTreeMap<String, String>,
    complete: bool,
}

/// Whether `inner` lies at or below the prefix `outer` in the same bucket.
fn inside(inner: &S3Uri, outer: &S3Uri) -> bool {
    inner.bucket == outer.bucket && inner.as_prefix().key.starts_with(&outer.as_prefix().key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_a_prefix() {
        assert!(inside(
            &"s3://raw/trips/out/".parse().unwrap(),
            &"s3://raw/trips".parse().unwrap()
        ));
        assert!(!inside(
            &"s3://raw/trips-out/".parse().unwrap(),
            &"s3://raw/trips".parse().unwrap()
        ));
        assert!(!inside(
            &"s3://curated/trips/".parse().unwrap(),
            &"s3://raw/trips/".parse().unwrap()
        ));
    }
}
