//! The rules judged when a run publishes: object-scope outcomes gathered from the done
//! markers, and shard- and run-scope rules judged over the shards and the whole run.

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;

use crate::format::options::SinkFormat;
use crate::plan::Plan;
use crate::spec::job::Sink;
use crate::spec::rules::{Check, Rule, Scope};
use crate::state::checks::{CheckReport, RuleOutcome, aggregate};
use crate::state::marker::{OutputObject, RecordCounts};
use crate::state::progress::ObjectFailure;
use crate::storage::S3ParquetReader;
use crate::storage::Storage;
use crate::storage::uri::S3Uri;
use crate::validate::keys::{MergeOptions, find_duplicates};
use crate::validate::object::{duplicate_example, relation_fails, spill_uri};
use crate::validate::text_outputs;

/// What the run produced, as publish gathered it.
pub struct RunFacts<'a> {
    pub plan: &'a Plan,
    /// Per task (a source key, or a key and range): its counts and its rules' outcomes
    /// (done tasks).
    pub done: HashMap<&'a str, (&'a RecordCounts, &'a [RuleOutcome])>,
    pub failures: &'a [ObjectFailure],
    pub outputs: Vec<&'a OutputObject>,
    /// The run's sink: its format and how text outputs are written (run-scope SQL reads them).
    pub sink: &'a Sink,
    /// The run's key spills prefix (`unique` rules).
    pub keys: S3Uri,
}

/// Every rule's report over the run.
pub async fn judge(
    storage: &Storage,
    rules: &[Rule],
    examples: usize,
    facts: &RunFacts<'_>,
) -> Vec<CheckReport> {
    if rules.is_empty() {
        return Vec::new();
    }
    let mut subjects: Vec<(String, RuleOutcome)> = Vec::new();
    // Object scope: the workers' verdicts, from done markers and failures.
    let tasks: Vec<Vec<String>> = facts
        .plan
        .shards
        .iter()
        .map(|s| s.objects.iter().map(|o| o.task_key()).collect())
        .collect();
    let mut per_object: Vec<(&str, &RuleOutcome)> = Vec::new();
    for task in tasks.iter().flatten() {
        if let Some((key, (_, outcomes))) = facts.done.get_key_value(task.as_str()) {
            per_object.extend(outcomes.iter().map(|o| (*key, o)));
        }
    }
    for failure in facts.failures {
        per_object.extend(failure.checks.iter().map(|o| (failure.key.as_str(), o)));
    }
    for (index, rule) in rules.iter().enumerate() {
        match rule.scope {
            Scope::Object => {}
            Scope::Shard => {
                for (shard, tasks) in facts.plan.shards.iter().zip(&tasks) {
                    let keys: Vec<&str> = tasks.iter().map(String::as_str).collect();
                    let outcome = match &rule.check {
                        Check::Unique(_) => unique(storage, rule, examples, &keys, facts).await,
                        _ => judge_group(rule, index, &keys, facts, &per_object),
                    };
                    subjects.push((format!("shard {}", shard.index), outcome));
                }
            }
            Scope::Run => {
                let keys: Vec<&str> = tasks.iter().flatten().map(String::as_str).collect();
                let outcome = match &rule.check {
                    Check::Sql(query) => run_sql(storage, rule, query, facts).await,
                    Check::Unique(_) => unique(storage, rule, examples, &keys, facts).await,
                    _ => judge_group(rule, index, &keys, facts, &per_object),
                };
                subjects.push(("run".to_string(), outcome));
            }
        }
    }
    let objects = per_object
        .iter()
        .filter(|(_, o)| o.scope == Scope::Object)
        .map(|(k, o)| (*k, *o));
    let groups = subjects.iter().map(|(s, o)| (s.as_str(), o));
    aggregate(rules, objects.chain(groups), examples)
}

/// Judges a shard- or run-scope rule over the objects `keys`.
fn judge_group(
    rule: &Rule,
    index: usize,
    keys: &[&str],
    facts: &RunFacts<'_>,
    per_object: &[(&str, &RuleOutcome)],
) -> RuleOutcome {
    let mut outcome = RuleOutcome::new(rule);
    let mut counts = RecordCounts::default();
    for key in keys {
        if let Some((c, _)) = facts.done.get(key) {
            counts.add(c);
        }
    }
    match &rule.check {
        Check::RecordCount(relation) => match relation_fails(*relation, &counts) {
            Some(detail) => outcome.fail(detail),
            None => outcome,
        },
        Check::NonEmpty if counts.output == 0 => outcome.fail("no records were produced"),
        Check::NonEmpty => outcome,
        _ if rule.is_row_rule() => {
            let _ = index;
            for (key, o) in per_object {
                if o.rule == rule.name && keys.contains(key) {
                    outcome.checked += o.checked;
                    outcome.failed += o.failed;
                    outcome.examples.extend(o.examples.iter().cloned());
                }
            }
            if outcome.failed > 0 {
                outcome.passed = false;
                outcome.detail = format!("{} of {} records fail", outcome.failed, outcome.checked);
            }
            outcome
        }
        _ => outcome,
    }
}

