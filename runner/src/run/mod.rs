//! A run's lifecycle on either engine: start it (plan and state in the bucket), carry out
//! its shards (locally through the local pod runner, or as a worker Job on a cluster),
//! publish it (`report.json`, a Delta table's commit, and `_SUCCESS.json` last), verify a
//! published run, and collect what abandoned runs left behind.

pub mod gc;
pub mod local;
pub mod metrics;
pub mod publish;
pub mod report;
pub mod start;
pub mod submit;
pub mod summary;
pub mod table;
pub mod table_stats;
pub mod verify;

pub use local::{LocalRun, LocalRunOptions, run_locally};
