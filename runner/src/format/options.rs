//! Format options shared by the job file, the decoders and the encoders.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Csv,
    Jsonl,
    Parquet,
    /// Not decoded: the bytes go to a container step with `input: raw`.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    Parquet,
    Csv,
    Jsonl,
}

impl SinkFormat {
    /// The file extension of an output object, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            SinkFormat::Parquet => "parquet",
            SinkFormat::Csv => "csv",
            SinkFormat::Jsonl => "jsonl",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Detects compression from a key's last extension (`.gz`, `.gzip`, `.zst`, `.zstd`).
    pub fn from_key(key: &str) -> Compression {
        let lower = key.to_ascii_lowercase();
        if lower.ends_with(".gz") || lower.ends_with(".gzip") {
            Compression::Gzip
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The extension this compression adds to a key, with the dot, or "".
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

/// How CSV input is read. Built from the job file's `source.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvReadOptions {
    pub delimiter: u8,
    /// The first record names the columns.
    pub header: bool,
    pub quote: u8,
    /// `None`: a quote inside a quoted field is written doubled (`""`), as RFC 4180 says.
    pub escape: Option<u8>,
    /// Field values that mean null (compared after unquoting). Default: the empty string.
    pub null_values: Vec<String>,
    /// Lines starting with this byte are skipped.
    pub comment: Option<u8>,
    /// The input is a byte range of a split object ending at a cut (not the object's end):
    /// fail unless its last record ends there (not a job-file field; see docs/resume.md).
    pub ends_at_cut: bool,
    /// The longest record read, line terminator included; a longer one is bad data. It also
    /// bounds how far past a cut of a split object its record boundary is looked for.
    pub max_record_size: u64,
}

/// The default `source.csv.max_record_size`.
pub const DEFAULT_MAX_RECORD_SIZE: u64 = 8 << 20;

impl Default for CsvReadOptions {
    fn default() -> Self {
        CsvReadOptions {
            delimiter: b',',
            header: true,
            quote: b'"',
            escape: None,
            null_values: vec![String::new()],
            comment: None,
            ends_at_cut: false,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
        }
    }
}

/// How CSV output is written. Built from the job file's `sink.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvWriteOptions {
    pub delimiter: u8,
    pub header: bool,
}

impl Default for CsvWriteOptions {
    fn default() -> Self {
        CsvWriteOptions {
            delimiter: b',',
            header: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    Zstd,
    Snappy,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetWriteOptions {
    pub compression: ParquetCompression,
    /// Rows per row group.
    pub row_group_rows: usize,
}

impl Default for ParquetWriteOptions {
    fn default() -> Self {
        ParquetWriteOptions {
            compression: ParquetCompression::Zstd,
            row_group_rows: 122_880,
        }
    }
}
