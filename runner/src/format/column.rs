//! Typed columns: parsing one text value per the schema and appending it to an Arrow builder.
//!
//! Parsing and appending are two steps so that a record is appended only when every one of
//! its values parsed: Arrow builders cannot take a value back.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanArray, BooleanBufferBuilder, BooleanBuilder,
    Date32Builder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, NullBufferBuilder,
    PrimitiveArray, StringArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};

use super::csv_decode::NullMarkers;
use super::temporal::{DateParser, FORMAT_METADATA_KEY, TimestampParser};

/// What a column parses its text into.
#[derive(Debug, Clone)]
pub(crate) enum ColumnType {
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    Date32(DateParser),
    Timestamp(TimestampParser),
    Utf8,
}

/// One schema column as the text decoders see it.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    /// The Arrow data type, for building the array (carries the time zone).
    pub data_type: DataType,
}

/// Why a schema column cannot be decoded from text.
#[derive(Debug)]
pub(crate) enum ColumnSpecError {
    UnsupportedType,
    InvalidTimeZone(String),
}

impl Column {
    pub(crate) fn from_field(field: &Field) -> Result<Column, ColumnSpecError> {
        let format = field.metadata().get(FORMAT_METADATA_KEY).cloned();
        let ty = match field.data_type() {
            DataType::Int32 => ColumnType::Int32,
            DataType::Int64 => ColumnType::Int64,
            DataType::Float32 => ColumnType::Float32,
            DataType::Float64 => ColumnType::Float64,
            DataType::Boolean => ColumnType::Boolean,
            DataType::Utf8 => ColumnType::Utf8,
            DataType::Date32 => ColumnType::Date32(DateParser::new(format)),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => ColumnType::Timestamp(
                TimestampParser::new(format, tz.as_deref())
                    .map_err(ColumnSpecError::InvalidTimeZone)?,
            ),
            _ => return Err(ColumnSpecError::UnsupportedType),
        };
        Ok(Column {
            name: field.name().clone(),
            ty,
            nullable: field.is_nullable(),
            data_type: field.data_type().clone(),
        })
    }

