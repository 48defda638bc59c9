//! The pure step from the raw file to the runtime `Job`: every cross-field check, every
//! problem collected before failing, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::format::{Item, StrftimeItems};
use globset::Glob;

use crate::format::FORMAT_METADATA_KEY;
use crate::format::options::{
    Compression, CsvReadOptions, CsvWriteOptions, ParquetWriteOptions, SinkFormat, SourceFormat,
};
use crate::spec::error::Problem;
use crate::spec::file::{
    API_VERSION, BadRecordLimitConfig, ByteSizeConfig, ColumnConfig, ColumnType, CsvSourceConfig,
    JobFile, KIND, Metadata, ShardsConfig, SinkConfig, SourceCompression, SourceConfig,
    SplitSizeConfig, TransformStepConfig, ValidateConfig,
};
use crate::spec::job::{BadRecordLimit, Job, Shards, Sink, Source, Step, StepKind, Validation};
use crate::spec::size::{GIB, MIB, has_unit, parse_byte_size, show};
use crate::spec::span::{At, FieldPath};
use crate::spec::sql::check_read_only_query;
use crate::spec::template::{Strictness, apply_params, is_param_name};
use crate::storage::uri::S3Uri;

/// S3 multipart limits.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
pub const MAX_PART_SIZE: u64 = 5 * GIB;
pub const MAX_PARTS: u64 = 10_000;
/// A bound that catches typos; a job that needs more retries has another problem.
pub const MAX_RETRIES: u32 = 100;

/// A part of the file that is read on its own, so that one broken part does not hide the
/// problems of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    ApiVersion,
    Kind,
    Metadata,
    Params,
    Source,
    /// The `transform` list as a whole (not a list).
    Transform,
    Step(usize),
    Validate,
    Sink,
    Parallelism,
    Shards,
    SplitSize,
    Mode,
    Retries,
    State,
    Endpoint,
    Kubernetes,
}

/// The units that could not be read; their problems are already reported and validation
/// skips them (and every check that needs them).
#[derive(Debug, Default, Clone)]
pub struct Broken(pub BTreeSet<Unit>);

impl Broken {
    fn has(&self, unit: Unit) -> bool {
        self.0.contains(&unit)
    }
}

/// Validates a whole job file (params already merged with any overrides).
pub fn validate(file: &JobFile) -> Result<Job, Vec<Problem>> {
    validate_parts(file, &Broken::default())
}

/// Validates the parts of `file` that are not broken; fails if any part is broken.
pub fn validate_parts(file: &JobFile, broken: &Broken) -> Result<Job, Vec<Problem>> {
    let mut v = Check {
        problems: Vec::new(),
        broken,
    };
    let job = v.job(file);
    match job {
        Some(job) if v.problems.is_empty() && broken.0.is_empty() => Ok(job),
        _ => Err(v.problems),
    }
}

struct Check<'a> {
    problems: Vec<Problem>,
    broken: &'a Broken,
}

fn path(text: &str) -> FieldPath {
    FieldPath::parse(text)
}

