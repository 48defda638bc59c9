//! `sluice render FILE`: print the Kubernetes objects of a run as YAML, for
//! `kubectl apply -f -`, by the file's `kind`: a job's, a task definition's, or a schedule
//! as a native CronJob. Runs nothing and, by default, needs no S3 access.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::cli::task::OverrideArgs;
use crate::exit::ExitCode;
use crate::kubernetes::render::{
    Target, WorkerPlan, config_map, launcher_job, to_yaml, worker_job,
};
use crate::run::start::{make_plan, write_run};
use crate::spec;
use crate::state::RunLayout;

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The job file, task definition, pipeline (its ConfigMap and launcher Job), or
    /// schedule file (rendered as a CronJob).
    pub job: PathBuf,
    /// Set a param for this run (repeatable): --param month=2026-01
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = spec::parse_param_override)]
    pub params: Vec<(String, String)>,
    /// The sluice image (default: the job's `kubernetes.image`, else the release image).
    #[arg(long)]
    pub image: Option<String>,
    /// The namespace (default: the job's `kubernetes.namespace`, else `sluice`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Use this run id instead of `<job>-<UTC time>`.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Render the worker Job itself instead of a launcher: the run is planned now (this
    /// needs S3 access from here), its plan written to the state prefix, and the worker
    /// Job printed for that plan. Once the Job finished, `sluice resume RUN` publishes the
    /// run (and first reruns any shard that did not complete).
    #[arg(long)]
    pub no_launcher: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Overrides of one task run (task definitions only).
    #[command(flatten)]
    pub task: OverrideArgs,
}

pub fn run(args: RenderArgs) -> anyhow::Result<ExitCode> {
    if crate::spec::schedule::is_schedule_file(&args.job) {
        let schedule = crate::spec::schedule::load_schedule_file(&args.job)?;
        let yaml = crate::schedule::fire::render_cron_job(
            &schedule,
            args.image.as_deref(),
            args.namespace.as_deref(),
        )?;
        print!("{yaml}");
        return Ok(ExitCode::Done);
    }
    if spec::kind_of(&args.job).as_deref() == Some(spec::task::KIND) {
        return render_task(&args);
    }
    if crate::cli::pipeline::is_pipeline(&args.job) {
        if args.no_launcher || args.task.any() {
            return Err(usage(
                &args,
                "a pipeline is rendered as its launcher; --no-launcher and the task overrides are for job files and task definitions",
            ));
        }
        return crate::cli::pipeline::render(
            &args.job,
            &args.params,
            args.image.as_deref(),
            args.namespace.as_deref(),
            args.run_id.clone(),
        );
    }
    if args.task.any() {
        return Err(usage(
            &args,
            "--command, --entrypoint, --env, --container and -- ARGS are for task definitions",
        ));
    }
    let loaded = spec::load_file(&args.job, &args.params)?;
    let job = &loaded.job;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| crate::plan::new_run_id(&job.name, chrono::Utc::now()));
    let target = Target::new(
        job,
        args.image.as_deref(),
        args.namespace.as_deref(),
        run_id.clone(),
    );
    let map = serde_json::to_value(config_map(job, &loaded.resolved_yaml, &target))?;
    if !args.no_launcher {
        let launcher = serde_json::to_value(launcher_job(job, &target))?;
        print!("{}", to_yaml(&[map, launcher]));
        return Ok(ExitCode::Done);
    }
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(job.endpoint.as_deref()).await?;
        if conn.embedded.is_some() {
            tracing::warn!(
                "the plan is written to the embedded S3 server on this machine, which pods on a cluster cannot reach; set --endpoint or AWS credentials"
            );
        }
        let layout = RunLayout::new(&job.state, &job.name, &run_id);
        let plan = make_plan(&conn.storage, job, &run_id, false).await?;
        write_run(&conn.storage, &layout, &plan, &loaded.resolved_yaml).await?;
        let worker = worker_job(
            job,
            &target,
            &WorkerPlan::all(layout.plan(), plan.shards.len() as u32),
        );
        print!("{}", to_yaml(&[map, serde_json::to_value(worker)?]));
        Ok(ExitCode::Done)
    })
}

/// The Job of one run of a task definition, with the overrides of `sluice task run`.
fn render_task(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    if !args.params.is_empty() || args.image.is_some() || args.no_launcher {
        return Err(usage(
            args,
            "--param, --image and --no-launcher are for job files; a task definition names its images",
        ));
    }
    let def = spec::load_task_file(&args.job)?;
    let overrides = args
        .task
        .to_overrides(args.run_id.clone(), args.namespace.clone())?;
    let job = crate::task::render(&def, &overrides)?;
    print!("{}", to_yaml(&[serde_json::to_value(job)?]));
    Ok(ExitCode::Done)
}

fn usage(args: &RenderArgs, message: &str) -> anyhow::Error {
    anyhow::Error::new(spec::SpecErrors::unreadable(
        &args.job.display().to_string(),
        message.to_string(),
    ))
}
