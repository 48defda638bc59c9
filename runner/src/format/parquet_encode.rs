//! The Parquet encoder: `ArrowWriter`, one row group written out as soon as it is full.

use std::io::Write;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::encode::{EncodeError, Encoder};
use super::options::{ParquetCompression, ParquetWriteOptions};

/// Zstd level 1: within a few percent of level 3's size on columnar data, at a clearly
/// higher speed.
const ZSTD_LEVEL: i32 = 1;

pub(crate) struct ParquetEncoder {
    writer: ArrowWriter<Box<dyn Write + Send>>,
    rows: u64,
}

/// The writer properties for the options.
pub(crate) fn writer_properties(
    schema: &SchemaRef,
    options: &ParquetWriteOptions,
) -> Result<WriterProperties, EncodeError> {
    let compression = match options.compression {
        ParquetCompression::Zstd => Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).map_err(|source| EncodeError::Parquet { source })?,
        ),
        ParquetCompression::Snappy => Compression::SNAPPY,
        ParquetCompression::None => Compression::UNCOMPRESSED,
    };
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        // Page statistics (the parquet default) stay on: they feed the page index readers
        // prune with, and dropping to chunk statistics saved no measurable encode time.
        .set_dictionary_enabled(true);
    // Timestamps are close to unique per row: a dictionary is built, overflows its page
    // limit and is abandoned, which costs a third of the encode time of a taxi-like table
    // and makes the file larger. Every other column keeps its dictionary.
    for field in schema.fields() {
        if matches!(field.data_type(), DataType::Timestamp(..)) {
            let column = ColumnPath::from(field.name().as_str());
            builder = builder.set_column_dictionary_enabled(column, false);
        }
    }
    Ok(builder.build())
}

impl ParquetEncoder {
    pub(crate) fn new(
        schema: SchemaRef,
        options: &ParquetWriteOptions,
        writer: Box<dyn Write + Send>,
    ) -> Result<Self, EncodeError> {
        let properties = writer_properties(&schema, options)?;
        let writer = ArrowWriter::try_new(writer, schema, Some(properties))
            .map_err(|source| EncodeError::Parquet { source })?;
        Ok(ParquetEncoder { writer, rows: 0 })
    }
}

impl Encoder for ParquetEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), EncodeError> {
        self.writer
            .write(batch)
            .map_err(|source| EncodeError::Parquet { source })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<u64, EncodeError> {
        // `into_inner` flushes the last row group and writes the footer.
        let mut inner = self
            .writer
            .into_inner()
            .map_err(|source| EncodeError::Parquet { source })?;
        inner.flush().map_err(|source| EncodeError::Write {
            format: "Parquet",
            source,
        })?;
        Ok(self.rows)
    }
}
