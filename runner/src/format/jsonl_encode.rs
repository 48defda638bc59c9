//! The JSONL encoder: arrow-json's line-delimited writer, optionally compressed. Nulls are
//! left out of each object.

use std::io::{BufWriter, Write};

use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;

use super::compression::CompressWriter;
use super::encode::{EncodeError, Encoder};
use super::options::Compression;

const FORMAT: &str = "JSONL";

pub(crate) struct JsonlEncoder {
    writer: LineDelimitedWriter<BufWriter<CompressWriter<Box<dyn Write + Send>>>>,
    rows: u64,
}

impl JsonlEncoder {
    pub(crate) fn new(
        compression: Compression,
        writer: Box<dyn Write + Send>,
    ) -> Result<Self, EncodeError> {
        let inner =
            CompressWriter::new(writer, compression).map_err(|source| EncodeError::Write {
                format: FORMAT,
                source,
            })?;
        Ok(JsonlEncoder {
            writer: LineDelimitedWriter::new(BufWriter::with_capacity(256 * 1024, inner)),
            rows: 0,
        })
    }
}

impl Encoder for JsonlEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), EncodeError> {
        self.writer
            .write(batch)
            .map_err(|source| EncodeError::Arrow {
                format: FORMAT,
                source,
            })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64, EncodeError> {
        self.writer.finish().map_err(|source| EncodeError::Arrow {
            format: FORMAT,
            source,
        })?;
        let write_error = |source| EncodeError::Write {
            format: FORMAT,
            source,
        };
        let buffered = self.writer.into_inner();
        let inner = buffered
            .into_inner()
            .map_err(|e| write_error(e.into_error()))?;
        inner.finish().map_err(write_error)?;
        Ok(self.rows)
    }
}
