//! Multipart uploads an earlier attempt of this shard left open: a killed worker aborts
//! nothing, so before any work the shard finds the open uploads to its own output keys and
//! aborts them. Only one pod works on an index at a time, so none of them is live.

use crate::plan::PlannedObject;
use crate::plan::keys::output_key_with_extension;
use crate::spec::container::OutputFormat;
use crate::spec::job::Job;
use crate::storage::uri::S3Uri;
use crate::storage::{Storage, StorageError};
use crate::worker::raw::raw_step;
use crate::worker::spills::sink_key;

/// Aborts the open uploads under the sink whose key is an output (any spill-over number)
/// or the rejects object of one of `objects`; returns how many.
pub async fn abort_leftover_uploads(
    storage: &Storage,
    job: &Job,
    objects: &[PlannedObject],
) -> Result<usize, StorageError> {
    if objects.is_empty() {
        return Ok(0);
    }
    let keys: Vec<OutputKeys> = objects.iter().map(|o| OutputKeys::new(job, o)).collect();
    let mut aborted = 0;
    for upload in storage.open_uploads(&job.sink.uri).await? {
        let Some(relative) = upload.key.strip_prefix(job.sink.uri.key.as_str()) else {
            continue;
        };
        // A partitioned output's key has its partition path before the key template's, a
        // Delta table's data file the run's directory.
        let unpartitioned = below_prefixes(
            relative,
            &job.sink.partition_by,
            job.sink.run_dir.as_deref(),
        );
        if keys
            .iter()
            .any(|k| k.matches(relative) || unpartitioned.is_some_and(|r| k.matches(r)))
        {
            tracing::info!(
                uri = %S3Uri::new(job.sink.uri.bucket.clone(), upload.key.clone()),
                upload_id = %upload.upload_id,
                "aborting an upload left open by an earlier attempt"
            );
            storage
                .abort_upload(&job.sink.uri.bucket, &upload.key, &upload.upload_id)
                .await?;
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// The key below the partition path `col=value/...` of `columns` (in order) and the run's
/// directory, if the key has them; `None` when the sink has neither.
fn below_prefixes<'a>(key: &'a str, columns: &[String], run_dir: Option<&str>) -> Option<&'a str> {
    if columns.is_empty() && run_dir.is_none() {
        return None;
    }
    let mut rest = key;
    for column in columns {
        let value_and_rest = rest.strip_prefix(column.as_str())?.strip_prefix('=')?;
        rest = &value_and_rest[value_and_rest.find('/')? + 1..];
    }
    if let Some(dir) = run_dir {
        rest = rest.strip_prefix(dir)?.strip_prefix('/')?;
    }
    Some(rest)
}

/// The keys (relative to the sink prefix) one source object writes: `before` + `after` for
/// the first output, `before` + `-NNNNN` + `after` for spill-over objects, and its rejects.
#[derive(Debug, PartialEq, Eq)]
struct OutputKeys {
    before: String,
    after: String,
    numbered: bool,
    rejects: String,
}

impl OutputKeys {
    fn new(job: &Job, task: &PlannedObject) -> OutputKeys {
        let source_key = task.key.as_str();
        let relative = source_key
            .strip_prefix(job.source.uri.key.as_str())
            .unwrap_or(source_key);
        let range = task.range.as_ref();
        let sink = &job.sink;
        let key = |part| match raw_step(job) {
            Some((_, c)) if c.output == OutputFormat::Opaque => {
                output_key_with_extension(&sink.key, relative, part, &c.extension)
            }
            _ => sink_key(sink, relative, range, part),
        };
        let (first, second) = (key(0), key(1));
        let range_suffix = range.map(|r| r.stem_suffix()).unwrap_or_default();
        let rejects = format!("_rejected/{relative}{range_suffix}.jsonl");
        // The spill-over key is the first one with "-00001" put in where `{{ part }}` is.
        const MARK: &str = "-00001";
        let split = (0..=first.len()).find(|&i| {
            first.is_char_boundary(i)
                && second.len() == first.len() + MARK.len()
                && second[..i] == first[..i]
                && second[i..].starts_with(MARK)
                && second[i + MARK.len()..] == first[i..]
        });
        match split {
            Some(i) => OutputKeys {
                before: first[..i].to_string(),
                after: first[i..].to_string(),
                numbered: true,
                rejects,
            },
            None => OutputKeys {
                before: first,
                after: String::new(),
                numbered: false,
                rejects,
            },
        }
    }

    fn matches(&self, key: &str) -> bool {
        if key == self.rejects
            || key.len() == self.before.len() + self.after.len()
                && key.starts_with(&self.before)
                && key.ends_with(&self.after)
        {
            return true;
        }
        if !self.numbered || !key.starts_with(&self.before) || !key.ends_with(&self.after) {
            return false;
        }
        let Some(middle) = key
            .get(self.before.len()..key.len().saturating_sub(self.after.len()))
            .and_then(|m| m.strip_prefix('-'))
        else {
            return false;
        };
        middle.len() >= 5 && middle.bytes().all(|b| b.is_ascii_digit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(sink_extra: &str) -> Job {
        let text = format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Job\nmetadata:\n  name: j\nspec:\n  \
             source:\n    uri: s3://raw/in/\n    format: csv\n  sink:\n    uri: s3://out/x/\n{sink_extra}"
        );
        crate::spec::load_str(&text, "job.yaml", &[]).unwrap().job
    }

    fn task(key: &str) -> PlannedObject {
        PlannedObject {
            key: key.into(),
            size: 1,
            etag: "\"e\"".into(),
            range: None,
        }
    }

    #[test]
    fn matches_an_objects_outputs_and_nothing_else() {
        let k = OutputKeys::new(&job("    format: jsonl\n"), &task("in/2026/a.csv"));
        for own in [
            "2026/a.jsonl",
            "2026/a-00001.jsonl",
            "2026/a-00042.jsonl",
            "_rejected/2026/a.csv.jsonl",
        ] {
            assert!(k.matches(own), "{own}: {k:?}");
        }
        for other in [
            "2026/a2.jsonl",
            "2026/ab.jsonl",
            "2026/a-1.jsonl",
            "2026/a-0000x.jsonl",
            "a.jsonl",
            "2026/a.parquet",
            "_rejected/2026/a2.csv.jsonl",
        ] {
            assert!(!k.matches(other), "{other}: {k:?}");
        }
    }

    #[test]
    fn a_partitioned_output_is_found_below_its_partition_path() {
        let columns = ["day".to_string(), "city".to_string()];
        assert_eq!(
            below_prefixes("day=2026-01-01/city=a%2Fb/2026/a.jsonl", &columns, None),
            Some("2026/a.jsonl")
        );
        assert_eq!(below_prefixes("day=x/2026/a.jsonl", &columns, None), None);
        assert_eq!(below_prefixes("city=x/day=y/a.jsonl", &columns, None), None);
        assert_eq!(below_prefixes("2026/a.jsonl", &[], None), None);
        assert_eq!(
            below_prefixes("day=x/city=y/run-1/a.parquet", &columns, Some("run-1")),
            Some("a.parquet")
        );
        assert_eq!(below_prefixes("run-2/a.parquet", &[], Some("run-1")), None);
    }

    #[test]
    fn a_range_of_a_split_object_matches_its_own_outputs() {
        let mut range = task("in/big.csv");
        range.range = Some(crate::plan::split::PlannedRange {
            part: 2,
            parts: 3,
            unit: crate::plan::split::RangeUnit::Bytes,
            start: 10,
            end: 20,
            object_size: 30,
        });
        let k = OutputKeys::new(&job("    format: jsonl\n"), &range);
        for own in [
            "big.part-00002.jsonl",
            "big.part-00002-00001.jsonl",
            "_rejected/big.csv.part-00002.jsonl",
        ] {
            assert!(k.matches(own), "{own}: {k:?}");
        }
        for other in [
            "big.jsonl",
            "big.part-00001.jsonl",
            "_rejected/big.csv.jsonl",
        ] {
            assert!(!k.matches(other), "{other}: {k:?}");
        }
    }

    #[test]
    fn the_part_number_can_stand_anywhere_in_the_template() {
        let k = OutputKeys::new(
            &job("    format: parquet\n    key: \"{{ source.stem }}{{ part }}/data.{{ ext }}\"\n"),
            &task("in/a.csv"),
        );
        assert!(k.numbered, "{k:?}");
        assert!(k.matches("a/data.parquet"));
        assert!(k.matches("a-00003/data.parquet"));
        assert!(!k.matches("b/data.parquet"));
        assert!(!k.matches("a-00003/other.parquet"));
    }
}
