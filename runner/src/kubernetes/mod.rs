//! What Kubernetes sees of sluice: a job, a task, a pipeline or a schedule as typed
//! Kubernetes objects (render, pipeline, cronjob), and a run's objects on a cluster through the API (cluster). It knows
//! objects, not runs: starting, watching to the end and publishing a run is `run`'s.

pub mod cluster;
pub mod cronjob;
pub mod pipeline;
pub mod pod;
pub mod render;
pub mod sidecars;
