//! Stream compression: decompressing source objects and compressing text outputs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use super::options::Compression;

/// Buffer size on each side of a decompressor: large reads keep per-call overhead low.
const BUFFER_BYTES: usize = 256 * 1024;

/// Gzip level for text outputs: level 6 is gzip's own default, the size users expect.
const GZIP_LEVEL: u32 = 6;
/// Zstd level for text outputs: zstd's default, fast with a good ratio.
const ZSTD_LEVEL: i32 = 3;

/// Wraps `reader` in a streaming decompressor. Concatenated gzip members and zstd frames are
/// read through. A decompressor that cannot start reports its error on the first read. An
/// error of the decompressor itself (corrupt or truncated data) carries a [`CorruptInput`], so
/// that it is told from a failure of the reader below (the network), which passes unchanged.
pub fn decompress(
    reader: Box<dyn Read + Send>,
    compression: Compression,
) -> Box<dyn BufRead + Send> {
    if compression == Compression::None {
        return Box::new(BufReader::with_capacity(BUFFER_BYTES, reader));
    }
    let input = BufReader::with_capacity(BUFFER_BYTES, Below(reader));
    let decoder: Box<dyn Read + Send> = match compression {
        Compression::None => unreachable!("handled above"),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(input) {
            Ok(decoder) => Box::new(decoder),
            Err(error) => Box::new(FailedReader(Some(error))),
        },
    };
    Box::new(BufReader::with_capacity(
        BUFFER_BYTES,
        Classified {
            inner: decoder,
            compression,
        },
    ))
}

/// The payload of an error that the decompressor raised on the data: the source object is
/// corrupt or truncated, which a retry does not fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {compression:?} data is corrupt or truncated: {message}")]
pub struct CorruptInput {
    pub compression: Compression,
    pub message: String,
}

/// An error of the reader below a decompressor, marked on its way through it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct FromBelow(io::Error);

/// The compressed input: marks its errors as its own.
struct Below(Box<dyn Read + Send>);

impl Read for Below {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(mark_below)
    }
}

/// The decompressed output: an error from below passes unchanged, any other one is the
/// decompressor's verdict on the data.
struct Classified {
    inner: Box<dyn Read + Send>,
    compression: Compression,
}

impl Read for Classified {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let compression = self.compression;
        self.inner.read(buf).map_err(|e| classify(e, compression))
    }
}

/// An error out of a decompressor: one from below passes unchanged, any other one is the
/// decompressor's verdict on the data.
fn classify(e: io::Error, compression: Compression) -> io::Error {
    if e.get_ref().is_some_and(|inner| inner.is::<FromBelow>()) {
        let kind = e.kind();
        let inner = e.into_inner().expect("checked above");
        match inner.downcast::<FromBelow>() {
            Ok(below) => below.0,
            Err(other) => io::Error::new(kind, other),
        }
    } else if e.kind() == io::ErrorKind::Interrupted {
        e
    } else {
        io::Error::new(
            io::ErrorKind::InvalidData,
            CorruptInput {
                compression,
                message: e.to_string(),
            },
        )
    }
}

fn mark_below(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), FromBelow(e))
}

/// Whether an error met while reading a source is bad source data (see [`CorruptInput`]).
pub fn is_corrupt_input(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<CorruptInput>())
}

/// The same decompression for an async reader (raw objects streamed to a transformer): the
/// same formats, concatenated gzip members and zstd frames read through, and errors told
/// apart as in `decompress` (a [`CorruptInput`] is the data's fault).
pub fn decompress_async(
    reader: impl AsyncBufRead + Send + 'static,
    compression: Compression,
) -> Pin<Box<dyn AsyncRead + Send>> {
    let below = BelowAsync(Box::pin(reader));
    let inner: Pin<Box<dyn AsyncRead + Send>> = match compression {
        Compression::None => return Box::pin(below.0),
        Compression::Gzip => {
            let mut decoder = GzipDecoder::new(below);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        Compression::Zstd => {
            let mut decoder = ZstdDecoder::new(below);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
    };
    Box::pin(ClassifiedAsync { inner, compression })
}

/// The compressed input of an async decompressor: marks its errors as its own.
struct BelowAsync(Pin<Box<dyn AsyncBufRead + Send>>);

impl AsyncRead for BelowAsync {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf).map_err(mark_below)
    }
}

impl AsyncBufRead for BelowAsync {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        self.get_mut()
            .0
            .as_mut()
            .poll_fill_buf(cx)
            .map_err(mark_below)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        self.0.as_mut().consume(amt)
    }
}

/// The decompressed output of an async decompressor, its errors classified.
struct ClassifiedAsync {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    compression: Compression,
}

impl AsyncRead for ClassifiedAsync {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let compression = self.compression;
        self.inner
            .as_mut()
            .poll_read(cx, buf)
            .map_err(|e| classify(e, compression))
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
    fn truncated_or_corrupt_input_is_corrupt_data() {
        for compression in [Compression::Gzip, Compression::Zstd] {
            for input in corrupt_inputs(compression) {
                let error = decompress(Box::new(io::Cursor::new(input)), compression)
                    .read_to_end(&mut Vec::new())
                    .unwrap_err();
                assert!(is_corrupt_input(&error), "{compression:?}: {error:?}");
            }
        }
    }

    #[test]
    fn a_failure_below_is_not_corrupt_data() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "network"))
            }
        }
        for compression in [Compression::Gzip, Compression::Zstd] {
            let error = decompress(Box::new(Broken), compression)
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert!(!is_corrupt_input(&error), "{compression:?}: {error:?}");
            assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
            assert_eq!(error.to_string(), "network");
        }
    }

    fn corrupt_inputs(compression: Compression) -> Vec<Vec<u8>> {
        let mut w = CompressWriter::new(Vec::new(), compression).unwrap();
        for i in 0..2_000 {
            writeln!(w, "{i},{}", i * 7).unwrap();
        }
        let bytes = w.finish().unwrap();
        let truncated = bytes[..bytes.len() / 2].to_vec();
        let mut corrupt = bytes.clone();
        corrupt[bytes.len() / 2] ^= 0xff;
        corrupt[4] ^= 0x55;
        vec![truncated, corrupt, b"not compressed at all".to_vec()]
    }

    #[tokio::test]
    async fn async_errors_are_told_apart_as_in_sync() {
        use tokio::io::AsyncReadExt;
        for compression in [Compression::Gzip, Compression::Zstd] {
            for input in corrupt_inputs(compression) {
                let error = decompress_async(io::Cursor::new(input), compression)
                    .read_to_end(&mut Vec::new())
                    .await
                    .unwrap_err();
                assert!(is_corrupt_input(&error), "{compression:?}: {error:?}");
            }
            let broken =
                tokio_util::io::StreamReader::new(futures::stream::iter([Err::<bytes::Bytes, _>(
                    io::Error::new(io::ErrorKind::ConnectionReset, "network"),
                )]));
            let error = decompress_async(broken, compression)
                .read_to_end(&mut Vec::new())
                .await
                .unwrap_err();
            assert!(!is_corrupt_input(&error), "{compression:?}: {error:?}");
            assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
            assert_eq!(error.to_string(), "network");
        }
    }
}