    /// The type's name in error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.ty {
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::Float32 => "float32",
            ColumnType::Float64 => "float64",
            ColumnType::Boolean => "boolean",
            ColumnType::Date32(_) => "date32",
            ColumnType::Timestamp(_) => "timestamp",
            ColumnType::Utf8 => "utf8",
        }
    }

    /// Parses one non-null value. Utf8 values are checked by the caller (see [`Value::Text`]).
    #[inline]
    pub(crate) fn parse(&self, text: &[u8]) -> Result<Value, String> {
        let parsed = match &self.ty {
            ColumnType::Utf8 => return Ok(Value::Text),
            ColumnType::Int32 => parse_i32(text).map(Value::I32),
            ColumnType::Int64 => parse_i64(text).map(Value::I64),
            ColumnType::Float32 => lexical_core::parse::<f32>(trim(text)).ok().map(Value::F32),
            ColumnType::Float64 => parse_f64(text).map(Value::F64),
            ColumnType::Boolean => parse_bool(trim(text)).map(Value::Bool),
            ColumnType::Date32(parser) => parser.parse(trim(text)).map(Value::I32),
            ColumnType::Timestamp(parser) => parser.parse(trim(text)).map(Value::I64),
        };
        parsed.ok_or_else(|| self.parse_error(text))
    }

    fn parse_error(&self, text: &[u8]) -> String {
        self.error(&format!("cannot parse {:?}", String::from_utf8_lossy(text)))
    }

    /// Parses this column's value of each of `records` records (`field(r)` is record `r`'s)
    /// into one array. A value that does not parse, or a null in a non-nullable column, marks
    /// its record bad in `errors` (the first column to fail names the reason) and leaves a
    /// placeholder in the array, for the caller to filter out.
    pub(crate) fn parse_all<'a>(
        &self,
        records: usize,
        field: impl Fn(usize) -> &'a [u8] + Copy,
        nulls: &NullMarkers,
        errors: &mut RowErrors,
    ) -> ArrayRef {
        let values = Values {
            records,
            field,
            nulls,
        };
        match &self.ty {
            ColumnType::Int32 => self.primitive::<Int32Type, _>(values, errors, parse_i32),
            ColumnType::Int64 => self.primitive::<Int64Type, _>(values, errors, parse_i64),
            ColumnType::Float32 => self.primitive::<Float32Type, _>(values, errors, |t| {
                lexical_core::parse::<f32>(trim(t)).ok()
            }),
            ColumnType::Float64 => self.primitive::<Float64Type, _>(values, errors, parse_f64),
            ColumnType::Date32(parser) => {
                self.primitive::<Date32Type, _>(values, errors, |t| parser.parse(trim(t)))
            }
            ColumnType::Timestamp(parser) => {
                self.primitive::<TimestampMicrosecondType, _>(values, errors, |t| {
                    parser.parse(trim(t))
                })
            }
            ColumnType::Boolean => self.booleans(values, errors),
            ColumnType::Utf8 => self.strings(values, errors),
        }
    }

    fn primitive<'a, T: ArrowPrimitiveType, F: Fn(usize) -> &'a [u8] + Copy>(
        &self,
        values: Values<'_, F>,
        errors: &mut RowErrors,
        parse: impl Fn(&[u8]) -> Option<T::Native>,
    ) -> ArrayRef {
        let mut parsed = Vec::with_capacity(values.records);
        let mut valid = NullBufferBuilder::new(values.records);
        for r in 0..values.records {
            let text = (values.field)(r);
            if values.nulls.is_null(text) {
                parsed.push(T::Native::default());
                self.append_null(r, &mut valid, errors);
                continue;
            }
            match parse(text) {
                Some(value) => parsed.push(value),
                None => {
                    errors.mark(r, || self.parse_error(text));
                    parsed.push(T::Native::default());
                }
            }
            valid.append_non_null();
        }
        let array = PrimitiveArray::<T>::new(ScalarBuffer::from(parsed), valid.finish());
        Arc::new(array.with_data_type(self.data_type.clone()))
    }

    fn booleans<'a, F: Fn(usize) -> &'a [u8] + Copy>(
        &self,
        values: Values<'_, F>,
        errors: &mut RowErrors,
    ) -> ArrayRef {
        let mut parsed = BooleanBufferBuilder::new(values.records);
        let mut valid = NullBufferBuilder::new(values.records);
        for r in 0..values.records {
            let text = (values.field)(r);
            if values.nulls.is_null(text) {
                parsed.append(false);
                self.append_null(r, &mut valid, errors);
                continue;
            }
            match parse_bool(trim(text)) {
                Some(value) => parsed.append(value),
                None => {
                    errors.mark(r, || self.parse_error(text));
                    parsed.append(false);
                }
            }
            valid.append_non_null();
        }
        Arc::new(BooleanArray::new(parsed.finish(), valid.finish()))
    }

    /// UTF-8 is checked once over the column's bytes; only when that fails is each value
    /// checked, to find the bad ones and leave them out of the array.
    fn strings<'a, F: Fn(usize) -> &'a [u8] + Copy>(
        &self,
        values: Values<'_, F>,
        errors: &mut RowErrors,
    ) -> ArrayRef {
        let mut builder = Utf8Builder::with_capacity(values.records);
        for r in 0..values.records {
            let text = (values.field)(r);
            if values.nulls.is_null(text) {
                builder.offsets.push(builder.values.len() as i32);
                self.append_null(r, &mut builder.nulls, errors);
            } else {
                builder.append(text);
            }
        }
        if let Ok(array) = builder.try_finish() {
            return Arc::new(array);
        }
        let mut builder = Utf8Builder::with_capacity(values.records);
        for r in 0..values.records {
            let text = (values.field)(r);
            if values.nulls.is_null(text) {
                builder.offsets.push(builder.values.len() as i32);
                self.append_null(r, &mut builder.nulls, errors);
            } else if std::str::from_utf8(text).is_err() {
                errors.mark(r, || self.utf8_error(text));
                builder.append(b"");
            } else {
                builder.append(text);
            }
        }
        Arc::new(builder.finish())
    }

    /// The validity of a null value of record `r`: in a non-nullable column the record is
    /// bad, and its placeholder is valid so that the array stays non-nullable until the bad
    /// records are filtered out.
    #[inline]
    fn append_null(&self, r: usize, valid: &mut NullBufferBuilder, errors: &mut RowErrors) {
        if self.nullable {
            valid.append_null();
        } else {
            errors.mark(r, || self.null_error());
            valid.append_non_null();
        }
    }

    /// An error message naming the column and its type.
    pub(crate) fn error(&self, what: &str) -> String {
        format!("column {} ({}): {what}", self.name, self.type_name())
    }

    pub(crate) fn null_error(&self) -> String {
        self.error("null in a non-nullable column")
    }

    pub(crate) fn utf8_error(&self, text: &[u8]) -> String {
        self.error(&format!(
            "invalid UTF-8 in {:?}",
            String::from_utf8_lossy(text)
        ))
    }

    pub(crate) fn builder(&self, capacity: usize) -> ColumnBuilder {
        match self.ty {
            ColumnType::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(capacity)),
            ColumnType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(capacity)),
            ColumnType::Float32 => ColumnBuilder::Float32(Float32Builder::with_capacity(capacity)),
            ColumnType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(capacity)),
            ColumnType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Date32(_) => ColumnBuilder::Date32(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp(_) => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity)
                    .with_data_type(self.data_type.clone()),
            ),
            ColumnType::Utf8 => ColumnBuilder::Utf8(Utf8Builder::with_capacity(capacity)),
        }
    }
}

