//! Cutting a CSV byte stream into chunks of whole records, and a chunk into its fields.
//!
//! The reader of a stream only finds where records end (the quote-aware [`step`] without
//! fields, cheap) and cuts a chunk every `batch_rows` records; splitting a chunk into fields
//! and typing them is the expensive part, and a chunk can be decoded anywhere, in any order.
//! Each chunk becomes exactly one batch, so batches, bad records and their lines are the same
//! whether chunks are decoded one after the other or on several threads.

use std::io::{self, BufRead};

use super::csv_records::{BOM, Dialect, FieldSink, NoFields, ReadError, Step, step};

/// A chunk stops growing past this many bytes, whatever its record count: it bounds the
/// memory of chunks in flight and keeps a batch's string data far below Utf8's 2 GiB.
pub(crate) const MAX_CHUNK_BYTES: usize = 64 << 20;

/// The least a refill reads; a record longer than that doubles it, so that a long record is
/// scanned a logarithmic number of times.
const READ_BYTES: usize = 64 << 10;

/// Whole records, as read.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub bytes: Vec<u8>,
    /// The physical line (1-based) where the chunk starts.
    pub first_line: u64,
    /// Records in the chunk (skipped empty and comment lines excluded).
    pub records: usize,
}

/// Reads a CSV stream as chunks of whole records.
pub(crate) struct ChunkReader {
    reader: Box<dyn BufRead + Send>,
    dialect: Dialect,
    /// Read and not yet in a chunk: the start of the next one.
    buf: Vec<u8>,
    /// The physical line at `buf[0]`.
    line: u64,
    eof: bool,
    /// A read error met after some bytes were read: reported once those are used up, as a
    /// reader without read-ahead would.
    deferred: Option<io::Error>,
    started: bool,
    done: bool,
}

impl ChunkReader {
    pub(crate) fn new(reader: Box<dyn BufRead + Send>, dialect: Dialect) -> Self {
        ChunkReader {
            reader,
            dialect,
            buf: Vec::new(),
            line: 1,
            eof: false,
            deferred: None,
            started: false,
            done: false,
        }
    }

