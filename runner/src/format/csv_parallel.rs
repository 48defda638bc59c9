//! Decoding a CSV stream on several threads: one thread reads chunks of whole records in
//! order (finding record ends is cheap), the others split and type them (the expensive part),
//! and batches come out in input order.
//!
//! Every chunk is the batch the one-thread decoder would make of the same records, so the
//! batches, the bad records and their lines, the record counts and the point where a read
//! error surfaces are all the same as decoding on one thread.
//!
//! Memory is bounded: the reader waits while `2 * threads` chunks are ahead of the consumer
//! (queued, being decoded, or decoded and not yet taken).

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow::datatypes::SchemaRef;

use super::csv_chunks::{Chunk, ChunkReader, FieldBuffers};
use super::csv_decode::{ChunkDecoder, open_chunks};
use super::decode::{DecodeError, Decoded, Decoder};
use super::options::CsvReadOptions;

/// A chunk's records and batch, or the error that ended the input.
type Outcome = Result<(usize, Decoded), DecodeError>;
/// Where a chunk's outcome will arrive, in input order.
type Pending = Receiver<Outcome>;
type Job = (Chunk, SyncSender<Outcome>);

pub(crate) struct ParallelCsvDecoder {
    /// `None` once the input is done.
    order: Option<Receiver<Pending>>,
    threads: Vec<JoinHandle<()>>,
    cancelled: Arc<AtomicBool>,
    seen: u64,
}

impl ParallelCsvDecoder {
    /// Reads and checks the header on the calling thread, then starts a reading thread and
    /// `threads` decoding threads.
    pub(crate) fn new(
        reader: Box<dyn BufRead + Send>,
        schema: SchemaRef,
        options: &CsvReadOptions,
        batch_rows: usize,
        threads: usize,
        origin: &str,
    ) -> Result<Self, DecodeError> {
        let threads = threads.max(1);
        let (reader, decoder) = open_chunks(reader, schema, options, origin)?;
        let decoder = Arc::new(decoder);
        let cancelled = Arc::new(AtomicBool::new(false));
        let (order_tx, order) = sync_channel::<Pending>(2 * threads);
        let (work_tx, work_rx) = sync_channel::<Job>(threads);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let mut handles = Vec::with_capacity(threads + 1);
        for i in 0..threads {
            let work = work_rx.clone();
            let decoder = decoder.clone();
            let handle = std::thread::Builder::new()
                .name(format!("csv-decode-{i}"))
                .spawn(move || decode_chunks(&work, &decoder))
                .map_err(|source| DecodeError::Read {
                    origin: origin.to_string(),
                    source,
                })?;
            handles.push(handle);
        }
        let stop = cancelled.clone();
        let origin = origin.to_string();
        let handle = std::thread::Builder::new()
            .name("csv-read".to_string())
            .spawn(move || read_chunks(reader, batch_rows, &origin, &stop, &order_tx, &work_tx))
            .map_err(|source| DecodeError::Read {
                origin: decoder.origin.clone(),
                source,
            })?;
        handles.push(handle);
        Ok(ParallelCsvDecoder {
            order: Some(order),
            threads: handles,
            cancelled,
            seen: 0,
        })
    }

