//! Decoders, encoders, schema inference and read-back counts of the `format` module.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use sluice::format::options::{
    Compression, CsvReadOptions, CsvWriteOptions, ParquetCompression, ParquetWriteOptions,
    SinkFormat, SourceFormat,
};
use sluice::format::{self, BadRecord, DecodeError, FORMAT_METADATA_KEY};

/// Reader capacities that split records across reads: every byte, odd sizes, and a normal one.
const CAPACITIES: [usize; 6] = [1, 2, 3, 7, 64, 256 * 1024];

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(name, ty)| Field::new(*name, ty.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn reader(input: &[u8], capacity: usize) -> Box<dyn BufRead + Send> {
    Box::new(BufReader::with_capacity(
        capacity,
        Cursor::new(input.to_vec()),
    ))
}

struct Outcome {
    batch: RecordBatch,
    bad: Vec<BadRecord>,
    records: u64,
    batches: usize,
}

fn decode_with(
    source: SourceFormat,
    input: &[u8],
    schema: &SchemaRef,
    options: &CsvReadOptions,
    batch_rows: usize,
    capacity: usize,
) -> Result<Outcome, DecodeError> {
    let mut decoder = format::open_decoder(
        source,
        reader(input, capacity),
        schema.clone(),
        options,
        batch_rows,
        "s3://bucket/key",
    )?;
    let mut batches = Vec::new();
    let mut bad = Vec::new();
    while let Some(decoded) = decoder.next()? {
        assert!(decoded.batch.num_rows() + decoded.bad.len() <= batch_rows);
        assert_eq!(decoded.batch.schema(), *schema);
        batches.push(decoded.batch);
        bad.extend(decoded.bad);
    }
    Ok(Outcome {
        batch: concat_batches(schema, &batches).unwrap(),
        bad,
        records: decoder.records(),
        batches: batches.len(),
    })
}

/// Decodes CSV with every reader capacity and checks they all agree.
fn decode_csv(input: &str, schema: &SchemaRef, options: &CsvReadOptions) -> Outcome {
    let first = decode_with(
        SourceFormat::Csv,
        input.as_bytes(),
        schema,
        options,
        1000,
        CAPACITIES[0],
    )
    .unwrap();
    for capacity in &CAPACITIES[1..] {
        let other = decode_with(
            SourceFormat::Csv,
            input.as_bytes(),
            schema,
            options,
            1000,
            *capacity,
        )
        .unwrap();
        assert_eq!(other.batch, first.batch, "capacity {capacity}");
        assert_eq!(other.bad, first.bad, "capacity {capacity}");
        assert_eq!(other.records, first.records, "capacity {capacity}");
    }
    first
}

fn strings(batch: &RecordBatch, column: usize) -> Vec<Option<String>> {
    let array = batch
        .column(column)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    array.iter().map(|v| v.map(str::to_string)).collect()
}

fn ints(batch: &RecordBatch, column: usize) -> Vec<Option<i64>> {
    let array = batch
        .column(column)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    array.iter().collect()
}

fn s(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

fn id_name() -> SchemaRef {
    schema(&[("id", DataType::Int64), ("name", DataType::Utf8)])
}

#[test]
fn quoted_fields_hold_delimiters_newlines_and_doubled_quotes() {
    let input = "id,name\n1,\"a,b\"\n2,\"line one\nline two\"\n3,\"say \"\"hi\"\"\"\n4,\"\"\n5,plain\"quote\n";
    let out = decode_csv(input, &id_name(), &CsvReadOptions::default());
    assert!(out.bad.is_empty(), "{:?}", out.bad);
    assert_eq!(
        ints(&out.batch, 0),
        vec![Some(1), Some(2), Some(3), Some(4), Some(5)]
    );
    assert_eq!(
        strings(&out.batch, 1),
        vec![
            Some("a,b".into()),
            Some("line one\nline two".into()),
            Some("say \"hi\"".into()),
            // A quoted empty field is the empty string, which is a null marker by default.
            None,
            Some("plain\"quote".into()),
        ]
    );
    assert_eq!(out.records, 5);
}

#[test]
fn crlf_bom_and_no_final_newline() {
    let input = "\u{FEFF}id,name\r\n1,a\r\n2,\"b\r\nc\"\r\n3,d";
    let out = decode_csv(input, &id_name(), &CsvReadOptions::default());
    assert!(out.bad.is_empty(), "{:?}", out.bad);
    assert_eq!(ints(&out.batch, 0), vec![Some(1), Some(2), Some(3)]);
    assert_eq!(strings(&out.batch, 1), s(&["a", "b\r\nc", "d"]));
}

#[test]
fn empty_lines_are_skipped_and_not_counted_as_records() {
    let input = "id,name\n\n1,a\n\r\n\n2,b\n\n";
    let out = decode_csv(input, &id_name(), &CsvReadOptions::default());
    assert_eq!(out.records, 2);
    assert_eq!(ints(&out.batch, 0), vec![Some(1), Some(2)]);
}

#[test]
fn header_only_and_empty_files_have_no_batches() {
    for input in ["id,name\n", "id,name", ""] {
        let out = decode_csv(input, &id_name(), &CsvReadOptions::default());
        assert_eq!(out.batches, 0, "{input:?}");
        assert_eq!(out.records, 0);
    }
}

#[test]
fn other_delimiters() {
    for delimiter in [b'\t', b';', b'|'] {
        let d = delimiter as char;
        let input = format!("id{d}name\n1{d}a,b\n2{d}\"x{d}y\"\n");
        let options = CsvReadOptions {
            delimiter,
            ..CsvReadOptions::default()
        };
        let out = decode_csv(&input, &id_name(), &options);
        assert!(out.bad.is_empty(), "{:?}", out.bad);
        assert_eq!(strings(&out.batch, 1), s(&["a,b", &format!("x{d}y")]));
    }
}

#[test]
fn escape_char_inside_quotes() {
    let input = "id,name\n1,\"a\\\"b\"\n2,\"c\\\\d\"\n3,\"e\"\"f\"\n";
    let options = CsvReadOptions {
        escape: Some(b'\\'),
        ..CsvReadOptions::default()
    };
    let out = decode_csv(input, &id_name(), &options);
    assert!(out.bad.is_empty(), "{:?}", out.bad);
    assert_eq!(strings(&out.batch, 1), s(&["a\"b", "c\\d", "e\"f"]));
}

#[test]
fn comment_lines_are_skipped() {
    let input = "# exported 2024-01-01\nid,name\n1,a\n# a note, with a comma\n2,#b\nx,c\n";
    let options = CsvReadOptions {
        comment: Some(b'#'),
        ..CsvReadOptions::default()
    };
    let out = decode_csv(input, &id_name(), &options);
    assert_eq!(strings(&out.batch, 1), s(&["a", "#b"]));
    assert_eq!(out.records, 3);
    assert_eq!(out.bad.len(), 1);
    assert_eq!(out.bad[0].line, 6);
}

#[test]
fn null_markers_compare_the_unquoted_field() {
    let schema = schema(&[
        ("id", DataType::Int64),
        ("name", DataType::Utf8),
        ("x", DataType::Float64),
    ]);
    let input = "id,name,x\n1,NA,1.5\n2,\"NA\",null\nNA,,NA\n3,nab,NA\n";
    let options = CsvReadOptions {
        null_values: vec!["NA".into(), "null".into()],
        ..CsvReadOptions::default()
    };
    let out = decode_csv(input, &schema, &options);
    assert!(out.bad.is_empty(), "{:?}", out.bad);
    assert_eq!(ints(&out.batch, 0), vec![Some(1), Some(2), None, Some(3)]);
    // Without "" among the markers, an empty field is an empty string.
    assert_eq!(
        strings(&out.batch, 1),
        vec![None, None, Some(String::new()), Some("nab".into())]
    );
    let x = out
        .batch
        .column(2)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(
        x.iter().collect::<Vec<_>>(),
        vec![Some(1.5), None, None, None]
    );
}

#[test]
fn bad_records_carry_their_line_raw_text_and_reason() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("fare", DataType::Float64, true),
    ]));
    let mut input = b"id,name,fare\n".to_vec();
    input.extend_from_slice(b"1,ok,1.5\n"); // line 2
    input.extend_from_slice(b"2,short\n"); // line 3: too few fields
    input.extend_from_slice(b"3,\"multi\nline\",2.5\n"); // lines 4-5: good
    input.extend_from_slice(b"4,after,abc\n"); // line 6: bad float after a multi-line record
    input.extend_from_slice(b"x5,n,1\n"); // line 7: bad int
    input.extend_from_slice(b"6,\xff\xfe,1\n"); // line 8: invalid UTF-8
    input.extend_from_slice(b",nul,1\n"); // line 9: null in a non-nullable column
    input.extend_from_slice(b"7,a,1,extra\n"); // line 10: too many fields
    input.extend_from_slice(b"\n8,\"q\nq\nq\",x\r\n"); // line 12-14: bad float in a multi-line record
    input.extend_from_slice(b"9,last,3"); // line 15: good, no final newline
    for capacity in CAPACITIES {
        let out = decode_with(
            SourceFormat::Csv,
            &input,
            &schema,
            &CsvReadOptions::default(),
            4,
            capacity,
        )
        .unwrap();
        assert_eq!(ints(&out.batch, 0), vec![Some(1), Some(3), Some(9)]);
        assert_eq!(out.records, 10);
        let lines: Vec<u64> = out.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 6, 7, 8, 9, 10, 12], "capacity {capacity}");
        let by_line: HashMap<u64, &BadRecord> = out.bad.iter().map(|b| (b.line, b)).collect();
        assert_eq!(by_line[&3].error, "expected 3 fields, found 2");
        assert_eq!(by_line[&3].raw, "2,short");
        assert_eq!(
            by_line[&6].error,
            "column fare (float64): cannot parse \"abc\""
        );
        assert_eq!(by_line[&6].raw, "4,after,abc");
        assert_eq!(by_line[&7].error, "column id (int64): cannot parse \"x5\"");
        assert!(
            by_line[&8]
                .error
                .starts_with("column name (utf8): invalid UTF-8"),
            "{}",
            by_line[&8].error
        );
        assert_eq!(by_line[&8].raw, "6,\u{FFFD}\u{FFFD},1");
        assert_eq!(
            by_line[&9].error,
            "column id (int64): null in a non-nullable column"
        );
        assert_eq!(by_line[&10].error, "expected 3 fields, found 4");
        assert_eq!(by_line[&12].raw, "8,\"q\nq\nq\",x");
        assert_eq!(
            by_line[&12].error,
            "column fare (float64): cannot parse \"x\""
        );
    }
}

