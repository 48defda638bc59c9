//! `sluice resume RUN`: a new worker Job over the shards no earlier Job of the run
//! completed, then watch and publish as `submit` does.

use std::time::Duration;

use crate::cli::cluster_args::RunArgs;
use crate::error::ExitCode;
use crate::exec::submit;

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Print the new Job's name and return without waiting.
    #[arg(long)]
    pub detach: bool,
    /// Seconds between two looks at the Job while watching.
    #[arg(long, default_value_t = 5)]
    pub poll: u64,
}

pub fn run(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    crate::cli::runtime()?.block_on(async {
        let started = chrono::Utc::now();
        let conn = args.run.connect.connect(None).await?;
        let cluster = args.run.cluster().await?;
        let resumed = submit::resume(&conn.storage, &cluster, &args.run.run).await?;
        match &resumed {
            Some(job) if args.detach => {
                println!("{}", job.job);
                return Ok(ExitCode::Done);
            }
            Some(job) => eprintln!("resuming run {} with Job {}", job.run_id, job.job),
            None => eprintln!(
                "every shard of run {} is complete; publishing",
                args.run.run
            ),
        }
        let report = submit::watch_and_publish(
            &conn.storage,
            &cluster,
            &args.run.run,
            started,
            Duration::from_secs(args.poll.max(1)),
        )
        .await?;
        println!(
            "run {} {}: {} of {} objects done, {} records out",
            report.run_id,
            if report.exit_code == 0 {
                "succeeded"
            } else {
                "FAILED"
            },
            report.objects_done,
            report.objects,
            report.records.output
        );
        Ok(ExitCode::from_code(report.exit_code).unwrap_or(ExitCode::Transient))
    })
}
