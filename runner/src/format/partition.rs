//! Hive-style partitions of record batches: each row's partition path
//! (`col=value/col2=value2`, values escaped as Hive escapes path names, null or empty as
//! `__HIVE_DEFAULT_PARTITION__`), and a batch split into one batch per path without the
//! partition columns, which readers take from the path.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// The directory name Hive, Spark and Delta give a null (or empty) partition value.
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Splits batches of one schema by the values of its partition columns.
#[derive(Debug, Clone)]
pub struct Partitioner {
    columns: Vec<(String, usize)>,
    /// The indexes of the columns that stay in the files, and their schema.
    kept: Vec<usize>,
    data_schema: SchemaRef,
}

impl Partitioner {
    /// A partitioner of `schema` by `columns`; an error names a column the schema lacks or
    /// one whose type cannot name a directory.
    pub fn new(schema: &SchemaRef, columns: &[String]) -> Result<Partitioner, String> {
        let mut found = Vec::with_capacity(columns.len());
        for name in columns {
            let Ok(index) = schema.index_of(name) else {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(format!(
                    "partition column {name:?} is not in the output (it has: {})",
                    names.join(", ")
                ));
            };
            let data_type = schema.field(index).data_type();
            if !partitionable(data_type) {
                return Err(format!(
                    "partition column {name:?} is {data_type}; partition by a string, integer, boolean, date or timestamp column"
                ));
            }
            found.push((name.clone(), index));
        }
        let kept: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !found.iter().any(|(_, c)| c == i))
            .collect();
        if kept.is_empty() {
            return Err(
                "every output column is a partition column: the files would hold no column"
                    .to_string(),
            );
        }
        let data_schema = Arc::new(schema.project(&kept).map_err(|e| e.to_string())?);
        Ok(Partitioner {
            columns: found,
            kept,
            data_schema,
        })
    }

    /// The schema of the files: the output's without the partition columns.
    pub fn data_schema(&self) -> &SchemaRef {
        &self.data_schema
    }

    /// The batch split by partition path, in the order each path first appears, each part
    /// without the partition columns. A batch of one partition is not copied.
    pub fn split(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>, ArrowError> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let texts: Vec<StringArray> = self
            .columns
            .iter()
            .map(|(_, index)| as_text(batch.column(*index)))
            .collect::<Result<_, _>>()?;
        let data = batch.project(&self.kept)?;
        let mut order: Vec<String> = Vec::new();
        let mut rows_of: HashMap<String, Vec<u32>> = HashMap::new();
        let mut path = String::new();
        for row in 0..rows {
            path.clear();
            for ((name, _), values) in self.columns.iter().zip(&texts) {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(name);
                path.push('=');
                let value = (!values.is_null(row)).then(|| values.value(row));
                push_escaped(&mut path, value);
            }
            match rows_of.get_mut(path.as_str()) {
                Some(list) => list.push(row as u32),
                None => {
                    order.push(path.clone());
                    rows_of.insert(path.clone(), vec![row as u32]);
                }
            }
        }
        if order.len() == 1 {
            return Ok(vec![(order.pop().expect("one path"), data)]);
        }
        order
            .into_iter()
            .map(|path| {
                let indices = UInt32Array::from(rows_of.remove(&path).expect("listed"));
                take_record_batch(&data, &indices).map(|part| (path, part))
            })
            .collect()
    }
}

fn partitionable(data_type: &DataType) -> bool {
    data_type.is_integer()
        || matches!(
            data_type,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Boolean
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
        )
}

fn as_text(column: &ArrayRef) -> Result<StringArray, ArrowError> {
    let text = cast(column, &DataType::Utf8)?;
    Ok(text
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8 gives a StringArray")
        .clone())
}

