//! The rules of one source object: judged on its output as it streams to the encoder
//! (row rules, SQL assertions, key collection for `unique`), then on its counts and sizes.

use std::sync::{Arc, Mutex};

use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::format::BadRecord;
use crate::spec::rules::{Check, MinRatio, RecordCountConfig, Relation, Rule, Scope};
use crate::spec::source::ColumnType;
use crate::state::checks::{Location, Offending, RuleOutcome};
use crate::state::marker::RecordCounts;
use crate::storage::Storage;
use crate::storage::uri::S3Uri;
use crate::validate::keys::{
    DuplicateExample, KeyColumns, KeySpillWriter, KeysError, SpillOptions,
};
use crate::validate::rows::{RowRules, whole_row};
use crate::validate::sql::{Answer, answer};

/// Batches buffered towards each SQL assertion.
const SQL_IN_FLIGHT: usize = 2;

/// The rules being judged on one object's output.
pub struct ObjectChecks {
    rules: Arc<Vec<Rule>>,
    state: Arc<Mutex<State>>,
    sql: Vec<(usize, JoinHandle<Result<Answer, String>>)>,
    unique: Vec<UniqueKeys>,
    object: String,
    examples: usize,
}

/// The keys of one `unique` rule, collected as the object's output streams.
#[derive(Clone)]
struct UniqueKeys {
    rule: usize,
    columns: Arc<KeyColumns>,
    writer: Arc<Mutex<Option<KeySpillWriter>>>,
}

/// Where the key spills of `unique` rules go: `<prefix><rule>/<object hash>.keys`.
pub struct KeySpills<'a> {
    pub storage: &'a Storage,
    pub prefix: &'a S3Uri,
}

/// Memory for a `unique` rule's keys per object in flight before they spill to local disk.
const KEY_BUFFER_BYTES: usize = 16 << 20;

struct State {
    outcomes: Vec<RuleOutcome>,
    /// Output rows seen so far (before rejection).
    rows: u64,
    /// Rows sent to the rejects object by rules.
    rejected: u64,
    error: Option<String>,
}

/// A rule that cannot be applied to this object's output (a missing column, a bound of
/// the wrong type, an assertion that does not plan): a configuration error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RuleSetupError(pub String);

