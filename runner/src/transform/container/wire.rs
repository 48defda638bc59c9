//! Records to bytes and back for a container step: the batches coming into the step are
//! encoded as the step's `input` (CSV with a header, JSON lines, an Arrow IPC stream), and
//! what the transformer returns is decoded as its `output.format`.

use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::sync::{Arc, Mutex};

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::io::SyncIoBridge;

use crate::format::options::{
    Compression, CsvReadOptions, CsvWriteOptions, ParquetWriteOptions, SinkFormat, SourceFormat,
};
use crate::format::{self, Encoder};
use crate::spec::container::{OutputFormat, StepInput};
use crate::transform::container::transport::{TransportError, transport_error};

/// Rows per batch decoded from a transformer's output.
const BATCH_ROWS: usize = 8192;
/// How much of a text output schema inference looks at.
const INFER_BYTES: usize = 1 << 20;
const INFER_RECORDS: usize = 1000;

/// A request body: chunks of bytes.
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A writer whose bytes are taken out after every batch.
#[derive(Clone, Default)]
struct Drain(Arc<Mutex<Vec<u8>>>);

impl Write for Drain {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.write(buf).map(|_| ())
    }
}

impl Drain {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.lock().expect("not poisoned")))
    }
}

enum BatchWriter {
    Text(Box<dyn Encoder>),
    Arrow(Box<StreamWriter<Drain>>),
}

