//! `spec.transform`: the steps as written (`sql` or `container`), and their checks: names,
//! one kind per step, one read-only query, distinct loopback ports.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::container::ContainerConfig;
use crate::spec::error::Problem;
use crate::spec::file::Unit;
use crate::spec::job::{Step, StepKind};
use crate::spec::metadata::is_dns_label;
use crate::spec::span::{At, FieldPath};
use crate::spec::sql::check_read_only_query;
use crate::spec::template::Strictness;
use crate::spec::validate::{Check, Params, path};

/// One step of `spec.transform`. A step has exactly one kind (`sql` or `container`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformStepConfig {
    /// The step's name, unique within the job. Default: `step-<n>`, n counting from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One read-only SQL query (a SELECT, optionally with WITH, UNION, ...) over the table
    /// `input`, which holds the records coming into this step. DDL, DML, COPY and more than
    /// one statement are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The user's own transformer, run beside the worker and spoken to over loopback
    /// (see docs/transformers.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerConfig>,
    /// Whether the step may drop records on purpose (such as a WHERE clause). Dropped records
    /// are counted as filtered; without it, fewer records out than in fails validation.
    #[serde(default)]
    pub filters: bool,
}

impl Check<'_> {
    pub(super) fn steps(
        &mut self,
        steps: &[TransformStepConfig],
        params: &Params,
    ) -> Option<Vec<Step>> {
        if self.broken.has(Unit::Transform) {
            return None;
        }
        let mut out = Vec::with_capacity(steps.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ports: HashMap<u16, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            let at = path("spec.transform").index(i);
            let checked = self.unit(Unit::Step(i), |v| {
                let name = match &step.name {
                    Some(name) => {
                        if !is_dns_label(name) {
                            v.error(
                                at.key("name"),
                                format!("must be at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (got {name:?})"),
                            );
                        }
                        name.clone()
                    }
                    None => format!("step-{}", i + 1),
                };
                if let Some(first) = names.insert(name.clone(), i) {
                    v.error(
                        at.key("name"),
                        format!("step name {name:?} is already used by spec.transform[{first}]"),
                    );
                }
                let kind = match (&step.sql, &step.container) {
                    (Some(sql), None) => v.sql(at.key("sql"), sql, params),
                    (None, Some(container)) => crate::spec::container::check(
                        container,
                        &at.key("container"),
                        crate::spec::container::Position {
                            index: i,
                            first: i == 0,
                            last: i + 1 == steps.len(),
                        },
                        &mut v.problems,
                    )
                    .map(|c| StepKind::Container(Box::new(c))),
                    (Some(_), Some(_)) => {
                        v.error(at.clone(), "has two kinds: give either `sql` or `container`");
                        None
                    }
                    (None, None) => {
                        v.error(at.clone(), "has no kind: give `sql` (one read-only query over `input`) or `container` (a transformer)");
                        None
                    }
                };
                if let Some(StepKind::Container(c)) = &kind
                    && let port = c.listen_port()
                    && let Some(other) = ports.insert(port, i)
                {
                    v.error(
                        at.key("container").key("port"),
                        format!("port {port} is already used by spec.transform[{other}]"),
                    );
                }
                Some(Step {
                    name,
                    kind: kind?,
                    filters: step.filters,
                })
            });
            if let Some(step) = checked {
                out.push(step);
            }
        }
        (out.len() == steps.len()).then_some(out)
    }

    fn sql(&mut self, at: FieldPath, sql: &str, params: &Params) -> Option<StepKind> {
        let query = self.template(&at, sql, params, Strictness::Lenient)?;
        if let Err(problem) = check_read_only_query(&query) {
            // Positions refer to the text after params were applied; they match the file
            // only when no param was substituted.
            let at_sql = match problem.position {
                Some((line, column)) if query == sql => At::Within { line, column },
                _ => At::Value,
            };
            self.problems.push(Problem {
                path: at,
                at: at_sql,
                message: problem.message,
            });
            return None;
        }
        Some(StepKind::Sql { query })
    }
}
