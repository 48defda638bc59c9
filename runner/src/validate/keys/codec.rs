//! The binary form of key entries: spill objects, local sorted runs, and reading them back.
//!
//! A spill object (one source object's keys, sorted by hash then row):
//!
//! ```text
//! "SLKEYS"            6 bytes, magic
//! version             u16 little-endian, 1
//! source key          varint length, UTF-8 bytes
//! entries             u64 little-endian, how many follow
//! entry*              hash (16 bytes, big-endian), row (varint), key text (varint length, UTF-8)
//! ```
//!
//! A local run has no header; with `sourced` entries it carries the source index (varint)
//! between hash and row. Varints are unsigned LEB128.

use std::io::{self, BufRead, Read, Write};

/// The magic bytes that start a spill object.
pub const MAGIC: &[u8; 6] = b"SLKEYS";
/// The spill format this code writes and reads.
pub const VERSION: u16 = 1;

/// One key occurrence as it travels through the merge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub hash: u128,
    /// Which source object it came from (the spill's position in the merge's input).
    pub source: u32,
    /// The record's position in its object's output.
    pub row: u64,
    pub text: Vec<u8>,
}

impl Entry {
    /// The merge order: hash, then source, then row.
    pub fn order(&self) -> (u128, u32, u64) {
        (self.hash, self.source, self.row)
    }
}

pub fn write_varint(out: &mut impl Write, mut value: u64) -> io::Result<()> {
    let mut buffer = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            buffer[n] = byte;
            n += 1;
            break;
        }
        buffer[n] = byte | 0x80;
        n += 1;
    }
    out.write_all(&buffer[..n])
}

/// Reads a varint; `Ok(None)` at a clean end of input (before its first byte).
pub fn read_varint(input: &mut impl BufRead) -> io::Result<Option<u64>> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let mut byte = [0u8];
        if input.read(&mut byte)? == 0 {
            if shift == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "input ends inside a number",
            ));
        }
        if shift >= 64 || (shift == 63 && byte[0] > 1) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a number is longer than 64 bits",
            ));
        }
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
        shift += 7;
    }
}

fn need_varint(input: &mut impl BufRead, what: &str) -> io::Result<u64> {
    read_varint(input)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("input ends before the {what}"),
        )
    })
}

/// The header of a spill object.
pub fn write_header(out: &mut impl Write, source_key: &str, entries: u64) -> io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    write_varint(out, source_key.len() as u64)?;
    out.write_all(source_key.as_bytes())?;
    out.write_all(&entries.to_le_bytes())
}

/// Reads a spill header: `(source key, entries)`. Errors are `InvalidData` with a reason.
pub fn read_header(input: &mut impl BufRead) -> io::Result<(String, u64)> {
    let mut magic = Vec::with_capacity(MAGIC.len());
    input.take(MAGIC.len() as u64).read_to_end(&mut magic)?;
    if magic != MAGIC {
        return Err(invalid(
            "it does not start with SLKEYS; not a key spill".into(),
        ));
    }
    let mut version = [0u8; 2];
    read_exact_or(input, &mut version, "the header")?;
    let version = u16::from_le_bytes(version);
    if version != VERSION {
        return Err(invalid(format!(
            "format version {version}, this sluice reads version {VERSION}"
        )));
    }
    let length = need_varint(input, "source key")?;
    if length > 64 << 10 {
        return Err(invalid(format!("source key of {length} bytes")));
    }
    let mut key = vec![0u8; length as usize];
    read_exact_or(input, &mut key, "the header")?;
    let key = String::from_utf8(key).map_err(|_| invalid("source key is not UTF-8".into()))?;
    let mut entries = [0u8; 8];
    read_exact_or(input, &mut entries, "the header")?;
    Ok((key, u64::from_le_bytes(entries)))
}

/// Writes one entry; `sourced` entries carry their source index.
pub fn write_entry(out: &mut impl Write, entry: &Entry, sourced: bool) -> io::Result<()> {
    write_parts(
        out,
        entry.hash,
        sourced.then_some(entry.source),
        entry.row,
        &entry.text,
    )
}

pub fn write_parts(
    out: &mut impl Write,
    hash: u128,
    source: Option<u32>,
    row: u64,
    text: &[u8],
) -> io::Result<()> {
    out.write_all(&hash.to_be_bytes())?;
    if let Some(source) = source {
        write_varint(out, u64::from(source))?;
    }
    write_varint(out, row)?;
    write_varint(out, text.len() as u64)?;
    out.write_all(text)
}

