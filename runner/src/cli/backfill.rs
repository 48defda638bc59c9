//! `sluice backfill SCHEDULE --from T1 --to T2`: run the past intervals in a range, oldest
//! first, skipping those published already.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::cli::connect::ConnectArgs;
use crate::exit::{describe_exit, worst_exit};
use crate::schedule::backfill::backfill;
use crate::schedule::fire::Executor;
use crate::spec::schedule::load_schedule_file;

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The schedule file (`kind: Schedule`).
    pub schedule: PathBuf,
    /// The start of the range (RFC 3339): intervals starting before it are left out.
    #[arg(long, value_name = "TIME")]
    pub from: DateTime<Utc>,
    /// The end of the range (RFC 3339): intervals ending after it are left out.
    #[arg(long, value_name = "TIME")]
    pub to: DateTime<Utc>,
    /// With `concurrencyPolicy: Allow`, at most this many runs at once (otherwise one).
    #[arg(long, default_value_t = 2)]
    pub max_parallel: usize,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Returns the worst exit code of the runs (a task's own for a task definition target).
pub fn run(args: BackfillArgs) -> anyhow::Result<u8> {
    let schedule = load_schedule_file(&args.schedule)?;
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(None).await?;
        let executor = Executor::Local {
            program: std::env::current_exe()?,
            env: conn.endpoint.env.clone(),
        };
        let runs = backfill(
            &schedule,
            &conn.storage,
            &executor,
            args.from,
            args.to,
            args.max_parallel,
        )
        .await?;
        for run in &runs {
            let status = match run.exit {
                None => "published already".to_string(),
                Some(exit) => describe_exit(exit),
            };
            println!(
                "{}  {}  {status}",
                run.scheduled.format("%Y-%m-%dT%H:%MZ"),
                run.run_id
            );
        }
        if runs.is_empty() {
            println!("no whole interval of {} lies in the range", schedule.name);
        }
        Ok(worst_exit(runs.iter().filter_map(|r| r.exit)))
    })
}
