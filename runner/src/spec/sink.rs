//! `spec.sink`: where the output objects go and how they are encoded, uploaded and named, as
//! written and as checked (the S3 multipart limits, the output key template).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::format::options::{
    Compression, CsvWriteOptions, ParquetCompression, ParquetWriteOptions, SinkFormat,
};
use crate::spec::job::Sink;
use crate::spec::size::{ByteSizeConfig, GIB, MIB, show};
use crate::spec::source::{default_delimiter, default_true};
use crate::spec::span::FieldPath;
use crate::spec::validate::{Check, Params, path};

/// The default output key template: the source key's relative path with the new extension.
pub const DEFAULT_KEY_TEMPLATE: &str = "{{ source.dir }}{{ source.stem }}{{ part }}.{{ ext }}";

/// S3 multipart limits.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
pub const MAX_PART_SIZE: u64 = 5 * GIB;
pub const MAX_PARTS: u64 = 10_000;

/// `spec.sink`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink prefix, `s3://bucket/prefix/`. It must not lie inside the source prefix.
    pub uri: String,
    /// How output objects are encoded: `parquet`, `csv`, `jsonl`, or `delta`: a Delta Lake
    /// table at the sink prefix, its data files Parquet, committed once per run at publish
    /// (see docs/tables.md).
    #[serde(default = "default_sink_format")]
    pub format: SinkFormatConfig,
    /// Parquet options; only for `format: parquet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<ParquetSinkConfig>,
    /// CSV options; only for `format: csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvSinkConfig>,
    /// Compression of text outputs (`csv`, `jsonl`): `none`, `gzip` or `zstd`. Default `none`.
    /// Parquet compresses inside the file (see `parquet.compression`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// The size of each multipart upload part: 5MiB to 5GiB.
    #[serde(default = "default_part_size")]
    pub part_size: ByteSizeConfig,
    /// How many parts of one object upload at the same time (at least 1). Memory per object
    /// in flight is about `part_size * parts_in_flight`.
    #[serde(default = "default_parts_in_flight")]
    pub parts_in_flight: u32,
    /// Beyond this size an output spills into numbered objects (`{{ part }}`). At least
    /// `part_size`, at most `part_size * 10000` (the S3 part limit), which is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<ByteSizeConfig>,
    /// The output key relative to the sink prefix. Variables: `source.dir`, `source.stem`,
    /// `source.name`, `source.key`, `part`, `ext`. Must contain `{{ part }}` and one of
    /// `{{ source.stem }}`, `{{ source.name }}`, `{{ source.key }}`.
    #[serde(default = "default_key")]
    pub key: String,
    /// Columns whose values name Hive-style directories (`column=value/`, in this order)
    /// under the sink prefix, with the output key below them. The columns are not stored in
    /// the files (readers take them from the path, as Spark, Trino, DuckDB and polars do);
    /// values are escaped as Hive escapes them, a null or empty value is
    /// `__HIVE_DEFAULT_PARTITION__`. Each column must be in the output and be a string,
    /// integer, boolean, date or timestamp column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// How many partitions of one object are written at the same time (at least 1). When an
    /// object's records reach one more, the partition written to longest ago has its output
    /// finished, and its next records start its next numbered object (`{{ part }}`): memory
    /// stays bounded however many partitions an object holds.
    #[serde(default = "default_max_open_partitions")]
    pub max_open_partitions: u32,
}

pub fn default_max_open_partitions() -> u32 {
    32
}

pub fn default_sink_format() -> SinkFormatConfig {
    SinkFormatConfig::Parquet
}

/// `spec.sink.format`: an encoding of output objects, or a table of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormatConfig {
    Parquet,
    Csv,
    Jsonl,
    /// A Delta Lake table of Parquet data files.
    Delta,
}

impl SinkFormatConfig {
    /// The encoding of the data files, and whether they make a Delta table.
    pub fn files(self) -> (SinkFormat, bool) {
        match self {
            SinkFormatConfig::Parquet => (SinkFormat::Parquet, false),
            SinkFormatConfig::Csv => (SinkFormat::Csv, false),
            SinkFormatConfig::Jsonl => (SinkFormat::Jsonl, false),
            SinkFormatConfig::Delta => (SinkFormat::Parquet, true),
        }
    }
}

pub fn default_part_size() -> ByteSizeConfig {
    ByteSizeConfig::Text("16MiB".to_string())
}

pub fn default_parts_in_flight() -> u32 {
    4
}

pub fn default_key() -> String {
    DEFAULT_KEY_TEMPLATE.to_string()
}

/// `spec.sink.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Page compression inside the Parquet file.
    #[serde(default = "default_parquet_compression")]
    pub compression: ParquetCompression,
    /// Rows per row group (at least 1).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: u64,
}

pub fn default_parquet_compression() -> ParquetCompression {
    ParquetCompression::Zstd
}

pub fn default_row_group_rows() -> u64 {
    122_880
}

/// `spec.sink.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvSinkConfig {
    /// The field separator: one ASCII character, or `"\t"` / `tab` for a tab.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    /// Whether to write a header record with the column names.
    #[serde(default = "default_true")]
    pub header: bool,
}

impl Check<'_> {
    pub(super) fn sink(&mut self, s: &SinkConfig, params: &Params) -> Option<Sink> {
        let base = path("spec.sink");
        let uri = self.uri(base.key("uri"), &s.uri, params);
        let (format, delta) = s.format.files();
        let format_name = if delta { "delta" } else { format.extension() };
        let parquet = match (&s.parquet, format) {
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
        let csv = match (&s.csv, format) {
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
        let compression = match (s.compression, format) {
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
        for (i, column) in s.partition_by.iter().enumerate() {
            let at = base.key("partition_by").index(i);
            if column.trim().is_empty() {
                self.error(at, "must name a column");
            } else if s.partition_by[..i].contains(column) {
                self.error(at, format!("{column:?} is listed twice"));
            }
        }
        if s.max_open_partitions < 1 {
            self.error(
                base.key("max_open_partitions"),
                "must be at least 1 (got 0)",
            );
        }
        Some(Sink {
            uri: uri?.as_prefix(),
            format,
            delta,
            run_dir: None,
            parquet: parquet?,
            csv: csv?,
            compression: compression?,
            part_size: part_size?,
            parts_in_flight: s.parts_in_flight as usize,
            max_object_size: max_object_size?,
            key: s.key.clone(),
            partition_by: s.partition_by.clone(),
            max_open_partitions: s.max_open_partitions as usize,
        })
    }

    pub(super) fn byte_size(&mut self, at: FieldPath, size: &ByteSizeConfig) -> Option<u64> {
        match size.bytes() {
            Ok(n) => Some(n),
            Err(message) => {
                self.error(at, message);
                None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_templates() {
        assert_eq!(check_key_template(DEFAULT_KEY_TEMPLATE), Ok(()));
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
}
