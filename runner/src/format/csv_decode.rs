//! The CSV decoder: records from [`CsvRecords`], typed straight into Arrow builders.

use std::io::BufRead;

use arrow::array::RecordBatchOptions;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::column::{Column, ColumnBuilder, ColumnType, Value};
use super::csv_records::{CsvRecords, Dialect};
use super::decode::{BadRecord, DecodeError, Decoded, Decoder, HeaderMismatch, columns};
use super::options::{CsvReadOptions, SourceFormat};

/// A batch ends early when its string data reaches this, far below Utf8's 2 GiB offsets.
const MAX_BATCH_TEXT_BYTES: usize = 1 << 30;

pub(crate) struct CsvDecoder {
    records: CsvRecords,
    schema: SchemaRef,
    columns: Vec<Column>,
    builders: Vec<ColumnBuilder>,
    values: Vec<Value>,
    nulls: NullMarkers,
    has_utf8: bool,
    batch_rows: usize,
    origin: String,
    seen: u64,
    done: bool,
}

impl CsvDecoder {
    pub(crate) fn new(
        reader: Box<dyn BufRead + Send>,
        schema: SchemaRef,
        options: &CsvReadOptions,
        batch_rows: usize,
        origin: &str,
    ) -> Result<Self, DecodeError> {
        let records = CsvRecords::new(reader, Dialect::from_options(options));
        Self::with_records(records, schema, options, batch_rows, origin)
    }

    pub(crate) fn with_records(
        mut records: CsvRecords,
        schema: SchemaRef,
        options: &CsvReadOptions,
        batch_rows: usize,
        origin: &str,
    ) -> Result<Self, DecodeError> {
        let columns = columns(&schema, SourceFormat::Csv)?;
        if options.header
            && records
                .next_record()
                .map_err(|e| e.into_decode_error(origin))?
        {
            check_header(&records, &columns, origin)?;
        }
        Ok(CsvDecoder {
            builders: columns.iter().map(|c| c.builder(batch_rows)).collect(),
            values: vec![Value::Null; columns.len()],
            has_utf8: columns.iter().any(|c| matches!(c.ty, ColumnType::Utf8)),
            nulls: NullMarkers::new(&options.null_values),
            columns,
            records,
            schema,
            batch_rows,
            origin: origin.to_string(),
            seen: 0,
            done: false,
        })
    }

    /// Types the current record into the builders, or says why it is bad.
    fn decode_record(&mut self) -> Result<(), String> {
        let records = &self.records;
        let found = records.len();
        if found != self.columns.len() {
            return Err(format!(
                "expected {} fields, found {found}",
                self.columns.len()
            ));
        }
        // Fields split a record at ASCII bytes, so a valid record has valid fields: one check
        // of the record instead of one per string field.
        let text_checked = !self.has_utf8 || std::str::from_utf8(records.raw()).is_ok();
        for (i, column) in self.columns.iter().enumerate() {
            let text = records.field(i);
            self.values[i] = if self.nulls.is_null(text) {
                if !column.nullable {
                    return Err(column.null_error());
                }
                Value::Null
            } else if let ColumnType::Utf8 = column.ty {
                if !text_checked && std::str::from_utf8(text).is_err() {
                    return Err(column.utf8_error(text));
                }
                Value::Text
            } else {
                column.parse(text)?
            };
        }
        for (i, builder) in self.builders.iter_mut().enumerate() {
            builder.append(self.values[i], records.field(i));
        }
        Ok(())
    }

    fn finish_batch(&mut self, rows: usize) -> Result<RecordBatch, DecodeError> {
        let arrays = self.builders.iter_mut().map(|b| b.finish()).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options).map_err(|source| {
            DecodeError::Batch {
                origin: self.origin.clone(),
                source,
            }
        })
    }
}

impl Decoder for CsvDecoder {
    fn next(&mut self) -> Result<Option<Decoded>, DecodeError> {
        if self.done {
            return Ok(None);
        }
        let mut good = 0usize;
        let mut bad = Vec::new();
        while good + bad.len() < self.batch_rows {
            let more = self
                .records
                .next_record()
                .map_err(|e| e.into_decode_error(&self.origin))?;
            if !more {
                self.done = true;
                break;
            }
            self.seen += 1;
            match self.decode_record() {
                Ok(()) => good += 1,
                Err(error) => bad.push(BadRecord {
                    line: self.records.record_line(),
                    raw: String::from_utf8_lossy(self.records.raw()).into_owned(),
                    error,
                }),
            }
            if good.is_multiple_of(4096)
                && self.has_utf8
                && self.builders.iter().map(|b| b.text_bytes()).sum::<usize>()
                    >= MAX_BATCH_TEXT_BYTES
            {
                break;
            }
        }
        if good == 0 && bad.is_empty() {
            return Ok(None);
        }
        let batch = self.finish_batch(good)?;
        Ok(Some(Decoded { batch, bad }))
    }

    fn records(&self) -> u64 {
        self.seen
    }
}

fn check_header(records: &CsvRecords, columns: &[Column], origin: &str) -> Result<(), DecodeError> {
    let found = records.len();
    for i in 0..found.max(columns.len()) {
        let name = if i < found {
            String::from_utf8_lossy(records.field(i)).trim().to_string()
        } else {
            String::new()
        };
        let expected = columns.get(i).map(|c| c.name.as_str()).unwrap_or("");
        if name != expected {
            return Err(DecodeError::HeaderMismatch(Box::new(HeaderMismatch {
                origin: origin.to_string(),
                column: i + 1,
                expected: expected.to_string(),
                found: name,
            })));
        }
    }
    Ok(())
}

/// The field values that mean null, compared on the unquoted field.
pub(crate) struct NullMarkers {
    empty: bool,
    others: Vec<Vec<u8>>,
}

impl NullMarkers {
    pub(crate) fn new(values: &[String]) -> Self {
        NullMarkers {
            empty: values.iter().any(|v| v.is_empty()),
            others: values
                .iter()
                .filter(|v| !v.is_empty())
                .map(|v| v.as_bytes().to_vec())
                .collect(),
        }
    }

    #[inline]
    pub(crate) fn is_null(&self, text: &[u8]) -> bool {
        if text.is_empty() {
            return self.empty;
        }
        !self.others.is_empty() && self.others.iter().any(|v| v == text)
    }
}
