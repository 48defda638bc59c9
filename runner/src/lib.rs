//! sluice: a batch ETL runner. Job files in, Kubernetes Indexed Jobs (or local processes) out.
//!
//! The data flows spec -> plan -> worker (storage -> format -> transform -> format -> storage)
//! -> exec (run, publish). See docs/architecture.md.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod error;
pub mod exec;
pub mod format;
pub mod plan;
pub mod schedule;
pub mod spec;
pub mod state;
pub mod storage;
pub mod task;
pub mod transform;
pub mod transformer;
pub mod validate;
pub mod worker;
