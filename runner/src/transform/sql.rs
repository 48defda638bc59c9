//! The `sql` step: one read-only SELECT over the object's rows as table `input`, run by
//! DataFusion as a stream (a filter or projection never holds the whole object).

use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{SessionConfig, SessionContext};

/// Runs `query` over `input` and returns the result as a stream.
pub async fn apply(
    query: &str,
    input: SendableRecordBatchStream,
) -> Result<SendableRecordBatchStream, DataFusionError> {
    apply_as("input", query, input).await
}

/// Runs `query` over `input`, which the query reads as table `table`.
pub async fn apply_as(
    table: &str,
    query: &str,
    input: SendableRecordBatchStream,
) -> Result<SendableRecordBatchStream, DataFusionError> {
    // One partition: the object is one ordered stream, and objects in flight already use
    // the cores. Small batches keep memory bounded.
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(8192);
    let ctx = SessionContext::new_with_config(config);
    let schema = input.schema();
    let partition = OnceStream {
        schema: schema.clone(),
        stream: Mutex::new(Some(input)),
    };
    let table_name = table;
    let table = StreamingTable::try_new(schema, vec![Arc::new(partition)])?;
    ctx.register_table(table_name, Arc::new(table))?;
    // The spec check already allows only one SELECT; this is the second guard.
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx.sql_with_options(query, options).await?;
    frame.execute_stream().await
}

/// A partition that hands out its stream once.
struct OnceStream {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OnceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnceStream").finish_non_exhaustive()
    }
}

impl PartitionStream for OnceStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().expect("not poisoned").take();
        match taken {
            Some(stream) => stream,
            None => Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async {
                    Err(DataFusionError::Execution(
                        "the table can be read only once per object".into(),
                    ))
                }),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::TryStreamExt;

    fn batches(schema: SchemaRef, n: usize) -> SendableRecordBatchStream {
        let items: Vec<Result<RecordBatch, DataFusionError>> = (0..n)
            .map(|b| {
                let ids = Int64Array::from_iter_values((0..100).map(|i| (b * 100 + i) as i64));
                let fares = Float64Array::from_iter_values((0..100).map(|i| i as f64 - 10.0));
                Ok(
                    RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(fares)])
                        .unwrap(),
                )
            })
            .collect();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(items),
        ))
    }

    #[tokio::test]
    async fn filters_and_projects_a_stream() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("fare", DataType::Float64, false),
        ]));
        let out = apply(
            "SELECT id, fare * 2 AS double_fare FROM input WHERE fare >= 0",
            batches(schema, 5),
        )
        .await
        .unwrap();
        let result: Vec<RecordBatch> = out.try_collect().await.unwrap();
        let rows: usize = result.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 5 * 90);
        assert_eq!(result[0].schema().field(1).name(), "double_fare");
    }

    #[tokio::test]
    async fn refuses_ddl_at_run_time_too() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let input = Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            futures::stream::empty(),
        ));
        let err = apply("CREATE TABLE t AS SELECT 1", input)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("DDL"), "{err}");
    }
}
