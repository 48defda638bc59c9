//! Running schedules (`kind: Schedule`): firing their targets, catch-up after downtime, the
//! scheduler daemon, run history in the bucket, leader election between replicas, and the
//! scheduler's metrics. The schedule file, its cron and its params are `spec::schedule`.

pub mod backfill;
pub mod catchup;
pub mod daemon;
pub mod fire;
pub mod leader;
pub mod metrics;