#[test]
fn header_mismatch_names_origin_column_and_names() {
    let input = "id, title \n1,a\n";
    let result = decode_with(
        SourceFormat::Csv,
        input.as_bytes(),
        &id_name(),
        &CsvReadOptions::default(),
        10,
        64,
    );
    match result {
        Err(DecodeError::HeaderMismatch(mismatch)) => {
            assert_eq!(mismatch.origin, "s3://bucket/key");
            assert_eq!(mismatch.column, 2);
            assert_eq!(mismatch.expected, "name");
            assert_eq!(mismatch.found, "title");
            assert_eq!(
                DecodeError::HeaderMismatch(mismatch).to_string(),
                "s3://bucket/key: header column 2 is \"title\" but the schema expects \"name\""
            );
        }
        other => panic!("expected a header mismatch, got {:?}", other.err()),
    }
    // Surrounding whitespace is not a mismatch; a missing column is.
    assert!(
        decode_with(
            SourceFormat::Csv,
            b" id , name\n",
            &id_name(),
            &CsvReadOptions::default(),
            10,
            64
        )
        .is_ok()
    );
    let short = decode_with(
        SourceFormat::Csv,
        b"id\n",
        &id_name(),
        &CsvReadOptions::default(),
        10,
        64,
    );
    assert!(matches!(short, Err(DecodeError::HeaderMismatch(m)) if m.column == 2));
}

