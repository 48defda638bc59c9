//! `sluice schedule next FILE`: the next fire times of a schedule, in its time zone and UTC.

use std::path::PathBuf;

use crate::exit::ExitCode;
use crate::schedule::fire;
use crate::spec::schedule::cron::{describe, run_id};
use crate::spec::schedule::load_schedule_file;

#[derive(Debug, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Print the next fire times, each with its data interval and run id.
    Next(NextArgs),
}

#[derive(Debug, clap::Args)]
pub struct NextArgs {
    /// The schedule file (`kind: Schedule`).
    pub schedule: PathBuf,
    /// How many fire times.
    #[arg(short = 'n', long, default_value_t = 5)]
    pub count: usize,
    /// Count from this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    pub after: Option<chrono::DateTime<chrono::Utc>>,
}

pub fn run(cmd: ScheduleCommand) -> anyhow::Result<ExitCode> {
    let ScheduleCommand::Next(args) = cmd;
    let schedule = load_schedule_file(&args.schedule)?;
    let tz = schedule.time_zone;
    let after = args.after.unwrap_or_else(chrono::Utc::now);
    println!(
        "{} ({} in {}{})",
        schedule.name,
        schedule.cron.expr(),
        tz,
        if schedule.suspend { ", suspended" } else { "" }
    );
    for time in schedule.cron.fires_between(
        after,
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
        tz,
        args.count,
    ) {
        let id = match fire::prepare(&schedule, time) {
            Ok(fire) => fire.run_id,
            Err(_) => run_id(&schedule.name, time),
        };
        let (start, _) = schedule.cron.interval_of(time, tz);
        println!(
            "  {}  run {id}  interval from {}",
            describe(time, tz),
            start.format("%Y-%m-%dT%H:%MZ")
        );
    }
    Ok(ExitCode::Done)
}
