//! Reading back what was stored: the record count of an output object, from the Parquet
//! footer or by counting the records of a text object, and its checksum.

use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::format;
use crate::format::options::{Compression, SinkFormat};
use crate::spec::job::Sink;
use crate::storage::uri::S3Uri;
use crate::storage::{FailureKind, S3Failure, Storage, StorageError, parquet_metadata};
use crate::worker::error::ObjectError;

/// The number of records the stored object at `uri` holds.
pub async fn stored_rows(
    storage: &Storage,
    sink: &Sink,
    uri: &S3Uri,
    size: u64,
) -> Result<u64, ObjectError> {
    match sink.format {
        SinkFormat::Parquet => {
            let metadata = parquet_metadata(storage, uri, size).await?;
            Ok(format::parquet_rows(&metadata))
        }
        SinkFormat::Csv => {
            let (header, delimiter) = (sink.csv.header, sink.csv.delimiter);
            count_text(storage, uri, sink.compression, move |r| {
                format::count_csv_records(r, header, delimiter)
            })
            .await
        }
        SinkFormat::Jsonl => count_text(storage, uri, sink.compression, format::count_lines).await,
    }
}

/// The number of records in a stored rejects object (JSON lines, uncompressed).
pub async fn stored_rejects(storage: &Storage, uri: &S3Uri) -> Result<u64, ObjectError> {
    count_text(storage, uri, Compression::None, format::count_lines).await
}

async fn count_text(
    storage: &Storage,
    uri: &S3Uri,
    compression: Compression,
    count: impl FnOnce(Box<dyn std::io::BufRead + Send>) -> Result<u64, format::DecodeError>
    + Send
    + 'static,
) -> Result<u64, ObjectError> {
    let body = storage.get(uri, None).await?;
    let reader = SyncIoBridge::new(StreamReader::new(body));
    let target = uri.clone();
    tokio::task::spawn_blocking(move || {
        count(format::decompress(Box::new(reader), compression))
            .map_err(|e| ObjectError::decode(&target, e))
    })
    .await
    .map_err(ObjectError::from_join)?
}

/// How the records of a stored object are counted when it is read back whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCount {
    /// From the footer, decoded from the last bytes read (or fetched when it is larger).
    Parquet,
    /// CSV records, after decompression.
    Csv {
        header: bool,
        delimiter: u8,
        compression: Compression,
    },
    /// Non-empty lines, after decompression.
    Lines(Compression),
    /// Not counted (an opaque transformer reply has no records).
    None,
}

impl RowCount {
    /// How the sink's outputs are counted.
    pub fn of_sink(sink: &Sink) -> RowCount {
        match sink.format {
            SinkFormat::Parquet => RowCount::Parquet,
            SinkFormat::Csv => RowCount::Csv {
                header: sink.csv.header,
                delimiter: sink.csv.delimiter,
                compression: sink.compression,
            },
            SinkFormat::Jsonl => RowCount::Lines(sink.compression),
        }
    }

    /// How a rejects object is counted (JSON lines, uncompressed).
    pub fn rejects() -> RowCount {
        RowCount::Lines(Compression::None)
    }
}

/// A stored object read back whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    /// Bytes read.
    pub size: u64,
    /// CRC32C of the whole object, hex, as the upload reports it.
    pub crc32c: String,
    /// The records it holds (`None` when not counted), or why they could not be counted.
    pub rows: Result<Option<u64>, String>,
}

/// Bytes kept from the end of an object while reading it, so that a Parquet footer
/// usually needs no second request.
const FOOTER_TAIL: usize = 64 << 10;

/// Chunks handed to a record counter ahead of it.
const COUNTER_QUEUE: usize = 4;

