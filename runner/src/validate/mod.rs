//! Data validation: rules judged per object as its output streams, per shard and per run
//! when the run publishes; their outcomes and the run's report of them.

pub mod keys;
pub mod object;
pub mod rows;
pub mod run;
pub mod schema;
pub mod sql;
pub mod text_outputs;
