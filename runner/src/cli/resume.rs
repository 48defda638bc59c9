//! `sluice resume RUN`: a new worker Job over the shards no earlier Job of the run
//! completed, then watch and publish as `submit` does. With `--local JOB`, the run is
//! finished on this machine instead.

use std::io::IsTerminal;
use std::time::Duration;

use crate::cli::cluster_args::{ClusterRunArgs, RunStateArgs};
use crate::exit::ExitCode;
use crate::run::submit;

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub run: ClusterRunArgs,
    /// Print the new Job's name and return without waiting.
    #[arg(long)]
    pub detach: bool,
    /// Seconds between two looks at the Job while watching.
    #[arg(long, default_value_t = 5)]
    pub poll: u64,
    /// Finish a run that `sluice run` started, on this machine: the job file locates its
    /// state; every shard runs again and skips the objects already done. Given a pipeline
    /// file, the pipeline run: every step that did not succeed runs again (a job step
    /// resumes its own run).
    #[arg(long, value_name = "JOB", conflicts_with_all = ["state", "job"])]
    pub local: Option<std::path::PathBuf>,
    /// The run is a pipeline run of this pipeline file: finish it with its steps on the
    /// cluster (every step that did not succeed runs again; a job step resumes its own run).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["local", "state", "job", "detach"])]
    pub pipeline: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub state: RunStateArgs,
    /// The image of the new worker Job when no Job of the run is left to take it from
    /// (default: the job file's, else sluice's).
    #[arg(long)]
    pub image: Option<String>,
}

pub fn run(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    if let Some(job) = &args.local {
        return resume_locally(&args, job);
    }
    if let Some(pipeline) = &args.pipeline {
        return crate::cli::pipeline::resume_on_cluster(
            &args.run.run,
            pipeline,
            &args.run.namespace,
            args.image.as_deref(),
            args.poll,
            &args.run.connect,
        );
    }
    crate::cli::runtime()?.block_on(async {
        let started = chrono::Utc::now();
        let conn = args.run.connect.connect(None).await?;
        let cluster = args.run.cluster().await?;
        let known = args.state.layout(&args.run.run)?;
        let resumed = submit::resume(
            &conn.storage,
            &cluster,
            &args.run.run,
            known.as_ref(),
            args.image.as_deref(),
        )
        .await?;
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
            known.as_ref(),
            started,
            Duration::from_secs(args.poll.max(1)),
            std::io::stderr().is_terminal(),
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

fn resume_locally(args: &ResumeArgs, job: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    if crate::cli::pipeline::is_pipeline(job) {
        return crate::cli::pipeline::run_here(
            job,
            &[],
            Some(args.run.run.clone()),
            &args.run.connect,
            true,
        );
    }
    let loaded = crate::spec::load_file(job, &[])?;
    crate::cli::runtime()?.block_on(async {
        let conn = args
            .run
            .connect
            .connect(loaded.job.endpoint.as_deref())
            .await?;
        let layout =
            crate::state::RunLayout::new(&loaded.job.state, &loaded.job.name, &args.run.run);
        if conn.storage.head(&layout.success()).await?.is_some() {
            println!(
                "run {} is published already ({}); nothing to resume",
                args.run.run,
                layout.success()
            );
            return Ok(ExitCode::Done);
        }
        let options = crate::run::LocalRunOptions {
            program: std::env::current_exe()?,
            env: conn.endpoint.env.clone(),
            parallelism: None,
            run_id: Some(args.run.run.clone()),
            bar: std::io::stderr().is_terminal(),
            cpus: None,
            resume: true,
            full: false,
        };
        let run = crate::run::run_locally(&conn.storage, &loaded, options).await?;
        print!(
            "{}",
            crate::run::summary::render(&run.report, &run.layout, &loaded.job.sink.uri)
        );
        Ok(run.exit)
    })
}
