//! The JSONL decoder: arrow-json over chunks of lines, narrowing down to single lines to find
//! the bad ones when a chunk fails.
//!
//! arrow-json reports an error for a whole chunk, not the line it came from. A chunk that
//! fails (or yields a row count other than its line count) is decoded again line by line,
//! each with a fresh decoder; the lines that fail alone are the bad records and the rest are
//! decoded together.
//!
//! Differences from arrow-json on its own, so JSONL means what CSV means:
//! - a date or timestamp column with a `sluice.format` is read as text and parsed with that
//!   format here (arrow-json knows only its default formats);
//! - an object or array in a Utf8 column is kept as its JSON text (object keys sorted);
//! - numbers and booleans in a Utf8 column are kept as their text.

use std::io::BufRead;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatchOptions, StringArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;

use super::column::{Column, ColumnType, Value};
use super::decode::{BadRecord, DecodeError, Decoded, Decoder, columns};
use super::options::SourceFormat;
use super::temporal::FORMAT_METADATA_KEY;

/// One non-empty line of the current chunk.
#[derive(Debug, Clone, Copy)]
struct Line {
    number: u64,
    start: usize,
    end: usize,
}

pub(crate) struct JsonlDecoder {
    reader: Box<dyn BufRead + Send>,
    schema: SchemaRef,
    /// The schema arrow-json decodes: columns with a custom format are Utf8 here.
    decode_schema: SchemaRef,
    /// Columns parsed from text after arrow-json, by index.
    converted: Vec<(usize, Column)>,
    utf8_columns: Vec<String>,
    batch_rows: usize,
    origin: String,
    chunk: Vec<u8>,
    lines: Vec<Line>,
    next_line: u64,
    seen: u64,
    done: bool,
}

impl JsonlDecoder {
    pub(crate) fn new(
        reader: Box<dyn BufRead + Send>,
        schema: SchemaRef,
        batch_rows: usize,
        origin: &str,
    ) -> Result<Self, DecodeError> {
        let all = columns(&schema, SourceFormat::Jsonl)?;
        let mut converted = Vec::new();
        let mut decode_fields = Vec::with_capacity(all.len());
        for (i, (column, field)) in all.into_iter().zip(schema.fields()).enumerate() {
            let custom = field.metadata().contains_key(FORMAT_METADATA_KEY)
                && matches!(column.ty, ColumnType::Date32(_) | ColumnType::Timestamp(_));
            if custom {
                decode_fields.push(Arc::new(Field::new(
                    field.name(),
                    DataType::Utf8,
                    field.is_nullable(),
                )));
                converted.push((i, column));
            } else {
                decode_fields.push(field.clone());
            }
        }
        let utf8_columns = schema
            .fields()
            .iter()
            .filter(|f| f.data_type() == &DataType::Utf8)
            .map(|f| f.name().clone())
            .collect();
        Ok(JsonlDecoder {
            reader,
            decode_schema: Arc::new(Schema::new(decode_fields)),
            schema,
            converted,
            utf8_columns,
            batch_rows,
            origin: origin.to_string(),
            chunk: Vec::new(),
            lines: Vec::new(),
            next_line: 1,
            seen: 0,
            done: false,
        })
    }

