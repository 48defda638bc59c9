//! The CSV decoder: chunks of whole records from [`ChunkReader`], each split into fields and
//! typed column by column into one batch by [`ChunkDecoder`].

use std::io::BufRead;

use arrow::array::{BooleanArray, RecordBatchOptions};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::column::{Column, RowErrors};
use super::csv_chunks::{Chunk, ChunkFields, ChunkReader, FieldBuffers, locate_records};
use super::csv_records::Dialect;
use super::decode::{BadRecord, DecodeError, Decoded, Decoder, HeaderMismatch, columns};
use super::options::{CsvReadOptions, SourceFormat};

/// Opens the chunk reader of a CSV stream, checking its header, and the decoder of its chunks.
pub(crate) fn open_chunks(
    reader: Box<dyn BufRead + Send>,
    schema: SchemaRef,
    options: &CsvReadOptions,
    origin: &str,
) -> Result<(ChunkReader, ChunkDecoder), DecodeError> {
    let dialect = Dialect::from_options(options);
    let columns = columns(&schema, SourceFormat::Csv)?;
    let mut reader = ChunkReader::new(reader, dialect);
    if options.header
        && let Some(names) = reader.header().map_err(|e| e.into_decode_error(origin))?
    {
        check_header(&names, &columns, origin)?;
    }
    let decoder = ChunkDecoder {
        columns,
        schema,
        nulls: NullMarkers::new(&options.null_values),
        dialect,
        origin: origin.to_string(),
    };
    Ok((reader, decoder))
}

/// Decodes chunks into batches; it keeps nothing between chunks, so threads can share it.
pub(crate) struct ChunkDecoder {
    columns: Vec<Column>,
    schema: SchemaRef,
    nulls: NullMarkers,
    dialect: Dialect,
    pub(crate) origin: String,
}

impl ChunkDecoder {
    /// The chunk's good records as a batch, and its bad records, in input order.
    pub(crate) fn decode(
        &self,
        chunk: &Chunk,
        buffers: &mut FieldBuffers,
    ) -> Result<Decoded, DecodeError> {
        let records = chunk.records;
        let expected = self.columns.len();
        let mut errors = RowErrors::new(records);
        let fields = ChunkFields::split(
            &chunk.bytes,
            records,
            expected,
            &self.dialect,
            buffers,
            |r, found| {
                errors.mark(r, || format!("expected {expected} fields, found {found}"));
            },
        );
        let arrays = self
            .columns
            .iter()
            .enumerate()
            .map(|(c, column)| {
                column.parse_all(records, |r| fields.field(c, r), &self.nulls, &mut errors)
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(records));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .map_err(|source| self.batch_error(source))?;
        if errors.is_empty() {
            return Ok(Decoded {
                batch,
                bad: Vec::new(),
            });
        }
        let (bad_rows, messages) = errors.finish();
        let keep = BooleanArray::from(bad_rows.iter().map(|bad| !bad).collect::<Vec<_>>());
        let batch =
            filter_record_batch(&batch, &keep).map_err(|source| self.batch_error(source))?;
        let rows: Vec<usize> = messages.iter().map(|(row, _)| *row).collect();
        let located = locate_records(chunk, &self.dialect, &rows);
        let bad = messages
            .into_iter()
            .zip(located)
            .map(|((_, error), (line, raw))| BadRecord {
                line,
                raw: String::from_utf8_lossy(raw).into_owned(),
                error,
            })
            .collect();
        Ok(Decoded { batch, bad })
    }

    fn batch_error(&self, source: arrow::error::ArrowError) -> DecodeError {
        DecodeError::Batch {
            origin: self.origin.clone(),
            source,
        }
    }
}

/// Decodes a CSV stream on the calling thread, one chunk (one batch) at a time.
pub(crate) struct CsvDecoder {
    reader: ChunkReader,
    chunks: ChunkDecoder,
    buffers: FieldBuffers,
    batch_rows: usize,
    seen: u64,
}

impl CsvDecoder {
    pub(crate) fn new(
        reader: Box<dyn BufRead + Send>,
        schema: SchemaRef,
        options: &CsvReadOptions,
        batch_rows: usize,
        origin: &str,
    ) -> Result<Self, DecodeError> {
        let (reader, chunks) = open_chunks(reader, schema, options, origin)?;
        Ok(CsvDecoder {
            reader,
            chunks,
            buffers: FieldBuffers::default(),
            batch_rows,
            seen: 0,
        })
    }
}

impl Decoder for CsvDecoder {
    fn next(&mut self) -> Result<Option<Decoded>, DecodeError> {
        let chunk = self
            .reader
            .next_chunk(self.batch_rows)
            .map_err(|e| e.into_decode_error(&self.chunks.origin))?;
        let Some(chunk) = chunk else {
            return Ok(None);
        };
        self.seen += chunk.records as u64;
        self.chunks.decode(&chunk, &mut self.buffers).map(Some)
    }