impl ObjectChecks {
    /// Wraps `stream` (the output of the last step) so that every batch is judged on its
    /// way to the encoder. Rows failing a rule with `on_fail: reject` leave the stream and
    /// go to `rejects`.
    pub async fn attach(
        rules: Arc<Vec<Rule>>,
        examples: usize,
        object: &str,
        stream: SendableRecordBatchStream,
        rejects: mpsc::Sender<BadRecord>,
    ) -> Result<(SendableRecordBatchStream, ObjectChecks), RuleSetupError> {
        let schema = stream.schema();
        let mut outcomes: Vec<RuleOutcome> = rules.iter().map(RuleOutcome::new).collect();
        for (rule, outcome) in rules.iter().zip(outcomes.iter_mut()) {
            if let Check::Schema(expected) = &rule.check
                && let Some(detail) = schema_mismatch(expected, &schema)
            {
                *outcome = outcome.clone().fail(detail);
            }
        }
        let row_rules = RowRules::prepare(&rules, &schema).map_err(RuleSetupError)?;
        let mut sql = Vec::new();
        let mut feeds = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if let (Check::Sql(query), Scope::Object) = (&rule.check, rule.scope) {
                crate::validate::sql::check(query, schema.clone())
                    .await
                    .map_err(|e| RuleSetupError(format!("rule {}: {e}", rule.name)))?;
                let (tx, rx) = mpsc::channel::<RecordBatch>(SQL_IN_FLIGHT);
                let input = Box::pin(RecordBatchStreamAdapter::new(
                    schema.clone(),
                    tokio_stream_of(rx),
                ));
                let query = query.clone();
                sql.push((
                    index,
                    tokio::spawn(async move { answer(&query, input).await }),
                ));
                feeds.push(tx);
            }
        }
        let mut unique = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if let Check::Unique(columns) = &rule.check {
                let columns = KeyColumns::resolve(&schema, columns)
                    .map_err(|e| RuleSetupError(format!("rule {}: {e}", rule.name)))?;
                let writer = KeySpillWriter::new(SpillOptions {
                    buffer_bytes: KEY_BUFFER_BYTES,
                    examples,
                    ..SpillOptions::default()
                });
                unique.push(UniqueKeys {
                    rule: index,
                    columns: Arc::new(columns),
                    writer: Arc::new(Mutex::new(Some(writer))),
                });
            }
        }
        let state = Arc::new(Mutex::new(State {
            outcomes,
            rows: 0,
            rejected: 0,
            error: None,
        }));
        let checks = ObjectChecks {
            rules: rules.clone(),
            state: state.clone(),
            sql,
            unique: unique.clone(),
            object: object.to_string(),
            examples,
        };
        if row_rules.is_empty() && feeds.is_empty() && unique.is_empty() {
            return Ok((stream, checks));
        }
        let object = object.to_string();
        let row_rules = Arc::new(row_rules);
        let judged = stream.then(move |item| {
            let (rules, state, row_rules, feeds, rejects, object, unique) = (
                rules.clone(),
                state.clone(),
                row_rules.clone(),
                feeds.clone(),
                rejects.clone(),
                object.clone(),
                unique.clone(),
            );
            async move {
                let batch = item?;
                let (kept, bad) = {
                    let mut s = state.lock().expect("not poisoned");
                    let first = s.rows + 1;
                    s.rows += batch.num_rows() as u64;
                    let verdict = row_rules
                        .judge(&rules, &batch, first, &object, examples, &mut s.outcomes)
                        .map_err(|e| {
                            s.error = Some(e.clone());
                            DataFusionError::Execution(e)
                        })?;
                    s.rejected += verdict.rejected.len() as u64;
                    let bad: Vec<BadRecord> = verdict
                        .rejected
                        .iter()
                        .map(|(row, rule)| BadRecord {
                            line: first + *row as u64,
                            raw: whole_row(&batch, *row).to_string(),
                            error: format!("failed rule {rule}"),
                        })
                        .collect();
                    let mut written = vec![true; batch.num_rows()];
                    for (row, _) in &verdict.rejected {
                        written[*row] = false;
                    }
                    for keys in &unique {
                        collect_keys(keys, &batch, first, &written)
                            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
                    }
                    let kept = if bad.is_empty() {
                        batch
                    } else {
                        filter_record_batch(&batch, &BooleanArray::from(written))?
                    };
                    (kept, bad)
                };
                for record in bad {
                    if rejects.send(record).await.is_err() {
                        return Err(DataFusionError::Execution(
                            "the rejects object stopped taking records".into(),
                        ));
                    }
                }
                for feed in &feeds {
                    // An assertion that has its answer early stops reading; that is fine.
                    let _ = feed.send(kept.clone()).await;
                }
                Ok(kept)
            }
        });
        Ok((
            Box::pin(RecordBatchStreamAdapter::new(schema, judged)),
            checks,
        ))
    }

    /// Rows the rules sent to the rejects object.
    pub fn rejected(&self) -> u64 {
        self.state.lock().expect("not poisoned").rejected
    }

    /// Judges what needs the whole object (counts, input size, SQL answers, duplicate keys)
    /// and returns every rule's outcome on this object. The keys of `unique` rules are
    /// written to `spills`, for the shard- and run-scope merge at publish.
    pub async fn finish(
        self,
        counts: &RecordCounts,
        input_size: u64,
        spills: Option<KeySpills<'_>>,
    ) -> Result<Vec<RuleOutcome>, KeysError> {
        let mut found = Vec::new();
        for keys in &self.unique {
            let writer = keys.writer.lock().expect("not poisoned").take();
            let (Some(writer), Some(spills)) = (writer, spills.as_ref()) else {
                continue;
            };
            let rule = &self.rules[keys.rule];
            let uri = spill_uri(spills.prefix, &rule.name, &self.object);
            found.push((
                keys.rule,
                writer.finish(spills.storage, uri, &self.object).await?,
            ));
        }
        let mut answers = Vec::new();
        for (index, task) in self.sql {
            let answer = task.await.unwrap_or_else(|e| Err(e.to_string()));
            answers.push((index, answer));
        }
        let mut outcomes = std::mem::take(&mut self.state.lock().expect("not poisoned").outcomes);
        for (index, answer) in answers {
            let o = &mut outcomes[index];
            *o = match answer {
                Ok(a) if a.passed => {
                    let mut o = o.clone();
                    o.detail = a.message;
                    o
                }
                Ok(a) => o.clone().fail(if a.message.is_empty() {
                    "the assertion returned false".to_string()
                } else {
                    a.message
                }),
                Err(e) => o.clone().fail(format!("the assertion failed to run: {e}")),
            };
        }
        for (index, summary) in found {
            let o = &mut outcomes[index];
            o.checked = summary.keys;
            o.failed = summary.duplicates;
            o.examples = summary
                .examples
                .iter()
                .take(self.examples)
                .map(|d| duplicate_example(&self.rules[index], d))
                .collect();
            if self.rules[index].scope == Scope::Object && summary.duplicates > 0 {
                o.passed = false;
                o.detail = format!(
                    "{} of {} records repeat a key",
                    summary.duplicates, summary.keys
                );
            }
        }
        for (rule, o) in self.rules.iter().zip(outcomes.iter_mut()) {
            judge_whole(rule, o, counts, input_size);
        }
        Ok(outcomes)
    }
}

