//! Job files: loading into `Job`, and problems reported all at once with file, line,
//! column and field path, through the library and through `sluice check`.

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::datatypes::{DataType, TimeUnit};
use sluice::format::options::{Compression, ParquetCompression, SinkFormat, SourceFormat};
use sluice::spec::job::{BadRecordLimit, OnBadRecord, Shards, StepKind};
use sluice::spec::{SpecErrors, load_file, load_str};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spec")
        .join(name)
}

/// The error lines of loading `name`, with the fixture directory left out of the origin.
fn error_lines(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let errors = load_str(&text, name, &[]).unwrap_err();
    errors.errors.iter().map(ToString::to_string).collect()
}

fn assert_has_all(got: &[String], expected: &[&str]) {
    let missing: Vec<&&str> = expected
        .iter()
        .filter(|e| !got.iter().any(|g| g == *e))
        .collect();
    assert!(
        missing.is_empty(),
        "missing lines:\n{}\n\ngot:\n{}",
        missing
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        got.join("\n")
    );
}

#[test]
fn a_full_file_loads_into_the_job() {
    let loaded = load_file(&fixture("full.yaml"), &[]).unwrap();
    let job = loaded.job;
    assert_eq!(job.name, "taxi-csv-to-parquet");
    assert_eq!(job.labels["team"], "data");
    assert_eq!(job.labels["app.kubernetes.io/part-of"], "sluice");
    assert_eq!(job.params["month"], "2026-01");
    assert_eq!(job.params["min_fare"], "0");

    let source = &job.source;
    assert_eq!(source.uri.to_string(), "s3://raw/trips/");
    assert_eq!(source.include, ["**/*.csv", "**/*.csv.gz"]);
    assert_eq!(source.exclude, ["**/_tmp/**"]);
    assert_eq!(source.format, SourceFormat::Csv);
    assert_eq!(source.compression, None);
    assert_eq!(source.csv.delimiter, b';');
    assert_eq!(source.csv.quote, b'"');
    assert_eq!(source.csv.escape, None);
    assert_eq!(source.csv.comment, Some(b'#'));
    assert_eq!(source.csv.null_values, ["", "NA"]);
    assert_eq!(source.infer_records, 500);
    let schema = source.schema.as_ref().unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["vendor_id", "pickup_at", "pickup_day", "fare"]);
    assert_eq!(schema.field(0).data_type(), &DataType::Int32);
    assert!(!schema.field(0).is_nullable());
    assert_eq!(
        schema.field(1).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        schema
            .field(1)
            .metadata()
            .get("sluice.format")
            .map(String::as_str),
        Some("%Y-%m-%d %H:%M:%S")
    );
    assert_eq!(schema.field(2).data_type(), &DataType::Date32);
    assert!(schema.field(2).metadata().is_empty());
    assert_eq!(schema.field(3).data_type(), &DataType::Float64);
    assert!(schema.field(3).is_nullable());

    assert_eq!(job.steps.len(), 2);
    assert_eq!(job.steps[0].name, "clean");
    assert!(job.steps[0].filters);
    let StepKind::Sql { query } = &job.steps[0].kind else {
        panic!("the first step is SQL")
    };
    assert!(query.contains("WHERE fare >= 0"), "params applied: {query}");
    assert_eq!(job.steps[1].name, "step-2");
    assert!(!job.steps[1].filters);

    assert_eq!(job.validate.on_bad_record, OnBadRecord::Reject);
    assert_eq!(
        job.validate.max_bad_records,
        BadRecordLimit::Fraction(0.005)
    );

    let sink = &job.sink;
    assert_eq!(sink.uri.to_string(), "s3://curated/trips/2026-01/");
    assert_eq!(sink.format, SinkFormat::Parquet);
    assert_eq!(sink.parquet.compression, ParquetCompression::Snappy);
    assert_eq!(sink.parquet.row_group_rows, 65536);
    assert_eq!(sink.compression, Compression::None);
    assert_eq!(sink.part_size, 8 << 20);
    assert_eq!(sink.parts_in_flight, 2);
    assert_eq!(sink.max_object_size, 1 << 30);
    assert_eq!(
        sink.key,
        "{{ source.dir }}{{ source.stem }}{{ part }}.{{ ext }}"
    );

    assert_eq!(job.parallelism, 3);
    assert_eq!(job.shards, Shards::Count(4));
    assert_eq!(job.retries, 1);
    assert_eq!(job.state.to_string(), "s3://curated/_sluice/");
    assert_eq!(job.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
}