impl BatchWriter {
    fn open(input: StepInput, schema: SchemaRef, sink: Drain) -> std::io::Result<BatchWriter> {
        let text = |format| {
            format::open_encoder(
                format,
                schema.clone(),
                &ParquetWriteOptions::default(),
                &CsvWriteOptions::default(),
                Compression::None,
                Box::new(sink.clone()),
            )
            .map(BatchWriter::Text)
            .map_err(std::io::Error::other)
        };
        match input {
            StepInput::Csv => text(SinkFormat::Csv),
            StepInput::Jsonl | StepInput::Raw => text(SinkFormat::Jsonl),
            StepInput::Arrow => StreamWriter::try_new(sink.clone(), &schema)
                .map(|w| BatchWriter::Arrow(Box::new(w)))
                .map_err(std::io::Error::other),
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> std::io::Result<()> {
        match self {
            BatchWriter::Text(e) => e.write(batch).map_err(std::io::Error::other),
            BatchWriter::Arrow(w) => w.write(batch).map_err(std::io::Error::other),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            BatchWriter::Text(e) => e.finish().map(|_| ()).map_err(std::io::Error::other),
            BatchWriter::Arrow(mut w) => w.finish().map_err(std::io::Error::other),
        }
    }
}

/// Encodes the batches of `input` as `format`, chunk by chunk, as a request body.
pub fn encode_batches(input: SendableRecordBatchStream, format: StepInput) -> ByteStream {
    let schema = input.schema();
    let sink = Drain::default();
    let state = (input, None::<BatchWriter>, sink, schema, false);
    Box::pin(futures::stream::unfold(
        state,
        move |(mut input, mut writer, sink, schema, done)| async move {
            if done {
                return None;
            }
            if writer.is_none() {
                match BatchWriter::open(format, schema.clone(), sink.clone()) {
                    Ok(w) => writer = Some(w),
                    Err(e) => return Some((Err(e), (input, None, sink, schema, true))),
                }
            }
            loop {
                match input.next().await {
                    Some(Ok(batch)) => {
                        if let Err(e) = writer.as_mut().expect("opened").write(&batch) {
                            return Some((Err(e), (input, None, sink, schema, true)));
                        }
                        let chunk = sink.take();
                        if !chunk.is_empty() {
                            return Some((Ok(chunk), (input, writer, sink, schema, false)));
                        }
                    }
                    Some(Err(e)) => {
                        return Some((
                            Err(std::io::Error::other(e)),
                            (input, None, sink, schema, true),
                        ));
                    }
                    None => {
                        let result = writer.take().expect("opened").finish();
                        let item = result.map(|()| sink.take());
                        return Some((item, (input, None, sink, schema, true)));
                    }
                }
            }
        },
    ))
}

/// Why a transformer's output could not be read as its declared format.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the output is not valid {format}: {detail}")]
pub struct OutputDecodeError {
    pub format: &'static str,
    pub detail: String,
    /// The transport failed while reading (the error is the transport's, not the format's).
    pub io: bool,
    /// The transport's own error, when reading failed with one (a timeout, an io exit).
    pub transport: Option<TransportError>,
}

fn format_name(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Csv => "csv",
        OutputFormat::Jsonl => "jsonl",
        OutputFormat::Parquet => "parquet",
        OutputFormat::Arrow => "arrow",
        OutputFormat::Opaque => "opaque",
    }
}

/// Decoded output: the batches, and a task that ends with the number of records read.
pub struct DecodedOutput {
    pub stream: SendableRecordBatchStream,
    pub task: JoinHandle<Result<u64, OutputDecodeError>>,
}

/// Decodes a transformer's output as `format` (not `opaque`). Text schemas are inferred
/// from the first records (int64, float64, boolean, else string); Arrow carries its own;
/// Parquet is staged in a temporary file, as its footer comes last.
pub async fn decode_output(
    reader: impl AsyncRead + Send + Unpin + 'static,
    format: OutputFormat,
) -> Result<DecodedOutput, OutputDecodeError> {
    let name = format_name(format);
    let (schema_tx, schema_rx) = oneshot::channel::<SchemaRef>();
    let (tx, rx) = mpsc::channel::<Result<RecordBatch, DataFusionError>>(4);
    let bridge = SyncIoBridge::new(reader);
    let task = tokio::task::spawn_blocking(move || -> Result<u64, OutputDecodeError> {
        let fail = |detail: String, io: bool| OutputDecodeError {
            format: name,
            detail,
            io,
            transport: None,
        };
        let read_failed = |e: &std::io::Error| OutputDecodeError {
            format: name,
            detail: e.to_string(),
            io: true,
            transport: transport_error(e).cloned(),
        };
        let mut records = 0u64;
        let mut emit = |batch: RecordBatch| -> bool {
            records += batch.num_rows() as u64;
            batch.num_rows() == 0 || tx.blocking_send(Ok(batch)).is_ok()
        };
        match format {
            OutputFormat::Csv | OutputFormat::Jsonl => {
                let source = if format == OutputFormat::Csv {
                    SourceFormat::Csv
                } else {
                    SourceFormat::Jsonl
                };
                let mut reader = BufReader::with_capacity(1 << 16, bridge);
                let mut head = Vec::new();
                (&mut reader)
                    .take(INFER_BYTES as u64)
                    .read_to_end(&mut head)
                    .map_err(|e| read_failed(&e))?;
                // Complete the last line so inference sees whole records.
                if head.len() == INFER_BYTES && !head.ends_with(b"\n") {
                    reader
                        .read_until(b'\n', &mut head)
                        .map_err(|e| read_failed(&e))?;
                }
                if head.iter().all(|b| b.is_ascii_whitespace()) {
                    let _ = schema_tx.send(Arc::new(Schema::empty()));
                    return Ok(0);
                }
                let options = CsvReadOptions::default();
                let schema = format::infer_schema(
                    source,
                    Box::new(Cursor::new(head.clone())),
                    &options,
                    INFER_RECORDS,
                )
                .map_err(|e| fail(e.to_string(), false))?;
                let _ = schema_tx.send(schema.clone());
                let all: Box<dyn BufRead + Send> = Box::new(Cursor::new(head).chain(reader));
                let mut decoder = format::open_decoder(
                    source,
                    all,
                    schema,
                    &options,
                    BATCH_ROWS,
                    "the transformer output",
                )
                .map_err(|e| fail(e.to_string(), false))?;
                while let Some(decoded) = decoder.next().map_err(|e| match &e {
                    format::DecodeError::Read { source, .. } => read_failed(source),
                    _ => fail(e.to_string(), false),
                })? {
                    if let Some(bad) = decoded.bad.first() {
                        return Err(fail(format!("line {}: {}", bad.line, bad.error), false));
                    }
                    if !emit(decoded.batch) {
                        break;
                    }
                }
            }
            OutputFormat::Arrow => {
                let reader = StreamReader::try_new(BufReader::new(bridge), None)
                    .map_err(|e| arrow_failed(e, &fail, &read_failed))?;
                let _ = schema_tx.send(reader.schema());
                for batch in reader {
                    let batch = batch.map_err(|e| arrow_failed(e, &fail, &read_failed))?;
                    if !emit(batch) {
                        break;
                    }
                }
            }
            OutputFormat::Parquet => {
                let mut file = tempfile::tempfile().map_err(|e| fail(e.to_string(), true))?;
                let mut bridge = bridge;
                std::io::copy(&mut bridge, &mut file).map_err(|e| read_failed(&e))?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| fail(e.to_string(), false))?;
                let _ = schema_tx.send(builder.schema().clone());
                let reader = builder
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(|e| fail(e.to_string(), false))?;
                for batch in reader {
                    let batch = batch.map_err(|e| fail(e.to_string(), false))?;
                    if !emit(batch) {
                        break;
                    }
                }
            }
            OutputFormat::Opaque => return Err(fail("opaque output has no records".into(), false)),
        }
        Ok(records)
    });
    let schema = match schema_rx.await {
        Ok(schema) => schema,
        // The task ended before it knew the schema: its error says why.
        Err(_) => {
            return Err(match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => OutputDecodeError {
                    format: name,
                    detail: "no schema".into(),
                    io: false,
                    transport: None,
                },
                Err(e) => OutputDecodeError {
                    format: name,
                    detail: e.to_string(),
                    io: false,
                    transport: None,
                },
            });
        }
    };
    let batches = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let stream = Box::pin(RecordBatchStreamAdapter::new(schema, batches));
    Ok(DecodedOutput { stream, task })
}

