//! Schema inference from a sample of records.
//!
//! The rule, per column over the sample, ignoring nulls: every value parses as int64 →
//! Int64; else every value parses as float64 → Float64; else every value is true/false
//! (any case) → Boolean; else Utf8. A column with no value in the sample is Utf8. Every
//! column is nullable. CSV names come from the header, or are `column_1..N`; JSONL columns
//! are the top-level keys in first-seen order, and objects and arrays are Utf8 (JSON text).

use std::fmt;
use std::io::BufRead;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::de::{Deserializer, MapAccess, Visitor};

use super::csv_decode::NullMarkers;
use super::csv_records::{CsvRecords, Dialect};
use super::decode::DecodeError;
use super::options::{CsvReadOptions, SourceFormat};

const ORIGIN: &str = "the schema sample";

/// Infers a schema from at most `max_records` records of the input.
pub fn infer_schema(
    format: SourceFormat,
    reader: Box<dyn BufRead + Send>,
    csv: &CsvReadOptions,
    max_records: usize,
) -> Result<SchemaRef, DecodeError> {
    match format {
        SourceFormat::Csv => infer_csv(reader, csv, max_records),
        SourceFormat::Jsonl => infer_jsonl(reader, max_records),
        SourceFormat::Parquet | SourceFormat::Raw => Err(DecodeError::UnsupportedFormat { format }),
    }
}

/// What the values seen so far in one column allow it to be.
#[derive(Debug, Clone, Copy)]
struct Candidates {
    int: bool,
    float: bool,
    boolean: bool,
    seen: bool,
}

impl Default for Candidates {
    fn default() -> Self {
        Candidates {
            int: true,
            float: true,
            boolean: true,
            seen: false,
        }
    }
}

impl Candidates {
    fn observe_text(&mut self, text: &[u8]) {
        self.seen = true;
        let text = text.trim_ascii();
        if self.int && lexical_core::parse::<i64>(text).is_err() {
            self.int = false;
        }
        if self.float && lexical_core::parse::<f64>(text).is_err() {
            self.float = false;
        }
        if self.boolean
            && !(text.eq_ignore_ascii_case(b"true") || text.eq_ignore_ascii_case(b"false"))
        {
            self.boolean = false;
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Candidates { seen: false, .. } => DataType::Utf8,
            Candidates { int: true, .. } => DataType::Int64,
            Candidates { float: true, .. } => DataType::Float64,
            Candidates { boolean: true, .. } => DataType::Boolean,
            _ => DataType::Utf8,
        }
    }
}

fn read_error(source: std::io::Error) -> DecodeError {
    DecodeError::Read {
        origin: ORIGIN.to_string(),
        source,
    }
}

fn schema_of(names: Vec<String>, candidates: &[Candidates]) -> SchemaRef {
    let fields: Vec<Field> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let data_type = candidates.get(i).copied().unwrap_or_default().data_type();
            Field::new(name, data_type, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn infer_csv(
    reader: Box<dyn BufRead + Send>,
    options: &CsvReadOptions,
    max_records: usize,
) -> Result<SchemaRef, DecodeError> {
    let mut records = CsvRecords::new(reader, Dialect::from_options(options));
    let nulls = NullMarkers::new(&options.null_values);
    let mut header = None;
    if options.header {
        if !records
            .next_record()
            .map_err(|e| e.into_decode_error(ORIGIN))?
        {
            return Err(DecodeError::EmptySample);
        }
        header = Some(
            (0..records.len())
                .map(|i| String::from_utf8_lossy(records.field(i)).trim().to_string())
                .collect::<Vec<_>>(),
        );
    }
    let mut candidates: Vec<Candidates> = Vec::new();
    let mut sampled = 0;
    while sampled < max_records
        && records
            .next_record()
            .map_err(|e| e.into_decode_error(ORIGIN))?
    {
        sampled += 1;
        if candidates.len() < records.len() {
            candidates.resize(records.len(), Candidates::default());
        }
        for (i, candidate) in candidates.iter_mut().enumerate().take(records.len()) {
            let text = records.field(i);
            if !nulls.is_null(text) {
                candidate.observe_text(text);
            }
        }
    }
    let names = match header {
        Some(names) => names,
        None if candidates.is_empty() => return Err(DecodeError::EmptySample),
        None => (1..=candidates.len())
            .map(|i| format!("column_{i}"))
            .collect(),
    };
    Ok(schema_of(names, &candidates))
}

fn infer_jsonl(
    mut reader: Box<dyn BufRead + Send>,
    max_records: usize,
) -> Result<SchemaRef, DecodeError> {
    let mut names: Vec<String> = Vec::new();
    let mut candidates: Vec<Candidates> = Vec::new();
    let mut line = Vec::new();
    let mut sampled = 0;
    while sampled < max_records {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(read_error)?;
        if n == 0 {
            break;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        sampled += 1;
        // A line that is not a JSON object tells nothing about the columns; decoding will
        // report it as a bad record.
        let Ok(object) = serde_json::Deserializer::from_slice(&line).deserialize_map(OrderedKeys)
        else {
            continue;
        };
        for (key, kind) in object {
            let index = match names.iter().position(|n| *n == key) {
                Some(index) => index,
                None => {
                    names.push(key);
                    candidates.push(Candidates::default());
                    names.len() - 1
                }
            };
            let candidate = &mut candidates[index];
            match kind {
                JsonKind::Null => {}
                JsonKind::Int => {
                    candidate.seen = true;
                    candidate.boolean = false;
                }
                JsonKind::Float => {
                    candidate.seen = true;
                    candidate.int = false;
                    candidate.boolean = false;
                }
                JsonKind::Bool => {
                    candidate.seen = true;
                    candidate.int = false;
                    candidate.float = false;
                }
                JsonKind::Other => {
                    *candidate = Candidates {
                        int: false,
                        float: false,
                        boolean: false,
                        seen: true,
                    }
                }
            }
        }
    }
    if names.is_empty() {
        return Err(DecodeError::EmptySample);
    }
    Ok(schema_of(names, &candidates))
}

/// The JSON type of a top-level value, as inference needs it.
enum JsonKind {
    Null,
    Int,
    Float,
    Bool,
    /// Strings, objects and arrays: Utf8.
    Other,
}

impl From<&serde_json::Value> for JsonKind {
    fn from(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => JsonKind::Null,
            serde_json::Value::Bool(_) => JsonKind::Bool,
            serde_json::Value::Number(n) if n.is_i64() => JsonKind::Int,
            serde_json::Value::Number(_) => JsonKind::Float,
            _ => JsonKind::Other,
        }
    }
}

/// Deserializes a JSON object into its keys in document order (serde_json's map sorts them).
struct OrderedKeys;

impl<'de> Visitor<'de> for OrderedKeys {
    type Value = Vec<(String, JsonKind)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            entries.push((key, JsonKind::from(&value)));
        }
        Ok(entries)
    }
}
