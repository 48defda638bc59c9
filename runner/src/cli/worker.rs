//! `sluice worker`: run one shard of a planned run (what each pod, or local process, runs).

use crate::cli::connect::ConnectArgs;
use crate::error::ExitCode;
use crate::storage::uri::S3Uri;
use crate::worker::{WorkerOptions, run_shard};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The run's plan: s3://<state>/runs/<job>/<run-id>/plan.json
    #[arg(long, value_name = "URI")]
    pub plan: S3Uri,
    /// The shard to run (a Kubernetes Indexed Job sets JOB_COMPLETION_INDEX).
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub shard: u32,
    /// Source objects processed at the same time.
    #[arg(long, default_value_t = WorkerOptions::default().objects_in_flight)]
    pub objects_in_flight: usize,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(None).await?;
        let options = WorkerOptions {
            objects_in_flight: args.objects_in_flight,
        };
        Ok(run_shard(conn.storage, &args.plan, args.shard, options).await?)
    })
}
