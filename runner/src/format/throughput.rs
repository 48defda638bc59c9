//! A measurement of the CSV → Parquet path, for the benchmark command.

use std::io::{self, Cursor};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;

use super::decode::{DecodeError, open_decoder};
use super::encode::{EncodeError, open_encoder};
use super::options::{
    Compression, CsvReadOptions, CsvWriteOptions, ParquetWriteOptions, SinkFormat, SourceFormat,
};

/// What one measured run did and how long each half took.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Records seen, good and bad.
    pub records: u64,
    pub bad_records: u64,
    /// CSV bytes decoded.
    pub bytes: u64,
    /// Parquet bytes produced.
    pub output_bytes: u64,
    pub elapsed: Duration,
    pub decode: Duration,
    pub encode: Duration,
}

impl Throughput {
    /// Input megabytes (10^6 bytes) per second over the whole run.
    pub fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    pub fn decode_mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.decode.as_secs_f64()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ThroughputError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Decodes `csv` with `schema` and encodes it to Parquet into a sink that counts and drops
/// the bytes, on the calling thread.
pub fn decode_encode_throughput(
    csv: &[u8],
    schema: SchemaRef,
    options: &CsvReadOptions,
    parquet: &ParquetWriteOptions,
    batch_rows: usize,
) -> Result<Throughput, ThroughputError> {
    let input: Box<dyn io::BufRead + Send> = Box::new(Cursor::new(csv.to_vec()));
    let started = Instant::now();
    let sink = CountingSink::default();
    let written = sink.bytes.clone();
    let mut decoder = open_decoder(
        SourceFormat::Csv,
        input,
        schema.clone(),
        options,
        batch_rows,
        "benchmark",
    )?;
    let mut encoder = open_encoder(
        SinkFormat::Parquet,
        schema,
        parquet,
        &CsvWriteOptions::default(),
        Compression::None,
        Box::new(sink),
    )?;
    let mut decode = Duration::ZERO;
    let mut encode = Duration::ZERO;
    let mut bad_records = 0u64;
    loop {
        let t = Instant::now();
        let next = decoder.next()?;
        decode += t.elapsed();
        let Some(decoded) = next else { break };
        bad_records += decoded.bad.len() as u64;
        let t = Instant::now();
        encoder.write(&decoded.batch)?;
        encode += t.elapsed();
    }
    let t = Instant::now();
    encoder.finish()?;
    encode += t.elapsed();
    Ok(Throughput {
        records: decoder.records(),
        bad_records,
        bytes: csv.len() as u64,
        output_bytes: written.load(std::sync::atomic::Ordering::Relaxed),
        elapsed: started.elapsed(),
        decode,
        encode,
    })
}

#[derive(Default)]
struct CountingSink {
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