#[inline]
fn trim(text: &[u8]) -> &[u8] {
    text.trim_ascii()
}

#[inline]
fn parse_i32(text: &[u8]) -> Option<i32> {
    let text = trim(text);
    match small_integer(text) {
        Some(value) => Some(value as i32),
        None => lexical_core::parse::<i32>(text).ok(),
    }
}

#[inline]
fn parse_i64(text: &[u8]) -> Option<i64> {
    let text = trim(text);
    match small_integer(text) {
        Some(value) => Some(value as i64),
        None => lexical_core::parse::<i64>(text).ok(),
    }
}

/// 1 to 9 digits, no sign: the common integer, read without lexical's generality (and
/// without overflow checks, which 9 digits cannot need). `None` is "ask lexical".
#[inline]
fn small_integer(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 9 {
        return None;
    }
    let mut value = 0u32;
    for &b in text {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + digit as u32;
    }
    Some(value)
}

#[inline]
fn parse_f64(text: &[u8]) -> Option<f64> {
    let text = trim(text);
    match simple_decimal(text) {
        Some(value) => Some(value),
        None => lexical_core::parse::<f64>(text).ok(),
    }
}

/// Exact powers of ten as f64.
const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// `[+-]digits[.digits]` with at most 15 digits in all (`21.79`, `-0.50`): the common
/// decimal, read without lexical's generality. Its digits make an integer below 2^53 and its
/// scale an exact power of ten, so one IEEE division gives the correctly rounded value, the
/// one lexical gives. `None` is "ask lexical" (exponents, more digits, `nan`, `.5`...).
#[inline]
fn simple_decimal(text: &[u8]) -> Option<f64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut mantissa = 0u64;
    let mut count = 0;
    let mut point = None;
    for (i, &b) in digits.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit <= 9 {
            mantissa = mantissa * 10 + digit as u64;
            count += 1;
        } else if b == b'.' && point.is_none() && i > 0 && i + 1 < digits.len() {
            point = Some(i);
        } else {
            return None;
        }
    }
    if count > 15 {
        return None;
    }
    let scale = point.map_or(0, |i| digits.len() - i - 1);
    let value = mantissa as f64 / POWERS_OF_TEN[scale];
    Some(if negative { -value } else { value })
}

fn parse_bool(text: &[u8]) -> Option<bool> {
    let mut lower = [0u8; 5];
    if text.len() > lower.len() {
        return None;
    }
    for (to, from) in lower.iter_mut().zip(text) {
        *to = from.to_ascii_lowercase();
    }
    match &lower[..text.len()] {
        b"true" | b"t" | b"1" | b"yes" => Some(true),
        b"false" | b"f" | b"0" | b"no" => Some(false),
        _ => None,
    }
}

/// The text values of one column of a chunk.
#[derive(Clone, Copy)]
struct Values<'n, F> {
    records: usize,
    field: F,
    nulls: &'n NullMarkers,
}

/// The records of a chunk found bad so far, each with the first reason found.
pub(crate) struct RowErrors {
    bad: Vec<bool>,
    /// (record, reason), in the order found.
    reasons: Vec<(usize, String)>,
}