#[test]
fn no_header_reads_the_first_line_as_data() {
    let options = CsvReadOptions {
        header: false,
        ..CsvReadOptions::default()
    };
    let out = decode_csv("1,a\n2,b\n", &id_name(), &options);
    assert_eq!(ints(&out.batch, 0), vec![Some(1), Some(2)]);
}

fn compressed(data: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::Gzip => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
        Compression::None => data.to_vec(),
    }
}

#[test]
fn gzip_and_zstd_input() {
    let mut input = String::from("id,name\n");
    for i in 0..5000 {
        input.push_str(&format!("{i},\"name {i}\nsecond line\"\n"));
    }
    for compression in [Compression::Gzip, Compression::Zstd] {
        let bytes = compressed(input.as_bytes(), compression);
        let reader = format::decompress(Box::new(Cursor::new(bytes)), compression);
        let mut decoder = format::open_decoder(
            SourceFormat::Csv,
            reader,
            id_name(),
            &CsvReadOptions::default(),
            1024,
            "s3://b/k.gz",
        )
        .unwrap();
        let mut rows = 0;
        while let Some(decoded) = decoder.next().unwrap() {
            assert!(decoded.bad.is_empty());
            rows += decoded.batch.num_rows();
        }
        assert_eq!(rows, 5000);
        assert_eq!(decoder.records(), 5000);
    }
}

