//! Command-line parsing: one file per subcommand, no business logic.

use clap::{Parser, Subcommand};

pub mod backfill;
pub mod bench;
pub mod cancel;
pub mod check;
pub mod cluster_args;
pub mod connect;
pub mod demo;
mod exit;
pub mod gc;
pub mod logs;
pub mod pipeline;
pub mod plan;
pub mod render;
pub mod report;
pub mod resume;
pub mod run;
pub mod runs;
pub mod s3;
pub mod schedule;
pub mod scheduler;
pub mod schema;
pub mod status;
pub mod submit;
pub mod task;
pub mod transform;
pub mod transformer;
pub mod verify;
pub mod worker;

pub use exit::exit_code_of;

/// sluice runs batch ETL jobs: it lists a bucket, splits the objects into shards, and
/// transforms every object into validated output objects, locally or on Kubernetes.
///
/// Start with `sluice demo`, then `sluice run jobs/taxi-csv-to-parquet.yaml`.
/// With no S3 endpoint and no credentials configured, sluice serves the directory
/// `.sluice/s3/` as an embedded S3 endpoint (each sub-directory is a bucket).
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a sample taxi-trip dataset into the bucket `raw` and run the main job
    /// (jobs/taxi-csv-to-parquet.yaml) on it.
    Demo(demo::DemoArgs),
    /// Plan a job and run it locally: every shard as a local worker process, then publish.
    /// A pipeline runs its steps in DAG order, each as such a run.
    Run(run::RunArgs),
    /// List and shard a job's source and print the shard table, without running anything.
    Plan(plan::PlanArgs),
    /// Print the Kubernetes objects of a run as YAML (`sluice render FILE | kubectl apply -f -`):
    /// for a job, its ConfigMap and a launcher Job that plans, runs and publishes in the
    /// cluster; for a task definition, the Job of one run (with the overrides of `task run`).
    Render(render::RenderArgs),
    /// Task definitions (`kind: TaskDefinition`): run one once, here or on a cluster.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Run a job on Kubernetes: plan, create its ConfigMap and worker Job, watch it to the
    /// end, publish the run (kubeconfig or in-cluster credentials).
    Submit(submit::SubmitArgs),
    /// Show a run on the cluster: its Jobs, completed and failed shards, progress and ETA.
    Status(status::StatusArgs),
    /// Print the worker logs of a run (one shard with --shard; --follow to stream).
    Logs(logs::LogsArgs),
    /// Stop a run on the cluster: delete its Jobs and pods (its state stays in the bucket).
    Cancel(cancel::CancelArgs),
    /// Finish a run on the cluster: a new Job over the shards that did not complete.
    Resume(resume::ResumeArgs),
    /// List a job's runs from the state in the bucket: planned, published or failed.
    Runs(runs::RunsArgs),
    /// Re-check a published run against its _SUCCESS.json: every listed object still there
    /// with its size, checksum and record count, nothing unlisted under the sink (exit 3 if not).
    Verify(verify::VerifyArgs),
    /// Write a run's report page (report.html: charts, accounting, rules, rejects) from its
    /// state, to the bucket and a local file; --open shows it.
    Report(report::ReportArgs),
    /// Transform one object through the job's steps into a file or stdout (a try-out on a
    /// sample; nothing is written to the sink).
    Transform(transform::TransformArgs),
    /// Abort multipart uploads left open under a job's sink and state prefixes.
    Gc(gc::GcArgs),
    /// Run one shard of a planned run (what each pod of the Kubernetes Job runs).
    Worker(worker::WorkerArgs),
    /// Validate job files without running anything; prints every problem with file:line:column.
    Check(check::CheckArgs),
    /// Print the JSON Schema of the job file format (for editor completion).
    Schema(schema::SchemaArgs),
    /// Measure CSV -> typed Parquet throughput and peak memory (end to end, and decode +
    /// encode alone) and print the DuckDB command for the same conversion.
    Bench(bench::BenchArgs),
    /// Schedule tools: the next fire times of a schedule file.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Fire the runs of the schedules in a directory on time (locally, or on a cluster with
    /// --kube), catching up missed intervals; serves /healthz and /metrics.
    Scheduler(scheduler::SchedulerArgs),
    /// Run the past intervals of a schedule in a time range, oldest first.
    Backfill(backfill::BackfillArgs),
    /// S3 utilities: serve a directory as an S3 endpoint.
    #[command(subcommand)]
    S3(s3::S3Command),
    /// Transformer tools: the built-in transformer server.
    #[command(subcommand)]
    Transformer(transformer::TransformerCommand),
}

/// Runs the parsed command and returns the process exit status: sluice's exit code, or a
/// task's own for `task run` (and the worst of several runs' for `scheduler --once` and
/// `backfill`).
pub fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let code = match cli.command {
        Command::Task(cmd) => return task::run(cmd),
        Command::Scheduler(args) => return scheduler::run(args),
        Command::Backfill(args) => return backfill::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Render(args) => render::run(args),
        Command::Submit(args) => submit::run(args),
        Command::Status(args) => status::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Cancel(args) => cancel::run(args),
        Command::Resume(args) => resume::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Report(args) => report::run(args),
        Command::Transform(args) => transform::run(args),
        Command::Gc(args) => gc::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Check(args) => check::run(args),
        Command::Schema(args) => schema::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Schedule(cmd) => schedule::run(cmd),
        Command::S3(cmd) => s3::run(cmd),
        Command::Transformer(cmd) => transformer::run(cmd),
    }?;
    Ok(code.code() as u8)
}

/// Logs go to stderr; stdout is kept for what a command prints.
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "sluice=info,warn",
        1 => "sluice=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// A multi-threaded tokio runtime for a command (worker threads = available cores).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
