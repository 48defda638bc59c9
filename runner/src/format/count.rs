//! Read-back counts of stored outputs, to check them against what was written.

use std::io::BufRead;

use memchr::memchr_iter;
use parquet::file::metadata::ParquetMetaData;

use super::csv_records::{CsvRecords, Dialect, MAX_RECORD_BYTES};
use super::decode::DecodeError;

const ORIGIN: &str = "the stored output";

fn read_error(source: std::io::Error) -> DecodeError {
    DecodeError::Read {
        origin: ORIGIN.to_string(),
        source,
    }
}

/// The rows a Parquet footer declares.
pub fn parquet_rows(metadata: &ParquetMetaData) -> u64 {
    metadata.file_metadata().num_rows().max(0) as u64
}

/// CSV records (not lines: a quoted field may hold newlines), without the header.
pub fn count_csv_records(
    reader: Box<dyn BufRead + Send>,
    header: bool,
    delimiter: u8,
) -> Result<u64, DecodeError> {
    let dialect = Dialect {
        delimiter,
        quote: b'"',
        escape: None,
        comment: None,
        ends_at_cut: false,
        max_record: MAX_RECORD_BYTES,
    };
    let mut records = CsvRecords::new(reader, dialect);
    let mut count = 0u64;
    while records
        .next_record()
        .map_err(|e| e.into_decode_error(ORIGIN))?
    {
        count += 1;
    }
    Ok(if header {
        count.saturating_sub(1)
    } else {
        count
    })
}

/// Lines holding anything but whitespace (JSONL records).
pub fn count_lines(mut reader: Box<dyn BufRead + Send>) -> Result<u64, DecodeError> {
    let mut count = 0u64;
    // Whether the line in progress has a non-whitespace byte.
    let mut content = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        if chunk.is_empty() {
            break;
        }
        let mut start = 0;
        for newline in memchr_iter(b'\n', chunk) {
            if content || !chunk[start..newline].trim_ascii().is_empty() {
                count += 1;
            }
            content = false;
            start = newline + 1;
        }
        content |= !chunk[start..].trim_ascii().is_empty();
        let len = chunk.len();
        reader.consume(len);
    }
    Ok(count + u64::from(content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    fn reader(text: &'static str, capacity: usize) -> Box<dyn BufRead + Send> {
        Box::new(BufReader::with_capacity(
            capacity,
            Cursor::new(text.as_bytes()),
        ))
    }

    #[test]
    fn lines_skip_blank_ones_across_buffer_boundaries() {
        let text = "{\"a\":1}\n\n  \r\n{\"a\":2}\r\n{\"a\":3}";
        for capacity in [1, 2, 3, 7, 1024] {
            assert_eq!(
                count_lines(reader(text, capacity)).unwrap(),
                3,
                "capacity {capacity}"
            );
        }
        assert_eq!(count_lines(reader("", 8)).unwrap(), 0);
    }

    #[test]
    fn csv_records_are_not_lines() {
        let text = "a,b\n\"x\ny\",1\n\"2\",\"3\"\n\n4,5";
        assert_eq!(count_csv_records(reader(text, 3), true, b',').unwrap(), 3);
        assert_eq!(count_csv_records(reader(text, 64), false, b',').unwrap(), 4);
        assert_eq!(
            count_csv_records(reader("a;b\n", 64), true, b';').unwrap(),
            0
        );
    }
}
