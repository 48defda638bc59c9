//! Re-checking a published run against its `_SUCCESS.json`: every listed output and
//! rejects object is still there with its size, CRC32C and record count, and nothing the
//! manifest does not list sits under the sink prefix.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::exit::ExitCode;
use crate::spec::Job;
use crate::spec::container::OutputFormat;
use crate::state::RunLayout;
use crate::state::manifest::{PublishedOutput, SuccessManifest};
use crate::state::report::{ReportStatus, RunReport};
use crate::storage::uri::{S3Uri, S3UriError};
use crate::storage::{Storage, StorageError};
use crate::worker::read_back::{RowCount, read_back};

/// Objects read back at the same time, unless the caller says otherwise.
pub const DEFAULT_CONCURRENCY: u16 = 8;

/// Why a run could not be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("run {run} is not published: {uri} does not exist ({why})")]
    NotPublished {
        run: String,
        uri: S3Uri,
        why: String,
    },
    #[error(
        "{run:?} is a run id, which needs the job file that locates it (--job JOB); or give the run's manifest as s3://.../_SUCCESS.json"
    )]
    NeedsJob { run: String },
    #[error("{uri} is not a run's manifest: expected s3://.../runs/<job>/<run-id>/_SUCCESS.json")]
    NotAManifest { uri: S3Uri },
    #[error("{arg:?} is not an S3 URI")]
    BadUri {
        arg: String,
        #[source]
        source: S3UriError,
    },
    #[error("reading the publish manifest {uri}")]
    BadManifest {
        uri: S3Uri,
        #[source]
        source: serde_json::Error,
    },
    #[error("the publish manifest {manifest} lists {uri:?}, which is not an S3 URI")]
    BadListedUri {
        manifest: S3Uri,
        uri: String,
        #[source]
        source: S3UriError,
    },
    #[error("the run's job file {uri} is missing; pass the job file with --job JOB")]
    NoJob { uri: S3Uri },
    #[error("loading the run's job file {uri}")]
    BadJob {
        uri: S3Uri,
        #[source]
        source: crate::spec::SpecErrors,
    },
    #[error("reading version {version} of the Delta table at {uri}")]
    Table {
        uri: S3Uri,
        version: u64,
        #[source]
        source: Box<crate::run::table::TableError>,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl VerifyError {
    pub fn exit_code(&self) -> ExitCode {
        use VerifyError as E;
        match self {
            E::Storage(e) => e.exit_code(),
            E::Table { source, .. } => source.exit_code(),
            // A manifest that no longer parses was changed after publish.
            E::BadManifest { .. } | E::BadListedUri { .. } => ExitCode::Validation,
            E::NotPublished { .. }
            | E::NeedsJob { .. }
            | E::NotAManifest { .. }
            | E::BadUri { .. }
            | E::NoJob { .. }
            | E::BadJob { .. } => ExitCode::Config,
        }
    }
}

/// What is wrong with one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// A listed object is gone.
    Missing { uri: String },
    /// A listed object has another size now.
    SizeChanged {
        uri: String,
        expected: u64,
        found: u64,
    },
    /// A listed object has its size but other bytes.
    ChecksumChanged {
        uri: String,
        expected: String,
        found: String,
    },
    /// A listed object holds another number of records.
    RowsChanged {
        uri: String,
        expected: u64,
        found: u64,
    },
    /// A listed object's records cannot be counted any more (not Parquet, bad compression).
    Unreadable { uri: String, error: String },
    /// An object under the sink prefix that the manifest does not list.
    Extra { uri: String, size: u64 },
    /// A listed data file of a Delta table that the version the run committed lacks.
    NotInTable { uri: String, version: u64 },
}

