//! SQL assertions: a read-only query over the table `output` returning one row whose first
//! column is a boolean (true passes) and whose optional second column is a message.

use arrow::array::{Array, BooleanArray};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

use crate::transform::sql::apply_as;

/// The table an assertion reads.
pub const TABLE: &str = "output";

/// What an assertion answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub passed: bool,
    pub message: String,
}

/// Runs `query` over `input` (as table `output`) and reads its answer.
pub async fn answer(query: &str, input: SendableRecordBatchStream) -> Result<Answer, String> {
    let stream = apply_as(TABLE, query, input)
        .await
        .map_err(|e| e.to_string())?;
    shape(&stream.schema())?;
    let batches: Vec<_> = stream.try_collect().await.map_err(|e| e.to_string())?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows != 1 {
        return Err(format!(
            "the query returned {rows} rows; it must return one"
        ));
    }
    let batch = batches.iter().find(|b| b.num_rows() == 1).expect("one row");
    let verdict = batch
        .column(0)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("shape checked");
    let passed = !verdict.is_null(0) && verdict.value(0);
    let message = if batch.num_columns() > 1 && !batch.column(1).is_null(0) {
        arrow::util::display::array_value_to_string(batch.column(1), 0).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Answer { passed, message })
}

/// Plans `query` over an empty `output` of `schema` and checks that it answers with a
/// boolean first column: what `sluice check` and the start of a run verify.
pub async fn check(query: &str, schema: SchemaRef) -> Result<(), String> {
    let empty = Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::empty(),
    ));
    let stream = apply_as(TABLE, query, empty)
        .await
        .map_err(|e| e.to_string())?;
    shape(&stream.schema())
}

fn shape(schema: &SchemaRef) -> Result<(), String> {
    match schema.fields().first() {
        Some(f) if f.data_type() == &DataType::Boolean => Ok(()),
        Some(f) => Err(format!(
            "the query's first column {:?} is {}; it must be a boolean (true passes)",
            f.name(),
            f.data_type()
        )),
        None => Err("the query returns no column".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float64Array;
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    fn fares(values: Vec<f64>) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "fare",
            DataType::Float64,
            false,
        )]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(values))])
                .unwrap();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(vec![Ok(batch)]),
        ))
    }

    #[tokio::test]
    async fn answers_with_a_verdict_and_a_message() {
        let q =
            "SELECT count(*) = 0, concat(count(*), ' negative fares') FROM output WHERE fare < 0";
        let a = answer(q, fares(vec![1.0, -2.0, -3.0])).await.unwrap();
        assert!(!a.passed);
        assert_eq!(a.message, "2 negative fares");
        let a = answer(q, fares(vec![1.0])).await.unwrap();
        assert!(a.passed);
    }

    #[tokio::test]
    async fn a_query_that_does_not_answer_with_a_boolean_is_refused() {
        let schema = fares(vec![]).schema();
        let err = check("SELECT count(*) FROM output", schema.clone())
            .await
            .unwrap_err();
        assert!(err.contains("must be a boolean"), "{err}");
        check("SELECT min(fare) >= 0 FROM output", schema.clone())
            .await
            .unwrap();
        let err = check("SELECT nope > 0 FROM output", schema)
            .await
            .unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
