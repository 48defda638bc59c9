//! Large objects split into ranges: every cut of a CSV object full of quoted newlines moves
//! to a true record boundary, and whole runs whose split objects (CSV, JSONL, Parquet) spread
//! over shards produce exactly the records of a run with `split_size: off`.

use std::io::{BufRead, BufReader, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use serde_json::Value;
use sluice::format::options::{CsvReadOptions, SourceFormat};
use sluice::format::{self, DecodeError, csv_cut};
use sluice::storage::Storage;
use sluice::storage::uri::S3Uri;

use crate::support::job_yaml::JobYaml;
use crate::support::state::{self, json};
use crate::support::{self, TestServer, sluice};

/// The job every test here runs.
const JOB: &str = "big";

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `id,name,fare` rows with quoted commas, doubled quotes, CRLF and LF line ends, and, when
/// `newline_at` is given, one quoted field holding a newline in that row.
fn seeded_csv(seed: u64, rows: u64, newline_at: Option<u64>) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = b"id,name,fare\r\n".to_vec();
    for i in 0..rows {
        let name = match rng.next() % 4 {
            0 => format!("\"rider {i}, the \"\"best\"\"\""),
            1 => format!("\"plain {i}\""),
            2 => format!("rider-{}", rng.next() % 1000),
            _ => String::new(),
        };
        let name = if newline_at == Some(i) {
            format!("\"two\nlines {i}\"")
        } else {
            name
        };
        let end = if rng.next().is_multiple_of(3) {
            "\r\n"
        } else {
            "\n"
        };
        write!(out, "{i},{name},{}.25{end}", rng.next() % 10_000).unwrap();
    }
    out
}

fn seeded_jsonl(seed: u64, rows: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    for i in 0..rows {
        let name = match rng.next() % 3 {
            0 => Value::String(format!("rider {i}, \"best\"\nescaped newline")),
            1 => Value::Null,
            _ => Value::String(format!("r{}", rng.next() % 1000)),
        };
        let line =
            serde_json::json!({"id": i, "name": name, "fare": (rng.next() % 10_000) as f64 + 0.25});
        writeln!(out, "{line}").unwrap();
    }
    out
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("fare", DataType::Float64, true),
    ]))
}

/// A CSV that is hard to cut: `id,name,fare` rows whose names are quoted fields holding LF
/// and CRLF newlines, doubled quotes, delimiters and text that looks like records, beside
/// plain, empty and quoted-empty names; rows end in LF or CRLF.
fn quoted_csv(seed: u64, rows: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = b"id,name,fare\r\n".to_vec();
    for i in 0..rows {
        let name = match rng.next() % 7 {
            0 => format!("\"line one\nline \"\"two\"\"\r\n{i},three\""),
            1 => format!("\"{i},x,1.5\n{},\"\"y\"\",2.5\n\"", i + 1),
            2 => "\"\"\"\"\"\"".to_string(),
            3 => format!("rider-{}", rng.next() % 1000),
            4 => "\"\"".to_string(),
            5 => String::new(),
            _ => format!("\"\n\n,{i}\r\n\""),
        };
        let end = if rng.next().is_multiple_of(2) {
            "\r\n"
        } else {
            "\n"
        };
        write!(out, "{i},{name},{}.25{end}", rng.next() % 10_000).unwrap();
    }
    out
}

/// The `(id, name)` of every record, as the `csv` crate reads them: the reference.
fn reference_records(data: &[u8]) -> Vec<(i64, Option<String>)> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(data)
        .records()
        .map(|r| {
            let r = r.unwrap();
            let name = (!r[1].is_empty()).then(|| r[1].to_string());
            (r[0].parse().unwrap(), name)
        })
        .collect()
}

fn records_of(batch: &RecordBatch) -> Vec<(i64, Option<String>)> {
    let ids = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let names = batch
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    (0..batch.num_rows())
        .map(|i| {
            (
                ids.value(i),
                names.is_valid(i).then(|| names.value(i).to_string()),
            )
        })
        .collect()
}