#[test]
fn truncated_gzip_is_a_read_error() {
    let bytes = compressed(&b"id,name\n1,a\n".repeat(10_000), Compression::Gzip);
    let reader = format::decompress(
        Box::new(Cursor::new(bytes[..bytes.len() / 2].to_vec())),
        Compression::Gzip,
    );
    let mut decoder = format::open_decoder(
        SourceFormat::Csv,
        reader,
        id_name(),
        &CsvReadOptions::default(),
        1000,
        "s3://b/k",
    )
    .unwrap();
    let error = loop {
        match decoder.next() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a truncated stream decoded to the end"),
            Err(e) => break e,
        }
    };
    assert!(matches!(error, DecodeError::Read { .. }), "{error:?}");
}

#[test]
fn records_across_batch_and_buffer_boundaries() {
    let mut input = String::from("id,name\n");
    for i in 0..1000 {
        if i % 10 == 0 {
            input.push_str(&format!("{i},\"quoted, {i}\nwith a newline\"\n"));
        } else {
            input.push_str(&format!("{i},n{i}\n"));
        }
    }
    for capacity in [1, 5, 13, 4096] {
        let out = decode_with(
            SourceFormat::Csv,
            input.as_bytes(),
            &id_name(),
            &CsvReadOptions::default(),
            7,
            capacity,
        )
        .unwrap();
        assert_eq!(out.batches, 1000usize.div_ceil(7));
        assert_eq!(ints(&out.batch, 0), (0..1000).map(Some).collect::<Vec<_>>());
        let names = strings(&out.batch, 1);
        assert_eq!(names[10].as_deref(), Some("quoted, 10\nwith a newline"));
        assert_eq!(names[999].as_deref(), Some("n999"));
    }
}

