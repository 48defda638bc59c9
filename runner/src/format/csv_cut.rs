//! Where a byte range of a split CSV object starts: the first true record boundary after a cut,
//! found from the bytes after the cut alone.
//!
//! The quote state at a cut depends on every byte before it, so the search follows every state
//! the reader could be in at the cut at once, on the record syntax the decoder reads
//! (`csv_records`): at field start or inside an unquoted field, inside a quoted field, just past
//! a quote in a quoted field, after an escape byte, inside a comment line. States that meet stay
//! together, and the set shrinks as quotes, delimiters and line ends come: once one state is
//! left, the reader's state is known whatever it was at the cut, and the next record start is a
//! true one. Both ranges beside a cut run the same search over the same bytes, so they agree.
//!
//! A region without any quote byte keeps "inside a quoted field" alive: it would mean a quoted
//! field longer than the region. After [`LOOKAHEAD`] bytes that possibility is dropped; the
//! range before the cut reads to the boundary in the true state and fails if it was wrong (a
//! quoted field of more than [`LOOKAHEAD`] bytes without a quote crossing the cut), so a wrong
//! cut cannot pass unnoticed.

use super::csv_records::{BOM, Dialect, NoFields, Step, step};
use super::options::CsvReadOptions;

/// How far past a cut all quote states are followed before a quoted field that long is ruled
/// out.
pub const LOOKAHEAD: u64 = 4 << 20;

// The reader's states, as bits of a set.
const RECORD_START: u8 = 1 << 0;
const FIELD_START: u8 = 1 << 1;
const UNQUOTED: u8 = 1 << 2;
const COMMENT: u8 = 1 << 3;
const QUOTED: u8 = 1 << 4;
const QUOTE_SEEN: u8 = 1 << 5;
const ESCAPED: u8 = 1 << 6;
const STATES: usize = 7;
const ALL: u8 = (1 << STATES) - 1;
const INSIDE_QUOTES: u8 = QUOTED | QUOTE_SEEN | ESCAPED;

/// What a byte is to the record syntax.
#[derive(Clone, Copy)]
enum Class {
    Quote,
    Delimiter,
    Newline,
    Escape,
    Comment,
    Other,
}
const CLASSES: usize = 6;

/// The state a reader in `state` is in after a byte of `class`.
fn next(state: u8, class: Class) -> u8 {
    use Class::*;
    match (state, class) {
        (RECORD_START, Comment) => COMMENT,
        (RECORD_START | FIELD_START, Quote) => QUOTED,
        (RECORD_START | FIELD_START | UNQUOTED, Delimiter) => FIELD_START,
        (RECORD_START | FIELD_START | UNQUOTED | COMMENT, Newline) => RECORD_START,
        (RECORD_START | FIELD_START | UNQUOTED, _) => UNQUOTED,
        (COMMENT, _) => COMMENT,
        (QUOTED, Quote) => QUOTE_SEEN,
        (QUOTED, Escape) => ESCAPED,
        (QUOTED | ESCAPED, _) => QUOTED,
        // A doubled quote; else the field closed, and what follows up to a delimiter is kept.
        (QUOTE_SEEN, Quote) => QUOTED,
        (QUOTE_SEEN, Delimiter) => FIELD_START,
        (QUOTE_SEEN, Newline) => RECORD_START,
        (QUOTE_SEEN, _) => UNQUOTED,
        _ => unreachable!("one state at a time"),
    }
}

/// Finds the first true record start after a cut, fed the bytes after it in order.
pub struct CutSearch {
    /// Byte classes.
    classes: [u8; 256],
    /// `table[class][set]`: the set of states after a byte of `class`.
    table: [[u8; 1 << STATES]; CLASSES],
    states: u8,
    /// Bytes fed so far.
    fed: u64,
}

impl CutSearch {
    pub fn new(options: &CsvReadOptions) -> CutSearch {
        let dialect = Dialect::from_options(options);
        let mut classes = [Class::Other as u8; 256];
        if let Some(comment) = dialect.comment {
            classes[comment as usize] = Class::Comment as u8;
        }
        if let Some(escape) = dialect.escape {
            classes[escape as usize] = Class::Escape as u8;
        }
        classes[dialect.delimiter as usize] = Class::Delimiter as u8;
        classes[dialect.quote as usize] = Class::Quote as u8;
        classes[b'\n' as usize] = Class::Newline as u8;
        let all = [
            Class::Quote,
            Class::Delimiter,
            Class::Newline,
            Class::Escape,
            Class::Comment,
            Class::Other,
        ];
        let mut table = [[0u8; 1 << STATES]; CLASSES];
        for class in all {
            for (set, to) in table[class as usize].iter_mut().enumerate() {
                *to = (0..STATES)
                    .map(|s| 1u8 << s)
                    .filter(|bit| set as u8 & bit != 0)
                    .fold(0, |to, bit| to | next(bit, class));
            }
        }
        CutSearch {
            classes,
            table,
            states: ALL,
            fed: 0,
        }
    }

