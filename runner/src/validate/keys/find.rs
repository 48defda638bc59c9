//! Merging every spill of a run with a bounded fan-in, in several passes when needed.

use std::io::BufReader;
use std::path::PathBuf;

use tokio::runtime::Handle;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::codec;
use super::merge::{Checked, EntrySource, Run, RunWriter, merge};
use super::{DuplicateReport, Examples, KeysError};
use crate::storage::{ReadTuning, S3Uri, Storage};

/// How [`find_duplicates`] merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOptions {
    /// Streams merged at once (at least 2). With more spills than this, groups of spills are
    /// merged into local files first, and those files in turn. Memory is about
    /// `fan_in x 3 MiB` (one range being read and one ahead per spill).
    pub fan_in: usize,
    /// How many duplicates are kept as examples.
    pub examples: usize,
    /// Where intermediate runs go (the system's temporary directory if `None`). A pass
    /// writes about as many bytes as the spills hold.
    pub temp_dir: Option<PathBuf>,
}

impl Default for MergeOptions {
    fn default() -> MergeOptions {
        MergeOptions {
            fan_in: 64,
            examples: 20,
            temp_dir: None,
        }
    }
}

/// Spills are read in modest ranges, one ahead, so memory stays `fan_in x` a few MiB
/// however large a spill is and no connection idles while the merge works elsewhere.
const SPILL_READS: ReadTuning = ReadTuning {
    range_size: 1 << 20,
    in_flight: 2,
};

/// Merges the spill objects of a run (as many as there are, in bounded memory) and counts
/// every record whose key an earlier record already had, within one object or across
/// objects. "Earlier" follows the order of `spills`, then the row: pass them in plan order
/// so the first occurrence of a key is the one a reader meets first.
pub async fn find_duplicates(
    storage: &Storage,
    spills: Vec<S3Uri>,
    opts: &MergeOptions,
) -> Result<DuplicateReport, KeysError> {
    let storage = storage.clone().with_read_tuning(SPILL_READS);
    let opts = opts.clone();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || find_blocking(&handle, &storage, &spills, &opts))
        .await
        .map_err(KeysError::Task)?
}

type SpillSource =
    Checked<BufReader<SyncIoBridge<StreamReader<crate::storage::ObjectStream, bytes::Bytes>>>>;

fn find_blocking(
    handle: &Handle,
    storage: &Storage,
    spills: &[S3Uri],
    opts: &MergeOptions,
) -> Result<DuplicateReport, KeysError> {
    let fan_in = opts.fan_in.max(2);
    let dir = opts.temp_dir.as_deref();
    let mut names = vec![String::new(); spills.len()];
    let mut open_group = |first: usize, group: &[S3Uri]| -> Result<Vec<SpillSource>, KeysError> {
        group
            .iter()
            .enumerate()
            .map(|(i, uri)| {
                let index = first + i;
                let (name, source) = open_spill(handle, storage, uri, index as u32)?;
                names[index] = name;
                Ok(source)
            })
            .collect()
    };

    let mut found = Examples::new(opts.examples);
    let mut passes = 1;
    if spills.len() <= fan_in {
        let sources = boxed(open_group(0, spills)?);
        merge::<KeysError>(sources, |entry| {
            found.see(entry, |i| &names[i as usize]);
            Ok(())
        })?;
        return Ok(report(spills.len(), found, passes));
    }

    // First pass: groups of spills into local runs that keep each entry's source.
    let mut runs = Vec::new();
    for (g, group) in spills.chunks(fan_in).enumerate() {
        let sources = boxed(open_group(g * fan_in, group)?);
        runs.push(merge_into_run(sources, dir)?);
    }
    passes += 1;
    // Further passes until one merge can take every run.
    while runs.len() > fan_in {
        let mut next = Vec::with_capacity(runs.len().div_ceil(fan_in));
        let mut rest = runs.into_iter().peekable();
        while rest.peek().is_some() {
            let sources = rest
                .by_ref()
                .take(fan_in)
                .map(|run: Run| Box::new(run.into_source(0)) as Box<dyn EntrySource>)
                .collect();
            next.push(merge_into_run(sources, dir)?);
        }
        runs = next;
        passes += 1;
    }
    let sources = runs
        .into_iter()
        .map(|run| Box::new(run.into_source(0)) as Box<dyn EntrySource>)
        .collect();
    merge::<KeysError>(sources, |entry| {
        found.see(entry, |i| &names[i as usize]);
        Ok(())
    })?;
    Ok(report(spills.len(), found, passes))
}

fn boxed<'a>(sources: Vec<SpillSource>) -> Vec<Box<dyn EntrySource + 'a>> {
    sources
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn EntrySource>)
        .collect()
}

fn report(spills: usize, found: Examples, passes: usize) -> DuplicateReport {
    DuplicateReport {
        spills,
        keys: found.keys,
        distinct: found.distinct,
        duplicates: found.duplicates,
        examples: found.examples,
        passes,
    }
}

/// Opens a spill object and reads its header: its source key and a checked stream of its
/// entries, all of source `index`.
fn open_spill(
    handle: &Handle,
    storage: &Storage,
    uri: &S3Uri,
    index: u32,
) -> Result<(String, SpillSource), KeysError> {
    let stream = handle.block_on(storage.get(uri, None))?;
    let bridge = SyncIoBridge::new_with_handle(StreamReader::new(stream), handle.clone());
    let mut reader = BufReader::with_capacity(64 << 10, bridge);
    let (name, entries) = codec::read_header(&mut reader).map_err(|error| {
        KeysError::from(super::merge::SourceError {
            spill: Some(uri.clone()),
            error,
        })
    })?;
    Ok((
        name,
        Checked::new(Some(uri.clone()), reader, false, index, Some(entries)),
    ))
}

fn merge_into_run(
    sources: Vec<Box<dyn EntrySource + '_>>,
    dir: Option<&std::path::Path>,
) -> Result<Run, KeysError> {
    let temp = |source| KeysError::temp("writing", dir, source);
    let mut writer = RunWriter::create(dir, true).map_err(temp)?;
    merge::<KeysError>(sources, |entry| writer.write(entry).map_err(temp))?;
    writer.finish().map_err(temp)
}
