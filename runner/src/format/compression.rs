//! Stream compression: decompressing source objects and compressing text outputs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::pin::Pin;

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use tokio::io::{AsyncBufRead, AsyncRead};

use super::options::Compression;

/// Buffer size on each side of a decompressor: large reads keep per-call overhead low.
const BUFFER_BYTES: usize = 256 * 1024;

/// Gzip level for text outputs: level 6 is gzip's own default, the size users expect.
const GZIP_LEVEL: u32 = 6;
/// Zstd level for text outputs: zstd's default, fast with a good ratio.
const ZSTD_LEVEL: i32 = 3;

/// Wraps `reader` in a streaming decompressor. Concatenated gzip members and zstd frames are
/// read through. A decompressor that cannot start reports its error on the first read.
pub fn decompress(
    reader: Box<dyn Read + Send>,
    compression: Compression,
) -> Box<dyn BufRead + Send> {
    let input = BufReader::with_capacity(BUFFER_BYTES, reader);
    match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUFFER_BYTES,
            flate2::bufread::MultiGzDecoder::new(input),
        )),
        Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(input) {
            Ok(decoder) => Box::new(BufReader::with_capacity(BUFFER_BYTES, decoder)),
            Err(error) => Box::new(BufReader::new(FailedReader(Some(error)))),
        },
    }
}

/// The same decompression for an async reader (raw objects streamed to a transformer): the
/// same formats, concatenated gzip members and zstd frames read through as in `decompress`.
pub fn decompress_async(
    reader: impl AsyncBufRead + Send + 'static,
    compression: Compression,
) -> Pin<Box<dyn AsyncRead + Send>> {
    match compression {
        Compression::None => Box::pin(reader),
        Compression::Gzip => {
            let mut decoder = GzipDecoder::new(reader);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        Compression::Zstd => {
            let mut decoder = ZstdDecoder::new(reader);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
    }
}

struct FailedReader(Option<io::Error>);

impl Read for FailedReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        match self.0.take() {
            Some(error) => Err(error),
            None => Err(io::Error::other("the decompressor could not start")),
        }
    }
}

/// A writer that compresses into `W`; [`CompressWriter::finish`] writes the trailer.
pub(crate) enum CompressWriter<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> CompressWriter<W> {
    pub(crate) fn new(writer: W, compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => CompressWriter::None(writer),
            Compression::Gzip => CompressWriter::Gzip(flate2::write::GzEncoder::new(
                writer,
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Compression::Zstd => {
                CompressWriter::Zstd(zstd::stream::write::Encoder::new(writer, ZSTD_LEVEL)?)
            }
        })
    }

    /// Ends the compressed stream and flushes; returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        let mut inner = match self {
            CompressWriter::None(w) => w,
            CompressWriter::Gzip(w) => w.finish()?,
            CompressWriter::Zstd(w) => w.finish()?,
        };
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressWriter::None(w) => w.write(buf),
            CompressWriter::Gzip(w) => w.write(buf),
            CompressWriter::Zstd(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            CompressWriter::None(w) => w.write_all(buf),
            CompressWriter::Gzip(w) => w.write_all(buf),
            CompressWriter::Zstd(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressWriter::None(w) => w.flush(),
            CompressWriter::Gzip(w) => w.flush(),
            CompressWriter::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(compression: Compression) {
        let mut writer = CompressWriter::new(Vec::new(), compression).unwrap();
        writer.write_all(b"a,b\n1,2\n").unwrap();
        let bytes = writer.finish().unwrap();
        let mut text = String::new();
        decompress(Box::new(io::Cursor::new(bytes)), compression)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a,b\n1,2\n");
    }

    #[test]
    fn round_trips() {
        round_trip(Compression::None);
        round_trip(Compression::Gzip);
        round_trip(Compression::Zstd);
    }

    #[test]
    fn concatenated_gzip_members_are_read_through() {
        let mut bytes = Vec::new();
        for part in ["a\n", "b\n"] {
            let mut w = CompressWriter::new(Vec::new(), Compression::Gzip).unwrap();
            w.write_all(part.as_bytes()).unwrap();
            bytes.extend(w.finish().unwrap());
        }
        let mut text = String::new();
        decompress(Box::new(io::Cursor::new(bytes)), Compression::Gzip)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a\nb\n");
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let mut w = CompressWriter::new(Vec::new(), Compression::Gzip).unwrap();
        w.write_all(&[b'x'; 10_000]).unwrap();
        let mut bytes = w.finish().unwrap();
        bytes.truncate(bytes.len() / 2);
        let mut text = Vec::new();
        let result =
            decompress(Box::new(io::Cursor::new(bytes)), Compression::Gzip).read_to_end(&mut text);
        assert!(result.is_err());
    }
}
