//! Where a byte range of a split text object starts and ends: each cut of the plan moves to
//! the next record boundary (the next line start for JSON lines, a quote-aware search for
//! CSV, see `format::csv_cut`), and a CSV range after the first reads the object's header
//! first. Both ranges beside a cut compute the same boundary from the same bytes, or both
//! fail when a record longer than `max_record_size` leaves none.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::format::DecodeError;
use crate::format::csv_cut::{CutSearch, header_len};
use crate::format::options::{CsvReadOptions, SourceFormat};
use crate::plan::split::PlannedRange;
use crate::storage::uri::S3Uri;
use crate::storage::{Storage, StorageError};

/// The first window read after a cut; each next one doubles, up to [`MAX_WINDOW`].
const FIRST_WINDOW: u64 = 64 << 10;
const MAX_WINDOW: u64 = 4 << 20;

/// What a task of a split text object reads: the header (or nothing), then `span`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSpan {
    pub prefix: Bytes,
    pub span: Range<u64>,
    /// Whether `span` ends at a cut rather than at the object's end.
    pub ends_at_cut: bool,
}

/// Why a range's span could not be found.
#[derive(Debug, thiserror::Error)]
pub enum SpanError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// No record boundary after a cut: bad data.
    #[error(transparent)]
    Decode(DecodeError),
}

/// The span of `range` moved to record boundaries, and the header it needs.
pub async fn range_span(
    storage: &Storage,
    uri: &S3Uri,
    etag: &str,
    range: &PlannedRange,
    format: SourceFormat,
    csv: &CsvReadOptions,
) -> Result<RangeSpan, SpanError> {
    let size = range.object_size;
    let read = Reader {
        storage,
        uri,
        etag,
        size,
    };
    let begin = read.boundary(range.start, format, csv).await?;
    let finish = read.boundary(range.end, format, csv).await?.max(begin);
    let prefix = if format == SourceFormat::Csv && csv.header && begin > 0 {
        read.header(csv).await?.freeze()
    } else {
        Bytes::new()
    };
    Ok(RangeSpan {
        prefix,
        span: begin..finish,
        ends_at_cut: finish < size,
    })
}

struct Reader<'a> {
    storage: &'a Storage,
    uri: &'a S3Uri,
    etag: &'a str,
    size: u64,
}

impl Reader<'_> {
    async fn boundary(
        &self,
        cut: u64,
        format: SourceFormat,
        csv: &CsvReadOptions,
    ) -> Result<u64, SpanError> {
        match format {
            SourceFormat::Csv => self.csv_boundary(cut, csv).await,
            _ => Ok(self.line_boundary(cut).await?),
        }
    }

    /// Reads windows from `from` on, growing, handing each to `found` until it returns an
    /// offset from `from` (or fails); the object's size when none does. Up to `lookahead`
    /// bytes after `from` windows stay small, where the answer usually is.
    async fn scan<E: From<StorageError>>(
        &self,
        from: u64,
        lookahead: u64,
        mut found: impl FnMut(&[u8]) -> Result<Option<u64>, E>,
    ) -> Result<u64, E> {
        let (mut pos, mut window) = (from, FIRST_WINDOW);
        // Not past the lookahead in one go: in a file without quotes the boundary comes
        // right after it, and the rest of a larger window would be read for nothing.
        let lookahead_end = from + lookahead + FIRST_WINDOW;
        while pos < self.size {
            let mut end = (pos + window).min(self.size);
            if pos < lookahead_end {
                end = end.min(lookahead_end);
            }
            let bytes = self
                .storage
                .get_range_of(self.uri, self.etag, pos..end, self.size)
                .await?;
            if let Some(offset) = found(&bytes)? {
                return Ok((from + offset).min(self.size));
            }
            pos = end;
            window = (window * 2).min(MAX_WINDOW);
        }
        Ok(self.size)
    }

    /// The first line start at or after `cut`: just after the first `\n` at or after
    /// `cut - 1` (0 for 0, the size at or past the end).
    async fn line_boundary(&self, cut: u64) -> Result<u64, StorageError> {
        if cut == 0 || cut >= self.size {
            return Ok(cut.min(self.size));
        }
        let mut seen = 0u64;
        self.scan(cut - 1, 0, |bytes| {
            let found = memchr::memchr(b'\n', bytes).map(|i| seen + i as u64 + 1);
            seen += bytes.len() as u64;
            Ok::<_, StorageError>(found)
        })
        .await
    }

    /// The first true CSV record start after `cut` (0 for 0, the size at or past the end).
    async fn csv_boundary(&self, cut: u64, csv: &CsvReadOptions) -> Result<u64, SpanError> {
        if cut == 0 || cut >= self.size {
            return Ok(cut.min(self.size));
        }
        let mut search = CutSearch::new(csv);
        self.scan(cut, csv.max_record_size, |bytes| {
            search.feed(bytes).map_err(|none| {
                SpanError::Decode(DecodeError::NoRecordBoundary {
                    origin: self.uri.to_string(),
                    near: cut + none.offset,
                    limit: csv.max_record_size,
                })
            })
        })
        .await
    }

    /// The object's header: its first record, with anything skipped before it.
    async fn header(&self, csv: &CsvReadOptions) -> Result<BytesMut, StorageError> {
        let mut head = BytesMut::new();
        let len = self
            .scan(0, 0, |bytes| {
                head.extend_from_slice(bytes);
                let eof = head.len() as u64 >= self.size;
                Ok::<_, StorageError>(header_len(&head, eof, csv).map(|n| n as u64))
            })
            .await?;
        head.truncate(len as usize);
        Ok(head)
    }
}
