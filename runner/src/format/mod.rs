//! Decoding source objects into Arrow batches and encoding batches into output objects.
//!
//! Text sources decode as a stream (`open_decoder`), reporting bad records beside each
//! batch; sinks encode as a stream (`open_encoder`); the count functions read stored
//! outputs back to check them.

mod column;
mod compression;
mod count;
mod csv_chunks;
pub mod csv_cut;
mod csv_decode;
mod csv_encode;
mod csv_parallel;
mod csv_records;
mod decode;
mod encode;
mod infer;
mod jsonl_decode;
mod jsonl_encode;
pub mod options;
mod parquet_encode;
pub mod partition;
mod temporal;
mod throughput;

pub use compression::{CorruptInput, decompress, decompress_async, is_corrupt_input};
pub use count::{count_csv_records, count_lines, parquet_rows};
pub use decode::{
    BadRecord, DecodeError, Decoded, Decoder, HeaderMismatch, open_decoder, open_parallel_decoder,
};
pub use encode::{EncodeError, Encoder, open_encoder};
pub use infer::infer_schema;
pub use temporal::FORMAT_METADATA_KEY;
pub use throughput::{Throughput, ThroughputError, decode_encode_throughput};