#[test]
fn a_minimal_file_gets_the_documented_defaults() {
    let job = load_file(&fixture("minimal.yaml"), &[]).unwrap().job;
    assert_eq!(job.source.uri.to_string(), "s3://raw/events/");
    assert_eq!(job.source.compression, None);
    assert!(job.source.schema.is_none());
    assert_eq!(job.source.infer_records, 1000);
    assert!(job.steps.is_empty());
    assert_eq!(job.validate.on_bad_record, OnBadRecord::Fail);
    assert_eq!(job.validate.max_bad_records, BadRecordLimit::Fraction(0.01));
    assert_eq!(job.sink.format, SinkFormat::Parquet);
    assert_eq!(job.sink.parquet.compression, ParquetCompression::Zstd);
    assert_eq!(job.sink.parquet.row_group_rows, 122_880);
    assert_eq!(job.sink.part_size, 16 << 20);
    assert_eq!(job.sink.parts_in_flight, 4);
    assert_eq!(job.sink.max_object_size, (16 << 20) * 10_000);
    assert_eq!(job.parallelism, 2);
    assert_eq!(job.shards, Shards::TargetBytes(256 << 20));
    assert_eq!(job.retries, 2);
    assert_eq!(job.state.to_string(), "s3://curated/_sluice/");
    assert!(job.endpoint.is_none());
    assert!(job.labels.is_empty());
}

#[test]
fn overrides_replace_and_add_params_and_survive_in_the_resolved_yaml() {
    let overrides = [
        ("month".to_string(), "2026-02".to_string()),
        ("extra".to_string(), "x".to_string()),
    ];
    let loaded = load_file(&fixture("full.yaml"), &overrides).unwrap();
    assert_eq!(
        loaded.job.sink.uri.to_string(),
        "s3://curated/trips/2026-02/"
    );
    assert_eq!(loaded.job.params["extra"], "x");
    let again = load_str(&loaded.resolved_yaml, "resolved", &[]).unwrap();
    assert_eq!(again.job.sink.uri, loaded.job.sink.uri);
    assert_eq!(again.job.params, loaded.job.params);
    assert_eq!(format!("{:?}", again.job), format!("{:?}", loaded.job));

    // Without overrides the resolved text is the file itself.
    let text = std::fs::read_to_string(fixture("minimal.yaml")).unwrap();
    assert_eq!(load_str(&text, "m", &[]).unwrap().resolved_yaml, text);
}

#[test]
fn every_problem_in_every_section_is_reported_at_once() {
    let got = error_lines("broken.yaml");
    assert_has_all(
        &got,
        &[
            "broken.yaml:1:13: apiVersion: must be sluice.dev/v1alpha1 (got \"sluice.dev/v1\")",
            "broken.yaml:4:9: metadata.name: must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (got \"Orders_Daily\")",
            "broken.yaml:9:10: spec.source.uri: param `month` is not defined (defined: day; or pass --param month=VALUE)",
            "broken.yaml:10:15: spec.source.include[0]: is not a valid glob: unclosed character class; missing ']'",
            "broken.yaml:13:18: spec.source.csv.delimiter: must be one ASCII character (or \"\\t\" / tab for a tab) (got \";;\")",
            "broken.yaml:18:15: spec.source.schema[1].name: column \"id\" is already defined at spec.source.schema[0]",
            "broken.yaml:22:17: spec.source.schema[2].format: is not a valid chrono strftime format (got \"%Y-%Q\"); see https://docs.rs/chrono/latest/chrono/format/strftime/",
            "broken.yaml:23:19: spec.source.schema[2].timezone: is not a time zone (got \"Mars/Olympus\"); use an IANA name like Europe/Berlin or an offset like +02:00",
            "broken.yaml:26:12: spec.transform[0].sql: INSERT is not allowed: a transform step is exactly one read-only query (SELECT ... FROM input)",
            "broken.yaml:28:9: spec.transform[1].sql: holds 2 statements; a transform step is exactly one read-only query (SELECT ... FROM input)",
            "broken.yaml:30:14: spec.transform[2]: has no kind: give `sql` (one read-only query over `input`) or `container` (a transformer)",
            "broken.yaml:32:20: spec.validate.on_bad_record: unknown variant `ignore`, expected one of `fail`, `skip`, `reject`",
            "broken.yaml:33:22: spec.validate.max_bad_records: must be a fraction from 0 to 1 (0% to 100%) (got \"150%\")",
            "broken.yaml:37:18: spec.sink.compression: applies only to csv and jsonl sinks; parquet compresses inside the file (see sink.parquet.compression)",
            "broken.yaml:38:16: spec.sink.part_size: must be at least 5 MiB (got \"1MiB\")",
            "broken.yaml:39:5: spec.sink.partsize: unknown field; did you mean `part_size`?",
            "broken.yaml:40:22: spec.sink.parts_in_flight: must be at least 1 (got 0)",
            "broken.yaml:41:10: spec.sink.key: must contain {{ part }} (it numbers the objects of an output that spills over max_object_size)",
            "broken.yaml:42:16: spec.parallelism: must be at least 1 (got 0)",
            "broken.yaml:43:11: spec.shards: a size per shard needs a unit, like \"256MiB\"; for a number of shards write the number without quotes (got \"4\")",
            "broken.yaml:44:12: spec.retries: must be at most 100 (got 1000)",
        ],
    );
}