impl RowErrors {
    pub(crate) fn new(records: usize) -> Self {
        RowErrors {
            bad: vec![false; records],
            reasons: Vec::new(),
        }
    }

    /// Marks record `r` bad, unless it already is: columns are parsed in order, so the reason
    /// kept is the first column's, as when a record is checked field by field.
    #[inline]
    pub(crate) fn mark(&mut self, r: usize, reason: impl FnOnce() -> String) {
        if !self.bad[r] {
            self.bad[r] = true;
            self.reasons.push((r, reason()));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }

    /// Which records are bad, and the reasons in record order.
    pub(crate) fn finish(self) -> (Vec<bool>, Vec<(usize, String)>) {
        let mut reasons = self.reasons;
        reasons.sort_by_key(|(r, _)| *r);
        (self.bad, reasons)
    }
}

/// A parsed value waiting to be appended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value {
    Null,
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// A Utf8 value: its bytes are passed again to [`ColumnBuilder::append`], already checked.
    Text,
}

/// An Arrow builder for one column.
pub(crate) enum ColumnBuilder {
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Date32(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Utf8(Utf8Builder),
}

impl ColumnBuilder {
    /// Appends a value produced by [`Column::parse`] for this column (or `Value::Null`).
    #[inline]
    pub(crate) fn append(&mut self, value: Value, text: &[u8]) {
        match (self, value) {
            (ColumnBuilder::Utf8(b), Value::Text) => b.append(text),
            (ColumnBuilder::Utf8(b), _) => b.append_null(),
            (ColumnBuilder::Int32(b), Value::I32(v)) => b.append_value(v),
            (ColumnBuilder::Int64(b), Value::I64(v)) => b.append_value(v),
            (ColumnBuilder::Float32(b), Value::F32(v)) => b.append_value(v),
            (ColumnBuilder::Float64(b), Value::F64(v)) => b.append_value(v),
            (ColumnBuilder::Boolean(b), Value::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Date32(b), Value::I32(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), Value::I64(v)) => b.append_value(v),
            (ColumnBuilder::Int32(b), _) => b.append_null(),
            (ColumnBuilder::Int64(b), _) => b.append_null(),
            (ColumnBuilder::Float32(b), _) => b.append_null(),
            (ColumnBuilder::Float64(b), _) => b.append_null(),
            (ColumnBuilder::Boolean(b), _) => b.append_null(),
            (ColumnBuilder::Date32(b), _) => b.append_null(),
            (ColumnBuilder::Timestamp(b), _) => b.append_null(),
        }
    }

    /// The array of everything appended since the last call; the builder starts over.
    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::Date32(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
        }
    }
}

/// A string column built from bytes: UTF-8 is checked once over the whole batch in
/// `StringArray::try_new` (the decoders have already checked each value), which is cheaper
/// than a `&str` per value.
pub(crate) struct Utf8Builder {
    offsets: Vec<i32>,
    values: Vec<u8>,
    nulls: NullBufferBuilder,
    capacity: usize,
}

impl Utf8Builder {
    fn with_capacity(capacity: usize) -> Self {
        let mut offsets = Vec::with_capacity(capacity + 1);
        offsets.push(0);
        Utf8Builder {
            offsets,
            values: Vec::with_capacity(capacity * 8),
            nulls: NullBufferBuilder::new(capacity),
            capacity,
        }
    }

    #[inline]
    fn append(&mut self, text: &[u8]) {
        self.values.extend_from_slice(text);
        self.offsets.push(self.values.len() as i32);
        self.nulls.append_non_null();
    }

    #[inline]
    fn append_null(&mut self) {
        self.offsets.push(self.values.len() as i32);
        self.nulls.append_null();
    }

    fn finish(&mut self) -> StringArray {
        self.try_finish()
            .expect("every value was checked as UTF-8 and the batch is bounded below 2 GiB")
    }

