//! Splitting CSV bytes into records and fields, with the physical line of each record.
//!
//! [`step`] recognises what starts at a position: a record, a line to skip, or the need for
//! more input. A line without a quote byte (the common case) is split in one pass that
//! classifies 32 bytes at a time into bit masks of delimiters, newlines and quotes; a line
//! with a quote goes through the full RFC 4180 state machine (quoted delimiters and newlines,
//! doubled quotes, an optional escape byte). The same function serves the streaming reader
//! here ([`CsvRecords`]), the chunk reader that only finds record boundaries, and the
//! splitting of a chunk into fields; a [`FieldSink`] says where fields go, if anywhere.
//!
//! Line terminators are `\n` and `\r\n`; a lone `\r` is data. Empty lines and comment lines
//! are skipped and are not records. A UTF-8 byte order mark at the start is dropped. After a
//! closing quote, bytes up to the next delimiter are kept as part of the field, and a quote
//! left open at the end of the input closes there (both as csv-core does).

use std::io::{self, BufRead};

use memchr::{memchr, memchr_iter, memchr2};

use super::decode::DecodeError;
use super::options::CsvReadOptions;

const DEFAULT_BUFFER_BYTES: usize = 1 << 20;
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The longest record of all: an output read back (whose records the encoder wrote), and the
/// cap of a configured limit.
pub(crate) const MAX_RECORD_BYTES: usize = 1 << 30;

/// Why the next record could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// A record longer than the buffer may grow to (an unclosed quote, most likely).
    TooLong {
        line: u64,
        limit: usize,
    },
    /// The input of a range ends inside a record: its cut was not a record boundary.
    CutInsideRecord {
        line: u64,
    },
}

impl ReadError {
    pub(crate) fn into_decode_error(self, origin: &str) -> DecodeError {
        match self {
            ReadError::Io(source) => DecodeError::Read {
                origin: origin.to_string(),
                source,
            },
            ReadError::TooLong { line, limit } => DecodeError::RecordTooLong {
                origin: origin.to_string(),
                line,
                limit,
            },
            ReadError::CutInsideRecord { line } => DecodeError::CutInsideRecord {
                origin: origin.to_string(),
                line,
            },
        }
    }
}

/// The record syntax: which bytes delimit, quote, escape and comment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
    pub comment: Option<u8>,
    /// The input is a byte range of a split object that ends at a cut: its last record must
    /// end with a line terminator outside quotes, or the cut was not a record boundary.
    pub ends_at_cut: bool,
    /// The longest record, in bytes; a longer one is [`ReadError::TooLong`].
    pub max_record: usize,
}

impl Dialect {
    pub(crate) fn from_options(options: &CsvReadOptions) -> Dialect {
        Dialect {
            delimiter: options.delimiter,
            quote: options.quote,
            // An escape byte equal to the quote is the doubled-quote rule, which always holds.
            escape: options.escape.filter(|&e| e != options.quote),
            comment: options.comment,
            ends_at_cut: options.ends_at_cut,
            max_record: usize::try_from(options.max_record_size).unwrap_or(MAX_RECORD_BYTES),
        }
    }
}

/// Where [`step`] puts the fields of the record it recognises.
pub(crate) trait FieldSink {
    /// Whether fields are wanted at all: without, `step` only finds where records end.
    const FIELDS: bool;
    /// Forgets the fields pushed for the record in progress (it is being read again).
    fn clear(&mut self);
    /// A field that is `data[start..end]` of the input.
    fn push(&mut self, start: usize, end: usize);
    /// The bytes of unescaped fields, which [`FieldSink::push_unescaped`] points into.
    fn unescaped(&mut self) -> &mut Vec<u8>;
    /// A field that is `unescaped()[start..end]`.
    fn push_unescaped(&mut self, start: usize, end: usize);
}

/// Record boundaries only.
pub(crate) struct NoFields(Vec<u8>);

impl NoFields {
    pub(crate) fn new() -> Self {
        NoFields(Vec::new())
    }
}