/// A job file template: `{source}` and `{sink}` replace whole sections.
fn job_text(source: &str, sink: &str, extra: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Job\nmetadata:\n  name: t\nspec:\n  source:\n{source}  sink:\n{sink}{extra}"
    )
}

fn errors_of(text: &str) -> Vec<String> {
    match load_str(text, "t.yaml", &[]) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(SpecErrors { errors }) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_sink_must_not_lie_inside_the_source() {
    let text = job_text(
        "    uri: s3://raw/trips/\n    format: csv\n",
        "    uri: s3://raw/trips/out/\n",
        "",
    );
    assert_eq!(
        errors_of(&text),
        [
            "t.yaml:10:10: spec.sink.uri: lies inside the source prefix s3://raw/trips/: the next run would read this job's output as input"
        ]
    );
    // A sibling prefix with the same beginning is fine.
    let text = job_text(
        "    uri: s3://raw/trips\n    format: csv\n",
        "    uri: s3://raw/trips-out/\n",
        "",
    );
    load_str(&text, "t.yaml", &[]).unwrap();
}

#[test]
fn ddl_dml_copy_and_several_statements_are_refused() {
    let cases = [
        ("CREATE TABLE x (a INT)", "CREATE TABLE is not allowed"),
        (
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION 's3://raw/x'",
            "CREATE EXTERNAL TABLE is not allowed",
        ),
        ("DELETE FROM input", "DELETE is not allowed"),
        ("UPDATE input SET a = 1", "UPDATE is not allowed"),
        ("COPY input TO 's3://curated/x.csv'", "COPY is not allowed"),
        ("SELECT 1; SELECT 2", "holds 2 statements"),
        (
            "WITH d AS (DELETE FROM input RETURNING *) SELECT * FROM d",
            "is not",
        ),
    ];
    for (sql, expected) in cases {
        let text = job_text(
            "    uri: s3://raw/x/\n    format: csv\n",
            "    uri: s3://curated/x/\n",
            &format!("  transform:\n    - sql: \"{sql}\"\n"),
        );
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{sql}: {errors:?}");
        assert!(
            errors[0].starts_with("t.yaml:12:12:") && errors[0].contains("spec.transform[0].sql: "),
            "{sql}: {errors:?}"
        );
        assert!(errors[0].contains(expected), "{sql}: {errors:?}");
    }
}

#[test]
fn a_sql_syntax_error_points_into_the_query() {
    let text = job_text(
        "    uri: s3://raw/x/\n    format: csv\n",
        "    uri: s3://curated/x/\n",
        "  transform:\n    - sql: |\n        SELECT a\n        FROM input WHERE a = = 1\n",
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    // Line 2 of the query is line 14 of the file; its text starts at column 9, and the
    // second `=` is its 22nd character.
    assert!(errors[0].starts_with("t.yaml:14:30: "), "{errors:?}");
    assert!(
        errors[0].contains("spec.transform[0].sql: is not valid SQL: "),
        "{errors:?}"
    );
}

#[test]
fn syntax_errors_report_line_and_column() {
    let got = error_lines("bad-indent.yaml");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("bad-indent.yaml:8:"), "{got:?}");
    assert!(got[0].contains("invalid YAML"), "{got:?}");
}

#[test]
fn duplicate_keys_and_missing_sections_are_located() {
    let text = job_text(
        "    uri: s3://raw/x/\n    format: csv\n    format: jsonl\n",
        "    uri: s3://curated/x/\n",
        "",
    );
    assert_eq!(
        errors_of(&text),
        ["t.yaml:9:5: spec.source.format: is given more than once"]
    );
    let text = "apiVersion: sluice.dev/v1alpha1\nkind: Job\nmetadata: {name: t}\nspec:\n  sink: {uri: s3://curated/x/}\n  shard: 3\n";
    assert_eq!(
        errors_of(text),
        [
            "t.yaml:4:1: spec.source: is required",
            "t.yaml:6:3: spec.shard: unknown field; did you mean `shards`?",
        ]
    );
}

#[test]
fn an_unreadable_file_names_the_file() {
    let missing = fixture("does-not-exist.yaml");
    let errors = load_file(&missing, &[]).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(errors.errors[0].line, 0);
    let line = errors.to_string();
    assert!(
        line.starts_with(&format!(
            "{}: cannot read the job file: ",
            missing.display()
        )),
        "{line}"
    );
}

#[test]
fn check_exits_2_and_prints_every_problem() {
    let broken = fixture("broken.yaml");
    let full = fixture("full.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg(&full)
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!(
            "{}: ok (job taxi-csv-to-parquet: 2 steps",
            full.display()
        )),
        "{stdout}"
    );
    let b = broken.display();
    for expected in [
        format!("{b}:38:16: spec.sink.part_size: must be at least 5 MiB (got \"1MiB\")"),
        format!("{b}:39:5: spec.sink.partsize: unknown field; did you mean `part_size`?"),
        format!("{b}:1:13: apiVersion: must be sluice.dev/v1alpha1 (got \"sluice.dev/v1\")"),
    ] {
        assert!(
            stderr.lines().any(|l| l == expected),
            "missing {expected}\n{stderr}"
        );
    }
    assert!(stderr.lines().count() >= 20, "{stderr}");
}

