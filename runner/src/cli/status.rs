//! `sluice status RUN`: a run's Jobs, their conditions, completed and failed shards, and
//! the shards' progress with an ETA.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use crate::cli::cluster_args::{ClusterRunArgs, RunStateArgs};
use crate::exit::ExitCode;
use crate::kubernetes::cluster::format_indexes;
use crate::pod::progress::ProgressView;
use crate::run::submit::{self, ClusterRunStatus};
use crate::spec::size::human_bytes;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub run: ClusterRunArgs,
    #[command(flatten)]
    pub state: RunStateArgs,
    /// Follow the run until its Jobs end: a bar per running shard on a terminal, a line
    /// every 10 s otherwise; then print the status.
    #[arg(long)]
    pub watch: bool,
    /// The run is a pipeline run of this pipeline file: show its steps from the record in
    /// the bucket (no cluster needed), each running job step with its progress.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["state", "job", "watch"])]
    pub pipeline: Option<std::path::PathBuf>,
    /// Seconds between looks at the run with --watch.
    #[arg(long, default_value_t = 2, requires = "watch")]
    pub poll: u64,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    if let Some(pipeline) = &args.pipeline {
        return crate::cli::pipeline::status(&args.run.run, pipeline, &args.run.connect);
    }
    crate::cli::runtime()?.block_on(async {
        let conn = args.run.connect.connect(None).await?;
        let cluster = args.run.cluster().await?;
        let known = args.state.layout(&args.run.run)?;
        let look = || submit::status(&conn.storage, &cluster, &args.run.run, known.as_ref());
        let mut status = look().await?;
        if args.watch {
            let mut view = ProgressView::new(
                std::io::stderr().is_terminal(),
                status.plan.shards.len(),
                status.plan.bytes,
            );
            while status.latest().is_some_and(|job| !job.finished()) {
                view.show(&status.progress);
                tokio::time::sleep(Duration::from_secs(args.poll.max(1))).await;
                status = look().await?;
            }
            view.show(&status.progress);
            if let Some(bars) = view.bars() {
                bars.finish();
            }
        }
        print!("{}", render(&status));
        Ok(ExitCode::Done)
    })
}

/// The status as a short table.
pub fn render(status: &ClusterRunStatus) -> String {
    let mut out = String::new();
    let total = status.plan.shards.len();
    let _ = writeln!(
        out,
        "run {}: {}/{} shards complete, {} failed; {} of {}{}",
        status.run_id,
        status.completed().len(),
        total,
        status.failed().len(),
        human_bytes(status.bytes_done()),
        human_bytes(status.plan.bytes),
        status
            .eta_seconds()
            .map(|s| format!(", ETA {s:.0}s"))
            .unwrap_or_default()
    );
    if status.published {
        let _ = writeln!(out, "  published: {}", status.layout.success());
    }
    if status.jobs.is_empty() {
        let _ = writeln!(
            out,
            "  no Jobs of the run are left (cancelled, or removed after their TTL); shards and progress are the bucket's ({})",
            status.layout.root()
        );
    }
    for job in &status.jobs {
        let state = if job.succeeded {
            "complete"
        } else if job.failed_job {
            "failed"
        } else {
            "running"
        };
        let _ = writeln!(
            out,
            "  Job {} ({state}{}): shards [{}], completed [{}], failed [{}], active {}",
            job.name,
            job.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            format_indexes(&job.shards.iter().copied().collect()),
            format_indexes(&job.completed),
            format_indexes(&job.failed),
            job.active
        );
    }
    let _ = writeln!(
        out,
        "  {:>5}  {:>8}  {:>12}  {:>12}  {:>10}",
        "shard", "objects", "done", "bytes", "rate/s"
    );
    for (shard, progress) in status.plan.shards.iter().zip(&status.progress) {
        let (objects, done, rate) = progress
            .as_ref()
            .map_or((0, 0, 0.0), |p| (p.objects_done, p.bytes_done, p.rate));
        let _ = writeln!(
            out,
            "  {:>5}  {:>3}/{:<4}  {:>12}  {:>12}  {:>10}",
            shard.index,
            objects,
            shard.objects.len(),
            human_bytes(done),
            human_bytes(shard.bytes),
            human_bytes(rate as u64)
        );
    }
    out
}
