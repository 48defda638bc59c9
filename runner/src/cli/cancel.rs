//! `sluice cancel RUN`: delete a run's Jobs and pods. Its state stays in the bucket, so
//! `sluice resume RUN` can finish it later.

use crate::cli::cluster_args::ClusterRunArgs;
use crate::exit::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub run: ClusterRunArgs,
}

pub fn run(args: CancelArgs) -> anyhow::Result<ExitCode> {
    crate::cli::runtime()?.block_on(async {
        let cluster = args.run.cluster().await?;
        // Where the run's state is, told before its Jobs (which say it) are gone.
        let state = crate::run::submit::locate(&cluster, &args.run.run, None)
            .await
            .ok()
            .map(|layout| layout.root().to_string());
        let deleted = cluster.delete_run(&args.run.run).await?;
        if deleted.is_empty() {
            // No such run here: a usage error (2), not a transient one to retry.
            return Err(crate::kubernetes::cluster::ClusterError::NoRun {
                run_id: args.run.run.clone(),
                namespace: cluster.namespace.clone(),
            }
            .into());
        }
        for job in deleted {
            println!("deleted Job {job}");
        }
        if let Some(state) = state {
            println!(
                "the run's state stays at {state}; `sluice resume {} --state {state}` finishes it",
                args.run.run
            );
        }
        Ok(ExitCode::Done)
    })
}