impl Problem {
    /// The problem's name in the table and the summary.
    pub fn label(&self) -> &'static str {
        match self {
            Problem::Missing { .. } => "missing",
            Problem::SizeChanged { .. } => "size changed",
            Problem::ChecksumChanged { .. } => "checksum changed",
            Problem::RowsChanged { .. } => "rows changed",
            Problem::Unreadable { .. } => "unreadable",
            Problem::Extra { .. } => "extra",
            Problem::NotInTable { .. } => "not in table",
        }
    }

    pub fn uri(&self) -> &str {
        match self {
            Problem::Missing { uri }
            | Problem::SizeChanged { uri, .. }
            | Problem::ChecksumChanged { uri, .. }
            | Problem::RowsChanged { uri, .. }
            | Problem::Unreadable { uri, .. }
            | Problem::Extra { uri, .. }
            | Problem::NotInTable { uri, .. } => uri,
        }
    }

    /// What was expected and what was found, in words.
    pub fn detail(&self) -> String {
        match self {
            Problem::Missing { .. } => "listed in the manifest, not in the bucket".into(),
            Problem::SizeChanged {
                expected, found, ..
            } => format!("{expected} bytes listed, {found} stored"),
            Problem::ChecksumChanged {
                expected, found, ..
            } => format!("crc32c {expected} listed, {found} stored"),
            Problem::RowsChanged {
                expected, found, ..
            } => format!("{expected} records listed, {found} stored"),
            Problem::Unreadable { error, .. } => error.clone(),
            Problem::Extra { size, .. } => format!("{size} bytes, not in the manifest"),
            Problem::NotInTable { version, .. } => {
                format!("listed in the manifest, not a file of table version {version}")
            }
        }
    }

    fn order(&self) -> u8 {
        match self {
            Problem::Missing { .. } => 0,
            Problem::SizeChanged { .. } => 1,
            Problem::ChecksumChanged { .. } => 2,
            Problem::RowsChanged { .. } => 3,
            Problem::Unreadable { .. } => 4,
            Problem::Extra { .. } => 5,
            Problem::NotInTable { .. } => 6,
        }
    }
}

/// The outcome of verifying one published run.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub job: String,
    pub run_id: String,
    /// The `_SUCCESS.json` checked against.
    pub manifest: S3Uri,
    pub published: DateTime<Utc>,
    /// The prefix searched for objects the manifest does not list.
    pub sink: S3Uri,
    /// Output objects the manifest lists.
    pub outputs: u64,
    /// Rejects objects the manifest lists.
    pub rejects: u64,
    /// Listed objects found and read back.
    pub objects_read: u64,
    /// Objects under the sink prefix (sluice's state excluded).
    pub objects_under_sink: u64,
    /// Bytes read back.
    pub bytes_read: u64,
    /// Whether nothing is lost, changed or extra.
    pub clean: bool,
    /// Sorted by object, then kind.
    pub problems: Vec<Problem>,
}

impl Verification {
    /// The number of problems of each kind, by label, in table order.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: BTreeMap<u8, (&'static str, usize)> = BTreeMap::new();
        for p in &self.problems {
            counts.entry(p.order()).or_insert((p.label(), 0)).1 += 1;
        }
        counts.into_values().collect()
    }

    /// The problem table (when there are problems) and the summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.problems.is_empty() {
            let width = self
                .problems
                .iter()
                .map(|p| p.uri().len())
                .max()
                .unwrap_or(0)
                .max("object".len());
            out.push_str(&format!(
                "{:<16}  {:<width$}  detail\n",
                "problem", "object"
            ));
            for p in &self.problems {
                out.push_str(&format!(
                    "{:<16}  {:<width$}  {}\n",
                    p.label(),
                    p.uri(),
                    p.detail()
                ));
            }
        }
        let verdict = if self.problems.is_empty() {
            "no problems".to_string()
        } else {
            let kinds: Vec<String> = self
                .counts()
                .iter()
                .map(|(label, n)| format!("{n} {label}"))
                .collect();
            format!("{} problems ({})", self.problems.len(), kinds.join(", "))
        };
        out.push_str(&format!(
            "run {} of {}: {} objects checked ({} outputs, {} rejects), {} under {}, {} read: {verdict}\n",
            self.run_id,
            self.job,
            self.outputs + self.rejects,
            self.outputs,
            self.rejects,
            self.objects_under_sink,
            self.sink,
            crate::spec::size::human_bytes(self.bytes_read),
        ));
        out
    }
}

/// Where the run to verify is: `run` is either a run id of `job`, or the URI of the run's
/// `_SUCCESS.json` (or of its directory).
pub fn locate(run: &str, job: Option<&Job>) -> Result<RunLayout, VerifyError> {
    if run.starts_with("s3://") {
        let uri: S3Uri = run.parse().map_err(|source| VerifyError::BadUri {
            arg: run.to_string(),
            source,
        })?;
        let dir = if uri.key.ends_with('/') {
            Some(uri.key.as_str())
        } else {
            uri.key
                .strip_suffix("_SUCCESS.json")
                .filter(|d| d.ends_with('/'))
        };
        return match dir {
            Some(dir) if dir.len() > 1 => Ok(RunLayout::from_root(&S3Uri::new(
                uri.bucket.clone(),
                dir.to_string(),
            ))),
            _ => Err(VerifyError::NotAManifest { uri }),
        };
    }
    match job {
        Some(job) => Ok(RunLayout::new(&job.state, &job.name, run)),
        None => Err(VerifyError::NeedsJob {
            run: run.to_string(),
        }),
    }
}

