//! Flags shared by the commands that operate a run on a cluster.

use crate::cli::connect::ConnectArgs;
use crate::kubernetes::cluster::Cluster;
use crate::kubernetes::render::DEFAULT_NAMESPACE;

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterRunArgs {
    /// The run id (`sluice submit` prints it).
    pub run: String,
    /// The namespace of the run.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl ClusterRunArgs {
    pub async fn cluster(&self) -> anyhow::Result<Cluster> {
        Ok(Cluster::connect(&self.namespace).await?)
    }
}
