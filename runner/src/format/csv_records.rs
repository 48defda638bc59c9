//! Splitting a CSV byte stream into records and fields, with the physical line of each record.
//!
//! The reader keeps its own bounded buffer (it grows only for a record longer than it). A
//! record whose line holds no quote byte is split with `memchr` alone, which is the common
//! case and an order of magnitude faster than a byte-at-a-time state machine; a line with a
//! quote goes through the full RFC 4180 state machine (quoted delimiters and newlines,
//! doubled quotes, an optional escape byte).
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
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why the next record could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// A record longer than the buffer may grow to (an unclosed quote, most likely).
    TooLong {
        line: u64,
        limit: usize,
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
}

impl Dialect {
    pub(crate) fn from_options(options: &CsvReadOptions) -> Dialect {
        Dialect {
            delimiter: options.delimiter,
            quote: options.quote,
            // An escape byte equal to the quote is the doubled-quote rule, which always holds.
            escape: options.escape.filter(|&e| e != options.quote),
            comment: options.comment,
        }
    }
}

/// Where a field's bytes are: in the input buffer, or unescaped into the scratch buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    scratch: bool,
}

enum Step {
    Record {
        next: usize,
        raw_end: usize,
        lines: u64,
    },
    Skip {
        next: usize,
        lines: u64,
    },
    Incomplete,
    End,
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
    fields: Vec<Span>,
    scratch: Vec<u8>,
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
            fields: Vec::with_capacity(64),
            scratch: Vec::new(),
            record_start: 0,
            record_raw_end: 0,
            record_line: 0,
            max_record_bytes: 1 << 30,
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
            match self.step() {
                Step::Record {
                    next,
                    raw_end,
                    lines,
                } => {
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
        self.fields.len()
    }

    /// Field `i` of the current record, unquoted and unescaped.
    #[inline]
    pub(crate) fn field(&self, i: usize) -> &[u8] {
        let span = self.fields[i];
        if span.scratch {
            &self.scratch[span.start..span.end]
        } else {
            &self.buf[span.start..span.end]
        }
    }

    /// The current record's bytes as read, without its line terminator.
    pub(crate) fn raw(&self) -> &[u8] {
        &self.buf[self.record_start..self.record_raw_end]
    }

    /// The physical line (1-based) where the current record starts.
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
        if self.end == self.buf.len() {
            if self.buf.len() >= self.max_record_bytes {
                return Err(ReadError::TooLong {
                    line: self.line,
                    limit: self.max_record_bytes,
                });
            }
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

    /// Recognises what starts at `pos`: a record, a line to skip, or the need for more input.
    fn step(&mut self) -> Step {
        self.fields.clear();
        self.scratch.clear();
        let p = self.pos;
        let data = &self.buf[..self.end];
        if p == data.len() {
            return if self.eof {
                Step::End
            } else {
                Step::Incomplete
            };
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
                None if !self.eof => return Step::Incomplete,
                None => {
                    return Step::Skip {
                        next: p + 1,
                        lines: 0,
                    };
                }
                Some(_) => {}
            },
            b if Some(b) == self.dialect.comment => {
                return match memchr(b'\n', &data[p..]) {
                    Some(i) => Step::Skip {
                        next: p + i + 1,
                        lines: 1,
                    },
                    None if self.eof => Step::Skip {
                        next: data.len(),
                        lines: 0,
                    },
                    None => Step::Incomplete,
                };
            }
            _ => {}
        }
        let (line_end, next) = match memchr(b'\n', &data[p..]) {
            Some(i) => (p + i, p + i + 1),
            None if self.eof => (data.len(), data.len()),
            None => return Step::Incomplete,
        };
        if memchr(self.dialect.quote, &data[p..line_end]).is_some() {
            return self.step_quoted();
        }
        let raw_end = if line_end > p && data[line_end - 1] == b'\r' {
            line_end - 1
        } else {
            line_end
        };
        let mut start = p;
        for i in memchr_iter(self.dialect.delimiter, &data[p..raw_end]) {
            self.fields.push(Span {
                start,
                end: p + i,
                scratch: false,
            });
            start = p + i + 1;
        }
        self.fields.push(Span {
            start,
            end: raw_end,
            scratch: false,
        });
        let lines = u64::from(next != line_end);
        Step::Record {
            next,
            raw_end,
            lines,
        }
    }

    /// The full state machine for a record with a quote on its first line.
    fn step_quoted(&mut self) -> Step {
        let Dialect {
            delimiter,
            quote,
            escape,
            ..
        } = self.dialect;
        let eof = self.eof;
        let data = &self.buf[..self.end];
        let mut lines = 0u64;
        let mut i = self.pos;
        loop {
            // One field starts at `i`.
            let scratch_start = self.scratch.len();
            let quoted = data.get(i) == Some(&quote);
            let mut span;
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
                        self.scratch.extend_from_slice(&data[segment..q]);
                        if let Some(&escaped) = data.get(q + 1) {
                            self.scratch.push(escaped);
                        }
                        unescaped = true;
                        i = (q + 2).min(data.len());
                        segment = i;
                        continue;
                    }
                    if data.get(q + 1) == Some(&quote) {
                        self.scratch.extend_from_slice(&data[segment..q + 1]);
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
                    self.scratch.extend_from_slice(&data[segment..content_end]);
                    Span {
                        start: scratch_start,
                        end: self.scratch.len(),
                        scratch: true,
                    }
                } else {
                    Span {
                        start: open + 1,
                        end: content_end,
                        scratch: false,
                    }
                };
            } else {
                span = Span {
                    start: i,
                    end: i,
                    scratch: false,
                };
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
                    span.end = tail_end;
                } else {
                    if !span.scratch {
                        self.scratch.extend_from_slice(&data[span.start..span.end]);
                        span = Span {
                            start: scratch_start,
                            end: scratch_start,
                            scratch: true,
                        };
                    }
                    self.scratch.extend_from_slice(&data[i..tail_end]);
                    span.end = self.scratch.len();
                }
            }
            self.fields.push(span);
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
            let raw_end = if stop > self.pos && data[stop - 1] == b'\r' {
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
    fn a_lone_carriage_return_is_data() {
        assert_eq!(fields("a\rb,c\n", DEFAULT), vec![vec!["a\rb", "c"]]);
    }
}
