//! What Kubernetes sees of sluice: a job, a task or a schedule as typed Kubernetes objects
//! (render, cronjob), and a run's objects on a cluster through the API (cluster). It knows
//! objects, not runs: starting, watching to the end and publishing a run is `run`'s.

pub mod cluster;
pub mod cronjob;
pub mod pod;
pub mod render;
pub mod sidecars;
