//! Output key templates: `{{ source.dir }}{{ source.stem }}{{ part }}.{{ ext }}`.

use crate::format::options::{Compression, SinkFormat};
use crate::plan::split::PlannedRange;

/// Renders the key (relative to the sink prefix) of output object `part` of a source object.
/// `relative` is the source key relative to the source prefix. Part 0 has an empty `{{ part }}`;
/// spill-over objects get `-00001`, `-00002`, ...
pub fn output_key(
    template: &str,
    relative: &str,
    part: usize,
    format: SinkFormat,
    compression: Compression,
) -> String {
    let ext = format!(
        "{}{}",
        format.extension(),
        text_compression_ext(format, compression)
    );
    output_key_with_extension(template, relative, part, &ext)
}

/// [`output_key`] for a task: a range of a split object adds `.part-00001` (its 1-based
/// number) to `{{ source.stem }}`, so `trips.csv` in three ranges gives
/// `trips.part-00001.parquet` .. `trips.part-00003.parquet` (and spill-over objects
/// `trips.part-00001-00001.parquet`, ...).
pub fn task_output_key(
    template: &str,
    relative: &str,
    range: Option<&PlannedRange>,
    part: usize,
    format: SinkFormat,
    compression: Compression,
) -> String {
    let ext = format!(
        "{}{}",
        format.extension(),
        text_compression_ext(format, compression)
    );
    let suffix = range.map(PlannedRange::stem_suffix).unwrap_or_default();
    render_key(template, relative, &suffix, part, &ext)
}

/// The output key for an explicit extension (the opaque output of a container step).
pub fn output_key_with_extension(template: &str, relative: &str, part: usize, ext: &str) -> String {
    render_key(template, relative, "", part, ext)
}

fn render_key(template: &str, relative: &str, stem_suffix: &str, part: usize, ext: &str) -> String {
    let (dir, name) = match relative.rsplit_once('/') {
        Some((dir, name)) => (format!("{dir}/"), name),
        None => (String::new(), relative),
    };
    // A range of a split object names itself after the stem: `trips.part-00001.csv`.
    let stem = format!("{}{stem_suffix}", stem_of(name));
    let name = format!("{stem}{}", &name[stem_of(name).len()..]);
    let relative = format!("{dir}{name}");
    let part = if part == 0 {
        String::new()
    } else {
        format!("-{part:05}")
    };
    render(template, |var| match var {
        "source.dir" => Some(dir.clone()),
        "source.stem" => Some(stem.clone()),
        "source.name" => Some(name.clone()),
        "source.key" => Some(relative.clone()),
        "part" => Some(part.clone()),
        "ext" => Some(ext.to_string()),
        _ => None,
    })
}

fn text_compression_ext(format: SinkFormat, compression: Compression) -> &'static str {
    match format {
        SinkFormat::Parquet => "",
        _ => compression.extension(),
    }
}

/// A file name without its compression extension and then its format extension.
pub fn stem_of(name: &str) -> &str {
    let lower = name.to_ascii_lowercase();
    let mut end = name.len();
    for ext in [".gz", ".gzip", ".zst", ".zstd"] {
        if lower.ends_with(ext) {
            end -= ext.len();
            break;
        }
    }
    let base = &name[..end];
    match base.rfind('.') {
        Some(dot) if dot > 0 => &base[..dot],
        _ => base,
    }
}

/// Replaces `{{ var }}` (spaces inside the braces optional) using `lookup`; unknown
/// variables are left as written.
pub fn render(template: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let var = after[..end].trim();
                match lookup(var) {
                    Some(value) => out.push_str(&value),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::sink::DEFAULT_KEY_TEMPLATE;

    #[test]
    fn default_template_keeps_the_relative_path_with_the_new_extension() {
        let key = |rel, part, fmt, c| output_key(DEFAULT_KEY_TEMPLATE, rel, part, fmt, c);
        assert_eq!(
            key(
                "2026/01/trips.csv.gz",
                0,
                SinkFormat::Parquet,
                Compression::None
            ),
            "2026/01/trips.parquet"
        );
        assert_eq!(
            key("trips.csv", 2, SinkFormat::Parquet, Compression::None),
            "trips-00002.parquet"
        );
        assert_eq!(
            key("a/b.v1.json", 0, SinkFormat::Csv, Compression::Gzip),
            "a/b.v1.csv.gz"
        );
        assert_eq!(
            key("noext", 0, SinkFormat::Jsonl, Compression::Zstd),
            "noext.jsonl.zst"
        );
    }

    #[test]
    fn a_range_of_a_split_object_numbers_its_stem() {
        let range = PlannedRange {
            part: 2,
            parts: 3,
            unit: crate::plan::split::RangeUnit::Bytes,
            start: 10,
            end: 20,
            object_size: 30,
        };
        let key = |rel, part| {
            task_output_key(
                DEFAULT_KEY_TEMPLATE,
                rel,
                Some(&range),
                part,
                SinkFormat::Parquet,
                Compression::None,
            )
        };
        assert_eq!(key("d/trips.csv", 0), "d/trips.part-00002.parquet");
        assert_eq!(key("trips", 1), "trips.part-00002-00001.parquet");
    }

    #[test]
    fn render_leaves_unknown_variables() {
        assert_eq!(
            render("{{a}}-{{ b }}-{{c", |v| (v == "a").then(|| "x".into())),
            "x-{{ b }}-{{c"
        );
    }
}