impl Check<'_> {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    /// Runs `check` unless `unit` is broken; `None` when broken or when it found problems.
    fn unit<T>(&mut self, unit: Unit, check: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        if self.broken.has(unit) {
            return None;
        }
        let before = self.problems.len();
        let out = check(self);
        if self.problems.len() > before {
            None
        } else {
            out
        }
    }

    fn job(&mut self, file: &JobFile) -> Option<Job> {
        self.unit(Unit::ApiVersion, |v| {
            if file.api_version != API_VERSION {
                v.error(
                    path("apiVersion"),
                    format!("must be {API_VERSION} (got {:?})", file.api_version),
                );
            }
            Some(())
        });
        self.unit(Unit::Kind, |v| {
            if file.kind != KIND {
                v.error(
                    path("kind"),
                    format!("must be {KIND} (got {:?})", file.kind),
                );
            }
            Some(())
        });
        let metadata = self.unit(Unit::Metadata, |v| v.metadata(&file.metadata));
        let spec = &file.spec;
        let params_ok = self
            .unit(Unit::Params, |v| {
                for name in spec.params.keys() {
                    if !is_param_name(name) {
                        v.problems.push(Problem::at_key(
                            path("spec.params").key(name),
                            "is not a valid param name: a letter or '_', then letters, digits, '_' or '-'",
                        ));
                    }
                }
                Some(())
            })
            .is_some();
        let params = Params {
            values: &spec.params,
            complete: params_ok,
        };
        let source = self.unit(Unit::Source, |v| v.source(&spec.source, &params));
        let steps = self.steps(&spec.transform, &params);
        let validation = self.unit(Unit::Validate, |v| v.validation(&spec.validate));
        let sink = self.unit(Unit::Sink, |v| v.sink(&spec.sink, &params));
        let parallelism = self.unit(Unit::Parallelism, |v| {
            if spec.parallelism < 1 {
                v.error(path("spec.parallelism"), "must be at least 1 (got 0)");
            }
            Some(spec.parallelism)
        });
        let shards = self.unit(Unit::Shards, |v| v.shards(&spec.shards));
        let split_size = self.unit(Unit::SplitSize, |v| v.split_size(&spec.split_size));
        let mode = self.unit(Unit::Mode, |_| Some(spec.mode));
        let retries = self.unit(Unit::Retries, |v| {
            if spec.retries > MAX_RETRIES {
                v.error(
                    path("spec.retries"),
                    format!("must be at most {MAX_RETRIES} (got {})", spec.retries),
                );
            }
            Some(spec.retries)
        });
        let state = self.unit(Unit::State, |v| match &spec.state {
            Some(text) => v.uri(path("spec.state"), text, &params),
            // The default needs the sink; it is filled in below.
            None => Some(S3Uri::new("", "")),
        });
        let endpoint = self.unit(Unit::Endpoint, |v| {
            if let Some(url) = &spec.endpoint {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                    v.error(
                        path("spec.endpoint"),
                        format!("must be an http:// or https:// URL with a host (got {url:?})"),
                    );
                }
            }
            Some(spec.endpoint.clone())
        });

        if let (Some(source), Some(steps)) = (&source, &steps) {
            let raw_first = matches!(
                steps.first().map(|s| &s.kind),
                Some(StepKind::Container(c)) if c.input == crate::spec::container::StepInput::Raw
            );
            if source.format == SourceFormat::Raw && !raw_first {
                self.error(
                    path("spec.source.format"),
                    "raw objects are not decoded: the first step must be a container step with `input: raw`",
                );
            }
            if source.format == SourceFormat::Raw && source.schema.is_some() {
                self.error(
                    path("spec.source.schema"),
                    "does not apply to raw objects, which are not decoded",
                );
            }
        }
        let kubernetes = self.unit(Unit::Kubernetes, |v| {
            crate::spec::kubernetes::check(&spec.kubernetes, &mut v.problems)
        });

        // Checks across sections, only between parts that are themselves sound.
        if let (Some(source), Some(sink)) = (&source, &sink)
            && inside(&sink.uri, &source.uri)
        {
            self.error(
                path("spec.sink.uri"),
                format!(
                    "lies inside the source prefix {}: the next run would read this job's output as input",
                    source.uri.as_prefix()
                ),
            );
        }
        if let (Some(source), Some(state)) = (&source, &state)
            && spec.state.is_some()
            && inside(state, &source.uri)
        {
            self.error(
                path("spec.state"),
                format!(
                    "lies inside the source prefix {}: run state would be read as input",
                    source.uri.as_prefix()
                ),
            );
        }

        let (metadata, sink) = (metadata?, sink?);
        let state = match spec.state {
            Some(_) => state?.as_prefix(),
            None => S3Uri::new(sink.uri.bucket.clone(), "_sluice/"),
        };
        Some(Job {
            name: metadata.0,
            labels: metadata.1,
            source: source?,
            steps: steps?,
            validate: validation?,
            sink,
            parallelism: parallelism?,
            shards: shards?,
            split_size: split_size?,
            mode: mode?,
            retries: retries?,
            state,
            endpoint: endpoint?,
            params: spec.params.clone(),
            kubernetes: kubernetes?,
        })
    }

    fn metadata(&mut self, m: &Metadata) -> Option<(String, BTreeMap<String, String>)> {
        check_metadata(m, &mut self.problems);
        Some((m.name.clone(), m.labels.clone()))
    }

    /// Applies params to a URI field and parses it.
    fn uri(&mut self, at: FieldPath, text: &str, params: &Params) -> Option<S3Uri> {
        let text = self.template(&at, text, params, Strictness::Strict)?;
        match text.parse::<S3Uri>() {
            Ok(uri) => Some(uri),
            Err(e) => {
                self.error(at, format!("is not an S3 URI: {e}"));
                None
            }
        }
    }

    fn template(
        &mut self,
        at: &FieldPath,
        text: &str,
        params: &Params,
        strictness: Strictness,
    ) -> Option<String> {
        match apply_params(text, params.values, strictness) {
            Ok(out) => Some(out),
            Err(problems) => {
                // With a broken params section, undefined names are its fault, not this field's.
                if params.complete {
                    for message in problems {
                        self.error(at.clone(), message);
                    }
                }
                None
            }
        }
    }

    fn source(&mut self, s: &SourceConfig, params: &Params) -> Option<Source> {
        let uri = self.uri(path("spec.source.uri"), &s.uri, params);
        let include = self.globs(path("spec.source.include"), &s.include, params);
        let exclude = self.globs(path("spec.source.exclude"), &s.exclude, params);
        let csv = match (&s.csv, s.format) {
            (Some(csv), SourceFormat::Csv) => self.csv_source(csv),
            (None, _) => Some(CsvReadOptions::default()),
            (Some(_), other) => {
                self.error(
                    path("spec.source.csv"),
                    format!(
                        "applies only to format csv (the format is {})",
                        source_format_name(other)
                    ),
                );
                None
            }
        };
        let schema = match &s.schema {
            None => Some(None),
            Some(columns) => self.schema(columns).map(Some),
        };
        if s.infer_records < 1 {
            self.error(
                path("spec.source.infer_records"),
                "must be at least 1 (got 0)",
            );
        }
        let compression = match s.compression {
            SourceCompression::Auto => None,
            SourceCompression::None => Some(Compression::None),
            SourceCompression::Gzip => Some(Compression::Gzip),
            SourceCompression::Zstd => Some(Compression::Zstd),
        };
        Some(Source {
            uri: uri?.as_prefix(),
            include: include?,
            exclude: exclude?,
            format: s.format,
            csv: csv?,
            compression,
            schema: schema?,
            infer_records: usize::try_from(s.infer_records).unwrap_or(usize::MAX),
        })
    }

    fn globs(&mut self, at: FieldPath, globs: &[String], params: &Params) -> Option<Vec<String>> {
        let mut out = Vec::with_capacity(globs.len());
        let mut ok = true;
        for (i, glob) in globs.iter().enumerate() {
            let at = at.index(i);
            let Some(glob) = self.template(&at, glob, params, Strictness::Strict) else {
                ok = false;
                continue;
            };
            if glob.is_empty() {
                self.error(at, "is empty");
                ok = false;
            } else if let Err(e) = Glob::new(&glob) {
                self.error(at, format!("is not a valid glob: {}", e.kind()));
                ok = false;
            } else {
                out.push(glob);
            }
        }
        ok.then_some(out)
    }

    fn csv_source(&mut self, c: &CsvSourceConfig) -> Option<CsvReadOptions> {
        let base = path("spec.source.csv");
        let delimiter = self.csv_char(base.key("delimiter"), &c.delimiter);
        let quote = self.csv_char(base.key("quote"), &c.quote);
        let escape = match &c.escape {
            Some(e) => self.csv_char(base.key("escape"), e).map(Some),
            None => Some(None),
        };
        let comment = match &c.comment {
            Some(e) => self.csv_char(base.key("comment"), e).map(Some),
            None => Some(None),
        };
        let (delimiter, quote, escape, comment) = (delimiter?, quote?, escape?, comment?);
        // The delimiter, quote, escape and comment characters must tell each other apart;
        // an escape equal to the quote is RFC 4180's doubled quote and fine.
        let named = [
            ("delimiter", Some(delimiter)),
            ("quote", Some(quote)),
            ("escape", escape),
            ("comment", comment),
        ];
        for (i, (a, ca)) in named.iter().enumerate() {
            for (b, cb) in &named[i + 1..] {
                if ca.is_some() && ca == cb && !(*a == "quote" && *b == "escape") {
                    self.error(
                        base.key(b),
                        format!(
                            "must differ from {a} (both are {:?})",
                            ca.map(char::from).unwrap_or_default()
                        ),
                    );
                }
            }
        }
        Some(CsvReadOptions {
            delimiter,
            header: c.header,
            quote,
            escape,
            null_values: c.null_values.clone(),
            comment,
            single_line_records: false,
        })
    }

    fn csv_char(&mut self, at: FieldPath, text: &str) -> Option<u8> {
        match csv_char(text) {
            Ok(c) => Some(c),
            Err(message) => {
                self.error(at, message);
                None
            }
        }
    }

    fn schema(&mut self, columns: &[ColumnConfig]) -> Option<Arc<Schema>> {
        let base = path("spec.source.schema");
        if columns.is_empty() {
            self.error(
                base,
                "lists no columns; list them, or leave schema out to infer it",
            );
            return None;
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut fields = Vec::with_capacity(columns.len());
        for (i, c) in columns.iter().enumerate() {
            let at = base.index(i);
            if c.name.trim().is_empty() {
                self.error(at.key("name"), "is empty");
            } else if let Some(first) = seen.insert(c.name.as_str(), i) {
                self.error(
                    at.key("name"),
                    format!(
                        "column {:?} is already defined at spec.source.schema[{first}]",
                        c.name
                    ),
                );
            }
            if let Some(format) = &c.format {
                if !matches!(c.data_type, ColumnType::Date | ColumnType::Timestamp) {
                    self.error(
                        at.key("format"),
                        "applies only to date and timestamp columns",
                    );
                } else if let Err(why) = check_strftime(format) {
                    self.error(at.key("format"), why);
                }
            }
            let mut timezone = None;
            if let Some(tz) = &c.timezone {
                if c.data_type != ColumnType::Timestamp {
                    self.error(at.key("timezone"), "applies only to timestamp columns");
                } else if Tz::from_str(tz).is_err() {
                    self.error(
                        at.key("timezone"),
                        format!("is not a time zone (got {tz:?}); use an IANA name like Europe/Berlin or an offset like +02:00"),
                    );
                } else {
                    timezone = Some(Arc::<str>::from(tz.as_str()));
                }
            }
            let data_type = match c.data_type {
                ColumnType::String => DataType::Utf8,
                ColumnType::Int32 => DataType::Int32,
                ColumnType::Int64 => DataType::Int64,
                ColumnType::Float32 => DataType::Float32,
                ColumnType::Float64 => DataType::Float64,
                ColumnType::Boolean => DataType::Boolean,
                ColumnType::Date => DataType::Date32,
                ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, timezone),
            };
            let mut field = Field::new(c.name.clone(), data_type, c.nullable);
            if let Some(format) = &c.format {
                field = field.with_metadata(HashMap::from([(
                    FORMAT_METADATA_KEY.to_string(),
                    format.clone(),
                )]));
            }
            fields.push(field);
        }
        Some(Arc::new(Schema::new(fields)))
    }

    fn steps(&mut self, steps: &[TransformStepConfig], params: &Params) -> Option<Vec<Step>> {
        if self.broken.has(Unit::Transform) {
            return None;
        }
        let mut out = Vec::with_capacity(steps.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ports: HashMap<u16, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            let at = path("spec.transform").index(i);
            let checked = self.unit(Unit::Step(i), |v| {
                let name = match &step.name {
                    Some(name) => {
                        if !is_dns_label(name) {
                            v.error(
                                at.key("name"),
                                format!("must be at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (got {name:?})"),
                            );
                        }
                        name.clone()
                    }
                    None => format!("step-{}", i + 1),
                };
                if let Some(first) = names.insert(name.clone(), i) {
                    v.error(
                        at.key("name"),
                        format!("step name {name:?} is already used by spec.transform[{first}]"),
                    );
                }
                let kind = match (&step.sql, &step.container) {
                    (Some(sql), None) => v.sql(at.key("sql"), sql, params),
                    (None, Some(container)) => crate::spec::container::check(
                        container,
                        &at.key("container"),
                        crate::spec::container::Position {
                            index: i,
                            first: i == 0,
                            last: i + 1 == steps.len(),
                        },
                        &mut v.problems,
                    )
                    .map(|c| StepKind::Container(Box::new(c))),
                    (Some(_), Some(_)) => {
                        v.error(at.clone(), "has two kinds: give either `sql` or `container`");
                        None
                    }
                    (None, None) => {
                        v.error(at.clone(), "has no kind: give `sql` (one read-only query over `input`) or `container` (a transformer)");
                        None
                    }
                };
                if let Some(StepKind::Container(c)) = &kind
                    && let port = c.listen_port()
                    && let Some(other) = ports.insert(port, i)
                {
                    v.error(
                        at.key("container").key("port"),
                        format!("port {port} is already used by spec.transform[{other}]"),
                    );
                }
                Some(Step {
                    name,
                    kind: kind?,
                    filters: step.filters,
                })
            });
            if let Some(step) = checked {
                out.push(step);
            }
        }
        (out.len() == steps.len()).then_some(out)
    }

    fn sql(&mut self, at: FieldPath, sql: &str, params: &Params) -> Option<StepKind> {
        let query = self.template(&at, sql, params, Strictness::Lenient)?;
        if let Err(problem) = check_read_only_query(&query) {
            // Positions refer to the text after params were applied; they match the file
            // only when no param was substituted.
            let at_sql = match problem.position {
                Some((line, column)) if query == sql => At::Within { line, column },
                _ => At::Value,
            };
            self.problems.push(Problem {
                path: at,
                at: at_sql,
                message: problem.message,
            });
            return None;
        }
        Some(StepKind::Sql { query })
    }

    fn validation(&mut self, c: &ValidateConfig) -> Option<Validation> {
        let at = path("spec.validate.max_bad_records");
        let limit = match bad_record_limit(&c.max_bad_records) {
            Ok(limit) => Some(limit),
            Err(message) => {
                self.error(at, message);
                None
            }
        };
        let rules = crate::spec::rules::check(&c.rules, &mut self.problems);
        Some(Validation {
            on_bad_record: c.on_bad_record,
            max_bad_records: limit?,
            rules: rules?,
            examples: c.examples,
        })
    }

    fn sink(&mut self, s: &SinkConfig, params: &Params) -> Option<Sink> {
        let base = path("spec.sink");
        let uri = self.uri(base.key("uri"), &s.uri, params);
        let format_name = s.format.extension();
        let parquet = match (&s.parquet, s.format) {
            (None, _) => Some(ParquetWriteOptions::default()),
            (Some(p), SinkFormat::Parquet) => {
                if p.row_group_rows < 1 {
                    self.error(
                        base.key("parquet").key("row_group_rows"),
                        "must be at least 1 (got 0)",
                    );
                }
                Some(ParquetWriteOptions {
                    compression: p.compression,
                    row_group_rows: usize::try_from(p.row_group_rows).unwrap_or(usize::MAX),
                })
            }
            (Some(_), _) => {
                self.error(
                    base.key("parquet"),
                    format!("applies only to format parquet (the format is {format_name})"),
                );
                None
            }
        };
        let csv = match (&s.csv, s.format) {
            (None, _) => Some(CsvWriteOptions::default()),
            (Some(c), SinkFormat::Csv) => {
                let at = base.key("csv").key("delimiter");
                match self.csv_char(at.clone(), &c.delimiter) {
                    Some(b'"') => {
                        self.error(at, "must not be '\"', the quote character of CSV output");
                        None
                    }
                    Some(delimiter) => Some(CsvWriteOptions {
                        delimiter,
                        header: c.header,
                    }),
                    None => None,
                }
            }
            (Some(_), _) => {
                self.error(
                    base.key("csv"),
                    format!("applies only to format csv (the format is {format_name})"),
                );
                None
            }
        };
        let compression = match (s.compression, s.format) {
            (Some(c), SinkFormat::Parquet) if c != Compression::None => {
                self.error(
                    base.key("compression"),
                    "applies only to csv and jsonl sinks; parquet compresses inside the file (see sink.parquet.compression)",
                );
                None
            }
            (c, _) => Some(c.unwrap_or(Compression::None)),
        };
        let part_size = self
            .byte_size(base.key("part_size"), &s.part_size)
            .and_then(|n| {
                if n < MIN_PART_SIZE {
                    self.error(
                        base.key("part_size"),
                        format!(
                            "must be at least {} (got {})",
                            show(MIN_PART_SIZE),
                            s.part_size
                        ),
                    );
                    None
                } else if n > MAX_PART_SIZE {
                    self.error(
                        base.key("part_size"),
                        format!(
                            "must be at most {} (got {})",
                            show(MAX_PART_SIZE),
                            s.part_size
                        ),
                    );
                    None
                } else {
                    Some(n)
                }
            });
        if s.parts_in_flight < 1 {
            self.error(base.key("parts_in_flight"), "must be at least 1 (got 0)");
        }
        let max_object_size = match (&s.max_object_size, part_size) {
            (None, Some(part)) => Some(part * MAX_PARTS),
            (None, None) => None,
            (Some(written), part) => {
                let at = base.key("max_object_size");
                match (self.byte_size(at.clone(), written), part) {
                    (Some(n), Some(part)) if n < part => {
                        self.error(
                            at,
                            format!(
                                "must be at least part_size ({}) (got {written})",
                                show(part)
                            ),
                        );
                        None
                    }
                    (Some(n), Some(part)) if n > part * MAX_PARTS => {
                        self.error(
                            at,
                            format!(
                                "must be at most part_size x {MAX_PARTS} ({}), the S3 part limit (got {written})",
                                show(part * MAX_PARTS)
                            ),
                        );
                        None
                    }
                    (n, _) => n,
                }
            }
        };
        if let Err(problems) = check_key_template(&s.key) {
            for message in problems {
                self.error(base.key("key"), message);
            }
        }
        Some(Sink {
            uri: uri?.as_prefix(),
            format: s.format,
            parquet: parquet?,
            csv: csv?,
            compression: compression?,
            part_size: part_size?,
            parts_in_flight: s.parts_in_flight as usize,
            max_object_size: max_object_size?,
            key: s.key.clone(),
        })
    }

    fn byte_size(&mut self, at: FieldPath, size: &ByteSizeConfig) -> Option<u64> {
        match size {
            ByteSizeConfig::Bytes(n) => Some(*n),
            ByteSizeConfig::Text(text) => match parse_byte_size(text) {
                Ok(n) => Some(n),
                Err(message) => {
                    self.error(at, message);
                    None
                }
            },
        }
    }

    fn split_size(&mut self, s: &SplitSizeConfig) -> Option<Option<u64>> {
        let at = path("spec.split_size");
        match s {
            SplitSizeConfig::Count(0) => Some(None),
            SplitSizeConfig::Size(text) if text.trim().eq_ignore_ascii_case("off") => Some(None),
            SplitSizeConfig::Count(n) => {
                self.error(
                    at,
                    format!("a split size needs a unit, like \"256MiB\", or is 0 or off (got {n})"),
                );
                None
            }
            SplitSizeConfig::Size(text) if !has_unit(text) => {
                self.error(
                    at,
                    format!(
                        "a split size needs a unit, like \"256MiB\", or is 0 or off (got {text:?})"
                    ),
                );
                None
            }
            SplitSizeConfig::Size(text) => match parse_byte_size(text) {
                Ok(0) => Some(None),
                Ok(n) => Some(Some(n)),
                Err(message) => {
                    self.error(at, message);
                    None
                }
            },
        }
    }

    fn shards(&mut self, s: &ShardsConfig) -> Option<Shards> {
        let at = path("spec.shards");
        match s {
            ShardsConfig::Count(0) => {
                self.error(at, "must be at least 1 (got 0)");
                None
            }
            ShardsConfig::Count(n) => match u32::try_from(*n) {
                Ok(n) => Some(Shards::Count(n)),
                Err(_) => {
                    self.error(at, format!("must be at most {} (got {n})", u32::MAX));
                    None
                }
            },
            ShardsConfig::Size(text) if !has_unit(text) => {
                self.error(
                    at,
                    format!("a size per shard needs a unit, like \"256MiB\"; for a number of shards write the number without quotes (got {text:?})"),
                );
                None
            }
            ShardsConfig::Size(text) => match parse_byte_size(text) {
                Ok(0) => {
                    self.error(
                        at,
                        format!("must be more than 0 bytes per shard (got {text:?})"),
                    );
                    None
                }
                Ok(n) => Some(Shards::TargetBytes(n)),
                Err(message) => {
                    self.error(at, message);
                    None
                }
            },
        }
    }
}

