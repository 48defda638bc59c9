//! `sluice logs RUN [--shard I] [--follow]`: the worker logs of a run, found by the run's
//! label and the pods' completion index.

use futures::{AsyncBufReadExt, StreamExt};

use crate::cli::cluster_args::ClusterRunArgs;
use crate::exit::ExitCode;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub run: ClusterRunArgs,
    /// Only the pods of this completion index.
    #[arg(long)]
    pub shard: Option<u32>,
    /// Keep streaming new lines until the pods end.
    #[arg(long, short)]
    pub follow: bool,
}

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    crate::cli::runtime()?.block_on(async {
        let cluster = args.run.cluster().await?;
        let pods = cluster.worker_pods(&args.run.run, args.shard).await?;
        if pods.is_empty() {
            return Err(crate::cli::exit::UsageError::new(format!(
                "no worker pods of run {} in namespace {} (finished pods are deleted {} after the Job ends)",
                args.run.run, cluster.namespace, "ttlSecondsAfterFinished"
            ))
            .into());
        }
        for pod in pods {
            let name = pod.metadata.name.unwrap_or_default();
            println!("==> {name} <==");
            let mut lines = cluster.logs(&name, args.follow).await?.lines();
            while let Some(line) = lines.next().await {
                println!("{}", line?);
            }
        }
        Ok(ExitCode::Done)
    })
}