#[test]
fn typed_columns_parse_every_supported_type() {
    let mut date_custom = Field::new("d2", DataType::Date32, true);
    date_custom.set_metadata(HashMap::from([(
        FORMAT_METADATA_KEY.to_string(),
        "%d/%m/%Y".to_string(),
    )]));
    let mut ts_custom = Field::new("t2", DataType::Timestamp(TimeUnit::Microsecond, None), true);
    ts_custom.set_metadata(HashMap::from([(
        FORMAT_METADATA_KEY.to_string(),
        "%d/%m/%Y %H.%M".to_string(),
    )]));
    let schema = Arc::new(Schema::new(vec![
        Field::new("i32", DataType::Int32, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("d", DataType::Date32, true),
        date_custom,
        Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ts_custom,
        Field::new(
            "tz",
            DataType::Timestamp(TimeUnit::Microsecond, Some("Europe/Paris".into())),
            true,
        ),
    ]));
    let input = "i32,b,d,d2,t,t2,tz\n\
                 -5,yes,1970-01-02,03/01/1970,1970-01-01 00:00:01.5,01/01/1970 00.01,1970-01-01T01:00:00\n\
                 +7,F,2024-02-29,29/02/2024,2024-01-02T03:04:05Z,02/01/2024 03.04,2024-07-01 12:00:00+00:00\n";
    let out = decode_csv(input, &schema, &CsvReadOptions::default());
    assert!(out.bad.is_empty(), "{:?}", out.bad);
    let b = &out.batch;
    let i32s = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
    assert_eq!(i32s.values(), &[-5, 7]);
    let bools = b.column(1).as_any().downcast_ref::<BooleanArray>().unwrap();
    assert_eq!(
        bools.iter().collect::<Vec<_>>(),
        vec![Some(true), Some(false)]
    );
    let d = b.column(2).as_any().downcast_ref::<Date32Array>().unwrap();
    assert_eq!(d.values(), &[1, 19_782]);
    let d2 = b.column(3).as_any().downcast_ref::<Date32Array>().unwrap();
    assert_eq!(d2.values(), &[2, 19_782]);
    let t = b
        .column(4)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(t.values(), &[1_500_000, 1_704_164_645_000_000]);
    let t2 = b
        .column(5)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(t2.values(), &[60_000_000, 1_704_164_640_000_000]);
    let tz = b
        .column(6)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    // Paris wall time 01:00 in winter is midnight UTC; an explicit offset wins.
    assert_eq!(tz.values(), &[0, 1_719_835_200_000_000]);
    assert_eq!(tz.timezone(), Some("Europe/Paris"));
}

#[test]
fn unsupported_column_types_are_refused() {
    let schema = schema(&[("blob", DataType::Binary)]);
    let result = decode_with(
        SourceFormat::Csv,
        b"blob\n",
        &schema,
        &CsvReadOptions::default(),
        10,
        64,
    );
    assert!(matches!(result, Err(DecodeError::UnsupportedType { .. })));
}

#[test]
fn csv_inference() {
    let input = "id,fare,flag,name,empty,mixed\n1,2.5,true,a,,1\n2,3,FALSE,b,,x\n-3,,true,,,2\n";
    let schema = format::infer_schema(
        SourceFormat::Csv,
        reader(input.as_bytes(), 5),
        &CsvReadOptions::default(),
        100,
    )
    .unwrap();
    let types: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("id", &DataType::Int64),
            ("fare", &DataType::Float64),
            ("flag", &DataType::Boolean),
            ("name", &DataType::Utf8),
            ("empty", &DataType::Utf8),
            ("mixed", &DataType::Utf8),
        ]
    );
    assert!(schema.fields().iter().all(|f| f.is_nullable()));
    // The sample bounds what is read: `mixed` looks like Int64 over the first record alone.
    let one = format::infer_schema(
        SourceFormat::Csv,
        reader(input.as_bytes(), 64),
        &CsvReadOptions::default(),
        1,
    )
    .unwrap();
    assert_eq!(one.field(5).data_type(), &DataType::Int64);
    let options = CsvReadOptions {
        header: false,
        delimiter: b'\t',
        ..CsvReadOptions::default()
    };
    let headless =
        format::infer_schema(SourceFormat::Csv, reader(b"1\tx\n2\ty\n", 64), &options, 10).unwrap();
    assert_eq!(headless.field(0).name(), "column_1");
    assert_eq!(headless.field(1).name(), "column_2");
    assert_eq!(headless.field(0).data_type(), &DataType::Int64);
    // The inferred schema decodes the same input.
    let out = decode_csv(input, &schema, &CsvReadOptions::default());
    assert!(out.bad.is_empty(), "{:?}", out.bad);
    assert_eq!(out.batch.num_rows(), 3);
}

#[test]
fn jsonl_inference_keeps_first_seen_key_order() {
    let input = "{\"z\":1,\"a\":1.5,\"m\":{\"k\":1}}\n\n{\"a\":2,\"b\":true,\"z\":null,\"s\":\"x\",\"l\":[1]}\n";
    let schema = format::infer_schema(
        SourceFormat::Jsonl,
        reader(input.as_bytes(), 4),
        &CsvReadOptions::default(),
        10,
    )
    .unwrap();
    let types: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("z", &DataType::Int64),
            ("a", &DataType::Float64),
            ("m", &DataType::Utf8),
            ("b", &DataType::Boolean),
            ("s", &DataType::Utf8),
            ("l", &DataType::Utf8),
        ]
    );
    // Nested values decode as their JSON text.
    let out = decode_with(
        SourceFormat::Jsonl,
        input.as_bytes(),
        &schema,
        &CsvReadOptions::default(),
        10,
        64,
    )
    .unwrap();
    assert!(out.bad.is_empty(), "{:?}", out.bad);
    assert_eq!(strings(&out.batch, 2), vec![Some("{\"k\":1}".into()), None]);
    assert_eq!(strings(&out.batch, 5), vec![None, Some("[1]".into())]);
}