/// Merges the key spills of the done objects among `keys` (in plan order) and reports
/// every record whose key an earlier record already had.
async fn unique(
    storage: &Storage,
    rule: &Rule,
    examples: usize,
    keys: &[&str],
    facts: &RunFacts<'_>,
) -> RuleOutcome {
    let mut outcome = RuleOutcome::new(rule);
    // Done objects, and objects that failed other rules after their keys were spilled,
    // so that a duplicate is named even where its objects failed for other reasons.
    let spilled = |key: &str| {
        facts.done.contains_key(key)
            || facts
                .failures
                .iter()
                .any(|f| f.key == key && f.checks.iter().any(|o| o.rule == rule.name))
    };
    let spills: Vec<S3Uri> = keys
        .iter()
        .filter(|k| spilled(k))
        .map(|k| spill_uri(&facts.keys, &rule.name, k))
        .collect();
    let options = MergeOptions {
        examples,
        ..MergeOptions::default()
    };
    match find_duplicates(storage, spills, &options).await {
        Ok(report) => {
            outcome.checked = report.keys;
            outcome.failed = report.duplicates;
            outcome.examples = report
                .examples
                .iter()
                .map(|d| duplicate_example(rule, d))
                .collect();
            if report.duplicates > 0 {
                outcome.passed = false;
                outcome.detail = format!(
                    "{} of {} records repeat a key ({} distinct keys)",
                    report.duplicates, report.keys, report.distinct
                );
            }
            outcome
        }
        Err(e) => outcome.fail(format!("merging the key spills failed: {e}")),
    }
}

/// Runs a run-scope assertion over every published output, one after another, decoded as
/// the sink wrote it: Parquet as it is, CSV and JSON lines with the column types inferred from
/// the first output that holds records.
async fn run_sql(storage: &Storage, rule: &Rule, query: &str, facts: &RunFacts<'_>) -> RuleOutcome {
    let outcome = RuleOutcome::new(rule);
    let outputs: Vec<(S3Uri, u64, u64)> = facts
        .outputs
        .iter()
        .filter_map(|o| o.uri.parse::<S3Uri>().ok().map(|u| (u, o.size, o.rows)))
        .collect();
    if outputs.is_empty() {
        return outcome.fail("the run has no outputs to query");
    }
    let input = match facts.sink.format {
        SinkFormat::Parquet => parquet_outputs(storage, outputs).await,
        SinkFormat::Csv | SinkFormat::Jsonl => {
            text_outputs::read(storage, facts.sink, outputs).await
        }
    };
    let input = match input {
        Ok(input) => input,
        Err(e) => return outcome.fail(e),
    };
    match crate::validate::sql::answer(query, input).await {
        Ok(a) if a.passed => RuleOutcome {
            detail: a.message,
            ..outcome
        },
        Ok(a) if a.message.is_empty() => outcome.fail("the assertion returned false"),
        Ok(a) => outcome.fail(a.message),
        Err(e) => outcome.fail(format!("the assertion failed to run: {e}")),
    }
}

/// Every Parquet output as one stream of batches.
async fn parquet_outputs(
    storage: &Storage,
    outputs: Vec<(S3Uri, u64, u64)>,
) -> Result<SendableRecordBatchStream, String> {
    let (first, size, _) = outputs[0].clone();
    let schema = parquet_schema(storage, &first, size)
        .await
        .map_err(|e| format!("reading {first}: {e}"))?;
    let storage = storage.clone();
    let batches = futures::stream::iter(outputs)
        .then(move |(uri, size, _)| {
            let storage = storage.clone();
            async move {
                let reader = S3ParquetReader::new(storage, uri.clone(), size, None);
                let stream = ParquetRecordBatchStreamBuilder::new(reader)
                    .await?
                    .with_batch_size(8192)
                    .build()?;
                Ok::<_, parquet::errors::ParquetError>(stream)
            }
        })
        .try_flatten()
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}

async fn parquet_schema(storage: &Storage, uri: &S3Uri, size: u64) -> Result<SchemaRef, String> {
    let reader = S3ParquetReader::new(storage.clone(), uri.clone(), size, None);
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| e.to_string())?;
    Ok(builder.schema().clone())
}
