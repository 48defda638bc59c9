//! The decoder contract: batches of good records plus the bad records met on the way.

use std::io::BufRead;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::column::{Column, ColumnSpecError};
use super::csv_decode::CsvDecoder;
use super::csv_parallel::ParallelCsvDecoder;
use super::jsonl_decode::JsonlDecoder;
use super::options::{CsvReadOptions, SourceFormat};
use crate::exit::ExitCode;

/// A record that could not be decoded; it is reported, not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The 1-based physical line where the record starts.
    pub line: u64,
    /// The record's bytes (lossy UTF-8), without its line terminator.
    pub raw: String,
    /// What is wrong, naming the column and value: `column fare (float64): cannot parse "abc"`.
    pub error: String,
}

/// One step of decoding: good records as a batch, and the bad records met while filling it.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub batch: RecordBatch,
    pub bad: Vec<BadRecord>,
}

/// A streaming decoder of one source object.
pub trait Decoder: Send {
    /// The next batch of good records (up to batch_rows) plus the bad records met while
    /// filling it; None at the end.
    fn next(&mut self) -> Result<Option<Decoded>, DecodeError>;
    /// Records seen so far, good and bad (header and comment/empty lines excluded).
    fn records(&self) -> u64;
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The underlying reader failed: the network (exit 1), or decompression of corrupt or
    /// truncated data (a [`super::CorruptInput`] source, exit 4).
    #[error("reading {origin}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// With a header, its names must be the schema's names in order.
    #[error(transparent)]
    HeaderMismatch(Box<HeaderMismatch>),
    #[error("column {column} has type {data_type}, which {format:?} sources cannot decode")]
    UnsupportedType {
        format: SourceFormat,
        column: String,
        data_type: DataType,
    },
    #[error("column {column} has an unknown time zone: {message}")]
    InvalidTimeZone { column: String, message: String },
    #[error("{format:?} sources are not decoded as a record stream")]
    UnsupportedFormat { format: SourceFormat },
    /// Data the JSON decoder rejected as a whole (not attributable to one line).
    #[error("decoding {origin}")]
    Json {
        origin: String,
        #[source]
        source: ArrowError,
    },
    /// Assembling decoded columns into a batch failed: an invariant of the decoder broke.
    #[error("assembling a batch from {origin}")]
    Batch {
        origin: String,
        #[source]
        source: ArrowError,
    },
    /// A record longer than `source.csv.max_record_size`: an unclosed quote, most likely.
    #[error(
        "{origin}: the record at line {line} is longer than {limit} bytes (source.csv.max_record_size): an unclosed quote, or raise the limit"
    )]
    RecordTooLong {
        origin: String,
        line: u64,
        limit: usize,
    },
    /// No record boundary follows a cut of a split object: however the bytes after it are
    /// read, a record there is longer than the limit (see `csv_cut`).
    #[error(
        "{origin}: no record boundary after byte {near}: every reading of the bytes there has a record longer than {limit} bytes (source.csv.max_record_size): an unclosed quote, or raise the limit"
    )]
    NoRecordBoundary {
        origin: String,
        near: u64,
        limit: u64,
    },
    /// A range of a split object ends inside a record, so its cut was not a record boundary:
    /// a record there is longer than the limit, or the object is not CSV of the configured
    /// dialect.
    #[error(
        "{origin} line {line}: the range ends inside a record, so the cut after it is not a record boundary: a record there is longer than source.csv.max_record_size, or the object is not CSV of the configured dialect"
    )]
    CutInsideRecord { origin: String, line: u64 },
    #[error("no records to infer a schema from")]
    EmptySample,
}

impl DecodeError {
    pub fn exit_code(&self) -> ExitCode {
        use DecodeError as E;
        match self {
            // Corrupt or truncated compressed data fails again; the reader below (S3, the
            // network) failing may not.
            E::Read { source, .. } if super::compression::is_corrupt_input(source) => {
                ExitCode::BadData
            }
            E::Read { .. } => ExitCode::Transient,
            // Assembling columns the decoder built itself cannot fail on data: a bug, which
            // a retry does not fix (see `EncodeError::exit_code`).
            E::Batch { .. } => ExitCode::Config,
            E::HeaderMismatch { .. }
            | E::Json { .. }
            | E::RecordTooLong { .. }
            | E::CutInsideRecord { .. }
            | E::NoRecordBoundary { .. }
            | E::EmptySample => ExitCode::BadData,
            E::UnsupportedType { .. } | E::InvalidTimeZone { .. } | E::UnsupportedFormat { .. } => {
                ExitCode::Config
            }
        }
    }
}

/// A header name that differs from the schema's name at the same position (boxed in
/// [`DecodeError`] to keep that small).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: header column {column} is {found:?} but the schema expects {expected:?}")]
pub struct HeaderMismatch {
    pub origin: String,
    /// 1-based column position.
    pub column: usize,
    pub expected: String,
    pub found: String,
}

impl From<std::io::Error> for DecodeError {
    fn from(source: std::io::Error) -> Self {
        DecodeError::Read {
            origin: "the input".to_string(),
            source,
        }
    }
}

/// Opens a streaming decoder for a text source, decoding on the calling thread. `origin`
/// names the object in messages.
pub fn open_decoder(
    format: SourceFormat,
    reader: Box<dyn BufRead + Send>,
    schema: SchemaRef,
    csv: &CsvReadOptions,
    batch_rows: usize,
    origin: &str,
) -> Result<Box<dyn Decoder>, DecodeError> {
    open_parallel_decoder(format, reader, schema, csv, batch_rows, 0, origin)
}

/// [`open_decoder`], with CSV decoded on `threads` threads besides one that reads, when
/// `threads` is not 0 (JSONL always decodes on the calling thread). The batches, bad records
/// and counts are the same as on the calling thread.
pub fn open_parallel_decoder(
    format: SourceFormat,
    reader: Box<dyn BufRead + Send>,
    schema: SchemaRef,
    csv: &CsvReadOptions,
    batch_rows: usize,
    threads: usize,
    origin: &str,
) -> Result<Box<dyn Decoder>, DecodeError> {
    let batch_rows = batch_rows.max(1);
    match format {
        SourceFormat::Csv if threads > 0 => Ok(Box::new(ParallelCsvDecoder::new(
            reader, schema, csv, batch_rows, threads, origin,
        )?)),
        SourceFormat::Csv => Ok(Box::new(CsvDecoder::new(
            reader, schema, csv, batch_rows, origin,
        )?)),
        SourceFormat::Jsonl => Ok(Box::new(JsonlDecoder::new(
            reader, schema, batch_rows, origin,
        )?)),
        SourceFormat::Parquet | SourceFormat::Raw => Err(DecodeError::UnsupportedFormat { format }),
    }
}

/// The schema's columns as the text decoders see them.
pub(crate) fn columns(
    schema: &SchemaRef,
    format: SourceFormat,
) -> Result<Vec<Column>, DecodeError> {
    schema
        .fields()
        .iter()
        .map(|field| {
            Column::from_field(field).map_err(|e| match e {
                ColumnSpecError::UnsupportedType => DecodeError::UnsupportedType {
                    format,
                    column: field.name().clone(),
                    data_type: field.data_type().clone(),
                },
                ColumnSpecError::InvalidTimeZone(message) => DecodeError::InvalidTimeZone {
                    column: field.name().clone(),
                    message,
                },
            })
        })
        .collect()
}
