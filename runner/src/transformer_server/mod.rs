//! The built-in transformer: streaming operations served over the transformer protocol
//! (docs/transformers.md), for use as a sidecar beside the worker.

pub mod bridge;
pub mod ops;
pub mod serve;

pub use ops::{Op, OpError, Transform};
pub use serve::{ListenError, parse_listen, serve, serve_with_shutdown};

/// The source object key, percent-encoded UTF-8 (hpush and hpull).
pub const KEY_HEADER: &str = "x-sluice-key";
/// The object size in bytes, when the worker knows it (hpush).
pub const OBJECT_SIZE_HEADER: &str = "x-sluice-object-size";
/// The URL the transformer fetches the object from (hpull; also in the `url` query parameter).
pub const URL_HEADER: &str = "x-sluice-url";
/// The environment variable that holds the object key of an `io` transformer.
pub const KEY_ENV: &str = "SLUICE_KEY";
