//! A measurement of the CSV -> Parquet path alone (no S3), for `sluice bench`.

use std::io::{self, BufRead};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;

use super::decode::{DecodeError, open_parallel_decoder};
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
    /// Time spent decoding (waiting for batches, when other threads decode them), and
    /// encoding (on its own thread when `threads` is 2 or more).
    pub decode: Duration,
    pub encode: Duration,
}

impl Throughput {
    /// Input megabytes (10^6 bytes) per second over the whole run.
    pub fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ThroughputError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("the encoding thread panicked")]
    Panicked,
}

/// Decodes the CSV from `input` (`bytes` long) with `schema` and encodes it to Parquet into
/// a sink that counts and drops the bytes. With `threads` = 1 both halves alternate on the
/// calling thread; with more, as in the worker, the encoder runs on a thread of its own behind
/// a bounded channel and the CSV decodes on the other `threads - 1`, beside a thread that
/// reads and finds record boundaries (light work). With two cores, a second decoding thread
/// only takes time from the encoder, which is then the slower half.
pub fn decode_encode_throughput(
    input: Box<dyn BufRead + Send>,
    bytes: u64,
    schema: SchemaRef,
    options: &CsvReadOptions,
    parquet: &ParquetWriteOptions,
    batch_rows: usize,
    threads: usize,
) -> Result<Throughput, ThroughputError> {
    let started = Instant::now();
    let written = Arc::new(AtomicU64::new(0));
    let mut decoder = open_parallel_decoder(
        SourceFormat::Csv,
        input,
        schema.clone(),
        options,
        batch_rows,
        threads.saturating_sub(1),
        "benchmark",
    )?;
    let mut encoder = open_encoder(
        SinkFormat::Parquet,
        schema,
        parquet,
        &CsvWriteOptions::default(),
        Compression::None,
        Box::new(CountingSink(written.clone())),
    )?;
    let mut decode = Duration::ZERO;
    let mut bad_records = 0u64;
    let encode = if threads <= 1 {
        let mut encode = Duration::ZERO;
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
        encode + t.elapsed()
    } else {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let encoding = std::thread::spawn(move || -> Result<Duration, EncodeError> {
            let mut encode = Duration::ZERO;
            for batch in rx {
                let t = Instant::now();
                encoder.write(&batch)?;
                encode += t.elapsed();
            }
            let t = Instant::now();
            encoder.finish()?;
            Ok(encode + t.elapsed())
        });
        loop {
            let t = Instant::now();
            let next = decoder.next()?;
            decode += t.elapsed();
            let Some(decoded) = next else { break };
            bad_records += decoded.bad.len() as u64;
            if tx.send(decoded.batch).is_err() {
                break;
            }
        }
        drop(tx);
        encoding.join().map_err(|_| ThroughputError::Panicked)??
    };
    Ok(Throughput {
        records: decoder.records(),
        bad_records,
        bytes,
        output_bytes: written.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        decode,
        encode,
    })
}

struct CountingSink(Arc<AtomicU64>);

impl io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
