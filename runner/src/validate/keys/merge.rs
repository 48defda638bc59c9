//! The k-way merge of sorted entry streams, and the local sorted runs it reads and writes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::path::Path;

use super::codec::{self, Entry};
use crate::storage::S3Uri;

/// A sorted stream of entries.
pub trait EntrySource: Send {
    /// Reads the next entry into `entry`; `Ok(false)` once the stream is done. A stream
    /// that breaks its order or its promised count returns an error.
    fn next_into(&mut self, entry: &mut Entry) -> Result<bool, SourceError>;
}

/// Why a source stopped.
#[derive(Debug)]
pub struct SourceError {
    /// The spill object being read, or `None` for a local run.
    pub spill: Option<S3Uri>,
    pub error: io::Error,
}

/// Checks that a stream's entries come in merge order and that it holds as many as it says.
pub struct Checked<R> {
    spill: Option<S3Uri>,
    reader: R,
    sourced: bool,
    source: u32,
    expected: Option<u64>,
    read: u64,
    last: Option<(u128, u32, u64)>,
}

impl<R: io::BufRead + Send> Checked<R> {
    /// A stream of `expected` entries (if known), all of `source` unless `sourced`.
    pub fn new(
        spill: Option<S3Uri>,
        reader: R,
        sourced: bool,
        source: u32,
        expected: Option<u64>,
    ) -> Checked<R> {
        Checked {
            spill,
            reader,
            sourced,
            source,
            expected,
            read: 0,
            last: None,
        }
    }

    fn fail(&self, error: io::Error) -> SourceError {
        SourceError {
            spill: self.spill.clone(),
            error,
        }
    }
}

impl<R: io::BufRead + Send> EntrySource for Checked<R> {
    fn next_into(&mut self, entry: &mut Entry) -> Result<bool, SourceError> {
        if self.expected == Some(self.read) {
            let mut probe = [0u8];
            return match self.reader.read(&mut probe) {
                Ok(0) => Ok(false),
                Ok(_) => Err(self.fail(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bytes follow the {} entries it announces", self.read),
                ))),
                Err(e) => Err(self.fail(e)),
            };
        }
        let found =
            codec::read_entry(&mut self.reader, entry, self.sourced, self.source).map_err(|e| {
                let at = self.read;
                self.fail(io::Error::new(e.kind(), format!("entry {at}: {e}")))
            })?;
        if !found {
            return match self.expected {
                Some(expected) => Err(self.fail(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("it ends after {} of {expected} entries", self.read),
                ))),
                None => Ok(false),
            };
        }
        let order = entry.order();
        if self.last.is_some_and(|last| last > order) {
            return Err(self.fail(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("entry {} is out of order", self.read),
            )));
        }
        self.last = Some(order);
        self.read += 1;
        Ok(true)
    }
}

/// Sorted entries held in memory (the last, unspilled buffer of a spill writer).
pub struct MemorySource<I> {
    entries: I,
}

impl<I> MemorySource<I> {
    pub fn new(entries: I) -> MemorySource<I> {
        MemorySource { entries }
    }
}

