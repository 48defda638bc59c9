//! Flags shared by the commands that operate a run on a cluster.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::kubernetes::cluster::Cluster;
use crate::kubernetes::render::DEFAULT_NAMESPACE;
use crate::spec;
use crate::state::RunLayout;
use crate::storage::uri::S3Uri;

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

/// Where a run's state is in the bucket, for a run whose Jobs are gone (cancelled, or
/// removed after `ttlSecondsAfterFinished`); while a Job is left, it says where.
#[derive(Debug, Clone, clap::Args)]
pub struct RunStateArgs {
    /// The run's state directory, `s3://<bucket>/<state>/runs/<job>/<run>/` (`sluice cancel`
    /// prints it).
    #[arg(long, value_name = "S3_URI", conflicts_with = "job")]
    pub state: Option<S3Uri>,
    /// The run's job file: its state prefix and name locate the run.
    #[arg(long, value_name = "FILE")]
    pub job: Option<PathBuf>,
}

impl RunStateArgs {
    /// The run's layout, if the flags name it.
    pub fn layout(&self, run_id: &str) -> anyhow::Result<Option<RunLayout>> {
        if let Some(state) = &self.state {
            return Ok(Some(RunLayout::from_root(state)));
        }
        let Some(file) = &self.job else {
            return Ok(None);
        };
        let job = spec::load_file(file, &[])?.job;
        Ok(Some(RunLayout::new(&job.state, &job.name, run_id)))
    }
}