/// The params for templating, and whether they were read without problems.
struct Params<'a> {
    values: &'a BTreeMap<String, String>,
    complete: bool,
}

/// Whether `inner` lies at or below the prefix `outer` in the same bucket.
fn inside(inner: &S3Uri, outer: &S3Uri) -> bool {
    inner.bucket == outer.bucket && inner.as_prefix().key.starts_with(&outer.as_prefix().key)
}

fn source_format_name(format: SourceFormat) -> &'static str {
    match format {
        SourceFormat::Csv => "csv",
        SourceFormat::Jsonl => "jsonl",
        SourceFormat::Parquet => "parquet",
        SourceFormat::Raw => "raw",
    }
}

/// One ASCII character for CSV, also accepting `\t` (two characters) and `tab`.
pub fn csv_char(text: &str) -> Result<u8, String> {
    if text == "\\t" || text.eq_ignore_ascii_case("tab") {
        return Ok(b'\t');
    }
    match text.as_bytes() {
        [b'\n' | b'\r'] => Err("must not be a line break".to_string()),
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(format!(
            "must be one ASCII character (or \"\\t\" / tab for a tab) (got {text:?})"
        )),
    }
}

/// A chrono strftime format with no unknown specifiers.
pub fn check_strftime(format: &str) -> Result<(), String> {
    if format.is_empty() {
        return Err("is empty".to_string());
    }
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!(
            "is not a valid chrono strftime format (got {format:?}); see https://docs.rs/chrono/latest/chrono/format/strftime/"
        ));
    }
    Ok(())
}