    /// Reads up to `batch_rows` non-empty lines into the chunk, each ending in `\n`.
    fn fill_chunk(&mut self) -> Result<(), DecodeError> {
        self.chunk.clear();
        self.lines.clear();
        while self.lines.len() < self.batch_rows {
            let start = self.chunk.len();
            let n = self
                .reader
                .read_until(b'\n', &mut self.chunk)
                .map_err(|source| DecodeError::Read {
                    origin: self.origin.clone(),
                    source,
                })?;
            if n == 0 {
                self.done = true;
                break;
            }
            let number = self.next_line;
            self.next_line += 1;
            let mut end = self.chunk.len();
            while end > start && matches!(self.chunk[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if self.chunk[start..end].trim_ascii().is_empty() {
                self.chunk.truncate(start);
                continue;
            }
            self.chunk.truncate(end);
            self.chunk.push(b'\n');
            self.lines.push(Line { number, start, end });
        }
        Ok(())
    }

    fn decode_chunk(&self, input: &[u8], rows: usize) -> Result<RecordBatch, String> {
        let mut decoder = ReaderBuilder::new(self.decode_schema.clone())
            .with_batch_size(rows.max(1))
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        let consumed = decoder.decode(input).map_err(|e| e.to_string())?;
        if consumed != input.len() || decoder.has_partial_record() {
            return Err("incomplete JSON value".to_string());
        }
        let batch = decoder
            .flush()
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| RecordBatch::new_empty(self.decode_schema.clone()));
        if batch.num_rows() != rows {
            return Err(format!(
                "expected one JSON object per line, found {} in {rows} line(s)",
                batch.num_rows()
            ));
        }
        Ok(batch)
    }

    /// Decodes one line alone; a line with an object or array in a Utf8 column gets a second
    /// try with those values as JSON text.
    fn decode_line(&self, line: &[u8]) -> Result<Vec<u8>, String> {
        let mut input = line.to_vec();
        input.push(b'\n');
        let first = match self.decode_chunk(&input, 1) {
            Ok(_) => return Ok(input),
            Err(error) => error,
        };
        if let Some(mut normalized) = self.nested_as_text(line) {
            normalized.push(b'\n');
            if self.decode_chunk(&normalized, 1).is_ok() {
                return Ok(normalized);
            }
        }
        Err(first)
    }

    fn nested_as_text(&self, line: &[u8]) -> Option<Vec<u8>> {
        if self.utf8_columns.is_empty() {
            return None;
        }
        let mut value: serde_json::Value = serde_json::from_slice(line).ok()?;
        let object = value.as_object_mut()?;
        let mut changed = false;
        for name in &self.utf8_columns {
            if let Some(v) = object.get_mut(name)
                && (v.is_object() || v.is_array())
            {
                *v = serde_json::Value::String(v.to_string());
                changed = true;
            }
        }
        if !changed {
            return None;
        }
        serde_json::to_vec(&value).ok()
    }

    /// Parses the custom-format columns from their text; rows that fail become bad records.
    fn convert(
        &self,
        batch: RecordBatch,
        lines: &[Line],
        bad: &mut Vec<BadRecord>,
    ) -> Result<RecordBatch, DecodeError> {
        if self.converted.is_empty() {
            return RecordBatch::try_new_with_options(
                self.schema.clone(),
                batch.columns().to_vec(),
                &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )
            .map_err(|source| self.batch_error(source));
        }
        let rows = batch.num_rows();
        let mut keep = vec![true; rows];
        let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
        let mut errors: Vec<Option<String>> = vec![None; rows];
        for (index, column) in &self.converted {
            let text = arrays[*index]
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("custom-format columns are decoded as Utf8");
            let mut builder = column.builder(rows);
            for row in 0..rows {
                if text.is_null(row) || !keep[row] {
                    builder.append(Value::Null, b"");
                    continue;
                }
                match column.parse(text.value(row).as_bytes()) {
                    Ok(value) => builder.append(value, b""),
                    Err(error) => {
                        keep[row] = false;
                        errors[row] = Some(error);
                        builder.append(Value::Null, b"");
                    }
                }
            }
            arrays[*index] = builder.finish();
        }
        let converted = RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|source| self.batch_error(source))?;
        if keep.iter().all(|k| *k) {
            return Ok(converted);
        }
        for (row, error) in errors.into_iter().enumerate() {
            if let Some(error) = error {
                bad.push(self.bad_record(lines[row], error));
            }
        }
        bad.sort_by_key(|b| b.line);
        filter_record_batch(&converted, &BooleanArray::from(keep))
            .map_err(|source| self.batch_error(source))
    }

    fn bad_record(&self, line: Line, error: String) -> BadRecord {
        BadRecord {
            line: line.number,
            raw: String::from_utf8_lossy(&self.chunk[line.start..line.end]).into_owned(),
            error,
        }
    }

    fn batch_error(&self, source: arrow::error::ArrowError) -> DecodeError {
        DecodeError::Batch {
            origin: self.origin.clone(),
            source,
        }
    }
}

impl Decoder for JsonlDecoder {
    fn next(&mut self) -> Result<Option<Decoded>, DecodeError> {
        if self.done {
            return Ok(None);
        }
        self.fill_chunk()?;
        if self.lines.is_empty() {
            return Ok(None);
        }
        self.seen += self.lines.len() as u64;
        let mut bad = Vec::new();
        let (batch, good_lines) = match self.decode_chunk(&self.chunk, self.lines.len()) {
            Ok(batch) => (batch, self.lines.clone()),
            Err(_) => {
                let mut input = Vec::with_capacity(self.chunk.len());
                let mut good_lines = Vec::with_capacity(self.lines.len());
                for line in &self.lines {
                    match self.decode_line(&self.chunk[line.start..line.end]) {
                        Ok(text) => {
                            input.extend_from_slice(&text);
                            good_lines.push(*line);
                        }
                        Err(error) => bad.push(self.bad_record(*line, error)),
                    }
                }
                let batch = if good_lines.is_empty() {
                    RecordBatch::new_empty(self.decode_schema.clone())
                } else {
                    self.decode_chunk(&input, good_lines.len())
                        .map_err(|message| DecodeError::Json {
                            origin: self.origin.clone(),
                            source: arrow::error::ArrowError::JsonError(message),
                        })?
                };
                (batch, good_lines)
            }
        };
        let batch = self.convert(batch, &good_lines, &mut bad)?;
        Ok(Some(Decoded { batch, bad }))
    }

    fn records(&self) -> u64 {
        self.seen
    }
}