    /// Waits for every thread; a thread's panic is resumed here.
    fn join(&mut self) {
        for handle in self.threads.drain(..) {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// The reading thread: chunks in order, each announced to the consumer before it is queued
/// for decoding, so that outcomes are taken in input order whichever thread decodes them.
fn read_chunks(
    mut reader: ChunkReader,
    batch_rows: usize,
    origin: &str,
    cancelled: &AtomicBool,
    order: &SyncSender<Pending>,
    work: &SyncSender<Job>,
) {
    while !cancelled.load(Ordering::Relaxed) {
        let (tx, rx) = sync_channel(1);
        match reader.next_chunk(batch_rows) {
            Ok(Some(chunk)) => {
                if order.send(rx).is_err() || work.send((chunk, tx)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(error) => {
                let _ = tx.send(Err(error.into_decode_error(origin)));
                let _ = order.send(rx);
                return;
            }
        }
    }
}

/// A decoding thread: chunks from the shared queue until it closes.
fn decode_chunks(work: &Mutex<Receiver<Job>>, decoder: &ChunkDecoder) {
    let mut buffers = FieldBuffers::default();
    loop {
        // The lock is held only while waiting for a chunk, not while decoding one.
        let job = work.lock().map(|queue| queue.recv());
        let Ok(Ok((chunk, outcome))) = job else {
            return;
        };
        let decoded = decoder
            .decode(&chunk, &mut buffers)
            .map(|d| (chunk.records, d));
        // The consumer may be gone (dropped early); the chunk is then simply dropped.
        let _ = outcome.send(decoded);
    }
}

impl Decoder for ParallelCsvDecoder {
    fn next(&mut self) -> Result<Option<Decoded>, DecodeError> {
        let Some(order) = &self.order else {
            return Ok(None);
        };
        let Ok(pending) = order.recv() else {
            // The reader is done and every chunk was taken.
            self.order = None;
            self.join();
            return Ok(None);
        };
        match pending.recv() {
            Ok(Ok((records, decoded))) => {
                self.seen += records as u64;
                Ok(Some(decoded))
            }
            Ok(Err(error)) => {
                // As when dropped: the threads stop on their own.
                self.order = None;
                self.cancelled.store(true, Ordering::Relaxed);
                Err(error)
            }
            Err(_) => {
                // The decoding thread dropped the chunk: it panicked.
                self.order = None;
                self.cancelled.store(true, Ordering::Relaxed);
                self.join();
                panic!("a CSV decoding thread stopped without a result");
            }
        }
    }

    fn records(&self) -> u64 {
        self.seen
    }
}

impl Drop for ParallelCsvDecoder {
    /// Stops the threads without waiting: the reader may be blocked on a slow source. They
    /// end on their own once their current read or chunk is done.
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.order = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::csv_decode::CsvDecoder;
    use crate::format::decode::BadRecord;
    use arrow::array::RecordBatch;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::io::{BufReader, Cursor};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("x", DataType::Float64, true),
        ]))
    }

    /// A file with quoted newlines, CRLF, empty and bad lines of every kind.
    fn input(records: usize) -> Vec<u8> {
        let mut out = b"id,name,at,x\n".to_vec();
        for i in 0..records {
            let line = match i % 97 {
                3 => format!("{i},\"two\nlines, \"\"quoted\"\"\",2024-01-01 00:00:00,1.5\r\n"),
                10 => format!("{i},bad ts,2024-02-30 00:00:00,1\n"),
                20 => format!("{i},too,few\n"),
                30 => format!("x{i},bad id,,\n"),
                40 => ",null id,,\n".to_string(),
                50 => "\n".to_string(),
                60 => format!("{i},bad utf8 X,,\n"),
                _ => format!("{i},name {i},2024-01-02 03:04:{:02}.{i},{i}.25\n", i % 60),
            };
            out.extend_from_slice(line.as_bytes());
            if i % 97 == 60 {
                // Invalid UTF-8 in a string field: the X.
                let at = out.len() - 4;
                out[at] = 0xFF;
            }
        }
        out
    }

    fn decode(decoder: &mut dyn Decoder) -> (Vec<RecordBatch>, Vec<BadRecord>, Vec<u64>) {
        let (mut batches, mut bad, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(decoded) = decoder.next().unwrap() {
            batches.push(decoded.batch);
            bad.extend(decoded.bad);
            counts.push(decoder.records());
        }
        (batches, bad, counts)
    }

    fn reader(input: &[u8], capacity: usize) -> Box<dyn BufRead + Send> {
        Box::new(BufReader::with_capacity(
            capacity,
            Cursor::new(input.to_vec()),
        ))
    }

    #[test]
    fn parallel_decoding_equals_decoding_on_one_thread() {
        let input = input(5000);
        let options = CsvReadOptions::default();
        let mut one = CsvDecoder::new(reader(&input, 4096), schema(), &options, 100, "k").unwrap();
        let expected = decode(&mut one);
        assert!(expected.1.len() > 200, "{}", expected.1.len());
        assert!(expected.1.iter().any(|b| b.error.contains("invalid UTF-8")));
        for threads in [1, 2, 3] {
            for capacity in [7, 1 << 16] {
                let mut parallel = ParallelCsvDecoder::new(
                    reader(&input, capacity),
                    schema(),
                    &options,
                    100,
                    threads,
                    "k",
                )
                .unwrap();
                let got = decode(&mut parallel);
                assert_eq!(got.0, expected.0, "{threads} threads");
                assert_eq!(got.1, expected.1, "{threads} threads");
                assert_eq!(got.2, expected.2, "{threads} threads");
                assert!(parallel.next().unwrap().is_none());
            }
        }
    }

    #[test]
    fn a_read_error_comes_after_the_batches_before_it() {
        let bytes = {
            use std::io::Write;
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(&input(20_000)).unwrap();
            w.finish().unwrap()
        };
        let truncated = || {
            crate::format::decompress(
                Box::new(Cursor::new(bytes[..bytes.len() / 2].to_vec())),
                crate::format::options::Compression::Gzip,
            )
        };
        let options = CsvReadOptions::default();
        let run = |decoder: &mut dyn Decoder| {
            let mut batches = 0;
            loop {
                match decoder.next() {
                    Ok(Some(_)) => batches += 1,
                    Ok(None) => panic!("a truncated stream decoded to the end"),
                    Err(e) => break (batches, decoder.records(), e.to_string()),
                }
            }
        };
        let mut one = CsvDecoder::new(truncated(), schema(), &options, 500, "k").unwrap();
        let mut two =
            ParallelCsvDecoder::new(truncated(), schema(), &options, 500, 2, "k").unwrap();
        let expected = run(&mut one);
        assert!(expected.0 > 0);
        assert_eq!(run(&mut two), expected);
    }

    #[test]
    fn dropping_early_stops_the_threads() {
        let input = input(50_000);
        let mut decoder = ParallelCsvDecoder::new(
            reader(&input, 1 << 16),
            schema(),
            &CsvReadOptions::default(),
            64,
            2,
            "k",
        )
        .unwrap();
        assert!(decoder.next().unwrap().is_some());
        let cancelled = decoder.cancelled.clone();
        let threads = std::mem::take(&mut decoder.threads);
        drop(decoder);
        assert!(cancelled.load(Ordering::Relaxed));
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
