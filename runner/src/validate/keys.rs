//! Exact uniqueness of composite keys across a whole run, in bounded memory, by external merge.
//!
//! The flow: each worker hashes the key of every record it writes ([`hash_keys`]) and
//! feeds `(hash, row, key text)` to one [`KeySpillWriter`] per source object, which sorts
//! in bounded memory (spilling sorted runs to local files) and uploads one sorted spill
//! object. At publish, [`find_duplicates`] merges every spill of the run, at most `fan_in`
//! streams at once (in several passes through local files when there are more), and
//! reports each record whose key an earlier record already had. Two keys count as equal
//! when their 128-bit hashes are equal; with n keys the chance of any false match is about
//! n² / 2¹²⁹ (below 10⁻¹⁸ for ten billion keys).

mod codec;
mod find;
mod hash;
mod merge;
mod spill;

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::exit::ExitCode;
use crate::storage::{S3Uri, StorageError};

pub use codec::VERSION as SPILL_FORMAT_VERSION;
pub use find::{MergeOptions, find_duplicates};
pub use hash::{KEY_TEXT_LIMIT, KeyColumns, hash_keys, key_texts, truncate_text};
pub use spill::{KeySpillWriter, SpillOptions, SpillSummary};

/// Where one record with a given key is: its source object and its position in that
/// object's output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyOccurrence {
    /// The source object's key.
    pub source: String,
    /// The record's position in the object's output, from 0.
    pub row: u64,
}

/// A record whose key an earlier record already had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateExample {
    /// The key's values as JSON array text, cut to [`KEY_TEXT_LIMIT`] bytes.
    pub key: String,
    /// The first record with this key (in spill order, then row order).
    pub first: KeyOccurrence,
    /// The record that repeats it.
    pub duplicate: KeyOccurrence,
}

impl DuplicateExample {
    fn new(key: &[u8], first: KeyOccurrence, duplicate: KeyOccurrence) -> DuplicateExample {
        DuplicateExample {
            key: String::from_utf8_lossy(key).into_owned(),
            first,
            duplicate,
        }
    }
}

/// The result of merging every spill of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateReport {
    /// Spill objects merged (one per source object).
    pub spills: usize,
    /// Keys merged (one per record).
    pub keys: u64,
    /// Distinct keys.
    pub distinct: u64,
    /// Records whose key an earlier record already had: `keys - distinct`.
    pub duplicates: u64,
    /// The first duplicates in hash order, at most the number asked for.
    pub examples: Vec<DuplicateExample>,
    /// Merge passes (1 when every spill fit in one merge).
    pub passes: usize,
}

impl DuplicateReport {
    /// Whether every key was unique.
    pub fn is_unique(&self) -> bool {
        self.duplicates == 0
    }
}

/// What went wrong hashing, spilling or merging keys.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("key column {column:?} is not in the data (columns: {available})")]
    UnknownColumn { column: String, available: String },
    #[error("key column {index} does not exist: the data has {columns} columns")]
    ColumnIndex { index: usize, columns: usize },
    #[error("a key needs at least one column")]
    NoColumns,
    #[error("reading the key columns")]
    Arrow(#[source] arrow::error::ArrowError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("reading key spill {uri}")]
    ReadSpill {
        uri: S3Uri,
        #[source]
        source: io::Error,
    },
    #[error("key spill {uri} is damaged: {detail}")]
    BadSpill { uri: S3Uri, detail: String },
    #[error("writing key spill {uri}")]
    WriteSpill {
        uri: S3Uri,
        #[source]
        source: io::Error,
    },
    #[error("{operation} a sorted run of keys in {dir}")]
    TempFile {
        operation: &'static str,
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("the key merge stopped")]
    Task(#[source] tokio::task::JoinError),
}

impl KeysError {
    fn temp(operation: &'static str, dir: Option<&Path>, source: io::Error) -> KeysError {
        KeysError::TempFile {
            operation,
            dir: dir
                .map(Path::to_path_buf)
                .unwrap_or_else(std::env::temp_dir)
                .display()
                .to_string(),
            source,
        }
    }
}

impl From<merge::SourceError> for KeysError {
    fn from(e: merge::SourceError) -> KeysError {
        let merge::SourceError { spill, error } = e;
        // A failed read of the object arrives as an io::Error around the StorageError.
        if error
            .get_ref()
            .is_some_and(|inner| inner.is::<StorageError>())
        {
            let inner = error.into_inner().expect("checked above");
            return KeysError::Storage(*inner.downcast::<StorageError>().expect("checked above"));
        }
        match spill {
            Some(uri)
                if matches!(
                    error.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                KeysError::BadSpill {
                    uri,
                    detail: error.to_string(),
                }
            }
            Some(uri) => KeysError::ReadSpill { uri, source: error },
            None => KeysError::TempFile {
                operation: "reading",
                dir: "the temporary directory".into(),
                source: error,
            },
        }
    }
}

impl KeysError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            KeysError::UnknownColumn { .. }
            | KeysError::ColumnIndex { .. }
            | KeysError::NoColumns => ExitCode::Config,
            KeysError::Storage(e) => e.exit_code(),
            // A damaged spill reads the same on a retry; the objects must be redone.
            KeysError::BadSpill { .. } => ExitCode::Config,
            _ => ExitCode::Transient,
        }
    }
}

/// Counts duplicates in a merged stream and keeps the first examples.
struct Examples {
    limit: usize,
    keys: u64,
    distinct: u64,
    duplicates: u64,
    examples: Vec<DuplicateExample>,
    group: Option<(u128, u32, u64)>,
    group_text: Vec<u8>,
}

impl Examples {
    fn new(limit: usize) -> Examples {
        Examples {
            limit,
            keys: 0,
            distinct: 0,
            duplicates: 0,
            examples: Vec::new(),
            group: None,
            group_text: Vec::new(),
        }
    }

    /// One entry of the merged stream; `source_name` names a source index.
    fn see<'a>(&mut self, entry: &codec::Entry, source_name: impl Fn(u32) -> &'a str) {
        self.keys += 1;
        match self.group {
            Some((hash, source, row)) if hash == entry.hash => {
                self.duplicates += 1;
                if self.examples.len() < self.limit {
                    self.examples.push(DuplicateExample::new(
                        &self.group_text,
                        KeyOccurrence {
                            source: source_name(source).to_string(),
                            row,
                        },
                        KeyOccurrence {
                            source: source_name(entry.source).to_string(),
                            row: entry.row,
                        },
                    ));
                }
            }
            _ => {
                self.distinct += 1;
                self.group = Some(entry.order());
                self.group_text.clear();
                self.group_text.extend_from_slice(&entry.text);
            }
        }
    }
}

#[cfg(test)]
mod tests;
