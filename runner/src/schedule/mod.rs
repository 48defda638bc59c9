//! Schedules (`kind: Schedule`): cron evaluation in a time zone, params per fire, catch-up
//! after downtime, the scheduler daemon, run history in the bucket, leader election between
//! replicas, and the scheduler's metrics.

pub mod backfill;
pub mod catchup;
pub mod cron;
pub mod daemon;
pub mod fire;
pub mod leader;
pub mod metrics;
pub mod params;