impl FieldSink for NoFields {
    const FIELDS: bool = false;
    #[inline]
    fn clear(&mut self) {}
    #[inline]
    fn push(&mut self, _: usize, _: usize) {}
    #[inline]
    fn unescaped(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
    #[inline]
    fn push_unescaped(&mut self, _: usize, _: usize) {}
}

/// Where a field's bytes are: in the input buffer, or unescaped into the scratch buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    scratch: bool,
}

/// The fields of one record, as [`CsvRecords`] keeps them.
#[derive(Default)]
struct RecordFields {
    spans: Vec<Span>,
    scratch: Vec<u8>,
}

impl FieldSink for RecordFields {
    const FIELDS: bool = true;
    #[inline]
    fn clear(&mut self) {
        self.spans.clear();
        self.scratch.clear();
    }
    #[inline]
    fn push(&mut self, start: usize, end: usize) {
        self.spans.push(Span {
            start,
            end,
            scratch: false,
        });
    }
    #[inline]
    fn unescaped(&mut self) -> &mut Vec<u8> {
        &mut self.scratch
    }
    #[inline]
    fn push_unescaped(&mut self, start: usize, end: usize) {
        self.spans.push(Span {
            start,
            end,
            scratch: true,
        });
    }
}

/// What starts at a position of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A record; the next one starts at `next`; its bytes without the line terminator end at
    /// `raw_end`; it spans `lines` line terminators.
    Record {
        next: usize,
        raw_end: usize,
        lines: u64,
    },
    /// An empty or comment line.
    Skip {
        next: usize,
        lines: u64,
    },
    /// The input ends inside the record: read more (never returned at the end of input).
    Incomplete,
    End,
}

/// Recognises what starts at `p` in `data`, whose end is the end of the input when `eof`,
/// and hands the fields of a record to `sink`.
#[inline]
pub(crate) fn step<S: FieldSink>(
    data: &[u8],
    p: usize,
    eof: bool,
    dialect: &Dialect,
    sink: &mut S,
) -> Step {
    sink.clear();
    if p == data.len() {
        return if eof { Step::End } else { Step::Incomplete };
    }
    match data[p] {
        b'\n' => {
            return Step::Skip {
                next: p + 1,
                lines: 1,
            };
        }
        b'\r' => match data.get(p + 1) {
            Some(b'\n') => {
                return Step::Skip {
                    next: p + 2,
                    lines: 1,
                };
            }
            None if !eof => return Step::Incomplete,
            None => {
                return Step::Skip {
                    next: p + 1,
                    lines: 0,
                };
            }
            Some(_) => {}
        },
        b if Some(b) == dialect.comment => {
            return match memchr(b'\n', &data[p..]) {
                Some(i) => Step::Skip {
                    next: p + i + 1,
                    lines: 1,
                },
                None if eof => Step::Skip {
                    next: data.len(),
                    lines: 0,
                },
                None => Step::Incomplete,
            };
        }
        _ => {}
    }
    let (line_end, field_start) = match plain_line(data, p, eof, dialect, sink) {
        Line::Plain {
            line_end,
            field_start,
        } => (line_end, field_start),
        Line::Quoted => return step_quoted(data, p, eof, dialect, sink),
        Line::Incomplete => return Step::Incomplete,
    };
    let raw_end = if line_end > p && data[line_end - 1] == b'\r' {
        line_end - 1
    } else {
        line_end
    };
    // With `\r` as the delimiter, the `\r` of a `\r\n` ended the last field already.
    if field_start <= raw_end {
        sink.push(field_start, raw_end);
    }
    let next = if line_end < data.len() {
        line_end + 1
    } else {
        line_end
    };
    Step::Record {
        next,
        raw_end,
        lines: u64::from(next != line_end),
    }
}

enum Line {
    /// A line without a quote that ends (before its `\n`, or at the end of the input) at
    /// `line_end`; every field but the last is pushed, the last starts at `field_start`.
    Plain {
        line_end: usize,
        field_start: usize,
    },
    /// The line holds a quote.
    Quoted,
    Incomplete,
}

/// Bytes classified at a time.
const BLOCK: usize = 32;

