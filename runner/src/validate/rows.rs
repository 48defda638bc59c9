//! Row rules (`not_null`, `format`, `range`, `allowed`) judged batch by batch with Arrow
//! kernels: which rows fail each rule, with counts and the first offending rows.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Array, StringArray};
use arrow::compute::kernels::cmp::{gt, lt};
use arrow::compute::{cast, is_null, or_kleene};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;

use crate::spec::rules::{Check, OnFail, Pattern, Rule};
use crate::state::checks::{Offending, RuleOutcome};

/// A row rule made ready for one output schema.
struct Prepared {
    /// Index into the job's rules.
    rule: usize,
    columns: Vec<usize>,
    test: Test,
}

enum Test {
    NotNull,
    Format(Vec<Pattern>),
    Range(Vec<(Option<ArrayRef>, Option<ArrayRef>)>),
    Allowed(Vec<Allowed>),
}

enum Allowed {
    Text(HashSet<String>),
    Number(HashSet<u64>),
}

/// The row rules of a job, prepared for the schema of one object's output.
pub struct RowRules {
    prepared: Vec<Prepared>,
}

/// What judging one batch found.
pub struct BatchVerdict {
    /// Rows that leave the output for the rejects object, with the rule that sent them.
    pub rejected: Vec<(usize, String)>,
}

impl RowRules {
    /// Resolves every row rule's columns in `schema`. A missing column or a bound that
    /// does not fit the column's type is a configuration error.
    pub fn prepare(rules: &[Rule], schema: &Schema) -> Result<RowRules, String> {
        let mut prepared = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if !rule.is_row_rule() {
                continue;
            }
            let columns = resolve(rule, schema)?;
            let test = match &rule.check {
                Check::NotNull(_) => Test::NotNull,
                Check::Format(list) => Test::Format(list.iter().map(|(_, p)| p.clone()).collect()),
                Check::Range(list) => {
                    let mut bounds = Vec::new();
                    for ((column, b), &i) in list.iter().zip(&columns) {
                        let ty = schema.field(i).data_type();
                        let bound = |text: &Option<String>| -> Result<Option<ArrayRef>, String> {
                            text.as_ref()
                                .map(|t| scalar(t, ty))
                                .transpose()
                                .map_err(|e| {
                                    format!("rule {}: bound of column {column}: {e}", rule.name)
                                })
                        };
                        bounds.push((bound(&b.min)?, bound(&b.max)?));
                    }
                    Test::Range(bounds)
                }
                Check::Allowed(list) => Test::Allowed(
                    list.iter()
                        .zip(&columns)
                        .map(|((_, values), &i)| allowed(values, schema.field(i).data_type()))
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("rule {}: {e}", rule.name))?,
                ),
                _ => unreachable!("only row rules are prepared"),
            };
            prepared.push(Prepared {
                rule: index,
                columns,
                test,
            });
        }
        Ok(RowRules { prepared })
    }

    pub fn is_empty(&self) -> bool {
        self.prepared.is_empty()
    }

    /// Judges `batch`, whose first row is output row `first_row` (1-based), adding to
    /// `outcomes` (indexed like the job's rules).
    pub fn judge(
        &self,
        rules: &[Rule],
        batch: &RecordBatch,
        first_row: u64,
        object: &str,
        examples: usize,
        outcomes: &mut [RuleOutcome],
    ) -> Result<BatchVerdict, String> {
        let mut rejected: Vec<Option<String>> = vec![None; batch.num_rows()];
        for p in &self.prepared {
            let rule = &rules[p.rule];
            let failing = self.failing(p, batch)?;
            let outcome = &mut outcomes[p.rule];
            outcome.checked += batch.num_rows() as u64;
            let count = failing.true_count() as u64;
            if count == 0 {
                continue;
            }
            for row in (0..failing.len()).filter(|&r| failing.value(r)) {
                if outcome.examples.len() < examples {
                    outcome.examples.push(Offending {
                        object: object.to_string(),
                        row: first_row + row as u64,
                        values: row_values(batch, &p.columns, row),
                        first: None,
                    });
                }
                if rule.on_fail == OnFail::Reject && rejected[row].is_none() {
                    rejected[row] = Some(rule.name.clone());
                }
            }
            outcome.failed += count;
        }
        let rejected: Vec<(usize, String)> = rejected
            .into_iter()
            .enumerate()
            .filter_map(|(row, rule)| rule.map(|r| (row, r)))
            .collect();
        for (_, rule) in &rejected {
            if let Some(i) = rules.iter().position(|r| &r.name == rule) {
                outcomes[i].rejected += 1;
            }
        }
        Ok(BatchVerdict { rejected })
    }

    fn failing(&self, p: &Prepared, batch: &RecordBatch) -> Result<BooleanArray, String> {
        let mut acc: Option<BooleanArray> = None;
        for (k, &i) in p.columns.iter().enumerate() {
            let column = batch.column(i);
            let fails = match &p.test {
                Test::NotNull => is_null(column.as_ref()).map_err(|e| e.to_string())?,
                Test::Format(patterns) => format_fails(column, &patterns[k])?,
                Test::Range(bounds) => range_fails(column, &bounds[k])?,
                Test::Allowed(sets) => allowed_fails(column, &sets[k])?,
            };
            acc = Some(match acc {
                None => fails,
                Some(a) => or_kleene(&a, &fails).map_err(|e| e.to_string())?,
            });
        }
        let acc = acc.unwrap_or_else(|| BooleanArray::from(vec![false; batch.num_rows()]));
        // A null verdict (a null value) passes: nulls are not_null's business.
        Ok(acc
            .iter()
            .map(|v| Some(v.unwrap_or(false)))
            .collect::<BooleanArray>())
    }
}

