//! The CSV encoder: arrow-csv's writer, optionally compressed.
//!
//! Timestamps are written as RFC 3339: with the column's offset for a zoned column, and
//! without an offset for a column that has no time zone (its values are wall times).

use std::io::Write;

use arrow::csv::{Writer, WriterBuilder};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::compression::CompressWriter;
use super::encode::{EncodeError, Encoder};
use super::options::{Compression, CsvWriteOptions};

const FORMAT: &str = "CSV";

pub(crate) struct CsvEncoder {
    writer: Writer<CompressWriter<Box<dyn Write + Send>>>,
    schema: SchemaRef,
    written: bool,
    rows: u64,
}

impl CsvEncoder {
    pub(crate) fn new(
        schema: SchemaRef,
        options: &CsvWriteOptions,
        compression: Compression,
        writer: Box<dyn Write + Send>,
    ) -> Result<Self, EncodeError> {
        let inner =
            CompressWriter::new(writer, compression).map_err(|source| EncodeError::Write {
                format: FORMAT,
                source,
            })?;
        let writer = WriterBuilder::new()
            .with_delimiter(options.delimiter)
            .with_header(options.header)
            .with_date_format("%Y-%m-%d".to_string())
            .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.f".to_string())
            .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.f%:z".to_string())
            .build(inner);
        Ok(CsvEncoder {
            writer,
            schema,
            written: false,
            rows: 0,
        })
    }
}

impl Encoder for CsvEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), EncodeError> {
        self.writer
            .write(batch)
            .map_err(|source| EncodeError::Arrow {
                format: FORMAT,
                source,
            })?;
        self.rows += batch.num_rows() as u64;
        self.written = true;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64, EncodeError> {
        if !self.written {
            // An empty output still has its header.
            let empty = RecordBatch::new_empty(self.schema.clone());
            self.write(&empty)?;
        }
        self.writer
            .into_inner()
            .finish()
            .map_err(|source| EncodeError::Write {
                format: FORMAT,
                source,
            })?;
        Ok(self.rows)
    }
}
