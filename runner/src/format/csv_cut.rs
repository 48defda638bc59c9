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
//! A region without any quote byte keeps "inside a quoted field" alive as long as it lasts, so
//! each state also carries the length of the record it is in (from the latest record start on
//! any path to it). A record is at most `max_record_size` bytes (`source.csv.max_record_size`),
//! the decoder's own limit: a state whose record grew longer is dropped, because the reader
//! would fail there whether the object is split or not. What is left is every reading that
//! does not fail, so a boundary they all agree on is the true one; in a file without quotes it
//! comes at the first line end past `max_record_size` bytes. When no state is left, every
//! reading has a record that long: the object is bad data, split or not.

use super::csv_records::{BOM, Dialect, NoFields, Step, step};
use super::options::CsvReadOptions;

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
    /// `moves[class][state]`: the state (an index) after a byte of `class`.
    moves: [[u8; STATES]; CLASSES],
    /// The states the reader may be in (bits).
    states: u8,
    /// For each state in `states`: the offset from the cut where its record started (the
    /// latest of the paths that met there; the cut itself at first).
    starts: [u64; STATES],
    max_record: u64,
    /// Bytes fed so far.
    fed: u64,
}

/// No reading of the bytes after a cut keeps its records within `max_record_size`: a record
/// longer than that crosses `offset` (from the cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoBoundary {
    pub offset: u64,
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
        let mut moves = [[0u8; STATES]; CLASSES];
        for class in all {
            for (state, to) in moves[class as usize].iter_mut().enumerate() {
                *to = next(1 << state, class).trailing_zeros() as u8;
            }
        }
        CutSearch {
            classes,
            moves,
            states: ALL,
            starts: [0; STATES],
            max_record: options.max_record_size,
            fed: 0,
        }
    }

    /// Feeds the next bytes after the cut; returns the boundary's offset from the cut once
    /// found (the bytes after it need not be fed), `None` while more bytes are needed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<u64>, NoBoundary> {
        let mut i = 0;
        while i < bytes.len() {
            let class = self.classes[bytes[i] as usize];
            let at = self.fed + i as u64;
            self.drop_too_long(at)?;
            self.step(class, at);
            if self.states == RECORD_START {
                return Ok(Some(at + 1));
            }
            i += 1;
            // After one byte of no meaning more such bytes change no state, only lengths.
            if class == Class::Other as u8 {
                while i < bytes.len() && self.classes[bytes[i] as usize] == Class::Other as u8 {
                    i += 1;
                }
            }
        }
        self.fed += bytes.len() as u64;
        Ok(None)
    }

    /// Drops every state whose record is longer than allowed at offset `at`.
    fn drop_too_long(&mut self, at: u64) -> Result<(), NoBoundary> {
        for state in 0..STATES {
            if self.states & (1 << state) != 0 && at - self.starts[state] > self.max_record {
                self.states &= !(1 << state);
            }
        }
        if self.states == 0 {
            return Err(NoBoundary { offset: at });
        }
        Ok(())
    }

    /// Moves every state over the byte at offset `at`.
    fn step(&mut self, class: u8, at: u64) {
        let (mut states, mut starts) = (0u8, [0u64; STATES]);
        for state in 0..STATES {
            if self.states & (1 << state) == 0 {
                continue;
            }
            let to = self.moves[class as usize][state] as usize;
            let start = if 1 << to == RECORD_START {
                at + 1
            } else {
                self.starts[state]
            };
            if states & (1 << to) == 0 || starts[to] < start {
                starts[to] = start;
            }
            states |= 1 << to;
        }
        self.states = states;
        self.starts = starts;
    }
}

