//! The stable 128-bit hash of a composite key and its short display text.
//!
//! Each value is written in a canonical, type-tagged, length-prefixed form (below) and the
//! bytes of all key columns are hashed with XXH3-128. The form is sluice's own, not
//! Arrow's row format, whose bytes may change between Arrow versions: a hash written by one
//! sluice version must match the hash of the same key written by another, on any machine.
//!
//! Canonical form of one value (integers little-endian):
//!
//! | value | bytes |
//! | --- | --- |
//! | NULL of any type | `00` |
//! | boolean | `01`, `00` or `01` |
//! | integer of any width, signed or not | `02`, i128 |
//! | float of any width | `03`, f64 bits (`-0.0` as `0.0`, every NaN as one NaN) |
//! | string (Utf8, LargeUtf8, Utf8View, or a dictionary of them) | `04`, u64 length, UTF-8 bytes |
//! | binary (Binary, LargeBinary, BinaryView, FixedSizeBinary) | `05`, u64 length, bytes |
//! | Date32 | `06`, i64 days |
//! | Date64 | `07`, i64 milliseconds |
//! | timestamp of any unit and time zone | `08`, i128 nanoseconds since the epoch (UTC) |
//! | Time32 / Time64 | `09`, i64 nanoseconds since midnight |
//! | decimal (128 or 256) | `0A`, i8 scale, i256 unscaled value |
//! | duration | `0B`, i128 nanoseconds |
//! | anything else (lists, structs, intervals, ...) | `7F`, u64 length, the type's name, u64 length, Arrow's display text |
//!
//! A dictionary column is hashed as its values. The same number in an integer column and a
//! string column hashes differently; so do decimals of different scales.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type, DurationMicrosecondType,
    DurationMillisecondType, DurationNanosecondType, DurationSecondType, Float16Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::KeysError;

/// Key texts are cut to at most this many bytes (at a character boundary, ending in `…`).
pub const KEY_TEXT_LIMIT: usize = 200;

const NULL: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const FLOAT: u8 = 0x03;
const STRING: u8 = 0x04;
const BINARY: u8 = 0x05;
const DATE_DAYS: u8 = 0x06;
const DATE_MILLIS: u8 = 0x07;
const TIMESTAMP: u8 = 0x08;
const TIME: u8 = 0x09;
const DECIMAL: u8 = 0x0A;
const DURATION: u8 = 0x0B;
const OTHER: u8 = 0x7F;

/// The key columns of one schema, resolved by name once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumns {
    indices: Vec<usize>,
}

