//! One source object's keys: buffered, sorted into local runs, merged and uploaded as one
//! sorted spill object.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use arrow::record_batch::RecordBatch;

use super::codec::{self, Entry};
use super::hash::{KEY_TEXT_LIMIT, hash_keys, key_texts, truncate_text};
use super::merge::{EntrySource, MemorySource, Run, RunWriter, merge};
use super::{DuplicateExample, Examples, KeysError};
use crate::storage::{S3Uri, Storage, UploadOptions, sync_upload};

/// How a [`KeySpillWriter`] buffers and uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillOptions {
    /// Bytes of keys held in memory before a sorted run is written to a local file.
    pub buffer_bytes: usize,
    /// How many duplicates within the object are kept as examples.
    pub examples: usize,
    /// Where sorted runs go (the system's temporary directory if `None`).
    pub temp_dir: Option<PathBuf>,
    /// Parts of the spill object's upload.
    pub upload: UploadOptions,
}

impl Default for SpillOptions {
    fn default() -> SpillOptions {
        SpillOptions {
            buffer_bytes: 64 << 20,
            examples: 10,
            temp_dir: None,
            upload: UploadOptions::default(),
        }
    }
}

/// What [`KeySpillWriter::finish`] wrote and found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpillSummary {
    /// The spill object.
    pub uri: S3Uri,
    /// The source object its keys came from.
    pub source: String,
    /// Keys written (one per record).
    pub keys: u64,
    /// Size of the spill object in bytes.
    pub bytes: u64,
    /// Sorted runs written to local files before the final merge (0: all fit in memory).
    pub runs: usize,
    /// Records of this object whose key an earlier record of the same object already had.
    pub duplicates: u64,
    /// The first duplicates (by hash order), at most `examples` of them.
    pub examples: Vec<DuplicateExample>,
}

/// A buffered key; its text lives in the writer's arena.
#[derive(Debug, Clone, Copy)]
struct Pending {
    hash: u128,
    row: u64,
    start: usize,
    len: usize,
}

const PENDING_BYTES: usize = std::mem::size_of::<Pending>();

/// Collects `(hash, row, key text)` for one source object in bounded memory: past
/// `buffer_bytes` the buffer is sorted and written to a local run file. Pushing is
/// synchronous and may write a run to local disk, so call it from a blocking thread (where
/// the encoder runs) rather than an async task.
pub struct KeySpillWriter {
    opts: SpillOptions,
    pending: Vec<Pending>,
    arena: Vec<u8>,
    runs: Vec<Run>,
    keys: u64,
}

impl KeySpillWriter {
    pub fn new(opts: SpillOptions) -> KeySpillWriter {
        KeySpillWriter {
            opts,
            pending: Vec::new(),
            arena: Vec::new(),
            runs: Vec::new(),
            keys: 0,
        }
    }

    /// Keys pushed so far.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Sorted runs written to local files so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Adds one key: its hash, the record's position in the object's output, and its text
    /// (cut to [`KEY_TEXT_LIMIT`] bytes).
    pub fn push(&mut self, hash: u128, row: u64, text: &str) -> Result<(), KeysError> {
        let text = if text.len() > KEY_TEXT_LIMIT {
            std::borrow::Cow::Owned(truncate_text(text.to_string()))
        } else {
            std::borrow::Cow::Borrowed(text)
        };
        let start = self.arena.len();
        self.arena.extend_from_slice(text.as_bytes());
        self.pending.push(Pending {
            hash,
            row,
            start,
            len: text.len(),
        });
        self.keys += 1;
        if self.pending.len() * PENDING_BYTES + self.arena.len() >= self.opts.buffer_bytes {
            self.spill_run()?;
        }
        Ok(())
    }

    /// Adds the keys of every row of `batch`, numbering its rows from `first_row`.
    pub fn push_batch(
        &mut self,
        batch: &RecordBatch,
        columns: &[usize],
        first_row: u64,
    ) -> Result<(), KeysError> {
        let hashes = hash_keys(batch, columns)?;
        let texts = key_texts(batch, columns)?;
        for (i, (hash, text)) in hashes.into_iter().zip(texts).enumerate() {
            self.push(hash, first_row + i as u64, &text)?;
        }
        Ok(())
    }

