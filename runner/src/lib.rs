//! sluice: a batch ETL runner. Job files in, Kubernetes Indexed Jobs (or local processes) out.
//!
//! The data flows spec -> plan -> worker (storage -> format -> transform -> format -> storage)
//! -> exec (run, publish). See docs/architecture.md.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod exit;
pub mod format;
pub mod kubernetes;
pub mod pipeline;
pub mod plan;
pub mod pod;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod state;
pub mod storage;
pub mod task;
pub mod transform;
pub mod transformer_server;
pub mod validate;
pub mod worker;