#[test]
fn jsonl_good_and_bad_lines() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("fare", DataType::Float64, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("name", DataType::Utf8, true),
    ]));
    let input = concat!(
        "{\"id\":1,\"fare\":1.5,\"at\":\"2024-01-02 03:04:05\",\"name\":\"a\"}\n", // 1
        "\n",                                                                      // 2
        "{\"id\":2,\"fare\":\"abc\"}\n",                                           // 3: bad fare
        "{\"id\":3,\"name\":7}\r\n", // 4: a number as text
        "{\"id\":4,\"fare\":\n",     // 5: broken JSON
        "{\"fare\":2}\n",            // 6: id missing
        "not json\n",                // 7
        "{\"id\":5,\"at\":\"2024-01-02T03:04:05Z\"}"  // 8: no final newline
    );
    for batch_rows in [1, 3, 100] {
        let out = decode_with(
            SourceFormat::Jsonl,
            input.as_bytes(),
            &schema,
            &CsvReadOptions::default(),
            batch_rows,
            16,
        )
        .unwrap();
        assert_eq!(
            ints(&out.batch, 0),
            vec![Some(1), Some(3), Some(5)],
            "batch_rows {batch_rows}"
        );
        assert_eq!(
            strings(&out.batch, 3),
            vec![Some("a".into()), Some("7".into()), None]
        );
        let at = out
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(at.value(0), 1_704_164_645_000_000);
        assert_eq!(at.value(2), 1_704_164_645_000_000);
        let lines: Vec<u64> = out.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 5, 6, 7]);
        assert_eq!(out.bad[0].raw, "{\"id\":2,\"fare\":\"abc\"}");
        assert!(out.bad[0].error.contains("fare"), "{}", out.bad[0].error);
        assert_eq!(out.records, 7);
    }
}

#[test]
fn jsonl_custom_date_formats() {
    let mut field = Field::new("d", DataType::Date32, true);
    field.set_metadata(HashMap::from([(
        FORMAT_METADATA_KEY.to_string(),
        "%d/%m/%Y".to_string(),
    )]));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        field,
    ]));
    let input = "{\"id\":1,\"d\":\"02/01/1970\"}\n{\"id\":2,\"d\":\"1970-01-02\"}\n{\"id\":3}\n";
    let out = decode_with(
        SourceFormat::Jsonl,
        input.as_bytes(),
        &schema,
        &CsvReadOptions::default(),
        10,
        64,
    )
    .unwrap();
    assert_eq!(ints(&out.batch, 0), vec![Some(1), Some(3)]);
    let d = out
        .batch
        .column(1)
        .as_any()
        .downcast_ref::<Date32Array>()
        .unwrap();
    assert_eq!(d.iter().collect::<Vec<_>>(), vec![Some(1), None]);
    assert_eq!(out.bad.len(), 1);
    assert_eq!(out.bad[0].line, 2);
    assert_eq!(
        out.bad[0].error,
        "column d (date32): cannot parse \"1970-01-02\""
    );
}

/// A `Write` whose bytes stay readable after the encoder that owned it is gone.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

fn round_trip_schema() -> SchemaRef {
    schema(&[
        ("id", DataType::Int64),
        ("fare", DataType::Float64),
        ("ok", DataType::Boolean),
        ("day", DataType::Date32),
        ("at", DataType::Timestamp(TimeUnit::Microsecond, None)),
        (
            "at_utc",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ),
        ("note", DataType::Utf8),
    ])
}

fn round_trip_input() -> String {
    let mut input = String::from("id,fare,ok,day,at,at_utc,note\n");
    for i in 0..2500 {
        let note = match i % 4 {
            0 => format!("\"a, \"\"quoted\"\"\nnote {i}\""),
            1 => String::new(),
            _ => format!("n{i}"),
        };
        input.push_str(&format!(
            "{i},{}.25,{},2024-01-{:02},2024-01-02 03:04:{:02}.5,2024-01-02T03:04:05Z,{note}\n",
            i % 100,
            i % 2 == 0,
            1 + i % 28,
            i % 60
        ));
    }
    input
}

