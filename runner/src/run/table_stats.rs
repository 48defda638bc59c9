//! The statistics of a Delta table's data file, from its Parquet footer: the record count,
//! and per top-level column its minimum, maximum and nulls, as the Delta protocol writes
//! them (`{"numRecords":..,"minValues":{..},"maxValues":{..},"nullCount":{..}}`), so that
//! engines can skip files.

use arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value, json};

/// Delta keeps string statistics to this many characters; longer ones are left out (a cut
/// maximum would be wrong).
const MAX_STRING_STAT: usize = 32;

/// The Arrow schema a Parquet file was written with.
pub fn arrow_schema(metadata: &ParquetMetaData) -> Result<SchemaRef, String> {
    let file = metadata.file_metadata();
    parquet::arrow::parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map(std::sync::Arc::new)
        .map_err(|e| format!("its Parquet schema has no Arrow form: {e}"))
}

/// The Delta statistics of a data file, as JSON text.
pub fn stats_json(metadata: &ParquetMetaData, schema: &Schema) -> String {
    let mut min = Map::new();
    let mut max = Map::new();
    let mut nulls = Map::new();
    let descr = metadata.file_metadata().schema_descr();
    for (index, column) in descr.columns().iter().enumerate() {
        // Top-level columns only: nested ones have a path of more than one part.
        let path = column.path().parts();
        if path.len() != 1 {
            continue;
        }
        let name = &path[0];
        let Ok(field) = schema.field_with_name(name) else {
            continue;
        };
        let mut null_count = 0u64;
        let mut low: Option<Value> = None;
        let mut high: Option<Value> = None;
        let mut complete = true;
        for group in metadata.row_groups() {
            let Some(stats) = group.column(index).statistics() else {
                complete = false;
                continue;
            };
            null_count += stats.null_count_opt().unwrap_or(0);
            match bounds(stats, field.data_type()) {
                Some((lo, hi)) => {
                    low = Some(pick(low, lo, less));
                    high = Some(pick(high, hi, |a, b| less(b, a)));
                }
                None if group.num_rows() > 0
                    && stats.null_count_opt() != Some(group.num_rows() as u64) =>
                {
                    complete = false;
                }
                None => {}
            }
        }
        nulls.insert(name.clone(), json!(null_count));
        if complete {
            if let Some(low) = low {
                min.insert(name.clone(), low);
            }
            if let Some(high) = high {
                max.insert(name.clone(), high);
            }
        }
    }
    json!({
        "numRecords": metadata.file_metadata().num_rows(),
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    })
    .to_string()
}

/// The lower of two values (by `less`), keeping the first when there is none yet.
fn pick(current: Option<Value>, new: Value, less: impl Fn(&Value, &Value) -> bool) -> Value {
    match current {
        Some(current) if !less(&new, &current) => current,
        _ => new,
    }
}

fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0) < y.as_f64().unwrap_or(0.0)
        }
        (Value::String(x), Value::String(y)) => x < y,
        _ => false,
    }
}

/// A row group's minimum and maximum of a column, as Delta writes values of its type.
fn bounds(stats: &Statistics, data_type: &DataType) -> Option<(Value, Value)> {
    match (stats, data_type) {
        (Statistics::Int32(s), DataType::Date32) => {
            Some((date(*s.min_opt()?)?, date(*s.max_opt()?)?))
        }
        (Statistics::Int32(s), t) if t.is_integer() => {
            Some((json!(*s.min_opt()?), json!(*s.max_opt()?)))
        }
        (Statistics::Int64(s), DataType::Timestamp(unit, zone)) => Some((
            timestamp(*s.min_opt()?, unit, zone.is_some())?,
            timestamp(*s.max_opt()?, unit, zone.is_some())?,
        )),
        (Statistics::Int64(s), t) if t.is_integer() => {
            Some((json!(*s.min_opt()?), json!(*s.max_opt()?)))
        }
        (Statistics::Float(s), _) => finite(f64::from(*s.min_opt()?), f64::from(*s.max_opt()?)),
        (Statistics::Double(s), _) => finite(*s.min_opt()?, *s.max_opt()?),
        (Statistics::ByteArray(s), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            let low = std::str::from_utf8(s.min_opt()?.data()).ok()?;
            let high = std::str::from_utf8(s.max_opt()?.data()).ok()?;
            (low.chars().count() <= MAX_STRING_STAT && high.chars().count() <= MAX_STRING_STAT)
                .then(|| (json!(low), json!(high)))
        }
        _ => None,
    }
}