fn bad_record_limit(c: &BadRecordLimitConfig) -> Result<BadRecordLimit, String> {
    let fraction = |x: f64, shown: String| {
        if x.is_finite() && (0.0..=1.0).contains(&x) {
            Ok(BadRecordLimit::Fraction(x))
        } else {
            Err(format!(
                "must be a fraction from 0 to 1 (0% to 100%) (got {shown})"
            ))
        }
    };
    match c {
        BadRecordLimitConfig::Count(n) => Ok(BadRecordLimit::Count(*n)),
        BadRecordLimitConfig::Fraction(x) => fraction(*x, c.to_string()),
        BadRecordLimitConfig::Text(text) => {
            let t = text.trim();
            if let Some(percent) = t.strip_suffix('%') {
                match percent.trim().parse::<f64>() {
                    Ok(p) => fraction(p / 100.0, c.to_string()),
                    Err(_) => Err(format!("is not a percentage (got {c})")),
                }
            } else if let Ok(n) = t.parse::<u64>() {
                Ok(BadRecordLimit::Count(n))
            } else if let Ok(x) = t.parse::<f64>() {
                fraction(x, c.to_string())
            } else {
                Err(format!(
                    "must be a count like 10 or a fraction like \"1%\" or 0.01 (got {c})"
                ))
            }
        }
    }
}