    fn records(&self) -> u64 {
        self.seen
    }
}

fn check_header(names: &[String], columns: &[Column], origin: &str) -> Result<(), DecodeError> {
    for i in 0..names.len().max(columns.len()) {
        let name = names.get(i).map(|n| n.trim()).unwrap_or("");
        let expected = columns.get(i).map(|c| c.name.as_str()).unwrap_or("");
        if name != expected {
            return Err(DecodeError::HeaderMismatch(Box::new(HeaderMismatch {
                origin: origin.to_string(),
                column: i + 1,
                expected: expected.to_string(),
                found: name.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::column::{ColumnType, Value};
    use crate::format::csv_records::CsvRecords;
    use crate::format::temporal::FORMAT_METADATA_KEY;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::io::{BufReader, Cursor};
    use std::sync::Arc;

    /// The decoder as it was before chunks: record by record from the streaming splitter,
    /// every field parsed and checked in column order, a record appended only when all of its
    /// fields parsed. The chunked decoders must give exactly its batches, bad records and
    /// counts.
    fn record_by_record(
        input: &[u8],
        schema: &SchemaRef,
        options: &CsvReadOptions,
        batch_rows: usize,
    ) -> (Vec<RecordBatch>, Vec<BadRecord>, u64) {
        let reader = Box::new(BufReader::with_capacity(5, Cursor::new(input.to_vec())));
        let mut records = CsvRecords::new(reader, Dialect::from_options(options));
        let columns = columns(schema, SourceFormat::Csv).unwrap();
        let nulls = NullMarkers::new(&options.null_values);
        let has_utf8 = columns.iter().any(|c| matches!(c.ty, ColumnType::Utf8));
        if options.header {
            records.next_record().unwrap();
        }
        let (mut batches, mut bad, mut seen) = (Vec::new(), Vec::new(), 0u64);
        let mut done = false;
        while !done {
            let mut builders: Vec<_> = columns.iter().map(|c| c.builder(batch_rows)).collect();
            let (mut good, mut bad_here) = (0, 0);
            while good + bad_here < batch_rows {
                if !records.next_record().unwrap() {
                    done = true;
                    break;
                }
                seen += 1;
                let decoded = (|| {
                    if records.len() != columns.len() {
                        return Err(format!(
                            "expected {} fields, found {}",
                            columns.len(),
                            records.len()
                        ));
                    }
                    let checked = !has_utf8 || std::str::from_utf8(records.raw()).is_ok();
                    let mut values = Vec::new();
                    for (i, column) in columns.iter().enumerate() {
                        let text = records.field(i);
                        values.push(if nulls.is_null(text) {
                            if !column.nullable {
                                return Err(column.null_error());
                            }
                            Value::Null
                        } else if let ColumnType::Utf8 = column.ty {
                            if !checked && std::str::from_utf8(text).is_err() {
                                return Err(column.utf8_error(text));
                            }
                            Value::Text
                        } else {
                            column.parse(text)?
                        });
                    }
                    Ok(values)
                })();
                match decoded {
                    Ok(values) => {
                        for (i, builder) in builders.iter_mut().enumerate() {
                            builder.append(values[i], records.field(i));
                        }
                        good += 1;
                    }
                    Err(error) => {
                        bad_here += 1;
                        bad.push(BadRecord {
                            line: records.record_line(),
                            raw: String::from_utf8_lossy(records.raw()).into_owned(),
                            error,
                        });
                    }
                }
            }
            if good + bad_here > 0 {
                let arrays = builders.iter_mut().map(|b| b.finish()).collect();
                let options = RecordBatchOptions::new().with_row_count(Some(good));
                batches.push(
                    RecordBatch::try_new_with_options(schema.clone(), arrays, &options).unwrap(),
                );
            }
        }
        (batches, bad, seen)
    }

    fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("at", ts.clone(), true)
                .with_metadata([(FORMAT_METADATA_KEY.into(), "%Y-%m-%d %H:%M:%S".into())].into()),
            Field::new("x", DataType::Float64, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new("n", DataType::Int64, true),
            Field::new("t2", ts, true),
        ]))
    }

    /// A random CSV whose fields are good and bad values, quoted, escaped, with newlines,
    /// invalid UTF-8, and whose lines are sometimes empty, comments, short or long.
    fn random_csv(seed: u64, records: usize, escape: bool) -> Vec<u8> {
        let mut state = seed | 1;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let pieces: [&[&[u8]]; 8] = [
            &[
                b"1",
                b"42",
                b"-7",
                b" 3 ",
                b"x",
                b"",
                b"99999999999",
                b"\"5\"",
            ],
            &[
                b"a",
                b"",
                b"\"q,\nq\"",
                b"\"d\"\"q\"",
                b"NA",
                b"\xFF\xFE",
                b"\"e\\\"s\"",
                b"\xC3\xA9",
            ],
            &[
                b"2024-02-29 01:02:03",
                b"2026-02-30 00:00:00",
                b"",
                b"2024-01-01 00:00:00.5",
                b"2024-1-1 0:0:0",
                b"2024-12-31 23:59:60",
            ],
            &[
                b"21.79",
                b"-0.50",
                b"1e3",
                b"nan",
                b"abc",
                b"",
                b"0.1",
                b"12345678901234567",
            ],
            &[b"true", b"F", b"yes", b"maybe", b""],
            &[b"2024-02-29", b"2023-02-29", b"", b"2024-13-01"],
            &[
                b"9223372036854775807",
                b"9223372036854775808",
                b"0",
                b"-1",
                b"",
            ],
            &[
                b"2024-01-02T03:04:05Z",
                b"2024-01-02 03:04:05.123456789",
                b"bad",
                b"",
            ],
        ];
        let mut out = Vec::new();
        if next(2) == 0 {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        out.extend_from_slice(b"id,name,at,x,flag,day,n,t2\n");
        for _ in 0..records {
            match next(40) {
                0 => out.extend_from_slice(b"\n"),
                1 => out.extend_from_slice(b"\r\n"),
                2 => out.extend_from_slice(b"# a comment, \"with a quote\n"),
                _ => {
                    let fields = match next(30) {
                        0 => 7,
                        1 => 9,
                        _ => 8,
                    };
                    for f in 0..fields {
                        if f > 0 {
                            out.push(b',');
                        }
                        let choices = pieces[f % 8];
                        let piece = choices[next(choices.len() as u64) as usize];
                        if !escape && piece.contains(&b'\\') {
                            out.extend_from_slice(b"plain");
                        } else {
                            out.extend_from_slice(piece);
                        }
                    }
                    out.extend_from_slice(if next(5) == 0 { b"\r\n" } else { b"\n" });
                }
            }
        }
        if next(2) == 0 {
            // No final line terminator.
            while out.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                out.pop();
            }
        }
        out
    }

    #[test]
    fn chunked_decoding_equals_record_by_record_decoding() {
        let schema = schema();
        for seed in 1..=12u64 {
            let escape = seed % 2 == 0;
            let input = random_csv(seed, 3000, escape);
            let options = CsvReadOptions {
                escape: escape.then_some(b'\\'),
                comment: (seed % 3 != 0).then_some(b'#'),
                null_values: if seed % 4 == 0 {
                    vec![String::new(), "NA".into()]
                } else {
                    vec![String::new()]
                },
                ..CsvReadOptions::default()
            };
            let batch_rows = [1, 7, 100, 5000][seed as usize % 4];
            let expected = record_by_record(&input, &schema, &options, batch_rows);
            assert!(!expected.1.is_empty());
            for threads in [0, 1, 2] {
                let reader = Box::new(BufReader::with_capacity(7, Cursor::new(input.clone())));
                let mut decoder = crate::format::open_parallel_decoder(
                    SourceFormat::Csv,
                    reader,
                    schema.clone(),
                    &options,
                    batch_rows,
                    threads,
                    "k",
                )
                .unwrap();
                let (mut batches, mut bad) = (Vec::new(), Vec::new());
                while let Some(decoded) = decoder.next().unwrap() {
                    batches.push(decoded.batch);
                    bad.extend(decoded.bad);
                }
                let context = format!("seed {seed}, {threads} threads");
                assert_eq!(bad, expected.1, "{context}");
                assert_eq!(batches, expected.0, "{context}");
                assert_eq!(decoder.records(), expected.2, "{context}");
            }
        }
    }
}