/// An Arrow error: a read failure is the transport's, anything else the format's.
fn arrow_failed(
    e: arrow::error::ArrowError,
    fail: &dyn Fn(String, bool) -> OutputDecodeError,
    read_failed: &dyn Fn(&std::io::Error) -> OutputDecodeError,
) -> OutputDecodeError {
    match &e {
        arrow::error::ArrowError::IoError(_, source) => read_failed(source),
        _ => fail(e.to_string(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["a", "b, c", "\"d\""])),
            ],
        )
        .unwrap()
    }

    fn stream_of(batches: Vec<RecordBatch>) -> SendableRecordBatchStream {
        let schema = batches[0].schema();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }

    async fn round_trip(input: StepInput, output: OutputFormat) -> Vec<RecordBatch> {
        let body = encode_batches(stream_of(vec![batch(), batch()]), input);
        let bytes: Vec<Bytes> = body.map(|c| c.unwrap()).collect().await;
        let all: Vec<u8> = bytes.concat();
        let decoded = decode_output(Cursor::new(all), output).await.unwrap();
        let batches: Vec<RecordBatch> = decoded.stream.map(|b| b.unwrap()).collect().await;
        assert_eq!(decoded.task.await.unwrap().unwrap(), 6);
        batches
    }

    #[tokio::test]
    async fn every_structured_format_round_trips() {
        for (input, output) in [
            (StepInput::Csv, OutputFormat::Csv),
            (StepInput::Jsonl, OutputFormat::Jsonl),
            (StepInput::Arrow, OutputFormat::Arrow),
        ] {
            let batches = round_trip(input, output).await;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(rows, 6, "{input:?}");
            let names = batches[0]
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            assert_eq!(names.value(1), "b, c", "{input:?}");
            assert_eq!(names.value(2), "\"d\"", "{input:?}");
        }
    }

    #[tokio::test]
    async fn undecodable_output_names_the_line() {
        let text = b"{\"id\":1}\n{\"id\":2}\nnot json\n".to_vec();
        let decoded = decode_output(Cursor::new(text), OutputFormat::Jsonl)
            .await
            .unwrap();
        let _: Vec<_> = decoded.stream.collect().await;
        let error = decoded.task.await.unwrap().unwrap_err();
        assert!(error.detail.starts_with("line 3"), "{error}");
        let error = match decode_output(Cursor::new(b"garbage".to_vec()), OutputFormat::Arrow).await
        {
            Err(e) => e,
            Ok(_) => panic!("garbage decoded as Arrow"),
        };
        assert_eq!(error.format, "arrow");
    }
}