    /// The array of everything appended, if all of it is UTF-8; the builder starts over.
    fn try_finish(&mut self) -> Result<StringArray, arrow::error::ArrowError> {
        let fresh = Utf8Builder::with_capacity(self.capacity);
        let Utf8Builder {
            offsets,
            values,
            mut nulls,
            ..
        } = std::mem::replace(self, fresh);
        let offsets = OffsetBuffer::new(offsets.into());
        StringArray::try_new(offsets, Buffer::from_vec(values), nulls.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    fn column(data_type: DataType) -> Column {
        Column::from_field(&Field::new("c", data_type, true)).unwrap()
    }

    #[test]
    fn numbers_and_booleans() {
        let int = column(DataType::Int64);
        assert!(matches!(int.parse(b"+42"), Ok(Value::I64(42))));
        assert!(matches!(int.parse(b" -7 "), Ok(Value::I64(-7))));
        assert_eq!(
            int.parse(b"4.5").unwrap_err(),
            "column c (int64): cannot parse \"4.5\""
        );
        let small = column(DataType::Int32);
        assert!(small.parse(b"3000000000").is_err());
        let float = column(DataType::Float64);
        assert!(matches!(float.parse(b"1e3"), Ok(Value::F64(v)) if v == 1000.0));
        assert_eq!(
            float.parse(b"abc").unwrap_err(),
            "column c (float64): cannot parse \"abc\""
        );
        let boolean = column(DataType::Boolean);
        for (text, expected) in [("TRUE", true), ("f", false), ("Yes", true), ("0", false)] {
            assert!(matches!(boolean.parse(text.as_bytes()), Ok(Value::Bool(v)) if v == expected));
        }
        assert!(boolean.parse(b"maybe").is_err());
    }

    /// The fast integer and decimal readers must agree with lexical wherever they answer,
    /// and `parse_*` with lexical everywhere.
    #[test]
    fn fast_number_paths_agree_with_lexical() {
        let mut texts: Vec<String> = [
            "0",
            "7",
            "-7",
            "+7",
            "007",
            "123456789",
            "1234567890",
            "2147483647",
            "2147483648",
            "-2147483648",
            "99999999999999999999",
            "",
            " 5 ",
            "5x",
            "0x10",
            "1_000",
            "21.79",
            "-0.50",
            "-0.00",
            "+3.25",
            "0.1",
            "0.3",
            "1.",
            ".5",
            "1..2",
            "1.2.3",
            "1e3",
            "1E-3",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "123456789012345",
            "1234567890123456",
            "12345678.9012345",
            "1234567890.123456",
            "0.000000000000001",
            "9007199254740993",
            "4.35",
            "0.1234567890123",
            "-",
            "+",
            ".",
            "-.5",
            "1,5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let digits = 1 + (state % 17) as usize;
            let mut text: String = (0..digits)
                .map(|i| char::from(b'0' + ((state >> (i * 3 % 60)) % 10) as u8))
                .collect();
            let point = (state >> 40) as usize % (digits + 2);
            if point > 0 && point < text.len() {
                text.insert(point, '.');
            }
            if state & (1 << 62) != 0 {
                text.insert(0, '-');
            }
            texts.push(text);
        }
        for text in &texts {
            let bytes = text.as_bytes();
            let f = |v: Option<f64>| v.map(f64::to_bits);
            assert_eq!(
                f(parse_f64(bytes)),
                f(lexical_core::parse::<f64>(bytes.trim_ascii()).ok()),
                "{text:?}"
            );
            assert_eq!(
                parse_i32(bytes),
                lexical_core::parse::<i32>(bytes.trim_ascii()).ok(),
                "{text:?}"
            );
            assert_eq!(
                parse_i64(bytes),
                lexical_core::parse::<i64>(bytes.trim_ascii()).ok(),
                "{text:?}"
            );
        }
        assert_eq!(simple_decimal(b"21.79"), Some(21.79));
        assert_eq!(small_integer(b"265"), Some(265));
    }

    #[test]
    fn unsupported_types_are_refused() {
        let field = Field::new("c", DataType::Binary, true);
        assert!(matches!(
            Column::from_field(&field),
            Err(ColumnSpecError::UnsupportedType)
        ));
    }

    #[test]
    fn utf8_builder_keeps_nulls() {
        let mut b = Utf8Builder::with_capacity(2);
        b.append(b"a");
        b.append_null();
        b.append("é".as_bytes());
        let array = b.finish();
        assert_eq!(array.len(), 3);
        assert!(array.is_null(1));
        assert_eq!(array.value(2), "é");
        assert_eq!(b.finish().len(), 0);
    }
}