/// Adds the keys of the rows of `batch` that are written (not rejected).
fn collect_keys(
    keys: &UniqueKeys,
    batch: &RecordBatch,
    first: u64,
    written: &[bool],
) -> Result<(), KeysError> {
    let hashes = keys.columns.hashes(batch)?;
    let texts = keys.columns.texts(batch)?;
    let mut guard = keys.writer.lock().expect("not poisoned");
    let Some(writer) = guard.as_mut() else {
        return Ok(());
    };
    for (i, (hash, text)) in hashes.into_iter().zip(texts).enumerate() {
        if written[i] {
            writer.push(hash, first + i as u64, &text)?;
        }
    }
    Ok(())
}

/// Where one object's keys for one `unique` rule are spilled.
pub fn spill_uri(prefix: &S3Uri, rule: &str, object: &str) -> S3Uri {
    prefix.join(&format!("{rule}/{}.keys", crate::state::key_hash(object)))
}

/// A duplicate as an offending row: where it repeats, where it was first, and its key.
pub fn duplicate_example(rule: &Rule, d: &DuplicateExample) -> Offending {
    let values = match (
        serde_json::from_str::<serde_json::Value>(&d.key),
        &rule.check,
    ) {
        (Ok(serde_json::Value::Array(items)), Check::Unique(columns))
            if items.len() == columns.len() =>
        {
            serde_json::Value::Object(columns.iter().cloned().zip(items).collect())
        }
        _ => serde_json::Value::String(d.key.clone()),
    };
    Offending {
        object: d.duplicate.source.clone(),
        row: d.duplicate.row,
        values,
        first: Some(Location {
            object: d.first.source.clone(),
            row: d.first.row,
        }),
    }
}

/// Judges the rules that look at an object as a whole, and row rules at object scope.
fn judge_whole(rule: &Rule, o: &mut RuleOutcome, counts: &RecordCounts, input_size: u64) {
    match &rule.check {
        Check::RecordCount(relation) if rule.scope == Scope::Object => {
            if let Some(detail) = relation_fails(*relation, counts) {
                *o = o.clone().fail(detail);
            }
        }
        Check::NonEmpty if rule.scope == Scope::Object && counts.output == 0 => {
            *o = o.clone().fail("the object produced no records");
        }
        Check::Size { input, .. } => {
            if let Some(detail) = size_fails(*input, input_size, "input") {
                *o = o.clone().fail(detail);
            }
        }
        _ if rule.is_row_rule() && rule.scope == Scope::Object => {
            // Rejected rows are routed, not failed.
            let failing = o.failed - o.rejected;
            if failing > 0 {
                o.passed = false;
                o.detail = format!("{failing} of {} records fail", o.checked);
            }
        }
        _ => {}
    }
}