impl<I: Iterator<Item = Entry> + Send> EntrySource for MemorySource<I> {
    fn next_into(&mut self, entry: &mut Entry) -> Result<bool, SourceError> {
        match self.entries.next() {
            Some(next) => {
                *entry = next;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Merges sorted sources into one sorted stream, handing each entry to `sink` in order.
/// Memory: one entry per source.
pub fn merge<E: From<SourceError>>(
    mut sources: Vec<Box<dyn EntrySource + '_>>,
    mut sink: impl FnMut(&Entry) -> Result<(), E>,
) -> Result<(), E> {
    let mut heads: Vec<Entry> = vec![Entry::default(); sources.len()];
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (i, source) in sources.iter_mut().enumerate() {
        if source.next_into(&mut heads[i])? {
            heap.push(Reverse((heads[i].order(), i)));
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        sink(&heads[i])?;
        if sources[i].next_into(&mut heads[i])? {
            heap.push(Reverse((heads[i].order(), i)));
        }
    }
    Ok(())
}

/// A sorted run in an anonymous local file (removed when dropped).
pub struct Run {
    file: File,
    pub entries: u64,
    sourced: bool,
}

/// Writes a run; [`RunWriter::finish`] turns it into a [`Run`] to read.
pub struct RunWriter {
    out: BufWriter<File>,
    entries: u64,
    sourced: bool,
}

impl RunWriter {
    /// A new run in `dir` (the system's temporary directory if `None`).
    pub fn create(dir: Option<&Path>, sourced: bool) -> io::Result<RunWriter> {
        let file = match dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        };
        Ok(RunWriter {
            out: BufWriter::with_capacity(256 << 10, file),
            entries: 0,
            sourced,
        })
    }

    pub fn write(&mut self, entry: &Entry) -> io::Result<()> {
        self.entries += 1;
        codec::write_entry(&mut self.out, entry, self.sourced)
    }

    pub fn write_parts(&mut self, hash: u128, row: u64, text: &[u8]) -> io::Result<()> {
        self.entries += 1;
        codec::write_parts(&mut self.out, hash, None, row, text)
    }

    pub fn finish(self) -> io::Result<Run> {
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.flush()?;
        file.rewind()?;
        Ok(Run {
            file,
            entries: self.entries,
            sourced: self.sourced,
        })
    }
}

impl Run {
    /// The run as a checked source; entries without a source index get `source`.
    pub fn into_source(self, source: u32) -> Checked<BufReader<File>> {
        Checked::new(
            None,
            BufReader::with_capacity(256 << 10, self.file),
            self.sourced,
            source,
            Some(self.entries),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: u128, source: u32, row: u64) -> Entry {
        Entry {
            hash,
            source,
            row,
            text: format!("[{hash}]").into_bytes(),
        }
    }

    #[test]
    fn merge_interleaves_runs_in_order() {
        let mut runs = Vec::new();
        for (source, hashes) in [
            (0u32, vec![1u128, 4, 4, 9]),
            (1, vec![2, 4, 8]),
            (2, vec![]),
        ] {
            let mut writer = RunWriter::create(None, true).unwrap();
            for (row, hash) in hashes.into_iter().enumerate() {
                writer.write(&entry(hash, source, row as u64)).unwrap();
            }
            runs.push(writer.finish().unwrap());
        }
        let sources: Vec<Box<dyn EntrySource>> = runs
            .into_iter()
            .map(|r| Box::new(r.into_source(0)) as Box<dyn EntrySource>)
            .collect();
        let mut merged = Vec::new();
        merge::<SourceError>(sources, |e| {
            merged.push(e.order());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            merged,
            vec![
                (1, 0, 0),
                (2, 1, 0),
                (4, 0, 1),
                (4, 0, 2),
                (4, 1, 1),
                (8, 1, 2),
                (9, 0, 3)
            ]
        );
    }

    #[test]
    fn a_source_out_of_order_or_short_is_an_error() {
        let mut bytes = Vec::new();
        codec::write_entry(&mut bytes, &entry(5, 0, 0), false).unwrap();
        codec::write_entry(&mut bytes, &entry(3, 0, 1), false).unwrap();
        let mut source = Checked::new(
            Some(S3Uri::new("b", "k")),
            bytes.as_slice(),
            false,
            0,
            Some(2),
        );
        let mut e = Entry::default();
        assert!(source.next_into(&mut e).unwrap());
        let error = source.next_into(&mut e).unwrap_err();
        assert_eq!(error.spill, Some(S3Uri::new("b", "k")));
        assert!(error.error.to_string().contains("entry 1 is out of order"));

        let mut bytes = Vec::new();
        codec::write_entry(&mut bytes, &entry(5, 0, 0), false).unwrap();
        let mut source = Checked::new(None, bytes.as_slice(), false, 0, Some(3));
        assert!(source.next_into(&mut e).unwrap());
        let error = source.next_into(&mut e).unwrap_err();
        assert!(
            error.error.to_string().contains("after 1 of 3 entries"),
            "{}",
            error.error
        );

        let mut source = Checked::new(None, bytes.as_slice(), false, 0, Some(0));
        let error = source.next_into(&mut e).unwrap_err();
        assert!(error.error.to_string().contains("bytes follow"));
    }
}