/// Reads the line at `p` as long as it holds no quote, pushing each field that a delimiter
/// ends.
#[inline]
fn plain_line<S: FieldSink>(
    data: &[u8],
    p: usize,
    eof: bool,
    dialect: &Dialect,
    sink: &mut S,
) -> Line {
    let mut field_start = p;
    let mut i = p;
    loop {
        let remaining = data.len() - i;
        if remaining == 0 {
            return if eof {
                Line::Plain {
                    line_end: i,
                    field_start,
                }
            } else {
                Line::Incomplete
            };
        }
        let (mut delimiters, newlines, quotes, width) = if remaining >= BLOCK {
            let block: &[u8; BLOCK] = data[i..i + BLOCK].try_into().expect("BLOCK bytes");
            let (d, n, q) = classify(block, dialect);
            (d, n, q, BLOCK)
        } else {
            let mut block = [0u8; BLOCK];
            block[..remaining].copy_from_slice(&data[i..]);
            let (d, n, q) = classify(&block, dialect);
            let valid = (1u32 << remaining) - 1;
            (d & valid, n & valid, q & valid, remaining)
        };
        // The bits before the first newline of the block (all of them when it has none).
        let before = if newlines == 0 {
            u32::MAX
        } else {
            (newlines & newlines.wrapping_neg()) - 1
        };
        if quotes & before != 0 {
            return Line::Quoted;
        }
        if S::FIELDS {
            delimiters &= before;
            while delimiters != 0 {
                let at = i + delimiters.trailing_zeros() as usize;
                sink.push(field_start, at);
                field_start = at + 1;
                delimiters &= delimiters - 1;
            }
        }
        if newlines != 0 {
            return Line::Plain {
                line_end: i + newlines.trailing_zeros() as usize,
                field_start,
            };
        }
        i += width;
    }
}

/// Bit masks (bit `k` for byte `k`) of the delimiters, newlines and quotes of a block.
#[inline(always)]
fn classify(block: &[u8; BLOCK], dialect: &Dialect) -> (u32, u32, u32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        // SAFETY: every x86_64 CPU has SSE2, and both loads read 16 bytes inside `block`.
        unsafe {
            let low = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            let high = _mm_loadu_si128(block.as_ptr().add(16).cast::<__m128i>());
            let mask = |byte: u8| {
                let needle = _mm_set1_epi8(byte as i8);
                let low = _mm_movemask_epi8(_mm_cmpeq_epi8(low, needle)) as u32 & 0xFFFF;
                let high = _mm_movemask_epi8(_mm_cmpeq_epi8(high, needle)) as u32 & 0xFFFF;
                low | (high << 16)
            };
            (mask(dialect.delimiter), mask(b'\n'), mask(dialect.quote))
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        classify_scalar(block, dialect)
    }
}

/// [`classify`] one byte at a time: the version for other architectures, and its reference.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classify_scalar(block: &[u8; BLOCK], dialect: &Dialect) -> (u32, u32, u32) {
    let (mut d, mut n, mut q) = (0u32, 0u32, 0u32);
    for (k, &b) in block.iter().enumerate() {
        d |= u32::from(b == dialect.delimiter) << k;
        n |= u32::from(b == b'\n') << k;
        q |= u32::from(b == dialect.quote) << k;
    }
    (d, n, q)
}

