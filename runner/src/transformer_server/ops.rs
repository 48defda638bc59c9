//! The built-in transformer operations, each a streaming function from object chunks to
//! output chunks that never holds a whole object.

use std::fmt;
use std::io::Write;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::{GzEncoder, MultiGzDecoder};
use md5::Md5;
use sha2::Sha256;

/// What `sluice transformer serve --op` applies to every object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// The MD5 digest of the object: lowercase hex and a newline.
    Md5,
    /// The SHA-256 digest of the object: lowercase hex and a newline.
    Sha256,
    /// The object gzip-compressed (default level).
    Gzip,
    /// The object gzip-decompressed (every member of a multi-member file).
    Gunzip,
    /// The object unchanged.
    Identity,
    /// Every ASCII letter of the object in upper case; other bytes unchanged.
    Upper,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Md5,
        Op::Sha256,
        Op::Gzip,
        Op::Gunzip,
        Op::Identity,
        Op::Upper,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Op::Md5 => "md5",
            Op::Sha256 => "sha256",
            Op::Gzip => "gzip",
            Op::Gunzip => "gunzip",
            Op::Identity => "identity",
            Op::Upper => "upper",
        }
    }

    /// A fresh transform for one object.
    pub fn start(self) -> Transform {
        match self {
            Op::Md5 => Transform::Md5(Md5::default()),
            Op::Sha256 => Transform::Sha256(Sha256::default()),
            Op::Gzip => Transform::Gzip(GzEncoder::new(Vec::new(), Compression::default())),
            Op::Gunzip => Transform::Gunzip(MultiGzDecoder::new(Vec::new())),
            Op::Identity => Transform::Identity,
            Op::Upper => Transform::Upper,
        }
    }

    /// The most input worth giving [`Transform::update`] at once: decompressing can
    /// multiply its input a thousandfold, and each update's output is held whole.
    pub fn input_slice(self) -> usize {
        match self {
            Op::Gunzip => 16 << 10,
            _ => usize::MAX,
        }
    }

    /// Whether a chunk costs so little that it need not leave the async I/O threads.
    pub fn is_cheap(self) -> bool {
        matches!(self, Op::Identity | Op::Upper)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An operation that cannot be applied to an object: the object is at fault, so a retry
/// fails again.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("gunzip: the object is not a valid gzip stream")]
    Gunzip(#[source] std::io::Error),
    #[error("gzip: compressing the object")]
    Gzip(#[source] std::io::Error),
}

/// One object going through an operation: `update` with every chunk in order, then
/// `finish`. Each returns the output that is ready (possibly empty).
#[derive(Debug)]
pub enum Transform {
    Md5(Md5),
    Sha256(Sha256),
    // Compressed output collects in the Vec and is taken out after every chunk.
    Gzip(GzEncoder<Vec<u8>>),
    Gunzip(MultiGzDecoder<Vec<u8>>),
    Identity,
    Upper,
}

impl Transform {
    pub fn update(&mut self, chunk: Bytes) -> Result<Bytes, OpError> {
        match self {
            Transform::Md5(digest) => {
                md5::Digest::update(digest, &chunk);
                Ok(Bytes::new())
            }
            Transform::Sha256(digest) => {
                sha2::Digest::update(digest, &chunk);
                Ok(Bytes::new())
            }
            // No flush here: a sync flush per chunk would cost compression ratio.
            Transform::Gzip(encoder) => {
                encoder.write_all(&chunk).map_err(OpError::Gzip)?;
                Ok(Bytes::from(std::mem::take(encoder.get_mut())))
            }
            // The decoder keeps decompressed bytes in its own buffer until flushed.
            Transform::Gunzip(decoder) => {
                decoder
                    .write_all(&chunk)
                    .and_then(|()| decoder.flush())
                    .map_err(OpError::Gunzip)?;
                Ok(Bytes::from(std::mem::take(decoder.get_mut())))
            }
            Transform::Identity => Ok(chunk),
            Transform::Upper => {
                let mut bytes = Vec::from(chunk);
                bytes.make_ascii_uppercase();
                Ok(Bytes::from(bytes))
            }
        }
    }

    pub fn finish(self) -> Result<Bytes, OpError> {
        match self {
            Transform::Md5(digest) => Ok(hex_line(&md5::Digest::finalize(digest))),
            Transform::Sha256(digest) => Ok(hex_line(&sha2::Digest::finalize(digest))),
            Transform::Gzip(encoder) => encoder.finish().map(Bytes::from).map_err(OpError::Gzip),
            // Checks the trailer: a truncated or corrupt object fails here.
            Transform::Gunzip(decoder) => {
                decoder.finish().map(Bytes::from).map_err(OpError::Gunzip)
            }
            Transform::Identity | Transform::Upper => Ok(Bytes::new()),
        }
    }
}

fn hex_line(digest: &[u8]) -> Bytes {
    let mut line = hex::encode(digest);
    line.push('\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Runs `op` over `input` cut into pieces of `piece` bytes.
    fn run(op: Op, input: &[u8], piece: usize) -> Result<Vec<u8>, OpError> {
        let mut transform = op.start();
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            out.extend_from_slice(&transform.update(Bytes::copy_from_slice(chunk))?);
        }
        out.extend_from_slice(&transform.finish()?);
        Ok(out)
    }

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivially: a line counter with some noise.
        let mut out = Vec::with_capacity(len);
        let mut state: u32 = 7;
        let mut line = 0;
        while out.len() < len {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            out.extend_from_slice(
                format!("{line},row-{},{}\n", state % 997, state >> 7).as_bytes(),
            );
            line += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn md5_is_the_hex_digest_and_a_newline() {
        assert_eq!(
            run(Op::Md5, b"hello", 2).unwrap(),
            b"5d41402abc4b2a76b9719d911017c592\n"
        );
        assert_eq!(
            run(Op::Md5, b"", 1).unwrap(),
            b"d41d8cd98f00b204e9800998ecf8427e\n"
        );
    }

    #[test]
    fn sha256_is_the_hex_digest_and_a_newline() {
        assert_eq!(
            run(Op::Sha256, b"hello", 1).unwrap(),
            b"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\n"
        );
    }

    #[test]
    fn digests_do_not_depend_on_chunking() {
        let input = sample(300_000);
        for op in [Op::Md5, Op::Sha256] {
            let whole = run(op, &input, input.len()).unwrap();
            for piece in [1, 7, 4096, 65_537] {
                assert_eq!(
                    run(op, &input, piece).unwrap(),
                    whole,
                    "{op} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn gzip_then_gunzip_round_trips_over_many_chunks() {
        let input = sample(1_000_000);
        for piece in [1_000, 8_192, 65_536, 333_333] {
            let compressed = run(Op::Gzip, &input, piece).unwrap();
            assert!(compressed.len() < input.len() / 2, "{}", compressed.len());
            for back_piece in [1, 13, 8_192, 100_000] {
                if back_piece == 1 && piece != 65_536 {
                    continue; // byte by byte once is enough
                }
                let back = run(Op::Gunzip, &compressed, back_piece).unwrap();
                assert!(back == input, "pieces {piece}/{back_piece}");
            }
        }
    }

    #[test]
    fn gzip_output_is_standard_gzip() {
        let input = sample(50_000);
        let compressed = run(Op::Gzip, &input, 4_000).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == input);
        assert_eq!(
            run(Op::Gunzip, &run(Op::Gzip, b"", 1).unwrap(), 1).unwrap(),
            b""
        );
    }

    #[test]
    fn gunzip_decodes_every_member() {
        let mut both = run(Op::Gzip, b"first\n", 10).unwrap();
        both.extend(run(Op::Gzip, b"second\n", 10).unwrap());
        assert_eq!(run(Op::Gunzip, &both, 5).unwrap(), b"first\nsecond\n");
    }

    #[test]
    fn gunzip_refuses_what_is_not_gzip() {
        let compressed = run(Op::Gzip, &sample(100_000), 10_000).unwrap();
        let truncated = &compressed[..compressed.len() - 5];
        let mut corrupt = compressed.clone();
        let last = corrupt.len() - 6;
        corrupt[last] ^= 0xff; // inside the CRC
        let mut trailing = compressed.clone();
        trailing.extend_from_slice(b"garbage");
        for (what, input) in [
            ("empty", &b""[..]),
            ("plain text", &b"this is not gzip at all\n"[..]),
            ("truncated", truncated),
            ("corrupt CRC", &corrupt[..]),
            ("trailing garbage", &trailing[..]),
        ] {
            let error = run(Op::Gunzip, input, 4096).expect_err(what);
            assert!(matches!(error, OpError::Gunzip(_)), "{what}: {error:?}");
        }
    }

    #[test]
    fn upper_changes_ascii_letters_only() {
        assert_eq!(
            run(Op::Upper, "Hello, wörld 42!\n".as_bytes(), 3).unwrap(),
            "HELLO, WöRLD 42!\n".as_bytes()
        );
    }

    #[test]
    fn identity_passes_chunks_through() {
        let input = sample(10_000);
        assert!(run(Op::Identity, &input, 333).unwrap() == input);
        let chunk = Bytes::from_static(b"same bytes");
        let out = Op::Identity.start().update(chunk.clone()).unwrap();
        assert_eq!(out.as_ptr(), chunk.as_ptr(), "no copy");
    }

    #[test]
    fn names_parse_back() {
        use clap::ValueEnum;
        for op in Op::ALL {
            assert_eq!(Op::from_str(op.name(), false), Ok(op));
            assert_eq!(op.to_string(), op.name());
        }
    }
}
