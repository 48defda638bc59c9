//! A run's CSV or JSON lines outputs read back as one stream of Arrow batches, for run-scope
//! SQL rules: decompressed and decoded as the sink wrote them, one output after another, with
//! the column types inferred from the first output that holds records.

use std::io::{BufRead, Read};

use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::format::options::{CsvReadOptions, SinkFormat, SourceFormat};
use crate::format::{self, Decoder};
use crate::spec::job::Sink;
use crate::storage::Storage;
use crate::storage::uri::S3Uri;

/// Records read to infer the column types.
const INFER_RECORDS: usize = 1000;
const BATCH_ROWS: usize = 8192;

/// Every output `(uri, size, rows)` of a text sink as one stream.
pub async fn read(
    storage: &Storage,
    sink: &Sink,
    outputs: Vec<(S3Uri, u64, u64)>,
) -> Result<SendableRecordBatchStream, String> {
    let format = match sink.format {
        SinkFormat::Csv => SourceFormat::Csv,
        SinkFormat::Jsonl => SourceFormat::Jsonl,
        SinkFormat::Parquet => return Err("Parquet outputs are not text".into()),
    };
    let csv = CsvReadOptions {
        delimiter: sink.csv.delimiter,
        header: sink.csv.header,
        ..CsvReadOptions::default()
    };
    let compression = sink.compression;
    let sample = outputs
        .iter()
        .find(|(_, _, rows)| *rows > 0)
        .unwrap_or(&outputs[0])
        .0
        .clone();
    let schema = {
        let reader = open(storage, &sample).await?;
        let csv = csv.clone();
        tokio::task::spawn_blocking(move || {
            let reader = format::decompress(reader, compression);
            format::infer_schema(format, reader, &csv, INFER_RECORDS)
                .map_err(|e| format!("inferring the columns of {sample}: {e}"))
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let (tx, rx) = mpsc::channel(2);
    let storage = storage.clone();
    let decode_schema = schema.clone();
    tokio::spawn(async move {
        for (uri, _, _) in outputs {
            let result = match open(&storage, &uri).await {
                Ok(reader) => {
                    let (tx, schema, csv) = (tx.clone(), decode_schema.clone(), csv.clone());
                    tokio::task::spawn_blocking(move || {
                        let reader = format::decompress(reader, compression);
                        decode(format, reader, schema, &csv, &uri, tx)
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let _ = tx.send(Err(DataFusionError::Execution(e))).await;
                return;
            }
        }
    });
    let batches = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
}

/// An output's bytes, to be decompressed and read on a blocking thread (a decompressor may
/// read as it is made).
async fn open(storage: &Storage, uri: &S3Uri) -> Result<Box<dyn Read + Send>, String> {
    let body = storage
        .get(uri, None)
        .await
        .map_err(|e| format!("reading {uri}: {}", crate::exit::error_chain(&e)))?;
    Ok(Box::new(SyncIoBridge::new(StreamReader::new(body))))
}

/// Decodes one output into `tx`; a record that does not decode fails the rule.
fn decode(
    format: SourceFormat,
    reader: Box<dyn BufRead + Send>,
    schema: SchemaRef,
    csv: &CsvReadOptions,
    uri: &S3Uri,
    tx: mpsc::Sender<Result<arrow::record_batch::RecordBatch, DataFusionError>>,
) -> Result<(), String> {
    let origin = uri.to_string();
    let fail = |e: format::DecodeError| format!("decoding {uri}: {e}");
    let mut decoder: Box<dyn Decoder> =
        format::open_decoder(format, reader, schema, csv, BATCH_ROWS, &origin).map_err(fail)?;
    while let Some(decoded) = decoder.next().map_err(fail)? {
        if let Some(bad) = decoded.bad.first() {
            return Err(format!(
                "{uri} line {}: {} (column types inferred from the first output)",
                bad.line, bad.error
            ));
        }
        if tx.blocking_send(Ok(decoded.batch)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}