/// The full state machine for a record with a quote on its first line.
fn step_quoted<S: FieldSink>(
    data: &[u8],
    p: usize,
    eof: bool,
    dialect: &Dialect,
    sink: &mut S,
) -> Step {
    let Dialect {
        delimiter,
        quote,
        escape,
        ..
    } = *dialect;
    sink.clear();
    let mut lines = 0u64;
    let mut i = p;
    loop {
        // One field starts at `i`: where its bytes are, once known.
        let scratch_start = sink.unescaped().len();
        let quoted = data.get(i) == Some(&quote);
        // (start, end, in scratch)
        let mut span: (usize, usize, bool);
        if quoted {
            let open = i;
            i += 1;
            let mut segment = i;
            let mut unescaped = false;
            let content_end;
            loop {
                let found = match escape {
                    Some(e) => memchr2(quote, e, &data[i..]),
                    None => memchr(quote, &data[i..]),
                };
                let Some(offset) = found else {
                    if !eof {
                        return Step::Incomplete;
                    }
                    // A quote left open at the end of the input closes there.
                    content_end = data.len();
                    i = data.len();
                    break;
                };
                let q = i + offset;
                if q + 1 >= data.len() && !eof {
                    return Step::Incomplete;
                }
                if Some(data[q]) == escape {
                    if S::FIELDS {
                        let scratch = sink.unescaped();
                        scratch.extend_from_slice(&data[segment..q]);
                        if let Some(&escaped) = data.get(q + 1) {
                            scratch.push(escaped);
                        }
                    }
                    unescaped = true;
                    i = (q + 2).min(data.len());
                    segment = i;
                    continue;
                }
                if data.get(q + 1) == Some(&quote) {
                    if S::FIELDS {
                        sink.unescaped().extend_from_slice(&data[segment..q + 1]);
                    }
                    unescaped = true;
                    i = q + 2;
                    segment = i;
                    continue;
                }
                content_end = q;
                i = q + 1;
                break;
            }
            lines += memchr_iter(b'\n', &data[open..i]).count() as u64;
            span = if unescaped {
                if S::FIELDS {
                    sink.unescaped()
                        .extend_from_slice(&data[segment..content_end]);
                }
                (scratch_start, sink.unescaped().len(), true)
            } else {
                (open + 1, content_end, false)
            };
        } else {
            span = (i, i, false);
        }
        // Unquoted bytes up to the delimiter or the end of the line: the whole field,
        // or anything after a closing quote.
        let stop = match memchr2(delimiter, b'\n', &data[i..]) {
            Some(offset) => i + offset,
            None if eof => data.len(),
            None => return Step::Incomplete,
        };
        let mut tail_end = stop;
        let ends_line = stop == data.len() || data[stop] == b'\n';
        if ends_line && tail_end > i && data[tail_end - 1] == b'\r' {
            tail_end -= 1;
        }
        if tail_end > i {
            if !quoted {
                // An unquoted field.
                span.1 = tail_end;
            } else if S::FIELDS {
                let scratch = sink.unescaped();
                if !span.2 {
                    scratch.extend_from_slice(&data[span.0..span.1]);
                    span = (scratch_start, scratch_start, true);
                }
                scratch.extend_from_slice(&data[i..tail_end]);
                span.1 = scratch.len();
            }
        }
        if span.2 {
            sink.push_unescaped(span.0, span.1);
        } else {
            sink.push(span.0, span.1);
        }
        if stop == data.len() {
            return Step::Record {
                next: stop,
                raw_end: tail_end,
                lines,
            };
        }
        if data[stop] == delimiter {
            i = stop + 1;
            continue;
        }
        let raw_end = if stop > p && data[stop - 1] == b'\r' {
            stop - 1
        } else {
            stop
        };
        return Step::Record {
            next: stop + 1,
            raw_end,
            lines: lines + 1,
        };
    }
}

/// A streaming reader of CSV records.
pub(crate) struct CsvRecords {
    reader: Box<dyn BufRead + Send>,
    dialect: Dialect,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    bom_checked: bool,
    /// The physical line at `pos`, 1-based.
    line: u64,
    fields: RecordFields,
    record_start: usize,
    record_raw_end: usize,
    record_line: u64,
    /// A record longer than the buffer grows it; past this it is an error, not an OOM.
    max_record_bytes: usize,
}

impl CsvRecords {
    pub(crate) fn new(reader: Box<dyn BufRead + Send>, dialect: Dialect) -> Self {
        Self::with_buffer(reader, dialect, DEFAULT_BUFFER_BYTES)
    }

    /// A reader with an initial buffer of `bytes`; tests use tiny ones to split records
    /// across refills and make the buffer grow.
    fn with_buffer(reader: Box<dyn BufRead + Send>, dialect: Dialect, bytes: usize) -> Self {
        CsvRecords {
            reader,
            dialect,
            buf: vec![0; bytes.max(4)],
            pos: 0,
            end: 0,
            eof: false,
            bom_checked: false,
            line: 1,
            fields: RecordFields::default(),
            record_start: 0,
            record_raw_end: 0,
            record_line: 0,
            max_record_bytes: dialect.max_record,
        }
    }