    fn sort_pending(&mut self) {
        self.pending.sort_unstable_by_key(|p| (p.hash, p.row));
    }

    fn spill_run(&mut self) -> Result<(), KeysError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.sort_pending();
        let dir = self.opts.temp_dir.as_deref();
        let temp = |source| KeysError::temp("writing", dir, source);
        let mut writer = RunWriter::create(dir, false).map_err(temp)?;
        for p in &self.pending {
            writer
                .write_parts(p.hash, p.row, &self.arena[p.start..p.start + p.len])
                .map_err(temp)?;
        }
        self.runs.push(writer.finish().map_err(temp)?);
        self.pending.clear();
        self.arena.clear();
        Ok(())
    }

    /// Merges the runs into one sorted stream, counts the duplicates within the object, and
    /// uploads the stream to `uri` (a multipart upload past one part; nothing is left open
    /// on error). `source_key` names the object in the spill's header and in every report.
    pub async fn finish(
        mut self,
        storage: &Storage,
        uri: S3Uri,
        source_key: &str,
    ) -> Result<SpillSummary, KeysError> {
        self.sort_pending();
        let (mut writer, upload) = sync_upload(storage, uri.clone(), self.opts.upload);
        let source = source_key.to_string();
        let keys = self.keys;
        let runs = self.runs.len();
        let examples = self.opts.examples;
        let target = uri.clone();
        let merged = tokio::task::spawn_blocking(move || {
            let found = self.write_sorted(&mut writer, &source, examples, &target)?;
            writer.finish().map_err(|source| KeysError::WriteSpill {
                uri: target.clone(),
                source,
            })?;
            Ok::<_, KeysError>(found)
        })
        .await
        .map_err(KeysError::Task)
        .and_then(|r| r);
        // A failed merge dropped the writer, which ends the upload task with an abort; a
        // failed upload broke the writer, and the task has the reason.
        let uploaded = upload.await.map_err(KeysError::Task);
        match (merged, uploaded) {
            (Ok(found), Ok(Ok(pending))) => {
                let bytes = pending.size();
                pending.complete().await?;
                Ok(SpillSummary {
                    uri,
                    source: source_key.to_string(),
                    keys,
                    bytes,
                    runs,
                    duplicates: found.0,
                    examples: found.1,
                })
            }
            (Err(KeysError::WriteSpill { .. }), Ok(Err(upload))) => Err(upload.into()),
            (Err(e), _) => Err(e),
            (Ok(_), Ok(Err(upload))) => Err(upload.into()),
            (Ok(_), Err(e)) => Err(e),
        }
    }

    /// The header and every entry in order, into `out`; returns the duplicates found.
    fn write_sorted(
        self,
        out: &mut impl Write,
        source: &str,
        examples: usize,
        uri: &S3Uri,
    ) -> Result<(u64, Vec<DuplicateExample>), KeysError> {
        let failed = |source| KeysError::WriteSpill {
            uri: uri.clone(),
            source,
        };
        let mut out = BufWriter::with_capacity(1 << 20, out);
        codec::write_header(&mut out, source, self.keys).map_err(failed)?;
        let KeySpillWriter {
            pending,
            arena,
            runs,
            ..
        } = self;
        let memory = pending.into_iter().map(|p| Entry {
            hash: p.hash,
            source: 0,
            row: p.row,
            text: arena[p.start..p.start + p.len].to_vec(),
        });
        let mut sources: Vec<Box<dyn EntrySource + '_>> = runs
            .into_iter()
            .map(|run| Box::new(run.into_source(0)) as Box<dyn EntrySource>)
            .collect();
        sources.push(Box::new(MemorySource::new(memory)));
        let mut found = Examples::new(examples);
        merge::<KeysError>(sources, |entry| {
            codec::write_entry(&mut out, entry, false).map_err(failed)?;
            found.see(entry, |_| source);
            Ok(())
        })?;
        out.flush().map_err(failed)?;
        Ok((found.duplicates, found.examples))
    }
}
