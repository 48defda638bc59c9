//! Rules (and partition columns) checked against the output schema before anything runs: a
//! rule naming a column the output does not have, a bound of the wrong type, an assertion
//! that does not answer with a boolean, or a partition column the output lacks is a
//! configuration error.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

use crate::spec::error::Problem;
use crate::spec::job::{Job, StepKind};
use crate::spec::rules::Check;
use crate::spec::span::{FieldPath, SpanIndex};
use crate::spec::{SpecErrors, container::StepInput};
use crate::validate::rows::RowRules;

/// The schema of the job's output for records of `input`, when it is known before
/// running: every step is SQL (planned over an empty input). `None` with container steps.
pub async fn output_schema(job: &Job, input: SchemaRef) -> Option<SchemaRef> {
    let mut schema = input;
    for step in &job.steps {
        match &step.kind {
            StepKind::Sql { query } => {
                let empty = Box::pin(RecordBatchStreamAdapter::new(
                    schema.clone(),
                    futures::stream::empty(),
                ));
                schema = crate::transform::sql::apply(query, empty)
                    .await
                    .ok()?
                    .schema();
            }
            StepKind::Container(c) if c.input == StepInput::Raw => return None,
            StepKind::Container(_) => return None,
        }
    }
    Some(schema)
}

/// Every rule problem against `output`.
pub async fn problems(job: &Job, output: &SchemaRef) -> Vec<Problem> {
    let base = FieldPath::parse("spec.validate.rules");
    let mut problems = Vec::new();
    for (i, rule) in job.validate.rules.iter().enumerate() {
        let at = base.index(i).key(rule.check.kind());
        if rule.is_row_rule() {
            if let Err(e) = RowRules::prepare(std::slice::from_ref(rule), output) {
                problems.push(Problem::new(at, strip_rule(&e, &rule.name)));
            }
            continue;
        }
        match &rule.check {
            Check::Unique(columns) => {
                for (k, c) in columns.iter().enumerate() {
                    if output.index_of(c).is_err() {
                        problems.push(Problem::new(
                            at.index(k),
                            format!("the output has no column {c:?} (it has: {})", names(output)),
                        ));
                    }
                }
            }
            Check::Sql(query) => {
                if let Err(e) = crate::validate::sql::check(query, output.clone()).await {
                    problems.push(Problem::new(at, e));
                }
            }
            _ => {}
        }
    }
    problems
}

/// Checks the rules of `job` (loaded from `text`) against the output of records of
/// `input`, locating each problem in `text`. Passes when the output schema is not known.
pub async fn check(
    job: &Job,
    text: &str,
    origin: &str,
    input: Option<SchemaRef>,
) -> Result<(), SpecErrors> {
    if job.validate.rules.is_empty() && job.sink.partition_by.is_empty() {
        return Ok(());
    }
    let Some(input) = input else {
        return Ok(());
    };
    let Some(output) = output_schema(job, input).await else {
        return Ok(());
    };
    let mut found = problems(job, &output).await;
    if !job.sink.partition_by.is_empty()
        && let Err(why) =
            crate::format::partition::Partitioner::new(&output, &job.sink.partition_by)
    {
        found.push(Problem::new(
            FieldPath::parse("spec.sink.partition_by"),
            why,
        ));
    }
    if found.is_empty() {
        return Ok(());
    }
    let spans = SpanIndex::build(text).map_err(|(_, e)| SpecErrors::unreadable(origin, e))?;
    Err(SpecErrors {
        errors: found.iter().map(|p| p.locate(origin, &spans)).collect(),
    })
}

fn names(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn strip_rule(message: &str, rule: &str) -> String {
    message
        .strip_prefix(&format!("rule {rule}: "))
        .unwrap_or(message)
        .to_string()
}

/// The explicit source schema of a job, when it has one.
pub fn declared_input(job: &Job) -> Option<SchemaRef> {
    job.source.schema.as_ref().map(Arc::clone)
}