/// Verifies the published run at `layout`. Its resolved job (stored beside the manifest)
/// gives the sink; `job` stands in when that file is gone. At most `concurrency` objects
/// are read at once, each streamed.
pub async fn verify_run(
    storage: &Storage,
    layout: &RunLayout,
    job: Option<&Job>,
    concurrency: usize,
) -> Result<Verification, VerifyError> {
    let manifest_uri = layout.success();
    let Some(body) = storage.get_bytes(&manifest_uri).await? else {
        return Err(not_published(storage, layout).await?);
    };
    let manifest: SuccessManifest =
        serde_json::from_slice(&body).map_err(|source| VerifyError::BadManifest {
            uri: manifest_uri.clone(),
            source,
        })?;
    let job = run_job(storage, layout, job).await?;
    let outputs_counted = match crate::worker::raw::raw_step(&job) {
        Some((_, c)) if c.output == OutputFormat::Opaque => RowCount::None,
        _ => RowCount::of_sink(&job.sink),
    };
    let parse = |o: &PublishedOutput| {
        o.object
            .uri
            .parse::<S3Uri>()
            .map_err(|source| VerifyError::BadListedUri {
                manifest: manifest_uri.clone(),
                uri: o.object.uri.clone(),
                source,
            })
    };
    let mut listed = Vec::with_capacity(manifest.outputs.len() + manifest.rejects.len());
    for o in &manifest.outputs {
        listed.push((parse(o)?, o, outputs_counted));
    }
    for o in &manifest.rejects {
        listed.push((parse(o)?, o, RowCount::rejects()));
    }
    let known: HashSet<S3Uri> = listed.iter().map(|(uri, ..)| uri.clone()).collect();

    let sink = job.sink.uri.as_prefix();
    let checks = futures::stream::iter(&listed)
        .map(|(uri, listed, count)| check_object(storage, uri, listed, *count))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>();
    let (checked, under_sink) = tokio::try_join!(checks, storage.list(&sink))?;

    let state = job.state.as_prefix();
    let state_in_sink = state.bucket == sink.bucket && state.key.starts_with(&sink.key);
    // A Delta table's prefix also holds its log and other runs' files: what this run owns
    // there is what lies in its own directory.
    let own = |key: &str| {
        !job.sink.delta || {
            let relative = key.strip_prefix(sink.key.as_str()).unwrap_or(key);
            relative
                .split('/')
                .any(|segment| segment == manifest.run_id)
                && !relative.starts_with("_delta_log/")
        }
    };
    let under_sink: Vec<_> = under_sink
        .into_iter()
        .filter(|o| !(state_in_sink && o.key.starts_with(&state.key)))
        .filter(|o| own(&o.key) || o.key.contains("/_rejected/"))
        .collect();
    let mut problems: Vec<Problem> = under_sink
        .iter()
        .filter(|o| !known.contains(&S3Uri::new(sink.bucket.clone(), o.key.clone())))
        .map(|o| Problem::Extra {
            uri: S3Uri::new(sink.bucket.clone(), o.key.clone()).to_string(),
            size: o.size,
        })
        .collect();
    if let Some(table) = &manifest.table {
        let files = crate::run::table::files_at(storage, &sink, table.version)
            .await
            .map_err(|e| VerifyError::Table {
                uri: sink.clone(),
                version: table.version,
                source: Box::new(e),
            })?;
        let files: HashSet<String> = files.into_iter().collect();
        for o in &manifest.outputs {
            let relative = o
                .object
                .uri
                .strip_prefix(&sink.to_string())
                .unwrap_or(&o.object.uri);
            if !files.contains(relative) {
                problems.push(Problem::NotInTable {
                    uri: o.object.uri.clone(),
                    version: table.version,
                });
            }
        }
    }
    let mut bytes_read = 0;
    let mut objects_read = 0;
    for checked in checked {
        bytes_read += checked.bytes_read;
        objects_read += u64::from(checked.found);
        problems.extend(checked.problems);
    }
    problems.sort_by(|a, b| (a.uri(), a.order()).cmp(&(b.uri(), b.order())));
    Ok(Verification {
        job: manifest.job,
        run_id: manifest.run_id,
        manifest: manifest_uri,
        published: manifest.published,
        sink,
        outputs: manifest.outputs.len() as u64,
        rejects: manifest.rejects.len() as u64,
        objects_read,
        objects_under_sink: under_sink.len() as u64,
        bytes_read,
        clean: problems.is_empty(),
        problems,
    })
}

/// One listed object, read back.
struct Checked {
    found: bool,
    bytes_read: u64,
    problems: Vec<Problem>,
}