fn finite(low: f64, high: f64) -> Option<(Value, Value)> {
    (low.is_finite() && high.is_finite()).then(|| (json!(low), json!(high)))
}

fn date(days: i32) -> Option<Value> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let day = epoch.checked_add_signed(chrono::Duration::days(i64::from(days)))?;
    Some(json!(day.format("%Y-%m-%d").to_string()))
}

/// A timestamp as Delta writes its statistics: milliseconds, `Z` for one with a time zone
/// (`timestamp`), none for one without (`timestamp_ntz`).
fn timestamp(value: i64, unit: &TimeUnit, zoned: bool) -> Option<Value> {
    let micros = match unit {
        TimeUnit::Second => value.checked_mul(1_000_000)?,
        TimeUnit::Millisecond => value.checked_mul(1_000)?,
        TimeUnit::Microsecond => value,
        TimeUnit::Nanosecond => value / 1_000,
    };
    let time = DateTime::from_timestamp_micros(micros)?;
    let format = if zoned {
        "%Y-%m-%dT%H:%M:%S%.3fZ"
    } else {
        "%Y-%m-%dT%H:%M:%S%.3f"
    };
    Some(json!(time.format(format).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Field;
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    #[test]
    fn min_max_and_nulls_per_column_over_row_groups() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Date32, true),
            Field::new("fare", DataType::Float64, true),
            Field::new("city", DataType::Utf8, true),
        ]));
        let batch = |ids: Vec<i64>,
                     days: Vec<Option<i32>>,
                     fares: Vec<Option<f64>>,
                     cities: Vec<Option<&str>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(Date32Array::from(days)),
                    Arc::new(Float64Array::from(fares)),
                    Arc::new(StringArray::from(cities)),
                ],
            )
            .unwrap()
        };
        let mut bytes = Vec::new();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut bytes, schema.clone(), Some(props)).unwrap();
        writer
            .write(&batch(
                vec![5, 3, 9],
                vec![Some(20454), None, Some(20460)],
                vec![Some(2.5), Some(-1.0), None],
                vec![Some("b"), Some("a"), Some(&"x".repeat(40))],
            ))
            .unwrap();
        writer.close().unwrap();
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(bytes::Bytes::from(bytes))
                .unwrap();
        let metadata = parquet::file::reader::FileReader::metadata(&reader).clone();
        assert_eq!(metadata.num_row_groups(), 2);
        let stats: Value = serde_json::from_str(&stats_json(&metadata, &schema)).unwrap();
        assert_eq!(stats["numRecords"], 3);
        assert_eq!(stats["minValues"]["id"], 3);
        assert_eq!(stats["maxValues"]["id"], 9);
        assert_eq!(stats["minValues"]["day"], "2026-01-01");
        assert_eq!(stats["maxValues"]["day"], "2026-01-07");
        assert_eq!(stats["minValues"]["fare"], -1.0);
        assert_eq!(stats["maxValues"]["fare"], 2.5);
        assert_eq!(stats["nullCount"]["day"], 1);
        assert_eq!(stats["nullCount"]["fare"], 1);
        // A string longer than Delta keeps leaves the column's bounds out.
        assert!(stats["maxValues"].get("city").is_none(), "{stats}");
        assert_eq!(stats["nullCount"]["city"], 0);
    }
}
