//! Transform steps applied to a stream of record batches, in order.

pub mod container;
pub mod sql;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use crate::exit::ExitCode;
use crate::spec::job::{Step, StepKind};

/// Records into and out of one step, counted as batches pass.
#[derive(Debug, Default)]
pub struct StepCounter {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
}

impl StepCounter {
    pub fn get(&self) -> (u64, u64) {
        (
            self.records_in.load(Ordering::Relaxed),
            self.records_out.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("transform step {step}: planning the SQL query")]
    SqlPlan {
        step: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error(transparent)]
    Container(Box<container::ContainerError>),
}

impl TransformError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            TransformError::Container(e) => e.exit_code(),
            // A query that does not plan (unknown column, bad function) fails again on retry.
            _ => ExitCode::Config,
        }
    }
}

/// Chains the steps over `input` (the records of the source object `key`); returns the
/// final stream and one counter per step.
pub async fn apply_steps(
    steps: &[Step],
    mut input: SendableRecordBatchStream,
    key: &str,
) -> Result<(SendableRecordBatchStream, Vec<Arc<StepCounter>>), TransformError> {
    let mut counters = Vec::with_capacity(steps.len());
    for step in steps {
        let counter = Arc::new(StepCounter::default());
        let counted_in = count(input, counter.clone(), |c| &c.records_in);
        let output = match &step.kind {
            StepKind::Sql { query } => {
                sql::apply(query, counted_in)
                    .await
                    .map_err(|source| TransformError::SqlPlan {
                        step: step.name.clone(),
                        source,
                    })?
            }
            StepKind::Container(container) => {
                container::apply(container, &step.name, key, counted_in)
                    .await
                    .map_err(|e| TransformError::Container(Box::new(e)))?
            }
        };
        input = count(output, counter.clone(), |c| &c.records_out);
        counters.push(counter);
    }
    Ok((input, counters))
}

/// Counts the batches of `stream` as the output of a step.
pub fn count_output(
    stream: SendableRecordBatchStream,
    counter: Arc<StepCounter>,
) -> SendableRecordBatchStream {
    count(stream, counter, |c| &c.records_out)
}

/// Passes batches through, adding their row counts to one field of `counter`.
fn count(
    stream: SendableRecordBatchStream,
    counter: Arc<StepCounter>,
    field: fn(&StepCounter) -> &AtomicU64,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let counted = stream.inspect(move |batch| {
        if let Ok(batch) = batch {
            field(&counter).fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, counted))
}
