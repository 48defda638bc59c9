//! The decoding end of an object's pipeline: a blocking thread that reads the object's
//! bytes, decompresses and decodes them into Arrow batches, and applies the bad-record
//! policy. Batches flow to the transforms over a bounded channel (backpressure).

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::format::options::{Compression, SourceFormat};
use crate::format::{self, BadRecord};
use crate::plan::PlannedObject;
use crate::plan::split::{PlannedRange, RangeUnit};
use crate::spec::job::OnBadRecord;
use crate::storage::S3ParquetReader;
use crate::storage::uri::S3Uri;
use crate::worker::clock::{Phase, PhaseClock, TimedPolls, WaitedBytes};
use crate::worker::cut::{RangeSpan, SpanError, range_span};
use crate::worker::error::ObjectError;
use crate::worker::object::ObjectContext;

/// Rows per decoded batch.
pub const BATCH_ROWS: usize = 8192;
/// Decoded batches buffered between the decoder and the transforms.
const BATCHES_IN_FLIGHT: usize = 4;

/// What decoding one object found.
#[derive(Debug, Default, Clone, Copy)]
pub struct DecodeStats {
    /// Every record seen, good or bad.
    pub records: u64,
    /// Records handed on to the transforms.
    pub good: u64,
    pub rejected: u64,
    pub skipped: u64,
}

pub struct Decoding {
    pub stream: SendableRecordBatchStream,
    pub task: JoinHandle<Result<DecodeStats, ObjectError>>,
}

type BatchSender = mpsc::Sender<Result<RecordBatch, DataFusionError>>;

impl Decoding {
    pub async fn start(
        ctx: &ObjectContext,
        source: &S3Uri,
        object: &PlannedObject,
        rejects: mpsc::Sender<BadRecord>,
        clock: &Arc<PhaseClock>,
    ) -> Result<Decoding, ObjectError> {
        let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
        let job = ctx.job.clone();
        let (schema, task) = match job.source.format {
            SourceFormat::Parquet => {
                let reader = S3ParquetReader::new(
                    ctx.storage.clone(),
                    source.clone(),
                    object.range.map_or(object.size, |r| r.object_size),
                    Some(object.etag.clone()),
                );
                let mut builder = ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .map_err(|e| ObjectError::parquet(source, e))?;
                // A range of a split object reads its row groups only.
                if let Some(range) = object.range.filter(|r| r.unit == RangeUnit::RowGroups) {
                    builder = builder
                        .with_row_groups((range.start..range.end).map(|i| i as usize).collect());
                }
                let schema = builder.schema().clone();
                let stream = builder
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(|e| ObjectError::parquet(source, e))?;
                let uri = source.clone();
                let clock = clock.clone();
                let task = tokio::spawn(async move {
                    let mut stats = DecodeStats::default();
                    // Reading the object's pages is in these polls too.
                    let mut stream = TimedPolls::new(stream, clock, Phase::Decode);
                    while let Some(batch) = stream.next().await {
                        let batch = batch.map_err(|e| ObjectError::parquet(&uri, e))?;
                        stats.records += batch.num_rows() as u64;
                        stats.good += batch.num_rows() as u64;
                        if tx.send(Ok(batch)).await.is_err() {
                            return Err(ObjectError::Cancelled);
                        }
                    }
                    Ok(stats)
                });
                (schema, task)
            }
            SourceFormat::Raw => {
                return Err(ObjectError::Internal(format!(
                    "{source} has a raw source format but no raw first step to take it"
                )));
            }
            format @ (SourceFormat::Csv | SourceFormat::Jsonl) => {
                let schema = ctx.schema.clone().ok_or_else(|| {
                    ObjectError::Internal(format!("no schema planned for {source}"))
                })?;
                let mut csv = job.source.csv.clone();
                let mut origin = source.to_string();
                let body = match object.range.filter(|r| r.unit == RangeUnit::Bytes) {
                    Some(range) => {
                        let RangeSpan {
                            prefix,
                            span,
                            ends_at_cut,
                        } = range_span(&ctx.storage, source, &object.etag, &range, format, &csv)
                            .await
                            .map_err(|e| match e {
                                SpanError::Storage(e) => ObjectError::Storage(e),
                                SpanError::Decode(e) => ObjectError::decode(source, e),
                            })?;
                        csv.ends_at_cut = ends_at_cut;
                        origin = range_origin(source, &range, &span);
                        ctx.storage
                            .get_span(source, &object.etag, range.object_size, prefix, span)
                    }
                    None => ctx.storage.get(source, Some(&object.etag)).await?,
                };
                // Created here, inside the runtime, so the blocking thread can drive it.
                let body = WaitedBytes::new(body, clock.clone());
                let reader = SyncIoBridge::new(StreamReader::new(body));
                let compression = job
                    .source
                    .compression
                    .unwrap_or_else(|| Compression::from_key(&object.key));
                let uri = source.clone();
                let decode_schema = schema.clone();
                let clock = clock.clone();
                let threads = decode_threads(object.size, compression);
                let task = tokio::task::spawn_blocking(move || {
                    let input = format::decompress(Box::new(reader), compression);
                    let decoder = format::open_parallel_decoder(
                        format,
                        input,
                        decode_schema,
                        &csv,
                        BATCH_ROWS,
                        threads,
                        &origin,
                    )
                    .map_err(|e| ObjectError::decode(&uri, e))?;
                    decode_blocking(decoder, &job, &uri, &origin, tx, rejects, &clock)
                });
                (schema, task)
            }
        };
        let batches = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema, batches));
        Ok(Decoding { stream, task })
    }
}

