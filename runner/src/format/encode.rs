//! The encoder contract and the choice of encoder for a sink format.

use std::io::Write;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::errors::ParquetError;

use super::csv_encode::CsvEncoder;
use super::jsonl_encode::JsonlEncoder;
use super::options::{Compression, CsvWriteOptions, ParquetWriteOptions, SinkFormat};
use super::parquet_encode::ParquetEncoder;
use crate::exit::ExitCode;

/// A streaming encoder of one output object.
pub trait Encoder: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), EncodeError>;
    /// Flushes and closes the format (Parquet footer, compression trailer); returns rows written.
    fn finish(self: Box<Self>) -> Result<u64, EncodeError>;
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The destination refused bytes (an upload failed, a pipe closed).
    #[error("writing the {format} output")]
    Write {
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding {format}")]
    Arrow {
        format: &'static str,
        #[source]
        source: ArrowError,
    },
    #[error("encoding Parquet")]
    Parquet {
        #[source]
        source: ParquetError,
    },
}

impl EncodeError {
    /// A destination that refused bytes may take them on a retry (1). An encoding failure
    /// fails again on the same records: the sink format cannot hold what the steps produce
    /// (a type it has no encoding for) or sluice has a bug. Either way a retry is wasted and
    /// a change to the job (another sink format, a cast in a step) or to sluice is needed,
    /// so it is a configuration error (2), never retried.
    pub fn exit_code(&self) -> ExitCode {
        if self.is_io() {
            ExitCode::Transient
        } else {
            ExitCode::Config
        }
    }
}

impl EncodeError {
    /// Whether the error came from the destination writer rather than the encoding.
    pub fn is_io(&self) -> bool {
        match self {
            EncodeError::Write { .. } => true,
            EncodeError::Arrow { source, .. } => matches!(source, ArrowError::IoError(..)),
            EncodeError::Parquet { source } => match source {
                ParquetError::External(e) => e.is::<std::io::Error>(),
                _ => false,
            },
        }
    }
}

/// Opens an encoder writing `format` to `writer`. `compression` applies to text sinks only;
/// Parquet compresses its pages per `parquet`.
pub fn open_encoder(
    format: SinkFormat,
    schema: SchemaRef,
    parquet: &ParquetWriteOptions,
    csv: &CsvWriteOptions,
    compression: Compression,
    writer: Box<dyn Write + Send>,
) -> Result<Box<dyn Encoder>, EncodeError> {
    Ok(match format {
        SinkFormat::Parquet => Box::new(ParquetEncoder::new(schema, parquet, writer)?),
        SinkFormat::Csv => Box::new(CsvEncoder::new(schema, csv, compression, writer)?),
        SinkFormat::Jsonl => Box::new(JsonlEncoder::new(compression, writer)?),
    })
}
