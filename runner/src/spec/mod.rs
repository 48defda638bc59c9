//! The job file format: raw structs, loading with located errors, validation into `Job`.

pub mod job;