fn encode(
    sink: SinkFormat,
    batches: &[RecordBatch],
    schema: &SchemaRef,
    compression: Compression,
    parquet: &ParquetWriteOptions,
) -> Vec<u8> {
    let buffer = SharedBuffer::default();
    let mut encoder = format::open_encoder(
        sink,
        schema.clone(),
        parquet,
        &CsvWriteOptions::default(),
        compression,
        Box::new(buffer.clone()),
    )
    .unwrap();
    for batch in batches {
        encoder.write(batch).unwrap();
    }
    let rows = encoder.finish().unwrap();
    assert_eq!(
        rows,
        batches.iter().map(|b| b.num_rows() as u64).sum::<u64>()
    );
    buffer.bytes()
}

#[test]
fn csv_to_parquet_and_back() {
    let schema = round_trip_schema();
    let input = round_trip_input();
    let decoded = decode_csv(&input, &schema, &CsvReadOptions::default());
    assert!(decoded.bad.is_empty(), "{:?}", decoded.bad);
    for compression in [
        ParquetCompression::Zstd,
        ParquetCompression::Snappy,
        ParquetCompression::None,
    ] {
        let options = ParquetWriteOptions {
            compression,
            row_group_rows: 1000,
        };
        let batches: Vec<RecordBatch> = (0..5).map(|i| decoded.batch.slice(i * 500, 500)).collect();
        let bytes = encode(
            SinkFormat::Parquet,
            &batches,
            &schema,
            Compression::None,
            &options,
        );
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(format::parquet_rows(builder.metadata()), 2500);
        assert_eq!(builder.metadata().num_row_groups(), 3);
        let read: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        let read = concat_batches(&read[0].schema(), &read).unwrap();
        assert_eq!(read.schema().fields(), schema.fields());
        assert_eq!(read.columns(), decoded.batch.columns(), "{compression:?}");
    }
}

#[test]
fn empty_parquet_output_has_a_footer() {
    let schema = round_trip_schema();
    let bytes = encode(
        SinkFormat::Parquet,
        &[],
        &schema,
        Compression::None,
        &ParquetWriteOptions::default(),
    );
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
    assert_eq!(format::parquet_rows(builder.metadata()), 0);
}

#[test]
fn csv_to_compressed_csv_and_jsonl_and_back() {
    let schema = round_trip_schema();
    let decoded = decode_csv(&round_trip_input(), &schema, &CsvReadOptions::default());
    let batches = [
        decoded.batch.slice(0, 1000),
        decoded.batch.slice(1000, 1500),
    ];
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        for (sink, source) in [
            (SinkFormat::Csv, SourceFormat::Csv),
            (SinkFormat::Jsonl, SourceFormat::Jsonl),
        ] {
            let bytes = encode(
                sink,
                &batches,
                &schema,
                compression,
                &ParquetWriteOptions::default(),
            );
            if compression == Compression::Gzip {
                assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
            }
            let count_input = format::decompress(Box::new(Cursor::new(bytes.clone())), compression);
            let counted = match sink {
                SinkFormat::Csv => format::count_csv_records(count_input, true, b',').unwrap(),
                _ => format::count_lines(count_input).unwrap(),
            };
            assert_eq!(counted, 2500, "{sink:?} {compression:?}");
            let text = format::decompress(Box::new(Cursor::new(bytes)), compression);
            let mut decoder = format::open_decoder(
                source,
                text,
                schema.clone(),
                &CsvReadOptions::default(),
                700,
                "s3://b/out",
            )
            .unwrap();
            let mut read = Vec::new();
            while let Some(d) = decoder.next().unwrap() {
                assert!(d.bad.is_empty(), "{sink:?}: {:?}", d.bad);
                read.push(d.batch);
            }
            let read = concat_batches(&schema, &read).unwrap();
            assert_eq!(read, decoded.batch, "{sink:?} {compression:?}");
        }
    }
}

