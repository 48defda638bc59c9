//! `sluice worker`: run one shard of a planned run (what each pod, or local process, runs).

use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::storage::uri::S3Uri;
use crate::worker::{WorkerOptions, run_shard};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The run's plan: s3://<state>/runs/<job>/<run-id>/plan.json
    #[arg(long, value_name = "URI")]
    pub plan: S3Uri,
    /// The completion index (a Kubernetes Indexed Job sets JOB_COMPLETION_INDEX); without
    /// `--shard-map` it is the shard to run.
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub shard: u32,
    /// The shards a resumed run's Job covers, in completion-index order: index i runs the
    /// i-th shard of this list (`--shard-map 3,7,9`).
    #[arg(long, value_name = "SHARDS", value_delimiter = ',')]
    pub shard_map: Vec<u32>,
    /// Source objects processed at the same time.
    #[arg(long, default_value_t = WorkerOptions::default().objects_in_flight)]
    pub objects_in_flight: usize,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let shard = if args.shard_map.is_empty() {
        args.shard
    } else {
        match args.shard_map.get(args.shard as usize) {
            Some(shard) => *shard,
            None => {
                tracing::error!(
                    index = args.shard,
                    shards = args.shard_map.len(),
                    "the completion index is outside --shard-map"
                );
                return Ok(ExitCode::Config);
            }
        }
    };
    crate::cli::runtime()?.block_on(async {
        // A worker's data is in the bucket its plan names, never on a local disk.
        let conn = args
            .connect
            .connect_refusing_embedded(None, Some("`sluice worker` reads the plan's bucket"))
            .await?;
        let options = WorkerOptions {
            objects_in_flight: args.objects_in_flight,
        };
        Ok(run_shard(conn.storage, &args.plan, shard, options).await?)
    })
}
