//! Reading back what was stored: the record count of an output object, from the Parquet
//! footer or by counting the records of a text object.

use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::format;
use crate::format::options::{Compression, SinkFormat};
use crate::spec::job::Sink;
use crate::storage::uri::S3Uri;
use crate::storage::{Storage, parquet_metadata};
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