/// Reads one entry into `entry` (reusing its text buffer); `Ok(false)` at a clean end.
/// Entries without a source index get `source`.
pub fn read_entry(
    input: &mut impl BufRead,
    entry: &mut Entry,
    sourced: bool,
    source: u32,
) -> io::Result<bool> {
    let mut hash = [0u8; 16];
    let first = input.read(&mut hash)?;
    if first == 0 {
        return Ok(false);
    }
    read_exact_or(input, &mut hash[first..], "an entry's hash")?;
    entry.hash = u128::from_be_bytes(hash);
    entry.source = if sourced {
        let value = need_varint(input, "an entry's source")?;
        u32::try_from(value).map_err(|_| invalid(format!("source index {value}")))?
    } else {
        source
    };
    entry.row = need_varint(input, "an entry's row")?;
    let length = need_varint(input, "an entry's key text")?;
    if length > 64 << 10 {
        return Err(invalid(format!("key text of {length} bytes")));
    }
    entry.text.resize(length as usize, 0);
    read_exact_or(input, &mut entry.text, "an entry's key text")?;
    Ok(true)
}

fn read_exact_or(input: &mut impl Read, buffer: &mut [u8], what: &str) -> io::Result<()> {
    input.read_exact(buffer).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("input ends inside {what}"),
            )
        } else {
            e
        }
    })
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_their_edges() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut bytes = Vec::new();
            write_varint(&mut bytes, value).unwrap();
            let mut input = bytes.as_slice();
            assert_eq!(read_varint(&mut input).unwrap(), Some(value), "{value}");
            assert!(input.is_empty());
        }
        let mut bytes = Vec::new();
        write_varint(&mut bytes, 300).unwrap();
        assert_eq!(bytes, [0xac, 0x02]);
        let mut empty: &[u8] = &[];
        assert_eq!(read_varint(&mut empty).unwrap(), None);
        let mut cut: &[u8] = &[0x80];
        assert_eq!(
            read_varint(&mut cut).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut long: &[u8] = &[0xff; 11];
        assert_eq!(
            read_varint(&mut long).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn spill_bytes_are_the_documented_layout() {
        let mut bytes = Vec::new();
        write_header(&mut bytes, "in/a.csv", 1).unwrap();
        let entry = Entry {
            hash: 0x0102,
            source: 9,
            row: 300,
            text: b"[1]".to_vec(),
        };
        write_entry(&mut bytes, &entry, false).unwrap();
        let mut expected = b"SLKEYS\x01\x00\x08in/a.csv\x01\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0; 14]);
        expected.extend_from_slice(&[0x01, 0x02, 0xac, 0x02, 0x03]);
        expected.extend_from_slice(b"[1]");
        assert_eq!(bytes, expected);

        let mut input = bytes.as_slice();
        assert_eq!(read_header(&mut input).unwrap(), ("in/a.csv".into(), 1));
        let mut read = Entry::default();
        assert!(read_entry(&mut input, &mut read, false, 9).unwrap());
        assert_eq!(read, entry);
        assert!(!read_entry(&mut input, &mut read, false, 9).unwrap());
    }

    #[test]
    fn sourced_entries_round_trip() {
        let entry = Entry {
            hash: u128::MAX - 5,
            source: 70_000,
            row: 0,
            text: "[\"é\"]".as_bytes().to_vec(),
        };
        let mut bytes = Vec::new();
        write_entry(&mut bytes, &entry, true).unwrap();
        let mut read = Entry::default();
        assert!(read_entry(&mut bytes.as_slice(), &mut read, true, 0).unwrap());
        assert_eq!(read, entry);
    }

    #[test]
    fn damaged_headers_and_entries_are_refused() {
        let mut other: &[u8] = b"PAR1\0\0\0\0\0\0\0\0";
        let error = read_header(&mut other).unwrap_err();
        assert!(error.to_string().contains("not a key spill"), "{error}");

        let mut newer = b"SLKEYS\x02\x00".to_vec();
        newer.extend_from_slice(&[0; 9]);
        let error = read_header(&mut newer.as_slice()).unwrap_err();
        assert!(error.to_string().contains("format version 2"), "{error}");

        let mut bytes = Vec::new();
        write_entry(
            &mut bytes,
            &Entry {
                hash: 7,
                source: 0,
                row: 1,
                text: b"[7]".to_vec(),
            },
            false,
        )
        .unwrap();
        bytes.truncate(bytes.len() - 1);
        let error = read_entry(&mut bytes.as_slice(), &mut Entry::default(), false, 0).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("key text"), "{error}");
    }
}