/// Reads the object at `uri` once, streaming: its CRC32C over every byte and, in the same
/// pass, its records counted as `count` says. A body that cannot be decoded is not an
/// error here: it shows in `rows`.
pub async fn read_back(
    storage: &Storage,
    uri: &S3Uri,
    count: RowCount,
) -> Result<ReadBack, StorageError> {
    use futures::{SinkExt, StreamExt};

    let mut body = storage.get(uri, None).await?;
    let (mut feed, counter) = match count {
        RowCount::Csv {
            header,
            delimiter,
            compression,
        } => spawn_counter(compression, move |r| {
            format::count_csv_records(r, header, delimiter)
        }),
        RowCount::Lines(compression) => spawn_counter(compression, format::count_lines),
        RowCount::Parquet | RowCount::None => (None, None),
    };
    let mut tail = Tail::default();
    let (mut crc, mut size) = (0u32, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| stream_error(uri, e))?;
        crc = crc32c::crc32c_append(crc, &chunk);
        size += chunk.len() as u64;
        if count == RowCount::Parquet {
            tail.push(chunk.clone());
        }
        // A counter that stopped (undecodable data) has its answer; the checksum goes on.
        if let Some(tx) = feed.as_mut()
            && tx.send(Ok(chunk)).await.is_err()
        {
            feed = None;
        }
    }
    drop(feed);
    let rows = match (count, counter) {
        (RowCount::Parquet, _) => parquet_footer_rows(storage, uri, size, tail.into_bytes())
            .await
            .map(Some),
        (_, Some(counter)) => match counter.await {
            Ok(Ok(rows)) => Ok(Some(rows)),
            Ok(Err(e)) => Err(crate::exit::error_chain(&e)),
            Err(e) => Err(format!("the record counter stopped: {e}")),
        },
        _ => Ok(None),
    };
    Ok(ReadBack {
        size,
        crc32c: crate::storage::crc32c_hex(crc),
        rows,
    })
}

type Feed = futures::channel::mpsc::Sender<std::io::Result<bytes::Bytes>>;
type Counter = tokio::task::JoinHandle<Result<u64, format::DecodeError>>;

/// A record counter on a blocking thread, fed the object's chunks over a bounded channel.
fn spawn_counter(
    compression: Compression,
    count: impl FnOnce(Box<dyn std::io::BufRead + Send>) -> Result<u64, format::DecodeError>
    + Send
    + 'static,
) -> (Option<Feed>, Option<Counter>) {
    let (tx, rx) = futures::channel::mpsc::channel(COUNTER_QUEUE);
    let reader = SyncIoBridge::new(StreamReader::new(rx));
    let task = tokio::task::spawn_blocking(move || {
        count(format::decompress(Box::new(reader), compression))
    });
    (Some(tx), Some(task))
}

/// The rows a Parquet footer declares, from the object's last bytes, or fetched with
/// ranged reads when the footer is larger than what was kept.
async fn parquet_footer_rows(
    storage: &Storage,
    uri: &S3Uri,
    size: u64,
    tail: bytes::Bytes,
) -> Result<u64, String> {
    use parquet::errors::ParquetError;
    use parquet::file::metadata::ParquetMetaDataReader;

    let mut reader = ParquetMetaDataReader::new();
    match reader.try_parse_sized(&tail, size) {
        Ok(()) => reader
            .finish()
            .map(|m| format::parquet_rows(&m))
            .map_err(|e| e.to_string()),
        Err(ParquetError::NeedMoreData(_)) => parquet_metadata(storage, uri, size)
            .await
            .map(|m| format::parquet_rows(&m))
            .map_err(|e| crate::exit::error_chain(&e)),
        Err(e) => Err(format!("not a readable Parquet object: {e}")),
    }
}

/// The last [`FOOTER_TAIL`] bytes (or a little more) of a stream of chunks.
#[derive(Default)]
struct Tail {
    chunks: std::collections::VecDeque<bytes::Bytes>,
    len: usize,
}

impl Tail {
    fn push(&mut self, chunk: bytes::Bytes) {
        self.len += chunk.len();
        self.chunks.push_back(chunk);
        while let Some(front) = self.chunks.front() {
            if self.len - front.len() < FOOTER_TAIL {
                break;
            }
            self.len -= front.len();
            self.chunks.pop_front();
        }
    }

    fn into_bytes(self) -> bytes::Bytes {
        if self.chunks.len() == 1 {
            return self.chunks.into_iter().next().expect("one chunk");
        }
        let mut out = bytes::BytesMut::with_capacity(self.len);
        for chunk in self.chunks {
            out.extend_from_slice(&chunk);
        }
        out.freeze()
    }
}

/// The storage error an object stream reported through `io::Error`.
fn stream_error(uri: &S3Uri, error: std::io::Error) -> StorageError {
    let message = error.to_string();
    let other = match error.into_inner().map(|e| e.downcast::<StorageError>()) {
        Some(Ok(storage)) => return *storage,
        Some(Err(other)) => other.to_string(),
        None => message,
    };
    StorageError::GetObject {
        uri: uri.clone(),
        source: S3Failure::local(FailureKind::Connection, other),
    }
}