    /// Advances to the next record; `false` at the end of the input.
    pub(crate) fn next_record(&mut self) -> Result<bool, ReadError> {
        if !self.bom_checked {
            while self.end - self.pos < BOM.len() && !self.eof {
                self.refill()?;
            }
            if self.buf[self.pos..self.end].starts_with(BOM) {
                self.pos += BOM.len();
            }
            self.bom_checked = true;
        }
        loop {
            let data = &self.buf[..self.end];
            match step(data, self.pos, self.eof, &self.dialect, &mut self.fields) {
                Step::Record {
                    next,
                    raw_end,
                    lines,
                } => {
                    if next - self.pos > self.max_record_bytes {
                        return Err(ReadError::TooLong {
                            line: self.line,
                            limit: self.max_record_bytes,
                        });
                    }
                    self.record_start = self.pos;
                    self.record_raw_end = raw_end;
                    self.record_line = self.line;
                    self.line += lines;
                    self.pos = next;
                    return Ok(true);
                }
                Step::Skip { next, lines } => {
                    self.pos = next;
                    self.line += lines;
                }
                Step::Incomplete => self.refill()?,
                Step::End => return Ok(false),
            }
        }
    }

    /// The number of fields of the current record.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.fields.spans.len()
    }

    /// Field `i` of the current record, unquoted and unescaped.
    #[inline]
    pub(crate) fn field(&self, i: usize) -> &[u8] {
        let span = self.fields.spans[i];
        if span.scratch {
            &self.fields.scratch[span.start..span.end]
        } else {
            &self.buf[span.start..span.end]
        }
    }

    /// The current record's bytes as read, without its line terminator.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &[u8] {
        &self.buf[self.record_start..self.record_raw_end]
    }

    /// The physical line (1-based) where the current record starts.
    #[cfg(test)]
    pub(crate) fn record_line(&self) -> u64 {
        self.record_line
    }

    /// Moves unread bytes to the front, grows a full buffer, and reads once.
    fn refill(&mut self) -> Result<(), ReadError> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        // What is left is a record not yet complete (or nothing).
        if self.end >= self.max_record_bytes {
            return Err(ReadError::TooLong {
                line: self.line,
                limit: self.max_record_bytes,
            });
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    const DEFAULT: Dialect = Dialect {
        delimiter: b',',
        quote: b'"',
        escape: None,
        comment: None,
        ends_at_cut: false,
        max_record: MAX_RECORD_BYTES,
    };

    /// Every record as (line, fields, raw), read with several buffer and reader sizes that
    /// must all agree.
    fn split(input: &[u8], dialect: Dialect) -> Vec<(u64, Vec<String>, String)> {
        let mut results = Vec::new();
        for (buffer, capacity) in [(4, 1), (5, 3), (16, 7), (1 << 20, 1 << 16)] {
            let reader = Box::new(BufReader::with_capacity(
                capacity,
                Cursor::new(input.to_vec()),
            ));
            let mut records = CsvRecords::with_buffer(reader, dialect, buffer);
            let mut out = Vec::new();
            while records.next_record().unwrap() {
                let fields = (0..records.len())
                    .map(|i| String::from_utf8_lossy(records.field(i)).into_owned())
                    .collect();
                let raw = String::from_utf8_lossy(records.raw()).into_owned();
                out.push((records.record_line(), fields, raw));
            }
            results.push(out);
        }
        for other in &results[1..] {
            assert_eq!(other, &results[0]);
        }
        results.remove(0)
    }

    fn fields(input: &str, dialect: Dialect) -> Vec<Vec<String>> {
        split(input.as_bytes(), dialect)
            .into_iter()
            .map(|(_, f, _)| f)
            .collect()
    }

    #[test]
    fn plain_and_quoted_fields() {
        assert_eq!(
            fields("a,b,c\n,,\n\"x,y\",\"\"\"\",z\n", DEFAULT),
            vec![
                vec!["a", "b", "c"],
                vec!["", "", ""],
                vec!["x,y", "\"", "z"]
            ]
        );
    }

    #[test]
    fn lines_count_quoted_newlines_and_skipped_lines() {
        let records = split(b"a\n\n\"b\nc\",d\r\n\r\ne\n", DEFAULT);
        let lines: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![1, 3, 6]);
        assert_eq!(records[1].2, "\"b\nc\",d");
        assert_eq!(records[1].1, vec!["b\nc", "d"]);
    }

    #[test]
    fn text_after_a_closing_quote_stays_in_the_field() {
        assert_eq!(
            fields("\"ab\"cd,e\n\"x\"\"y\"z\n", DEFAULT),
            vec![vec!["abcd", "e"], vec!["x\"yz"]]
        );
    }

    #[test]
    fn an_open_quote_closes_at_the_end_of_input() {
        assert_eq!(fields("a,\"b\nc", DEFAULT), vec![vec!["a", "b\nc"]]);
    }

    #[test]
    fn escapes_apply_inside_quotes_only() {
        let dialect = Dialect {
            escape: Some(b'\\'),
            ..DEFAULT
        };
        assert_eq!(
            fields("\"a\\\"b\",c\\d\n\"\\\\\"\n", dialect),
            vec![vec!["a\"b", "c\\d"], vec!["\\"]]
        );
    }

    #[test]
    fn bom_comment_and_final_carriage_return() {
        let dialect = Dialect {
            comment: Some(b'#'),
            ..DEFAULT
        };
        let records = split(b"\xEF\xBB\xBFa,b\r\n#x,\"y\n1,2\r", dialect);
        assert_eq!(records[0], (1, vec!["a".into(), "b".into()], "a,b".into()));
        assert_eq!(records[1], (3, vec!["1".into(), "2".into()], "1,2".into()));
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn block_classification_matches_byte_by_byte() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let mut block = [0u8; BLOCK];
            for b in block.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = b",\n\"\ta\x00\xFF"[(state % 7) as usize];
            }
            for delimiter in [b',', b'\t', 0] {
                let dialect = Dialect {
                    delimiter,
                    ..DEFAULT
                };
                assert_eq!(
                    classify(&block, &dialect),
                    classify_scalar(&block, &dialect)
                );
            }
        }
    }

    /// Lines without quotes, of every length around the block size, split as the simplest
    /// reading of the rules does.
    #[test]
    fn plain_lines_split_like_a_simple_reference() {
        fn reference(data: &[u8]) -> Vec<(u64, Vec<String>, String)> {
            let mut out = Vec::new();
            let (mut p, mut line) = (0, 1);
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            while p < data.len() {
                match (data[p], data.get(p + 1)) {
                    (b'\n', _) => (p, line) = (p + 1, line + 1),
                    (b'\r', Some(b'\n')) => (p, line) = (p + 2, line + 1),
                    (b'\r', None) => p += 1,
                    _ => {
                        let end = memchr(b'\n', &data[p..]).map_or(data.len(), |i| p + i);
                        let raw = data[p..end].strip_suffix(b"\r").unwrap_or(&data[p..end]);
                        let fields = raw.split(|b| *b == b',').map(text).collect();
                        out.push((line, fields, text(raw)));
                        line += u64::from(end < data.len());
                        p = end + 1;
                    }
                }
            }
            out
        }
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 140) as usize;
            let mut input = Vec::with_capacity(len);
            for k in 0..len {
                let pick = (state.rotate_left(k as u32 * 5) ^ (k as u64 * 0x9E37)) % 16;
                input.push(match pick {
                    0 | 1 => b',',
                    2 => b'\n',
                    3 => b'\r',
                    4 => 0xFF,
                    _ => b'a' + (pick as u8),
                });
            }
            assert_eq!(
                split(&input, DEFAULT),
                reference(&input),
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
        // Long lines whose newline and delimiters sit on block edges.
        for len in 28..100 {
            let mut line = vec![b'x'; len];
            line[31.min(len - 1)] = b',';
            line[len - 1] = b'\n';
            let input = line.repeat(3);
            assert_eq!(split(&input, DEFAULT), reference(&input), "{len}");
        }
    }

    #[test]
    fn a_carriage_return_delimiter_does_not_end_a_field_of_its_own() {
        let dialect = Dialect {
            delimiter: b'\r',
            ..DEFAULT
        };
        assert_eq!(
            fields("a\rb\r\nc\r\n", dialect),
            vec![vec!["a", "b"], vec!["c"]]
        );
    }

    #[test]
    fn a_lone_carriage_return_is_data() {
        assert_eq!(fields("a\rb,c\n", DEFAULT), vec![vec!["a\rb", "c"]]);
    }
}