/// The variables an output key template may use.
pub const KEY_VARIABLES: [&str; 6] = [
    "source.dir",
    "source.stem",
    "source.name",
    "source.key",
    "part",
    "ext",
];

/// Checks an output key template: known variables only, `{{ part }}` present (so spill-over
/// objects get distinct keys) and one variable naming the source object (so two sources
/// never write the same key).
pub fn check_key_template(template: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut used = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            problems.push("`{{` is not closed by `}}`".to_string());
            break;
        };
        let var = after[..end].trim();
        if KEY_VARIABLES.contains(&var) {
            used.push(var);
        } else {
            problems.push(format!(
                "unknown variable `{{{{ {var} }}}}`; a key may use {}",
                KEY_VARIABLES.map(|v| format!("{{{{ {v} }}}}")).join(", ")
            ));
        }
        rest = &after[end + 2..];
    }
    if template.trim().is_empty() {
        problems.push("is empty".to_string());
    } else if template.starts_with('/') {
        problems.push("must not start with '/': it is relative to the sink prefix".to_string());
    }
    if !used.contains(&"part") {
        problems.push("must contain {{ part }} (it numbers the objects of an output that spills over max_object_size)".to_string());
    }
    if !used
        .iter()
        .any(|v| matches!(*v, "source.stem" | "source.name" | "source.key"))
    {
        problems.push("must contain one of {{ source.stem }}, {{ source.name }}, {{ source.key }} (so that each source object gets its own output key)".to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks `metadata`: the name is a DNS-1123 label, the labels are Kubernetes labels.
pub(crate) fn check_metadata(m: &Metadata, problems: &mut Vec<Problem>) {
    if !is_dns_label(&m.name) {
        problems.push(Problem::new(
            path("metadata.name"),
            format!(
                "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (got {:?})",
                m.name
            ),
        ));
    }
    for (key, value) in &m.labels {
        let at = path("metadata.labels").key(key);
        if let Err(why) = check_label_key(key) {
            problems.push(Problem::at_key(at.clone(), why));
        }
        if !value.is_empty() && !is_label_name(value) {
            problems.push(Problem::new(
                at,
                format!(
                    "is not a valid label value: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit (got {value:?})"
                ),
            ));
        }
    }
}

/// A DNS-1123 label: 1 to 63 of a-z, 0-9 and '-', starting and ending alphanumeric.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A Kubernetes label name (the part after an optional prefix) or a non-empty label value.
fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid =
            !prefix.is_empty() && prefix.len() <= 253 && prefix.split('.').all(is_dns_label);
        if !valid {
            return Err(format!(
                "is not a valid label key: the prefix before '/' must be a DNS subdomain (got {key:?})"
            ));
        }
    }
    if !is_label_name(name) {
        return Err(format!(
            "is not a valid label key: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit, after an optional DNS prefix and '/' (got {key:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_templates() {
        assert_eq!(
            check_key_template(crate::spec::file::DEFAULT_KEY_TEMPLATE),
            Ok(())
        );
        assert_eq!(
            check_key_template("out/{{source.key}}{{part}}.{{ext}}"),
            Ok(())
        );
        let err = check_key_template("{{ source.dir }}x.{{ ext }}").unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].contains("{{ part }}"));
        assert!(err[1].contains("source.stem"));
        let err = check_key_template("{{ source.stem }}{{ part }}{{ date }}").unwrap_err();
        assert!(err[0].contains("unknown variable `{{ date }}`"), "{err:?}");
        let err = check_key_template("/{{ source.stem }}{{ part }}").unwrap_err();
        assert!(err[0].contains("must not start with '/'"), "{err:?}");
    }

    #[test]
    fn csv_chars() {
        assert_eq!(csv_char(","), Ok(b','));
        assert_eq!(csv_char("\t"), Ok(b'\t'));
        assert_eq!(csv_char("\\t"), Ok(b'\t'));
        assert_eq!(csv_char("tab"), Ok(b'\t'));
        assert!(csv_char(";;").is_err());
        assert!(csv_char("é").is_err());
        assert!(csv_char("").is_err());
        assert!(csv_char("\n").is_err());
    }

    #[test]
    fn bad_record_limits() {
        let text = |s: &str| bad_record_limit(&BadRecordLimitConfig::Text(s.into()));
        assert_eq!(text("1%"), Ok(BadRecordLimit::Fraction(0.01)));
        assert_eq!(text(" 2.5 % "), Ok(BadRecordLimit::Fraction(0.025)));
        assert_eq!(text("10"), Ok(BadRecordLimit::Count(10)));
        assert_eq!(text("0.5"), Ok(BadRecordLimit::Fraction(0.5)));
        assert!(text("150%").is_err());
        assert!(text("lots").is_err());
        assert!(bad_record_limit(&BadRecordLimitConfig::Fraction(1.5)).is_err());
        assert_eq!(
            bad_record_limit(&BadRecordLimitConfig::Fraction(0.01)),
            Ok(BadRecordLimit::Fraction(0.01))
        );
        assert_eq!(
            bad_record_limit(&BadRecordLimitConfig::Count(3)),
            Ok(BadRecordLimit::Count(3))
        );
    }

    #[test]
    fn names_and_formats() {
        assert!(is_dns_label("taxi-csv-to-parquet"));
        assert!(!is_dns_label("Taxi"));
        assert!(!is_dns_label("-x"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert_eq!(check_label_key("app.kubernetes.io/name"), Ok(()));
        assert!(check_label_key("bad key").is_err());
        assert_eq!(check_strftime("%Y-%m-%d %H:%M:%S%.f"), Ok(()));
        assert!(check_strftime("%Y-%Q").is_err());
        assert!(inside(
            &"s3://raw/trips/out/".parse().unwrap(),
            &"s3://raw/trips".parse().unwrap()
        ));
        assert!(!inside(
            &"s3://raw/trips-out/".parse().unwrap(),
            &"s3://raw/trips".parse().unwrap()
        ));
        assert!(!inside(
            &"s3://curated/trips/".parse().unwrap(),
            &"s3://raw/trips/".parse().unwrap()
        ));
    }
}
