//! The integration test binary: one binary keeps link time down. Each module below is one area.

mod format; // the format module: CSV/JSONL decoding, bad records, inference, encoders, counts
mod jobs; // whole jobs through the binary: outputs, rejects, manifests, exit codes
mod spec; // job file loading and error reporting
mod storage; // the storage module: listing, ranged reads, multipart uploads, aborts
mod support; // S3 servers for tests: embedded and moto