    /// The fields of the first record (lossy UTF-8), consumed; `None` for an input without
    /// records.
    pub(crate) fn header(&mut self) -> Result<Option<Vec<String>>, ReadError> {
        self.start()?;
        let mut fields = HeaderFields::default();
        let mut pos = 0;
        let mut line = self.line;
        loop {
            match step(&self.buf, pos, self.eof, &self.dialect, &mut fields) {
                Step::Record { next, lines, .. } => {
                    let names = fields
                        .spans
                        .iter()
                        .map(|&(start, end, unescaped)| {
                            let bytes = if unescaped {
                                &fields.unescaped[start..end]
                            } else {
                                &self.buf[start..end]
                            };
                            String::from_utf8_lossy(bytes).into_owned()
                        })
                        .collect();
                    self.buf.drain(..next);
                    self.line = line + lines;
                    return Ok(Some(names));
                }
                Step::Skip { next, lines } => {
                    pos = next;
                    line += lines;
                }
                Step::Incomplete => self.fill(pos, line)?,
                Step::End => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    /// The next `max_records` records (fewer at the end, or past [`MAX_CHUNK_BYTES`]);
    /// `None` at the end of the input.
    pub(crate) fn next_chunk(&mut self, max_records: usize) -> Result<Option<Chunk>, ReadError> {
        self.start()?;
        if self.done {
            return Ok(None);
        }
        let first_line = self.line;
        let mut records = 0;
        let mut pos = 0;
        let mut line = self.line;
        let mut boundaries = NoFields::new();
        loop {
            match step(&self.buf, pos, self.eof, &self.dialect, &mut boundaries) {
                Step::Record {
                    next,
                    raw_end,
                    lines,
                } => {
                    // A range that ends at a cut must end with a record's line terminator:
                    // a last record that the end of the input closed (an open quote, or no
                    // terminator) means the cut was inside it.
                    if self.dialect.ends_at_cut
                        && self.eof
                        && next == self.buf.len()
                        && next == raw_end
                    {
                        return Err(ReadError::CutInsideRecord { line });
                    }
                    if next - pos > self.dialect.max_record {
                        return Err(ReadError::TooLong {
                            line,
                            limit: self.dialect.max_record,
                        });
                    }
                    records += 1;
                    pos = next;
                    line += lines;
                    if records >= max_records || pos >= MAX_CHUNK_BYTES {
                        break;
                    }
                }
                Step::Skip { next, lines } => {
                    if self.dialect.ends_at_cut && lines == 0 {
                        return Err(ReadError::CutInsideRecord { line });
                    }
                    pos = next;
                    line += lines;
                }
                Step::Incomplete => self.fill(pos, line)?,
                Step::End => {
                    self.done = true;
                    break;
                }
            }
        }
        self.line = line;
        let mut rest = Vec::with_capacity(pos.clamp(READ_BYTES, MAX_CHUNK_BYTES) + READ_BYTES);
        rest.extend_from_slice(&self.buf[pos..]);
        self.buf.truncate(pos);
        let bytes = std::mem::replace(&mut self.buf, rest);
        if records == 0 {
            // Only empty or comment lines were left.
            return Ok(None);
        }
        Ok(Some(Chunk {
            bytes,
            first_line,
            records,
        }))
    }

    /// Drops a byte order mark at the start of the input.
    fn start(&mut self) -> Result<(), ReadError> {
        if !self.started {
            while self.buf.len() < BOM.len() && !self.eof {
                self.fill(0, self.line)?;
            }
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
            self.started = true;
        }
        Ok(())
    }

    /// Reads more after `buf`, whose bytes from `record` on (at `line`) are a record not
    /// yet complete.
    fn fill(&mut self, record: usize, line: u64) -> Result<(), ReadError> {
        if let Some(error) = self.deferred.take() {
            return Err(ReadError::Io(error));
        }
        let pending = self.buf.len() - record;
        if pending >= self.dialect.max_record {
            return Err(ReadError::TooLong {
                line,
                limit: self.dialect.max_record,
            });
        }
        let target = self.buf.len() + pending.max(READ_BYTES);
        let before = self.buf.len();
        while self.buf.len() < target {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if self.buf.len() == before => return Err(ReadError::Io(e)),
                Err(e) => {
                    self.deferred = Some(e);
                    return Ok(());
                }
            };
            if available.is_empty() {
                self.eof = true;
                return Ok(());
            }
            let n = available.len().min(target - self.buf.len());
            self.buf.extend_from_slice(&available[..n]);
            self.reader.consume(n);
        }
        Ok(())
    }
}

/// The header record's fields.
#[derive(Default)]
struct HeaderFields {
    /// (start, end, in `unescaped`)
    spans: Vec<(usize, usize, bool)>,
    unescaped: Vec<u8>,
}

impl FieldSink for HeaderFields {
    const FIELDS: bool = true;
    fn clear(&mut self) {
        self.spans.clear();
        self.unescaped.clear();
    }
    fn push(&mut self, start: usize, end: usize) {
        self.spans.push((start, end, false));
    }
    fn unescaped(&mut self) -> &mut Vec<u8> {
        &mut self.unescaped
    }
    fn push_unescaped(&mut self, start: usize, end: usize) {
        self.spans.push((start, end, true));
    }
}

/// The memory [`ChunkFields`] needs, kept from one chunk to the next by whoever decodes them.
#[derive(Default)]
pub(crate) struct FieldBuffers {
    /// Field `c` of record `r` at `spans[c * records + r]`: start << 32 | end, offsets into
    /// the chunk, or into `unescaped` plus the chunk's length. Missing fields are empty.
    spans: Vec<u64>,
    /// Unescaped fields (those with doubled quotes or escapes).
    unescaped: Vec<u8>,
}

/// The fields of a chunk's records, column by column: the values of one column are next to
/// each other, as the typing loops read them.
pub(crate) struct ChunkFields<'a> {
    data: &'a [u8],
    buffers: &'a FieldBuffers,
    records: usize,
}

impl<'a> ChunkFields<'a> {
    /// Splits the `records` records of `data` into `columns` fields each; `wrong_count` is
    /// called with each record that has another number of fields, and that number.
    pub(crate) fn split(
        data: &'a [u8],
        records: usize,
        columns: usize,
        dialect: &Dialect,
        buffers: &'a mut FieldBuffers,
        mut wrong_count: impl FnMut(usize, usize),
    ) -> Self {
        assert!(
            data.len() <= (u32::MAX / 2) as usize,
            "a chunk is bounded far below 2 GiB"
        );
        let mut spans = std::mem::take(&mut buffers.spans);
        spans.clear();
        spans.resize(columns * records, 0);
        let mut unescaped = std::mem::take(&mut buffers.unescaped);
        unescaped.clear();
        let mut sink = ColumnSink {
            spans,
            unescaped,
            columns,
            records,
            record: 0,
            field: 0,
            base: data.len(),
        };
        let mut pos = 0;
        while sink.record < records {
            match step(data, pos, true, dialect, &mut sink) {
                Step::Record { next, .. } => {
                    if sink.field != columns {
                        wrong_count(sink.record, sink.field);
                    }
                    sink.record += 1;
                    pos = next;
                }
                Step::Skip { next, .. } => pos = next,
                Step::Incomplete | Step::End => {
                    unreachable!("a chunk holds the records its reader counted")
                }
            }
        }
        buffers.spans = sink.spans;
        buffers.unescaped = sink.unescaped;
        ChunkFields {
            data,
            buffers,
            records,
        }
    }