#[test]
fn check_applies_param_overrides() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--param", "month=2026-03"])
        .arg(fixture("full.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sink s3://curated/trips/2026-03/"));

    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--param", "no-equals-sign"])
        .arg(fixture("full.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_prints_the_json_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("schema")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let properties = schema["properties"].as_object().unwrap();
    for key in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(properties.contains_key(key), "{key}");
    }
    let spec = &schema["$defs"]["SpecConfig"]["properties"];
    assert!(spec["source"].is_object());
    assert!(
        spec["parallelism"]["description"]
            .as_str()
            .unwrap()
            .contains("shards run at the same time")
    );
    assert_eq!(spec["parallelism"]["default"], 2);
}

#[test]
fn max_record_size_is_a_size_within_bounds() {
    let source = |size: &str| {
        format!(
            "    uri: s3://raw/x/\n    format: csv\n    csv:\n      max_record_size: {size}\n    schema:\n      - {{ name: a, type: string }}\n"
        )
    };
    let loaded = load_str(
        &job_text(&source("\"64MiB\""), "    uri: s3://out/x/\n", ""),
        "t.yaml",
        &[],
    )
    .unwrap();
    assert_eq!(loaded.job.source.csv.max_record_size, 64 << 20);
    let default = load_str(
        &job_text(
            "    uri: s3://raw/x/\n    format: csv\n    schema:\n      - { name: a, type: string }\n",
            "    uri: s3://out/x/\n",
            "",
        ),
        "t.yaml",
        &[],
    )
    .unwrap();
    assert_eq!(default.job.source.csv.max_record_size, 8 << 20);
    assert_eq!(
        errors_of(&job_text(&source("\"2GiB\""), "    uri: s3://out/x/\n", "")),
        [
            "t.yaml:10:24: spec.source.csv.max_record_size: must be between 1KiB and 1GiB (got 2 GiB)"
        ]
    );
    assert_eq!(
        errors_of(&job_text(&source("lots"), "    uri: s3://out/x/\n", "")),
        [
            "t.yaml:10:24: spec.source.csv.max_record_size: is not a byte size (got \"lots\"); write a size like \"16MiB\" or a number of bytes"
        ]
    );
}
