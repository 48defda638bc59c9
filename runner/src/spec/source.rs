//! `spec.source`: where the input objects are and how to decode them, as written and as
//! checked (globs, CSV options, the explicit schema).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::format::{Item, StrftimeItems};
use globset::Glob;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::format::FORMAT_METADATA_KEY;
use crate::format::options::{Compression, CsvReadOptions, SourceFormat};
use crate::spec::job::Source;
use crate::spec::size::{ByteSizeConfig, GIB, KIB, show};
use crate::spec::span::FieldPath;
use crate::spec::template::Strictness;
use crate::spec::validate::{Check, Params, path};

/// `spec.source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source prefix, `s3://bucket/prefix/`. Every object below it is a candidate input.
    pub uri: String,
    /// Globs matched against each key relative to the source prefix; an object is read if it
    /// matches any of them. Empty: every object. `*` matches any characters including `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Globs of keys (relative to the source prefix) to leave out, even if included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// How the objects are encoded.
    pub format: SourceFormat,
    /// How the objects are compressed. `auto` decides per object from the key's extension
    /// (`.gz`, `.gzip`: gzip; `.zst`, `.zstd`: zstd; anything else: none).
    #[serde(default)]
    pub compression: SourceCompression,
    /// CSV options; only for `format: csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvSourceConfig>,
    /// The columns, in order. Without it the schema is inferred from a sample of the first
    /// object (int64, float64, boolean, else string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Vec<ColumnConfig>>,
    /// How many records schema inference reads (at least 1).
    #[serde(default = "default_infer_records")]
    pub infer_records: u64,
}

pub fn default_infer_records() -> u64 {
    1000
}

/// Source compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceCompression {
    /// Decide from each key's extension.
    #[default]
    Auto,
    None,
    Gzip,
    Zstd,
}

/// `spec.source.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// The field separator: one ASCII character, or `"\t"` / `tab` for a tab.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Whether the first record holds the column names.
    #[serde(default = "default_true")]
    pub header: bool,
    /// The quote character: one ASCII character, different from the delimiter.
    #[serde(default = "default_quote")]
    pub quote: String,
    /// The escape character inside quoted fields: one ASCII character. Null: a quote inside
    /// a quoted field is written twice (`""`), as RFC 4180 says.
    #[serde(default)]
    pub escape: Option<String>,
    /// Field values read as null (compared after unquoting).
    #[serde(default = "default_null_values")]
    pub null_values: Vec<String>,
    /// Lines starting with this ASCII character are skipped. Null: no comment lines.
    #[serde(default)]
    pub comment: Option<String>,
    /// The longest record (line terminator included) that is data rather than a runaway
    /// quote: a longer one fails the object as bad data. It also bounds how far past a cut
    /// of a split object the next record boundary is looked for. 1KiB to 1GiB.
    #[serde(default = "default_max_record_size")]
    pub max_record_size: ByteSizeConfig,
}

impl Default for CsvSourceConfig {
    fn default() -> Self {
        CsvSourceConfig {
            delimiter: default_delimiter(),
            header: true,
            quote: default_quote(),
            escape: None,
            null_values: default_null_values(),
            comment: None,
            max_record_size: default_max_record_size(),
        }
    }
}

pub fn default_max_record_size() -> ByteSizeConfig {
    ByteSizeConfig::Text("8MiB".to_string())
}

pub fn default_delimiter() -> String {
    ",".to_string()
}

pub fn default_quote() -> String {
    "\"".to_string()
}

pub fn default_null_values() -> Vec<String> {
    vec![String::new()]
}

pub fn default_true() -> bool {
    true
}

/// One column of `spec.source.schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The column name (unique, not empty). For CSV with a header, columns are matched by
    /// position; the name is the one the transform and the sink see.
    pub name: String,
    /// The column type.
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Whether the column may be null.
    #[serde(default = "default_true")]
    pub nullable: bool,
    /// How text is parsed, as a chrono strftime format; only for `date` and `timestamp`.
    /// Default for `date`: `%Y-%m-%d`; for `timestamp`: RFC 3339 or `%Y-%m-%d %H:%M:%S%.f`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The time zone of a `timestamp` column: an IANA name (`Europe/Berlin`, `UTC`) or an
    /// offset (`+02:00`). Without it timestamps have no time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// A column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    String,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    /// A calendar date (Arrow Date32).
    Date,
    /// A point in time with microsecond precision (Arrow Timestamp(Microsecond)).
    Timestamp,
}

impl Check<'_> {
    pub(super) fn source(&mut self, s: &SourceConfig, params: &Params) -> Option<Source> {
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
        let max_record_size = self
            .byte_size(base.key("max_record_size"), &c.max_record_size)
            .and_then(|n| {
                if (KIB..=GIB).contains(&n) {
                    Some(n)
                } else {
                    self.error(
                        base.key("max_record_size"),
                        format!("must be between 1KiB and 1GiB (got {})", show(n)),
                    );
                    None
                }
            });
        Some(CsvReadOptions {
            delimiter,
            header: c.header,
            quote,
            escape,
            null_values: c.null_values.clone(),
            comment,
            ends_at_cut: false,
            max_record_size: max_record_size?,
        })
    }

    pub(super) fn csv_char(&mut self, at: FieldPath, text: &str) -> Option<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn strftime_formats() {
        assert_eq!(check_strftime("%Y-%m-%d %H:%M:%S%.f"), Ok(()));
        assert!(check_strftime("%Y-%Q").is_err());
    }
}