    /// Field `column` of record `record`.
    #[inline]
    pub(crate) fn field(&self, column: usize, record: usize) -> &[u8] {
        let span = self.buffers.spans[column * self.records + record];
        let (start, end) = ((span >> 32) as usize, span as u32 as usize);
        let base = self.data.len();
        if end <= base {
            &self.data[start..end]
        } else {
            &self.buffers.unescaped[start - base..end - base]
        }
    }
}

/// Records each field at its column's place in [`ChunkFields::spans`].
struct ColumnSink {
    spans: Vec<u64>,
    unescaped: Vec<u8>,
    columns: usize,
    records: usize,
    record: usize,
    /// Fields of the current record so far.
    field: usize,
    base: usize,
}

impl FieldSink for ColumnSink {
    const FIELDS: bool = true;
    #[inline]
    fn clear(&mut self) {
        self.field = 0;
    }
    #[inline]
    fn push(&mut self, start: usize, end: usize) {
        if self.field < self.columns {
            self.spans[self.field * self.records + self.record] =
                ((start as u64) << 32) | end as u64;
        }
        self.field += 1;
    }
    #[inline]
    fn unescaped(&mut self) -> &mut Vec<u8> {
        &mut self.unescaped
    }
    #[inline]
    fn push_unescaped(&mut self, start: usize, end: usize) {
        self.push(self.base + start, self.base + end);
    }
}

/// Where each of the given records of a chunk starts: (physical line, raw bytes without the
/// line terminator), for reporting bad records. `wanted` is sorted.
pub(crate) fn locate_records<'a>(
    chunk: &'a Chunk,
    dialect: &Dialect,
    wanted: &[usize],
) -> Vec<(u64, &'a [u8])> {
    let data = &chunk.bytes;
    let mut found = Vec::with_capacity(wanted.len());
    let mut wanted = wanted.iter().peekable();
    let mut boundaries = NoFields::new();
    let (mut pos, mut line, mut record) = (0, chunk.first_line, 0);
    while let Some(&&next_wanted) = wanted.peek() {
        match step(data, pos, true, dialect, &mut boundaries) {
            Step::Record {
                next,
                raw_end,
                lines,
            } => {
                if record == next_wanted {
                    found.push((line, &data[pos..raw_end]));
                    wanted.next();
                }
                record += 1;
                pos = next;
                line += lines;
            }
            Step::Skip { next, lines } => {
                pos = next;
                line += lines;
            }
            Step::Incomplete | Step::End => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::csv_records::MAX_RECORD_BYTES;
    use std::io::{BufReader, Cursor};

    const DEFAULT: Dialect = Dialect {
        delimiter: b',',
        quote: b'"',
        escape: None,
        comment: None,
        ends_at_cut: false,
        max_record: MAX_RECORD_BYTES,
    };

    fn reader(input: &[u8], capacity: usize) -> ChunkReader {
        ChunkReader::new(
            Box::new(BufReader::with_capacity(
                capacity,
                Cursor::new(input.to_vec()),
            )),
            DEFAULT,
        )
    }

    /// Every chunk as (first line, records, text), with reader capacities that split records
    /// across reads, all agreeing.
    fn chunks(input: &[u8], dialect: Dialect, max_records: usize) -> Vec<(u64, usize, String)> {
        let mut results = Vec::new();
        for capacity in [1, 2, 5, 64, 1 << 16] {
            let mut r = reader(input, capacity);
            r.dialect = dialect;
            let mut out = Vec::new();
            while let Some(chunk) = r.next_chunk(max_records).unwrap() {
                out.push((
                    chunk.first_line,
                    chunk.records,
                    String::from_utf8(chunk.bytes).unwrap(),
                ));
            }
            results.push(out);
        }
        for other in &results[1..] {
            assert_eq!(other, &results[0]);
        }
        results.remove(0)
    }

    #[test]
    fn chunks_end_at_record_boundaries_outside_quotes() {
        let input = "a,\"x\ny\"\nb,c\n\"d\"\"\n\",e\nf,g\n";
        assert_eq!(
            chunks(input.as_bytes(), DEFAULT, 2),
            vec![
                (1, 2, "a,\"x\ny\"\nb,c\n".to_string()),
                (4, 2, "\"d\"\"\n\",e\nf,g\n".to_string()),
            ]
        );
    }

    #[test]
    fn chunks_keep_crlf_and_skipped_lines_and_count_their_lines() {
        let input = "\u{feff}a,b\r\n\r\n\"q\r\nq\",c\r\n\n#x\nd,e";
        let dialect = Dialect {
            comment: Some(b'#'),
            ..DEFAULT
        };
        assert_eq!(
            chunks(input.as_bytes(), dialect, 1),
            vec![
                (1, 1, "a,b\r\n".to_string()),
                (2, 1, "\r\n\"q\r\nq\",c\r\n".to_string()),
                (5, 1, "\n#x\nd,e".to_string()),
            ]
        );
        // Skipped lines after the last record make no chunk.
        assert_eq!(
            chunks(b"a\n\n\n", DEFAULT, 1),
            vec![(1, 1, "a\n".to_string())]
        );
    }

    #[test]
    fn a_read_boundary_inside_a_quoted_field_is_not_a_chunk_boundary() {
        // A newline and a delimiter inside quotes, far enough in that the first read ends
        // inside the quoted field whatever the capacity.
        let long = "x".repeat(3 * READ_BYTES);
        let input = format!("1,\"{long}\n{long},\"\n2,b\n");
        let got = chunks(input.as_bytes(), DEFAULT, 1);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 1);
        assert_eq!(got[1], (3, 1, "2,b\n".to_string()));
    }

    #[test]
    fn escapes_hide_quotes_from_the_boundary_scan() {
        let dialect = Dialect {
            escape: Some(b'\\'),
            ..DEFAULT
        };
        let input = "\"a\\\"\nb\",1\n\"c\\\\\",2\n";
        assert_eq!(
            chunks(input.as_bytes(), dialect, 1),
            vec![
                (1, 1, "\"a\\\"\nb\",1\n".to_string()),
                (3, 1, "\"c\\\\\",2\n".to_string()),
            ]
        );
    }

    #[test]
    fn header_then_chunks() {
        let mut r = reader(b"\n\"id\",name\n1,a\n2,b\n", 3);
        assert_eq!(r.header().unwrap(), Some(vec!["id".into(), "name".into()]));
        let chunk = r.next_chunk(10).unwrap().unwrap();
        assert_eq!((chunk.first_line, chunk.records), (3, 2));
        assert!(r.next_chunk(10).unwrap().is_none());
        assert!(reader(b"\n\n", 1).header().unwrap().is_none());
    }

    #[test]
    fn a_read_error_after_some_bytes_comes_once_they_are_used() {
        struct FailsAfter(Vec<u8>);
        impl io::Read for FailsAfter {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("broken"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let mut r = ChunkReader::new(
            Box::new(BufReader::new(FailsAfter(b"1\n2\n3".to_vec()))),
            DEFAULT,
        );
        let chunk = r.next_chunk(2).unwrap().unwrap();
        assert_eq!(chunk.records, 2);
        assert!(matches!(r.next_chunk(2), Err(ReadError::Io(_))));
    }

    #[test]
    fn fields_by_column_with_unescaped_and_missing_fields() {
        let data = b"a,\"b\"\"c\",d\n\ne\n\"f\"g,\"h\",\"\"\n";
        let mut wrong = Vec::new();
        let mut buffers = FieldBuffers::default();
        // Buffers left over from a larger chunk must not show through.
        ChunkFields::split(
            b"x,y,z,w\n\"\"\"\"\n",
            2,
            4,
            &DEFAULT,
            &mut buffers,
            |_, _| {},
        );
        let fields = ChunkFields::split(data, 3, 3, &DEFAULT, &mut buffers, |r, n| {
            wrong.push((r, n))
        });
        assert_eq!(wrong, vec![(1, 1)]);
        let text = |c, r| String::from_utf8(fields.field(c, r).to_vec()).unwrap();
        assert_eq!([text(0, 0), text(1, 0), text(2, 0)], ["a", "b\"c", "d"]);
        assert_eq!([text(0, 1), text(1, 1), text(2, 1)], ["e", "", ""]);
        assert_eq!([text(0, 2), text(1, 2), text(2, 2)], ["fg", "h", ""]);
        let chunk = Chunk {
            bytes: data.to_vec(),
            first_line: 10,
            records: 3,
        };
        assert_eq!(
            locate_records(&chunk, &DEFAULT, &[1, 2]),
            vec![(12, &b"e"[..]), (13, &b"\"f\"g,\"h\",\"\""[..])]
        );
    }
}