async fn check_object(
    storage: &Storage,
    uri: &S3Uri,
    listed: &PublishedOutput,
    count: RowCount,
) -> Result<Checked, StorageError> {
    let expected = &listed.object;
    let name = uri.to_string();
    if storage.head(uri).await?.is_none() {
        return Ok(Checked {
            found: false,
            bytes_read: 0,
            problems: vec![Problem::Missing { uri: name }],
        });
    }
    let stored = read_back(storage, uri, count).await?;
    let mut problems = Vec::new();
    if stored.size != expected.size {
        problems.push(Problem::SizeChanged {
            uri: name.clone(),
            expected: expected.size,
            found: stored.size,
        });
    } else if !stored.crc32c.eq_ignore_ascii_case(&expected.crc32c) {
        // A changed size is a changed checksum; it is named once.
        problems.push(Problem::ChecksumChanged {
            uri: name.clone(),
            expected: expected.crc32c.clone(),
            found: stored.crc32c.clone(),
        });
    }
    match stored.rows {
        Ok(Some(rows)) if rows != expected.rows => problems.push(Problem::RowsChanged {
            uri: name,
            expected: expected.rows,
            found: rows,
        }),
        Ok(_) => {}
        Err(error) => problems.push(Problem::Unreadable { uri: name, error }),
    }
    Ok(Checked {
        found: true,
        bytes_read: stored.size,
        problems,
    })
}

/// The run's resolved job from its state, or `fallback` when that file is gone.
async fn run_job(
    storage: &Storage,
    layout: &RunLayout,
    fallback: Option<&Job>,
) -> Result<Job, VerifyError> {
    let uri = layout.job();
    match storage.get_bytes(&uri).await? {
        Some(text) => crate::spec::load_str(&String::from_utf8_lossy(&text), &uri.to_string(), &[])
            .map(|loaded| loaded.job)
            .map_err(|source| VerifyError::BadJob { uri, source }),
        None => fallback.cloned().ok_or(VerifyError::NoJob { uri }),
    }
}

/// Says why a run has no manifest: no such run, a failed run, or one not finished.
async fn not_published(storage: &Storage, layout: &RunLayout) -> Result<VerifyError, VerifyError> {
    let report: Option<RunReport> = storage
        .get_bytes(&layout.report())
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok());
    let why = match report {
        Some(r) if r.status == ReportStatus::Failed => {
            format!("the run failed; see {}", layout.report())
        }
        Some(_) => format!(
            "report.json says it succeeded, so the manifest was removed; see {}",
            layout.report()
        ),
        None if storage.head(&layout.plan()).await?.is_some() => {
            "the run has not finished".to_string()
        }
        None => format!("there is no run at {}", layout.root()),
    };
    Ok(VerifyError::NotPublished {
        run: layout.run_id().to_string(),
        uri: layout.success(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_a_run_by_manifest_uri_or_run_directory() {
        let manifest = "s3://out/_sluice/runs/trips/r1/_SUCCESS.json";
        let layout = locate(manifest, None).unwrap();
        assert_eq!(layout.success().to_string(), manifest);
        assert_eq!(layout.run_id(), "r1");
        let dir = locate("s3://out/_sluice/runs/trips/r1/", None).unwrap();
        assert_eq!(dir, layout);
        assert!(matches!(
            locate("s3://out/_sluice/runs/trips/r1/report.json", None),
            Err(VerifyError::NotAManifest { .. })
        ));
        assert!(matches!(
            locate("s3://out/_SUCCESS.json", None),
            Err(VerifyError::NotAManifest { .. })
        ));
        assert!(matches!(
            locate("r1", None),
            Err(VerifyError::NeedsJob { .. })
        ));
    }

    #[test]
    fn summary_counts_problems_by_kind() {
        let verification = Verification {
            job: "trips".into(),
            run_id: "r1".into(),
            manifest: "s3://out/_sluice/runs/trips/r1/_SUCCESS.json"
                .parse()
                .unwrap(),
            published: Utc::now(),
            sink: "s3://out/data/".parse().unwrap(),
            outputs: 3,
            rejects: 1,
            objects_read: 3,
            objects_under_sink: 5,
            bytes_read: 2048,
            clean: false,
            problems: vec![
                Problem::Missing {
                    uri: "s3://out/data/a.parquet".into(),
                },
                Problem::Extra {
                    uri: "s3://out/data/x".into(),
                    size: 3,
                },
                Problem::Extra {
                    uri: "s3://out/data/y".into(),
                    size: 4,
                },
            ],
        };
        let text = verification.render();
        assert!(
            text.contains("missing           s3://out/data/a.parquet"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "run r1 of trips: 4 objects checked (3 outputs, 1 rejects), 5 under s3://out/data/, 2.0 KiB read: 3 problems (1 missing, 2 extra)\n"
            ),
            "{text}"
        );
    }
}