/// Decodes the range `[start, end)` of a CSV object as a worker does: each cut moved to the
/// next true record boundary, the header first, and a range that ends at a cut required to
/// end with a whole record.
fn decode_range(
    data: &[u8],
    start: usize,
    end: usize,
    options: &CsvReadOptions,
) -> Result<(Vec<RecordBatch>, usize), DecodeError> {
    let options = options.clone();
    let boundary = |cut| {
        csv_cut::boundary_in(data, cut, &options).map_err(|none| DecodeError::NoRecordBoundary {
            origin: "range".into(),
            near: (cut as u64) + none.offset,
            limit: options.max_record_size,
        })
    };
    let begin = boundary(start)?;
    let finish = boundary(end)?.max(begin);
    let mut input = if begin > 0 {
        data[..csv_cut::header_len(data, true, &options).unwrap()].to_vec()
    } else {
        Vec::new()
    };
    input.extend_from_slice(&data[begin..finish]);
    let options = CsvReadOptions {
        ends_at_cut: finish < data.len(),
        ..options
    };
    let reader: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(7, Cursor::new(input)));
    let mut decoder =
        format::open_decoder(SourceFormat::Csv, reader, schema(), &options, 50, "range")?;
    let (mut batches, mut bad) = (Vec::new(), 0);
    while let Some(decoded) = decoder.next()? {
        bad += decoded.bad.len();
        batches.push(decoded.batch);
    }
    Ok((batches, bad))
}

/// The records of a range that must decode cleanly.
fn clean_range(data: &[u8], start: usize, end: usize) -> Vec<RecordBatch> {
    limited_range(data, start, end, &CsvReadOptions::default())
}

fn limited_range(
    data: &[u8],
    start: usize,
    end: usize,
    options: &CsvReadOptions,
) -> Vec<RecordBatch> {
    let (batches, bad) = decode_range(data, start, end, options).unwrap();
    assert_eq!(bad, 0, "range {start}..{end}");
    batches
}

/// Objects full of quoted newlines, doubled quotes and CRLF, cut once at every offset and
/// twice at many pairs, yield ranges whose records, in order, are the whole object's, and
/// those are the records an independent CSV reader (the `csv` crate) reads.
#[test]
fn every_cut_of_a_csv_with_quoted_newlines_is_a_record_boundary() {
    for seed in 1..=6u64 {
        for data in [quoted_csv(seed, 40), seeded_csv(seed, 40, Some(17))] {
            let whole = concat_batches(&schema(), &clean_range(&data, 0, data.len())).unwrap();
            assert_eq!(records_of(&whole), reference_records(&data), "seed {seed}");
            for cut in 1..data.len() {
                let mut batches = clean_range(&data, 0, cut);
                batches.extend(clean_range(&data, cut, data.len()));
                let joined = concat_batches(&schema(), &batches).unwrap();
                assert_eq!(joined, whole, "seed {seed}, cut at {cut}");
            }
            for first in (1..data.len()).step_by(29) {
                for second in (first..data.len()).step_by(31) {
                    let mut batches = clean_range(&data, 0, first);
                    batches.extend(clean_range(&data, first, second));
                    batches.extend(clean_range(&data, second, data.len()));
                    let joined = concat_batches(&schema(), &batches).unwrap();
                    assert_eq!(joined, whole, "seed {seed}, cuts at {first} and {second}");
                }
            }
        }
    }
}

/// A quoted field without any quote byte, as long as a record may be, read at every cut
/// around it: the ranges still hold exactly the whole object's records. Only a record longer
/// than `max_record_size` fails, and it fails split or not, as bad data.
#[test]
fn a_long_quoted_field_without_quotes_splits_like_any_other() {
    let options = CsvReadOptions {
        max_record_size: 64 << 10,
        ..CsvReadOptions::default()
    };
    let field = "a,b\n".repeat(10_000);
    let plain = (0..3_000)
        .map(|i| format!("{i},p,1.5\n"))
        .collect::<String>();
    let data = format!("id,name,fare\n{plain}1,\"{field}\",2.5\n2,x,3.5\n{plain}");
    let data = data.as_bytes();
    let whole = concat_batches(&schema(), &limited_range(data, 0, data.len(), &options)).unwrap();
    assert_eq!(records_of(&whole), reference_records(data));
    for cut in (1..data.len()).step_by(997) {
        let mut batches = limited_range(data, 0, cut, &options);
        batches.extend(limited_range(data, cut, data.len(), &options));
        let joined = concat_batches(&schema(), &batches).unwrap();
        assert_eq!(joined, whole, "cut at {cut}");
    }

    // Over the limit: the whole object fails on the record, a split one at the cut.
    let tight = CsvReadOptions {
        max_record_size: 16 << 10,
        ..CsvReadOptions::default()
    };
    let error = decode_range(data, 0, data.len(), &tight).unwrap_err();
    assert!(
        matches!(error, DecodeError::RecordTooLong { .. }),
        "{error:?}"
    );
    // The range before a cut inside the field reads the long record and refuses it (after
    // the cut, the readings left may agree on a boundary inside the field: that range may
    // fail too, or read records that the failed object never publishes).
    let error = decode_range(data, 0, data.len() / 2, &tight).unwrap_err();
    assert!(error.to_string().contains("max_record_size"), "{error}");
    assert_eq!(error.exit_code(), sluice::exit::ExitCode::BadData);
}