    /// Feeds the next bytes after the cut; returns the boundary's offset from the cut once
    /// found (the bytes after it need not be fed).
    pub fn feed(&mut self, bytes: &[u8]) -> Option<u64> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.fed + i as u64 == LOOKAHEAD && self.states & !INSIDE_QUOTES != 0 {
                self.states &= !INSIDE_QUOTES;
            }
            let class = self.classes[b as usize] as usize;
            self.states = self.table[class][self.states as usize];
            if self.states == RECORD_START {
                return Some(self.fed + i as u64 + 1);
            }
        }
        self.fed += bytes.len() as u64;
        None
    }
}

/// The first true record start after `cut` in `data` (an object in memory), or its end: what
/// the search finds however the bytes after the cut are fed to it.
pub fn boundary_in(data: &[u8], cut: usize, options: &CsvReadOptions) -> usize {
    if cut == 0 || cut >= data.len() {
        return cut.min(data.len());
    }
    let found = CutSearch::new(options).feed(&data[cut..]);
    found.map_or(data.len(), |offset| cut + offset as usize)
}

/// The length of the header of a CSV object, given its first bytes (`eof` when they are all
/// of it): the byte order mark, empty and comment lines, and the first record with its line
/// terminator. `None` when more bytes are needed.
pub fn header_len(data: &[u8], eof: bool, options: &CsvReadOptions) -> Option<usize> {
    let dialect = Dialect::from_options(options);
    let mut pos = if data.starts_with(BOM) {
        BOM.len()
    } else if !eof && BOM.starts_with(data) {
        return None;
    } else {
        0
    };
    loop {
        match step(data, pos, eof, &dialect, &mut NoFields::new()) {
            Step::Record { next, .. } => return Some(next),
            Step::Skip { next, .. } => pos = next,
            Step::Incomplete => return None,
            Step::End => return Some(data.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(after: &str) -> Option<u64> {
        CutSearch::new(&CsvReadOptions::default()).feed(after.as_bytes())
    }

    #[test]
    fn a_cut_inside_a_quoted_newline_finds_the_record_after_it() {
        // Cut inside "x\ny": as plain text the cut would end at the quoted newline.
        let data = "a,\"x\ny\",b\nc,d\n";
        let cut = 4;
        let found = search(&data[cut..]).unwrap() as usize;
        assert_eq!(&data[cut + found..], "c,d\n");
    }

    #[test]
    fn doubled_quotes_and_crlf_resolve_the_quote_state() {
        let data = "1,\"he said \"\"hi\r\nthere\"\"\",2\r\n3,\"q\",4\r\n";
        for cut in 1..data.len() {
            let found = search(&data[cut..]).map(|f| cut + f as usize);
            // Every cut lands on a true record start, or finds none (the end).
            let starts = [data.find("3,").unwrap(), data.len()];
            assert!(
                found.is_none_or(|f| starts.contains(&f)),
                "cut {cut} gave {found:?}"
            );
        }
    }

    #[test]
    fn without_quotes_the_inside_state_lasts_until_the_lookahead() {
        let line = "1,abc,2\n".repeat((LOOKAHEAD as usize / 8) + 2);
        let mut search = CutSearch::new(&CsvReadOptions::default());
        let found = search.feed(&line.as_bytes()[3..]).unwrap();
        assert_eq!((3 + found) % 8, 0);
        assert!(found >= LOOKAHEAD);
    }

    #[test]
    fn a_comment_line_hides_its_quotes() {
        let options = CsvReadOptions {
            comment: Some(b'#'),
            ..CsvReadOptions::default()
        };
        // The quote in the comment opens no field: every boundary found is a record start.
        let data = "a,b\n#\"x\n\"c\",d\ne,f\ng,h\n";
        let starts = [4, 8, 14, 18, data.len()];
        for cut in 1..data.len() {
            let found = boundary_in(data.as_bytes(), cut, &options);
            assert!(starts.contains(&found) && found > cut, "cut {cut}: {found}");
        }
    }

    #[test]
    fn header_lengths() {
        let options = CsvReadOptions::default();
        assert_eq!(header_len(b"a,b\n1,2\n", false, &options), Some(4));
        assert_eq!(
            header_len(b"\xEF\xBB\xBF\n\"a\nb\",c\r\n1", false, &options),
            Some(13)
        );
        assert_eq!(header_len(b"\"a\nb", false, &options), None);
        assert_eq!(header_len(b"a,b", true, &options), Some(3));
    }
}