fn resolve(rule: &Rule, schema: &Schema) -> Result<Vec<usize>, String> {
    rule.columns()
        .iter()
        .map(|c| {
            schema.index_of(c).map_err(|_| {
                format!(
                    "rule {}: the output has no column {c:?} (it has: {})",
                    rule.name,
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

/// A one-element array of type `ty` holding `text` parsed as Arrow casts text.
fn scalar(text: &str, ty: &DataType) -> Result<ArrayRef, String> {
    let array: ArrayRef = Arc::new(StringArray::from(vec![text]));
    let options = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(&array, ty, &options)
        .map_err(|e| format!("{text:?} is not a {ty}: {e}"))
}

fn is_float(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _)
    )
}

fn allowed(values: &[String], ty: &DataType) -> Result<Allowed, String> {
    if is_float(ty) {
        let numbers = values
            .iter()
            .map(|v| {
                v.parse::<f64>()
                    .map(f64::to_bits)
                    .map_err(|_| format!("{v:?} is not a number, but the column is {ty}"))
            })
            .collect::<Result<_, _>>()?;
        return Ok(Allowed::Number(numbers));
    }
    Ok(Allowed::Text(values.iter().cloned().collect()))
}

fn as_text(column: &ArrayRef) -> Result<ArrayRef, String> {
    cast(column, &DataType::Utf8).map_err(|e| e.to_string())
}

fn format_fails(column: &ArrayRef, pattern: &Pattern) -> Result<BooleanArray, String> {
    let text = as_text(column)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8 gives a StringArray");
    let mut out = BooleanBuilder::with_capacity(text.len());
    for value in text.iter() {
        out.append_option(value.map(|v| !matches_pattern(v, pattern)));
    }
    Ok(out.finish())
}

/// Whether `text` has the shape of `pattern` (a whole-text strftime match or a regex).
pub fn matches_pattern(text: &str, pattern: &Pattern) -> bool {
    match pattern {
        Pattern::Regex(re) => re.is_match(text),
        Pattern::Datetime(format) => {
            let mut parsed = chrono::format::Parsed::new();
            if chrono::format::parse(
                &mut parsed,
                text,
                chrono::format::StrftimeItems::new(format),
            )
            .is_err()
            {
                return false;
            }
            // The shape fits; a date must also exist (no February 30th), a time too.
            let has_date = parsed.month().is_some() || parsed.day().is_some();
            let has_time = parsed.hour_div_12().is_some() || parsed.minute().is_some();
            (!has_date || parsed.to_naive_date().is_ok())
                && (!has_time || parsed.to_naive_time().is_ok())
        }
    }
}

fn range_fails(
    column: &ArrayRef,
    (min, max): &(Option<ArrayRef>, Option<ArrayRef>),
) -> Result<BooleanArray, String> {
    let below = min
        .as_ref()
        .map(|m| lt(column, &arrow::array::Scalar::new(m.clone())))
        .transpose()
        .map_err(|e| e.to_string())?;
    let above = max
        .as_ref()
        .map(|m| gt(column, &arrow::array::Scalar::new(m.clone())))
        .transpose()
        .map_err(|e| e.to_string())?;
    match (below, above) {
        (Some(a), Some(b)) => or_kleene(&a, &b).map_err(|e| e.to_string()),
        (Some(a), None) | (None, Some(a)) => Ok(a),
        (None, None) => Ok(BooleanArray::from(vec![false; column.len()])),
    }
}

fn allowed_fails(column: &ArrayRef, set: &Allowed) -> Result<BooleanArray, String> {
    match set {
        Allowed::Text(set) => {
            let text = as_text(column)?;
            let text = text
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8 gives a StringArray");
            Ok(text.iter().map(|v| v.map(|v| !set.contains(v))).collect())
        }
        Allowed::Number(set) => {
            let numbers = cast(column, &DataType::Float64).map_err(|e| e.to_string())?;
            let numbers = numbers
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("cast to Float64 gives a Float64Array");
            Ok(numbers
                .iter()
                .map(|v| v.map(|v| !set.contains(&v.to_bits())))
                .collect())
        }
    }
}

/// The values of `columns` in `row`, as a JSON object.
pub fn row_values(batch: &RecordBatch, columns: &[usize], row: usize) -> serde_json::Value {
    let schema = batch.schema();
    let mut map = serde_json::Map::new();
    for &i in columns {
        let column = batch.column(i);
        let value = if column.is_null(row) {
            serde_json::Value::Null
        } else {
            arrow::util::display::array_value_to_string(column, row)
                .map(serde_json::Value::String)
                .unwrap_or(serde_json::Value::Null)
        };
        map.insert(schema.field(i).name().clone(), value);
    }
    serde_json::Value::Object(map)
}

/// Every value of `row` as one JSON object (for a rejected record).
pub fn whole_row(batch: &RecordBatch, row: usize) -> serde_json::Value {
    let all: Vec<usize> = (0..batch.num_columns()).collect();
    row_values(batch, &all, row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::rules::{Bounds, Scope, Severity};
    use arrow::array::Int64Array;
    use arrow::datatypes::Field;

    fn rule(name: &str, check: Check, on_fail: OnFail) -> Rule {
        Rule {
            name: name.into(),
            severity: Severity::Error,
            scope: Scope::Object,
            on_fail,
            check,
        }
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("day", DataType::Utf8, true),
            Field::new("fare", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])),
                Arc::new(StringArray::from(vec![
                    Some("2024-01-02"),
                    Some("2024-02-30"),
                    None,
                    Some("02/01/2024"),
                ])),
                Arc::new(Float64Array::from(vec![
                    Some(5.0),
                    Some(-1.0),
                    Some(2.5),
                    Some(900.0),
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn judges_each_row_rule_and_keeps_examples() {
        let rules = vec![
            rule("ids", Check::NotNull(vec!["id".into()]), OnFail::Fail),
            rule(
                "days",
                Check::Format(vec![("day".into(), Pattern::Datetime("%Y-%m-%d".into()))]),
                OnFail::Fail,
            ),
            rule(
                "fares",
                Check::Range(vec![(
                    "fare".into(),
                    Bounds {
                        min: Some("0".into()),
                        max: Some("500".into()),
                    },
                )]),
                OnFail::Reject,
            ),
            rule(
                "known",
                Check::Allowed(vec![("fare".into(), vec!["5".into(), "2.5".into()])]),
                OnFail::Fail,
            ),
        ];
        let b = batch();
        let prepared = RowRules::prepare(&rules, &b.schema()).unwrap();
        let mut outcomes: Vec<RuleOutcome> = rules.iter().map(RuleOutcome::new).collect();
        let verdict = prepared
            .judge(&rules, &b, 11, "a.csv", 10, &mut outcomes)
            .unwrap();
        assert_eq!(outcomes[0].failed, 1);
        assert_eq!(outcomes[0].examples[0].row, 12);
        // February 30th does not exist; "02/01/2024" has another shape; null passes.
        assert_eq!(outcomes[1].failed, 2);
        assert_eq!(outcomes[1].examples[1].values["day"], "02/01/2024");
        assert_eq!(outcomes[2].failed, 2);
        assert_eq!(outcomes[2].rejected, 2);
        assert_eq!(outcomes[3].failed, 2);
        let rows: Vec<usize> = verdict.rejected.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, vec![1, 3]);
        assert!(outcomes.iter().all(|o| o.checked == 4));
    }

    #[test]
    fn a_missing_column_or_an_ill_typed_bound_is_named() {
        let b = batch();
        let missing = vec![rule("x", Check::NotNull(vec!["nope".into()]), OnFail::Fail)];
        let err = RowRules::prepare(&missing, &b.schema()).err().unwrap();
        assert!(err.contains("no column \"nope\""), "{err}");
        let bad = vec![rule(
            "y",
            Check::Range(vec![(
                "fare".into(),
                Bounds {
                    min: Some("cheap".into()),
                    max: None,
                },
            )]),
            OnFail::Fail,
        )];
        let err = RowRules::prepare(&bad, &b.schema()).err().unwrap();
        assert!(err.contains("\"cheap\" is not a Float64"), "{err}");
    }
}