/// Why `counts` break `relation`, if they do.
pub fn relation_fails(relation: RecordCountConfig, counts: &RecordCounts) -> Option<String> {
    let (input, output) = (counts.input, counts.output);
    match relation {
        RecordCountConfig::Relation(Relation::Equal) if output + counts.rejected != input => {
            Some(format!(
                "input {input} != output {output} + rejected {} (skipped {}, filtered {})",
                counts.rejected, counts.skipped, counts.filtered
            ))
        }
        RecordCountConfig::Relation(Relation::AtMost) if output > input => {
            Some(format!("output {output} > input {input}"))
        }
        RecordCountConfig::Ratio(MinRatio { min_ratio: r })
            if (output as f64) < r * input as f64 =>
        {
            Some(format!("output {output} < {r} x input {input}"))
        }
        _ => None,
    }
}

/// Why `size` breaks `(min, max)`, if it does.
pub fn size_fails(bounds: (Option<u64>, Option<u64>), size: u64, what: &str) -> Option<String> {
    match bounds {
        (Some(min), _) if size < min => Some(format!("{what} size {size} < min {min}")),
        (_, Some(max)) if size > max => Some(format!("{what} size {size} > max {max}")),
        _ => None,
    }
}

/// The output size bounds of the size rules, judged on the stored outputs.
pub fn judge_output_sizes(rules: &[Rule], outcomes: &mut [RuleOutcome], sizes: &[(String, u64)]) {
    for (rule, o) in rules.iter().zip(outcomes.iter_mut()) {
        if let Check::Size { output, .. } = &rule.check {
            for (uri, size) in sizes {
                if let Some(detail) = size_fails(*output, *size, "output") {
                    *o = o.clone().fail(format!("{uri}: {detail}"));
                }
            }
        }
    }
}

fn schema_mismatch(expected: &[(String, ColumnType)], schema: &SchemaRef) -> Option<String> {
    let mut problems = Vec::new();
    for (name, ty) in expected {
        match schema.field_with_name(name) {
            Err(_) => problems.push(format!("column {name:?} is missing")),
            Ok(f) if !type_matches(*ty, f.data_type()) => problems.push(format!(
                "column {name:?} is {}, expected {}",
                f.data_type(),
                type_name(*ty)
            )),
            Ok(_) => {}
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn type_matches(ty: ColumnType, actual: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType as D;
    match ty {
        ColumnType::String => matches!(actual, D::Utf8 | D::LargeUtf8 | D::Utf8View),
        ColumnType::Int32 => actual == &D::Int32,
        ColumnType::Int64 => actual == &D::Int64,
        ColumnType::Float32 => actual == &D::Float32,
        ColumnType::Float64 => actual == &D::Float64,
        ColumnType::Boolean => actual == &D::Boolean,
        ColumnType::Date => actual == &D::Date32,
        ColumnType::Timestamp => matches!(actual, D::Timestamp(_, _)),
    }
}

fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "string",
        ColumnType::Int32 => "int32",
        ColumnType::Int64 => "int64",
        ColumnType::Float32 => "float32",
        ColumnType::Float64 => "float64",
        ColumnType::Boolean => "boolean",
        ColumnType::Date => "date",
        ColumnType::Timestamp => "timestamp",
    }
}

/// Record batches from a channel as a DataFusion stream.
fn tokio_stream_of(
    mut rx: mpsc::Receiver<RecordBatch>,
) -> impl futures::Stream<Item = Result<RecordBatch, DataFusionError>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations() {
        let counts = RecordCounts {
            input: 100,
            output: 90,
            rejected: 5,
            skipped: 0,
            filtered: 5,
        };
        let ratio = |r| RecordCountConfig::Ratio(MinRatio { min_ratio: r });
        let equal = RecordCountConfig::Relation(Relation::Equal);
        assert!(relation_fails(equal, &counts).is_some());
        assert!(relation_fails(RecordCountConfig::Relation(Relation::AtMost), &counts).is_none());
        assert!(relation_fails(ratio(0.9), &counts).is_none());
        assert!(relation_fails(ratio(0.95), &counts).is_some());
        let exact = RecordCounts {
            filtered: 0,
            output: 95,
            ..counts
        };
        assert!(relation_fails(equal, &exact).is_none());
    }

    #[test]
    fn sizes() {
        assert!(size_fails((Some(10), None), 5, "input").is_some());
        assert!(size_fails((None, Some(10)), 11, "output").is_some());
        assert!(size_fails((Some(1), Some(10)), 10, "output").is_none());
    }
}
