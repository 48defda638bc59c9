//! Typed columns: parsing one text value per the schema and appending it to an Arrow builder.
//!
//! Parsing and appending are two steps so that a record is appended only when every one of
//! its values parsed: Arrow builders cannot take a value back.

use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int32Builder,
    Int64Builder, StringArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, TimeUnit};

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
            ColumnType::Int32 => lexical_core::parse::<i32>(trim(text)).ok().map(Value::I32),
            ColumnType::Int64 => lexical_core::parse::<i64>(trim(text)).ok().map(Value::I64),
            ColumnType::Float32 => lexical_core::parse::<f32>(trim(text)).ok().map(Value::F32),
            ColumnType::Float64 => lexical_core::parse::<f64>(trim(text)).ok().map(Value::F64),
            ColumnType::Boolean => parse_bool(trim(text)).map(Value::Bool),
            ColumnType::Date32(parser) => parser.parse(trim(text)).map(Value::I32),
            ColumnType::Timestamp(parser) => parser.parse(trim(text)).map(Value::I64),
        };
        parsed
            .ok_or_else(|| self.error(&format!("cannot parse {:?}", String::from_utf8_lossy(text))))
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

    /// Bytes of string data held, to bound a batch below Utf8's 2 GiB offsets.
    pub(crate) fn text_bytes(&self) -> usize {
        match self {
            ColumnBuilder::Utf8(b) => b.values.len(),
            _ => 0,
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
        let fresh = Utf8Builder::with_capacity(self.capacity);
        let Utf8Builder {
            offsets,
            values,
            mut nulls,
            ..
        } = std::mem::replace(self, fresh);
        let offsets = OffsetBuffer::new(offsets.into());
        StringArray::try_new(offsets, Buffer::from_vec(values), nulls.finish())
            .expect("every value was checked as UTF-8 and the batch is bounded below 2 GiB")
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