/// How messages name a range of a split object. Its line numbers count from the range's
/// first line (the header, read from the object's start, is line 1 of every CSV range).
pub fn range_origin(source: &S3Uri, range: &PlannedRange, span: &std::ops::Range<u64>) -> String {
    format!(
        "{source} (range {} of {}, bytes {}..{})",
        range.part, range.parts, span.start, span.end
    )
}

/// Below this many stored bytes (uncompressed; compressed objects count [`INFLATION`] times
/// their size) an object is decoded on the thread that reads it: it is a chunk or two, and
/// starting threads for it would cost more than they save. Many small objects are in flight
/// at once, so the CPUs are kept busy by objects, not by threads within one.
const SMALL_OBJECT: u64 = 1 << 20;
/// How much larger than its stored size a compressed object is assumed to be.
const INFLATION: u64 = 8;

/// Threads that decode one CSV object besides the thread reading it: every CPU the process
/// may use (its affinity and cgroup quota) but one, left to the encoder; none on one CPU or
/// for a small object. On two CPUs a second decoding thread would only take time from the
/// encoder, the slower half.
fn decode_threads(size: u64, compression: Compression) -> usize {
    let decoded = match compression {
        Compression::None => size,
        _ => size.saturating_mul(INFLATION),
    };
    if decoded < SMALL_OBJECT {
        return 0;
    }
    // Read once: it reads the cgroup's files each time.
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .saturating_sub(1)
}

fn decode_blocking(
    mut decoder: Box<dyn format::Decoder>,
    job: &Arc<crate::spec::job::Job>,
    uri: &S3Uri,
    origin: &str,
    tx: BatchSender,
    rejects: mpsc::Sender<BadRecord>,
    clock: &PhaseClock,
) -> Result<DecodeStats, ObjectError> {
    let policy = job.validate.on_bad_record;
    let limit = job.validate.max_bad_records;
    let mut stats = DecodeStats::default();
    while let Some(decoded) = clock
        .time(Phase::Decode, || decoder.next())
        .map_err(|e| ObjectError::decode(uri, e))?
    {
        for bad in decoded.bad {
            match policy {
                OnBadRecord::Fail => {
                    return Err(ObjectError::BadRecord {
                        origin: origin.to_string(),
                        line: bad.line,
                        error: bad.error,
                    });
                }
                OnBadRecord::Skip => stats.skipped += 1,
                OnBadRecord::Reject => {
                    stats.rejected += 1;
                    if rejects.blocking_send(bad).is_err() {
                        return Err(ObjectError::Cancelled);
                    }
                }
            }
        }
        // A count limit can stop early; a fraction needs the total, checked at the end.
        let bad = stats.rejected + stats.skipped;
        if matches!(limit, crate::spec::job::BadRecordLimit::Count(_))
            && limit.exceeded(bad, decoder.records())
        {
            return Err(ObjectError::TooManyBadRecords {
                uri: uri.clone(),
                bad,
                total: decoder.records(),
                limit,
                kept: None,
            });
        }
        let rows = decoded.batch.num_rows() as u64;
        if rows > 0 {
            stats.good += rows;
            if tx.blocking_send(Ok(decoded.batch)).is_err() {
                return Err(ObjectError::Cancelled);
            }
        }
    }
    stats.records = decoder.records();
    let bad = stats.rejected + stats.skipped;
    if limit.exceeded(bad, stats.records) {
        return Err(ObjectError::TooManyBadRecords {
            uri: uri.clone(),
            bad,
            total: stats.records,
            limit,
            kept: None,
        });
    }
    Ok(stats)
}