/// Appends a partition value as Hive writes it into a path: the characters Hive escapes
/// (control characters, `"#%'*/:=?\{[]^` and DEL) as `%XX`; null or empty as
/// [`DEFAULT_PARTITION`].
pub fn push_escaped(out: &mut String, value: Option<&str>) {
    match value {
        None | Some("") => out.push_str(DEFAULT_PARTITION),
        Some(text) => {
            for c in text.chars() {
                if needs_escape(c) {
                    let _ = write!(out, "%{:02X}", c as u32);
                } else {
                    out.push(c);
                }
            }
        }
    }
}

fn needs_escape(c: char) -> bool {
    c < ' '
        || c == '\u{7f}'
        || matches!(
            c,
            '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^'
        )
}

/// The values of a partition path (`a=1/b=x%2Fy`), unescaped; `None` for the default
/// partition. Segments that are not `name=value` are not partitions and are skipped.
pub fn values_of(path: &str) -> Vec<(String, Option<String>)> {
    path.split('/')
        .filter_map(|segment| segment.split_once('='))
        .map(|(name, value)| {
            let value = (value != DEFAULT_PARTITION).then(|| unescape(value));
            (unescape(name), value)
        })
        .collect()
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Int64Array};
    use arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("city", DataType::Utf8, true),
            Field::new("day", DataType::Date32, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
                Arc::new(StringArray::from(vec![
                    Some("Köln"),
                    Some("a/b=c"),
                    None,
                    Some("Köln"),
                    Some(""),
                ])),
                Arc::new(Date32Array::from(vec![20454, 20454, 20455, 20455, 20455])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn splits_by_escaped_paths_in_first_seen_order_without_the_partition_columns() {
        let b = batch();
        let p = Partitioner::new(&b.schema(), &["day".into(), "city".into()]).unwrap();
        assert_eq!(p.data_schema().fields().len(), 1);
        let parts = p.split(&b).unwrap();
        let paths: Vec<&str> = parts.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "day=2026-01-01/city=Köln",
                "day=2026-01-01/city=a%2Fb%3Dc",
                "day=2026-01-02/city=__HIVE_DEFAULT_PARTITION__",
                "day=2026-01-02/city=Köln",
            ]
        );
        let ids = |i: usize| -> Vec<i64> {
            let c = parts[i]
                .1
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            c.values().to_vec()
        };
        assert_eq!(ids(0), [1]);
        assert_eq!(ids(2), [3, 5]);
        // The empty string and null share the default partition.
        let default = parts
            .iter()
            .filter(|(p, _)| p.ends_with(DEFAULT_PARTITION))
            .map(|(_, b)| b.num_rows())
            .sum::<usize>();
        assert_eq!(default, 2);
        let total: usize = parts.iter().map(|(_, b)| b.num_rows()).sum();
        assert_eq!(total, 5);
        assert_eq!(
            values_of("day=2026-01-01/city=a%2Fb%3Dc"),
            [
                ("day".to_string(), Some("2026-01-01".to_string())),
                ("city".to_string(), Some("a/b=c".to_string()))
            ]
        );
        assert_eq!(
            values_of("city=__HIVE_DEFAULT_PARTITION__/x.parquet"),
            [("city".to_string(), None)]
        );
    }

    #[test]
    fn unknown_unsuitable_and_all_columns_are_refused() {
        let b = batch();
        let err = Partitioner::new(&b.schema(), &["town".into()]).unwrap_err();
        assert!(err.contains("\"town\" is not in the output"), "{err}");
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float64, false),
            Field::new("y", DataType::Utf8, false),
        ]));
        let err = Partitioner::new(&schema, &["x".into()]).unwrap_err();
        assert!(err.contains("is Float64"), "{err}");
        let err = Partitioner::new(&schema, &["y".into()]).err();
        assert!(err.is_none());
        let only = Arc::new(Schema::new(vec![Field::new("y", DataType::Utf8, false)]));
        let err = Partitioner::new(&only, &["y".into()]).unwrap_err();
        assert!(err.contains("every output column"), "{err}");
    }
}