#[test]
fn csv_output_writes_rfc3339_timestamps_and_a_header_when_empty() {
    let schema = round_trip_schema();
    let decoded = decode_csv(&round_trip_input(), &schema, &CsvReadOptions::default());
    let bytes = encode(
        SinkFormat::Csv,
        &[decoded.batch.slice(1, 1)],
        &schema,
        Compression::None,
        &ParquetWriteOptions::default(),
    );
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(
        text,
        "id,fare,ok,day,at,at_utc,note\n1,1.25,false,2024-01-02,2024-01-02T03:04:01.500,2024-01-02T03:04:05+00:00,\n"
    );
    let empty = encode(
        SinkFormat::Csv,
        &[],
        &schema,
        Compression::None,
        &ParquetWriteOptions::default(),
    );
    assert_eq!(
        String::from_utf8(empty).unwrap(),
        "id,fare,ok,day,at,at_utc,note\n"
    );
}

#[test]
fn count_csv_records_counts_records_not_lines() {
    let input = "a,b\n\"x\ny\",1\r\n\"2\",\"3\nz\"\n\n4,5";
    for capacity in CAPACITIES {
        assert_eq!(
            format::count_csv_records(reader(input.as_bytes(), capacity), true, b',').unwrap(),
            3
        );
    }
    assert_eq!(
        format::count_csv_records(reader(b"a;b\n1;2\n", 64), false, b';').unwrap(),
        2
    );
    assert_eq!(
        format::count_lines(reader(b"{}\n\n{}\r\n  \n{}", 2)).unwrap(),
        3
    );
}

/// A taxi-trip-like CSV of about `target` bytes: 18 columns of ints, floats, two timestamps
/// and short strings.
pub fn taxi_csv(target: usize) -> (Vec<u8>, SchemaRef) {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    let columns: [(&str, DataType); 18] = [
        ("vendor_id", DataType::Int32),
        ("pickup", ts.clone()),
        ("dropoff", ts),
        ("passenger_count", DataType::Int32),
        ("trip_distance", DataType::Float64),
        ("rate_code", DataType::Int32),
        ("store_and_fwd_flag", DataType::Utf8),
        ("pu_location", DataType::Int32),
        ("do_location", DataType::Int32),
        ("payment_type", DataType::Utf8),
        ("fare_amount", DataType::Float64),
        ("extra", DataType::Float64),
        ("mta_tax", DataType::Float64),
        ("tip_amount", DataType::Float64),
        ("tolls_amount", DataType::Float64),
        ("improvement_surcharge", DataType::Float64),
        ("total_amount", DataType::Float64),
        ("congestion_surcharge", DataType::Float64),
    ];
    let schema = schema(&columns);
    let mut out = Vec::with_capacity(target + 256);
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    writeln!(out, "{}", names.join(",")).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let payments = ["card", "cash", "dispute", "no_charge"];
    let time = |t: u64| {
        chrono::DateTime::from_timestamp(t as i64, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let mut i = 0u64;
    while out.len() < target {
        let start = 1_704_067_200 + (i * 7) % 2_592_000;
        let fare = (next() % 10_000) as f64 / 100.0;
        let tip = (next() % 2000) as f64 / 100.0;
        writeln!(
            out,
            "{},{},{},{},{:.2},{},{},{},{},{},{:.2},{:.1},0.5,{:.2},{:.2},0.3,{:.2},2.5",
            1 + next() % 2,
            time(start),
            time(start + 60 + next() % 3600),
            next() % 6,
            (next() % 3000) as f64 / 100.0,
            1 + next() % 5,
            if next() % 50 == 0 { "Y" } else { "N" },
            1 + next() % 265,
            1 + next() % 265,
            payments[(next() % 4) as usize],
            fare,
            (next() % 3) as f64 * 0.5,
            tip,
            (next() % 700) as f64 / 100.0,
            fare + tip + 3.3
        )
        .unwrap();
        i += 1;
    }
    (out, schema)
}

#[test]
fn throughput_function_reports_counts_on_one_and_two_threads() {
    let (csv, schema) = taxi_csv(200_000);
    for threads in [1, 2] {
        let t = format::decode_encode_throughput(
            Box::new(std::io::Cursor::new(csv.clone())),
            csv.len() as u64,
            schema.clone(),
            &CsvReadOptions::default(),
            &ParquetWriteOptions::default(),
            4096,
            threads,
        )
        .unwrap();
        assert_eq!(t.bytes, csv.len() as u64);
        assert_eq!(t.bad_records, 0);
        assert_eq!(
            t.records as usize,
            csv.iter().filter(|b| **b == b'\n').count() - 1
        );
        assert!(t.output_bytes > 0);
    }
}
