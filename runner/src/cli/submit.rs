//! `sluice submit JOB`: plan the job, create its ConfigMap and worker Job on a cluster,
//! watch the Job to its end, publish the run and exit with its outcome.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::connect::ConnectArgs;
use crate::cli::exit::UsageError;
use crate::exit::ExitCode;
use crate::kubernetes::cluster::Cluster;
use crate::kubernetes::cronjob::scheduled_time_of;
use crate::kubernetes::render::Target;
use crate::run::{submit, summary};
use crate::spec;

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The job file (or pipeline file).
    pub job: PathBuf,
    /// Set a param for this run (repeatable): --param month=2026-01
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = spec::parse_param_override)]
    pub params: Vec<(String, String)>,
    /// The sluice image of the worker pods (default: the job's `kubernetes.image`).
    #[arg(long)]
    pub image: Option<String>,
    /// The namespace (default: the job's `kubernetes.namespace`, else `sluice`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Use this run id instead of `<job>-<UTC time>`. Submitting an existing run id picks
    /// that run up: its plan and Job are reused.
    #[arg(long, conflicts_with = "scheduled_job")]
    pub run_id: Option<String>,
    /// The name of the Job a CronJob created for this run (`<cronjob>-<scheduled time in
    /// minutes since the epoch>`, as the CronJob controller names it): the run id becomes
    /// `<job>-<scheduled time, UTC, YYYYMMDDTHHMMZ>`, as the scheduler names a fire, so a
    /// retried launcher resumes the run of its fire. The CronJob that `sluice render
    /// SCHEDULE` prints passes it.
    #[arg(long, value_name = "JOB")]
    pub scheduled_job: Option<String>,
    /// Print the run id once the Job is created and return without waiting.
    #[arg(long)]
    pub detach: bool,
    /// Run as the launcher inside the cluster: the job file comes from the run's ConfigMap,
    /// which therefore exists already.
    #[arg(long)]
    pub in_cluster: bool,
    /// Seconds between two looks at the Job while watching.
    #[arg(long, default_value_t = 5)]
    pub poll: u64,
    #[command(flatten)]
    pub metrics: crate::cli::run::MetricsArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The run id: `--run-id`, else the one of the scheduled fire `--scheduled-job` names, else
/// a new `<name>-<UTC time>`.
pub fn run_id_of(args: &SubmitArgs, name: &str) -> Result<String, UsageError> {
    Ok(match (&args.run_id, &args.scheduled_job) {
        (Some(run_id), _) => run_id.clone(),
        (None, Some(job)) => {
            let time = scheduled_time_of(job).ok_or_else(|| {
                UsageError::new(format!(
                    "--scheduled-job {job:?} is not the name of a Job a CronJob created (`<cronjob>-<minutes since the epoch>`)"
                ))
            })?;
            crate::spec::schedule::cron::run_id(name, time)
        }
        (None, None) => crate::plan::new_run_id(name, chrono::Utc::now()),
    })
}

pub fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    if crate::cli::pipeline::is_pipeline(&args.job) {
        return crate::cli::pipeline::submit(&args);
    }
    let loaded = spec::load_file(&args.job, &args.params)?;
    let job = &loaded.job;
    let run_id = run_id_of(&args, &job.name)?;
    let target = Target::new(
        job,
        args.image.as_deref(),
        args.namespace.as_deref(),
        run_id,
    );
    crate::cli::runtime()?.block_on(async {
        let started = chrono::Utc::now();
        let refuse = args
            .in_cluster
            .then_some("`sluice submit --in-cluster` is the launcher of a run on the cluster");
        let conn = args
            .connect
            .connect_refusing_embedded(job.endpoint.as_deref(), refuse)
            .await?;
        let cluster = Cluster::connect(&target.namespace).await?;
        let submitted =
            submit::submit(&conn.storage, &cluster, &loaded, &target, !args.in_cluster).await?;
        if args.detach {
            println!("{}", submitted.run_id);
            return Ok(ExitCode::Done);
        }
        let report = submit::watch_and_publish(
            &conn.storage,
            &cluster,
            &submitted.run_id,
            Some(&submitted.layout),
            started,
            Duration::from_secs(args.poll.max(1)),
            std::io::stderr().is_terminal(),
        )
        .await?;
        args.metrics.export(&report).await;
        print!(
            "{}",
            summary::render(&report, &submitted.layout, &job.sink.uri)
        );
        Ok(ExitCode::from_code(report.exit_code).unwrap_or(ExitCode::Transient))
    })
}