impl KeyColumns {
    /// Resolves column names; an unknown name is an error that lists the schema's columns.
    pub fn resolve(schema: &Schema, names: &[impl AsRef<str>]) -> Result<KeyColumns, KeysError> {
        let indices = names
            .iter()
            .map(|name| {
                let name = name.as_ref();
                schema.index_of(name).map_err(|_| KeysError::UnknownColumn {
                    column: name.to_string(),
                    available: schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if indices.is_empty() {
            return Err(KeysError::NoColumns);
        }
        Ok(KeyColumns { indices })
    }

    /// The column positions, in key order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The key hash of every row of `batch`.
    pub fn hashes(&self, batch: &RecordBatch) -> Result<Vec<u128>, KeysError> {
        hash_keys(batch, &self.indices)
    }

    /// The key text of every row of `batch`.
    pub fn texts(&self, batch: &RecordBatch) -> Result<Vec<String>, KeysError> {
        key_texts(batch, &self.indices)
    }
}

/// The stable 128-bit hash of the composite key (`columns`, in that order) of every row.
pub fn hash_keys(batch: &RecordBatch, columns: &[usize]) -> Result<Vec<u128>, KeysError> {
    let arrays = key_arrays(batch, columns)?;
    let encoders = arrays
        .iter()
        .map(Encoder::new)
        .collect::<Result<Vec<_>, _>>()?;
    let mut buffer = Vec::with_capacity(64);
    let mut hashes = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        buffer.clear();
        for encoder in &encoders {
            encoder.encode(row, &mut buffer);
        }
        hashes.push(xxhash_rust::xxh3::xxh3_128(&buffer));
    }
    Ok(hashes)
}

/// The key of every row as short display text: a JSON array of the values (`[42,"a",null]`),
/// cut to [`KEY_TEXT_LIMIT`] bytes.
pub fn key_texts(batch: &RecordBatch, columns: &[usize]) -> Result<Vec<String>, KeysError> {
    let arrays = key_arrays(batch, columns)?;
    let options = FormatOptions::default();
    let formatters = arrays
        .iter()
        .map(|a| ArrayFormatter::try_new(a.as_ref(), &options).map_err(KeysError::Arrow))
        .collect::<Result<Vec<_>, _>>()?;
    let mut texts = Vec::with_capacity(batch.num_rows());
    let mut value = String::new();
    for row in 0..batch.num_rows() {
        let mut text = String::from("[");
        for (i, (array, formatter)) in arrays.iter().zip(&formatters).enumerate() {
            if i > 0 {
                text.push(',');
            }
            if array.is_null(row) {
                text.push_str("null");
                continue;
            }
            value.clear();
            use std::fmt::Write as _;
            let _ = write!(value, "{}", formatter.value(row));
            if is_json_number(array.data_type(), &value) {
                text.push_str(&value);
            } else {
                text.push_str(&serde_json::to_string(&value).expect("a string serializes"));
            }
            if text.len() > KEY_TEXT_LIMIT {
                break;
            }
        }
        text.push(']');
        texts.push(truncate_text(text));
    }
    Ok(texts)
}

/// Cuts `text` to at most [`KEY_TEXT_LIMIT`] bytes at a character boundary, marking the cut
/// with `…`.
pub fn truncate_text(mut text: String) -> String {
    if text.len() <= KEY_TEXT_LIMIT {
        return text;
    }
    let mut end = KEY_TEXT_LIMIT - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

fn is_json_number(data_type: &DataType, text: &str) -> bool {
    (data_type.is_integer() || data_type.is_floating() || *data_type == DataType::Boolean)
        && !matches!(text, "NaN" | "inf" | "-inf")
}

/// The key columns, dictionaries replaced by their values.
fn key_arrays(batch: &RecordBatch, columns: &[usize]) -> Result<Vec<ArrayRef>, KeysError> {
    if columns.is_empty() {
        return Err(KeysError::NoColumns);
    }
    columns
        .iter()
        .map(|&index| {
            let array = batch
                .columns()
                .get(index)
                .ok_or(KeysError::ColumnIndex {
                    index,
                    columns: batch.num_columns(),
                })?
                .clone();
            match array.data_type() {
                DataType::Dictionary(_, values) => {
                    cast(&array, values.as_ref()).map_err(KeysError::Arrow)
                }
                _ => Ok(array),
            }
        })
        .collect()
}

/// One key column, downcast once per batch.
struct Encoder<'a> {
    array: &'a ArrayRef,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Null,
    Boolean,
    Integer(fn(&dyn Array, usize) -> i128),
    Float(fn(&dyn Array, usize) -> f64),
    String,
    Binary,
    DateDays,
    DateMillis,
    Timestamp(fn(&dyn Array, usize) -> i128),
    Time(fn(&dyn Array, usize) -> i64),
    Decimal(i8, fn(&dyn Array, usize) -> [u8; 32]),
    Duration(fn(&dyn Array, usize) -> i128),
    Other(String, ArrayFormatter<'a>),
}

/// Nanoseconds per second, millisecond and microsecond.
const NANOS: [i128; 3] = [1_000_000_000, 1_000_000, 1_000];

impl<'a> Encoder<'a> {
    fn new(array: &'a ArrayRef) -> Result<Encoder<'a>, KeysError> {
        use DataType as T;
        let kind = match array.data_type() {
            T::Null => Kind::Null,
            T::Boolean => Kind::Boolean,
            T::Int8 => Kind::Integer(|a, i| a.as_primitive::<Int8Type>().value(i).into()),
            T::Int16 => Kind::Integer(|a, i| a.as_primitive::<Int16Type>().value(i).into()),
            T::Int32 => Kind::Integer(|a, i| a.as_primitive::<Int32Type>().value(i).into()),
            T::Int64 => Kind::Integer(|a, i| a.as_primitive::<Int64Type>().value(i).into()),
            T::UInt8 => Kind::Integer(|a, i| a.as_primitive::<UInt8Type>().value(i).into()),
            T::UInt16 => Kind::Integer(|a, i| a.as_primitive::<UInt16Type>().value(i).into()),
            T::UInt32 => Kind::Integer(|a, i| a.as_primitive::<UInt32Type>().value(i).into()),
            T::UInt64 => Kind::Integer(|a, i| a.as_primitive::<UInt64Type>().value(i).into()),
            T::Float16 => Kind::Float(|a, i| a.as_primitive::<Float16Type>().value(i).to_f64()),
            T::Float32 => Kind::Float(|a, i| a.as_primitive::<Float32Type>().value(i).into()),
            T::Float64 => Kind::Float(|a, i| a.as_primitive::<Float64Type>().value(i)),
            T::Utf8 | T::LargeUtf8 | T::Utf8View => Kind::String,
            T::Binary | T::LargeBinary | T::BinaryView | T::FixedSizeBinary(_) => Kind::Binary,
            T::Date32 => Kind::DateDays,
            T::Date64 => Kind::DateMillis,
            T::Timestamp(unit, _) => match unit {
                TimeUnit::Second => Kind::Timestamp(|a, i| {
                    i128::from(a.as_primitive::<TimestampSecondType>().value(i)) * NANOS[0]
                }),
                TimeUnit::Millisecond => Kind::Timestamp(|a, i| {
                    i128::from(a.as_primitive::<TimestampMillisecondType>().value(i)) * NANOS[1]
                }),
                TimeUnit::Microsecond => Kind::Timestamp(|a, i| {
                    i128::from(a.as_primitive::<TimestampMicrosecondType>().value(i)) * NANOS[2]
                }),
                TimeUnit::Nanosecond => Kind::Timestamp(|a, i| {
                    i128::from(a.as_primitive::<TimestampNanosecondType>().value(i))
                }),
            },
            T::Time32(TimeUnit::Second) => Kind::Time(|a, i| {
                i64::from(a.as_primitive::<Time32SecondType>().value(i)) * 1_000_000_000
            }),
            T::Time32(_) => Kind::Time(|a, i| {
                i64::from(a.as_primitive::<Time32MillisecondType>().value(i)) * 1_000_000
            }),
            T::Time64(TimeUnit::Microsecond) => {
                Kind::Time(|a, i| a.as_primitive::<Time64MicrosecondType>().value(i) * 1_000)
            }
            T::Time64(_) => Kind::Time(|a, i| a.as_primitive::<Time64NanosecondType>().value(i)),
            T::Decimal128(_, scale) => Kind::Decimal(*scale, |a, i| {
                let value = a.as_primitive::<Decimal128Type>().value(i);
                arrow::datatypes::i256::from_i128(value).to_le_bytes()
            }),
            T::Decimal256(_, scale) => Kind::Decimal(*scale, |a, i| {
                a.as_primitive::<Decimal256Type>().value(i).to_le_bytes()
            }),
            T::Duration(unit) => match unit {
                TimeUnit::Second => Kind::Duration(|a, i| {
                    i128::from(a.as_primitive::<DurationSecondType>().value(i)) * NANOS[0]
                }),
                TimeUnit::Millisecond => Kind::Duration(|a, i| {
                    i128::from(a.as_primitive::<DurationMillisecondType>().value(i)) * NANOS[1]
                }),
                TimeUnit::Microsecond => Kind::Duration(|a, i| {
                    i128::from(a.as_primitive::<DurationMicrosecondType>().value(i)) * NANOS[2]
                }),
                TimeUnit::Nanosecond => Kind::Duration(|a, i| {
                    i128::from(a.as_primitive::<DurationNanosecondType>().value(i))
                }),
            },
            other => {
                let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
                    .map_err(KeysError::Arrow)?;
                Kind::Other(other.to_string(), formatter)
            }
        };
        Ok(Encoder { array, kind })
    }

    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        let array = self.array.as_ref();
        if array.is_null(row) {
            out.push(NULL);
            return;
        }
        match &self.kind {
            Kind::Null => out.push(NULL),
            Kind::Boolean => {
                out.push(BOOLEAN);
                out.push(u8::from(array.as_boolean().value(row)));
            }
            Kind::Integer(value) => {
                out.push(INTEGER);
                out.extend_from_slice(&value(array, row).to_le_bytes());
            }
            Kind::Float(value) => {
                out.push(FLOAT);
                let v = value(array, row);
                let v = if v.is_nan() {
                    f64::NAN
                } else if v == 0.0 {
                    0.0
                } else {
                    v
                };
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            Kind::String => {
                let value = match array.data_type() {
                    DataType::Utf8 => array.as_string::<i32>().value(row),
                    DataType::LargeUtf8 => array.as_string::<i64>().value(row),
                    _ => array.as_string_view().value(row),
                };
                out.push(STRING);
                bytes_with_length(value.as_bytes(), out);
            }
            Kind::Binary => {
                let value = match array.data_type() {
                    DataType::Binary => array.as_binary::<i32>().value(row),
                    DataType::LargeBinary => array.as_binary::<i64>().value(row),
                    DataType::BinaryView => array.as_binary_view().value(row),
                    _ => array.as_fixed_size_binary().value(row),
                };
                out.push(BINARY);
                bytes_with_length(value, out);
            }
            Kind::DateDays => {
                out.push(DATE_DAYS);
                let days = i64::from(array.as_primitive::<Date32Type>().value(row));
                out.extend_from_slice(&days.to_le_bytes());
            }
            Kind::DateMillis => {
                out.push(DATE_MILLIS);
                let millis = array.as_primitive::<Date64Type>().value(row);
                out.extend_from_slice(&millis.to_le_bytes());
            }
            Kind::Timestamp(value) => {
                out.push(TIMESTAMP);
                out.extend_from_slice(&value(array, row).to_le_bytes());
            }
            Kind::Time(value) => {
                out.push(TIME);
                out.extend_from_slice(&value(array, row).to_le_bytes());
            }
            Kind::Decimal(scale, value) => {
                out.push(DECIMAL);
                out.extend_from_slice(&scale.to_le_bytes());
                out.extend_from_slice(&value(array, row));
            }
            Kind::Duration(value) => {
                out.push(DURATION);
                out.extend_from_slice(&value(array, row).to_le_bytes());
            }
            Kind::Other(type_name, formatter) => {
                out.push(OTHER);
                bytes_with_length(type_name.as_bytes(), out);
                bytes_with_length(formatter.value(row).to_string().as_bytes(), out);
            }
        }
    }
}

fn bytes_with_length(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}