/// A job `big` reading `in/` as `format`, writing JSONL to `out`.
fn job_file(dir: &Path, bucket: &str, format: &str, out: &str, split: &str) -> PathBuf {
    let mut job = JobYaml::new(JOB).source(format!("s3://{bucket}/in/"), format);
    if format != "parquet" {
        job = job.schema(&[("id", "int64"), ("name", "string"), ("fare", "float64")]);
    }
    job.sink(format!("s3://{bucket}/{out}/"))
        .sink_lines("    format: jsonl")
        .set("parallelism", 2)
        .set("shards", 3)
        .set("split_size", split)
        .set("retries", 0)
        .write(dir.join(format!("{out}.yaml")))
}

/// The outputs of one source key in a run's manifest, by output key.
fn outputs_of(manifest: &Value, source: &str) -> Vec<(String, u64)> {
    let mut outputs: Vec<(String, u64)> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["source"] == source)
        .map(|o| {
            (
                o["uri"].as_str().unwrap().to_string(),
                o["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    outputs.sort();
    outputs
}

async fn concatenated(storage: &Storage, outputs: &[(String, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (uri, _) in outputs {
        out.extend_from_slice(
            &storage
                .get_bytes(&uri.parse().unwrap())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    out
}

/// Runs the job split (`split`) and whole, and checks that the split object became `parts`
/// ranges over more than one shard whose outputs, concatenated in order, are byte for byte
/// the whole run's output (so the record counts and content checksums agree).
async fn split_equals_whole(
    server: &TestServer,
    storage: &Storage,
    bucket: &str,
    format: &str,
    big: &str,
    split: &str,
    parts: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let split_job = job_file(dir.path(), bucket, format, "out-split", split);
    let whole_job = job_file(dir.path(), bucket, format, "out-whole", "off");
    let out = sluice(
        &["run", split_job.to_str().unwrap(), "--run-id", "split"],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{format}");
    let out = sluice(
        &["run", whole_job.to_str().unwrap(), "--run-id", "whole"],
        server,
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{format}");

    let plan = json(storage, &state::run(bucket, JOB, "split").plan())
        .await
        .unwrap();
    let shards_with_ranges = plan["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["objects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["key"] == big && o["range"].is_object())
        })
        .count();
    assert!(
        shards_with_ranges > 1,
        "{format}: ranges on {shards_with_ranges} shard(s)"
    );

    let split_manifest = json(storage, &state::run(bucket, JOB, "split").success())
        .await
        .unwrap();
    let whole_manifest = json(storage, &state::run(bucket, JOB, "whole").success())
        .await
        .unwrap();
    assert_eq!(
        split_manifest["records"], whole_manifest["records"],
        "{format}"
    );
    let ranges = outputs_of(&split_manifest, big);
    assert_eq!(ranges.len(), parts, "{format}: {ranges:?}");
    let stem = big.trim_start_matches("in/").split('.').next().unwrap();
    for (i, (uri, _)) in ranges.iter().enumerate() {
        assert_eq!(
            uri,
            &format!("s3://{bucket}/out-split/{stem}.part-{:05}.jsonl", i + 1)
        );
    }
    let whole = outputs_of(&whole_manifest, big);
    assert_eq!(whole.len(), 1);
    assert_eq!(
        ranges.iter().map(|r| r.1).sum::<u64>(),
        whole[0].1,
        "{format}: record count"
    );
    let joined = concatenated(storage, &ranges).await;
    let single = concatenated(storage, &whole).await;
    assert_eq!(
        crc32c::crc32c(&joined),
        crc32c::crc32c(&single),
        "{format}: content checksum"
    );
    assert!(joined == single, "{format}: content differs");

    // One done marker per range (and one for the small object).
    let markers = sluice::state::marker::read_marker_map(
        storage,
        &state::run(bucket, JOB, "split").done_prefix(),
    )
    .await
    .unwrap();
    assert_eq!(markers.len(), parts + 1, "{format}");
    let ranges_marked = markers.keys().filter(|k| k.contains("#part-")).count();
    assert_eq!(ranges_marked, parts, "{format}: {:?}", markers.keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn split_csv_and_jsonl_objects_equal_a_single_task_run() {
    let server = support::embedded();
    for (format, body) in [
        ("csv", seeded_csv(7, 12_000, None)),
        ("jsonl", seeded_jsonl(11, 8_000)),
    ] {
        let (storage, bucket) = server.fresh().await;
        let big = format!("in/big.{format}");
        let size = body.len() as u64;
        let split = 64u64 << 10;
        assert!(size > 4 * split, "{format}: {size} bytes");
        storage
            .put_bytes(
                &S3Uri::new(bucket.as_str(), big.as_str()),
                Bytes::from(body),
            )
            .await
            .unwrap();
        let small = if format == "csv" {
            seeded_csv(3, 10, None)
        } else {
            seeded_jsonl(3, 10)
        };
        storage
            .put_bytes(
                &S3Uri::new(bucket.as_str(), format!("in/small.{format}")),
                Bytes::from(small),
            )
            .await
            .unwrap();
        let parts = size.div_ceil(split) as usize;
        split_equals_whole(server, &storage, &bucket, format, &big, "64KiB", parts).await;
    }
}

/// A split CSV object full of quoted newlines (cuts land inside quoted fields) publishes the
/// records of a whole run, byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn quoted_newlines_in_a_split_object_equal_a_whole_run() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    let body = quoted_csv(5, 3_000);
    let size = body.len() as u64;
    let split = 16u64 << 10;
    assert!(size > 4 * split, "{size} bytes");
    storage
        .put_bytes(
            &S3Uri::new(bucket.as_str(), "in/big.csv"),
            Bytes::from(body),
        )
        .await
        .unwrap();
    storage
        .put_bytes(
            &S3Uri::new(bucket.as_str(), "in/small.csv"),
            Bytes::from(quoted_csv(3, 10)),
        )
        .await
        .unwrap();
    let parts = size.div_ceil(split) as usize;
    split_equals_whole(
        server,
        &storage,
        &bucket,
        "csv",
        "in/big.csv",
        "16KiB",
        parts,
    )
    .await;
}

/// A Parquet object of many row groups is split into ranges of row groups.
#[tokio::test(flavor = "multi_thread")]
async fn split_parquet_objects_by_row_groups() {
    let server = support::embedded();
    let (storage, bucket) = server.fresh().await;
    let mut rng = Rng(99);
    let rows = 20_000usize;
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("rider {i} {}", rng.next() % 100_000)),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|_| (rng.next() % 10_000) as f64 + 0.5),
            )),
        ],
    )
    .unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(2_000))
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .build();
    let mut body = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut body, schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let groups = parquet::file::reader::SerializedFileReader::new(Bytes::from(body.clone()))
        .map(|r| parquet::file::reader::FileReader::metadata(&r).num_row_groups())
        .unwrap();
    assert_eq!(groups, 10);
    let size = body.len();
    storage
        .put_bytes(
            &S3Uri::new(bucket.as_str(), "in/big.parquet"),
            Bytes::from(body),
        )
        .await
        .unwrap();
    let small = {
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema(), None).unwrap();
        w.write(&batch.slice(0, 10)).unwrap();
        w.close().unwrap();
        out
    };
    storage
        .put_bytes(
            &S3Uri::new(bucket.as_str(), "in/small.parquet"),
            Bytes::from(small),
        )
        .await
        .unwrap();
    // Row groups of about size/10 bytes, grouped up to size/4: pairs of row groups.
    let split = format!("{}B", size / 4);
    split_equals_whole(
        server,
        &storage,
        &bucket,
        "parquet",
        "in/big.parquet",
        &split,
        5,
    )
    .await;
}