/// The first true record start after `cut` in `data` (an object in memory), or its end: what
/// the search finds however the bytes after the cut are fed to it.
pub fn boundary_in(data: &[u8], cut: usize, options: &CsvReadOptions) -> Result<usize, NoBoundary> {
    if cut == 0 || cut >= data.len() {
        return Ok(cut.min(data.len()));
    }
    let found = CutSearch::new(options).feed(&data[cut..])?;
    Ok(found.map_or(data.len(), |offset| cut + offset as usize))
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
        CutSearch::new(&CsvReadOptions::default())
            .feed(after.as_bytes())
            .unwrap()
    }

    fn limited(max_record_size: u64) -> CsvReadOptions {
        CsvReadOptions {
            max_record_size,
            ..CsvReadOptions::default()
        }
    }

    /// The start of every record of `data`, as the decoder reads them from the start.
    fn record_starts(data: &[u8]) -> Vec<usize> {
        let dialect = Dialect::from_options(&CsvReadOptions::default());
        let mut starts = vec![0];
        loop {
            let pos = *starts.last().unwrap();
            match step(data, pos, true, &dialect, &mut NoFields::new()) {
                Step::Record { next, .. } | Step::Skip { next, .. } => starts.push(next),
                Step::Incomplete | Step::End => return starts,
            }
        }
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
    fn without_quotes_the_inside_state_lasts_until_a_record_would_be_too_long() {
        let options = limited(4096);
        let line = "1,abc,2\n".repeat(4096 / 8 + 10);
        let found = CutSearch::new(&options)
            .feed(&line.as_bytes()[3..])
            .unwrap()
            .unwrap();
        assert_eq!((3 + found) % 8, 0);
        assert!(found > 4096 && found <= 4096 + 8, "{found}");
        // However the bytes come.
        let mut search = CutSearch::new(&options);
        let fed = line.as_bytes()[3..]
            .chunks(5)
            .find_map(|chunk| search.feed(chunk).unwrap());
        assert_eq!(fed, Some(found));
    }

    #[test]
    fn a_long_quoted_field_without_quotes_across_a_cut_is_found_whole() {
        // Up to the limit a quoted field without any quote byte is a record like another:
        // a cut inside it finds the record after it, also past plain lines, and a quoted
        // field straddling the point where the plain reading alone is left.
        let options = limited(4096);
        let plain = "7,x,y\n".repeat(600);
        let field = "text, and more text\n".repeat(150);
        let data = format!("{plain}1,\"{field}\",2\n3,\"{field}\",4\n5,z,6\n");
        let data = data.as_bytes();
        let starts = record_starts(data);
        for cut in (1..data.len()).step_by(7) {
            let found = boundary_in(data, cut, &options).unwrap();
            assert!(
                found >= cut && (starts.contains(&found) || found == data.len()),
                "cut {cut}: {found}"
            );
        }
    }

    #[test]
    fn a_record_longer_than_the_limit_leaves_no_boundary() {
        // Every reading of the bytes after the cut has a line of 3,000 bytes.
        let data = format!("1,\"{}\",2\n3,4,5\n", "no quote, no line end ".repeat(140));
        let error = boundary_in(data.as_bytes(), 500, &limited(1024)).unwrap_err();
        assert!(error.offset > 1024, "{error:?}");
        // With room for it, the record after it is found.
        let found = boundary_in(data.as_bytes(), 500, &limited(8192)).unwrap();
        assert_eq!(&data[found..], "3,4,5\n");
        // Lines inside the long field are short records to the reading outside quotes: it
        // is left alone, and agrees on a boundary inside the field. The range before the
        // cut, reading the true way, then has a record over the limit and fails there.
        let data = format!("1,\"{}\",2\n3,4,5\n", "no quote here\n".repeat(200));
        let found = boundary_in(data.as_bytes(), 500, &limited(1024)).unwrap();
        assert!(found < data.len() - 10 && found > 1024, "{found}");
    }

    #[test]
    fn every_cut_of_random_quoted_csv_is_a_record_start() {
        // Small limits force the length rule to decide; records stay under them.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..40 {
            let mut data = String::new();
            for i in 0..60 {
                let field = match next() % 6 {
                    0 => format!("\"a\nb \"\"{i}\"\"\r\nc\""),
                    1 => format!("\"{i},{i}\n{i}\""),
                    2 => "\"\"".to_string(),
                    3 => "plain text".repeat((next() % 8) as usize),
                    4 => format!("\"{}\"", "long, quoted\n".repeat((next() % 12) as usize)),
                    _ => String::new(),
                };
                let end = if next() % 2 == 0 { "\r\n" } else { "\n" };
                data.push_str(&format!("{i},{field},x{end}"));
            }
            let data = data.as_bytes();
            let starts = record_starts(data);
            for limit in [256, 1024, 1 << 20] {
                for cut in 1..data.len() {
                    let found = boundary_in(data, cut, &limited(limit)).unwrap();
                    assert!(
                        starts.contains(&found) || found == data.len(),
                        "round {round}, limit {limit}, cut {cut}: {found}"
                    );
                }
            }
        }
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
            let found = boundary_in(data.as_bytes(), cut, &options).unwrap();
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
