//! Decoding source objects into Arrow batches and encoding batches into output objects.

pub mod options;