/// `split_size` and `mode`: their defaults, `off` and `0`, and errors naming the field.
#[test]
fn split_size_and_mode_parse_with_their_defaults() {
    use sluice::spec::file::RunMode;
    let job = |extra: &str| {
        sluice::spec::load_str(
            &format!(
                "apiVersion: sluice.dev/v1alpha1\nkind: Job\nmetadata: {{name: j}}\nspec:\n  source: {{uri: s3://raw/in/, format: csv}}\n  sink: {{uri: s3://out/out/}}\n{extra}"
            ),
            "job.yaml",
            &[],
        )
    };
    let defaults = job("").unwrap().job;
    assert_eq!(defaults.split_size, Some(256 << 20));
    assert_eq!(defaults.mode, RunMode::Full);
    assert_eq!(job("  split_size: off\n").unwrap().job.split_size, None);
    assert_eq!(job("  split_size: 0\n").unwrap().job.split_size, None);
    let set = job("  split_size: 64KiB\n  mode: incremental\n")
        .unwrap()
        .job;
    assert_eq!(set.split_size, Some(64 << 10));
    assert_eq!(set.mode, RunMode::Incremental);
    let error = job("  split_size: 5\n").unwrap_err().to_string();
    assert!(
        error.contains("spec.split_size") && error.contains("needs a unit"),
        "{error}"
    );
    let error = job("  mode: sometimes\n").unwrap_err().to_string();
    assert!(error.contains("spec.mode"), "{error}");

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/events-incremental.yaml");
    let example = sluice::spec::load_file(&example, &[]).unwrap().job;
    assert_eq!(example.mode, RunMode::Incremental);
    assert_eq!(example.split_size, Some(512 << 20));
}
