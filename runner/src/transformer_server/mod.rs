//! The built-in transformer: streaming operations served over the transformer protocol
//! (docs/transformers.md), for use as a sidecar beside the worker.

pub mod bridge;
pub mod ops;
pub mod serve;

pub use ops::{Op, OpError, Transform};
pub use serve::{ListenError, parse_listen, serve, serve_with_shutdown};
