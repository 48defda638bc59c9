//! `sluice run JOB`: plan and run a job locally, then publish it.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::run::{LocalRunOptions, run_locally, summary};
use crate::spec;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job file.
    pub job: PathBuf,
    /// Set a param for this run (repeatable): --param month=2026-01
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = spec::parse_param_override)]
    pub params: Vec<(String, String)>,
    /// Worker processes at once (default: the job's `parallelism`).
    #[arg(long)]
    pub parallelism: Option<u32>,
    /// Use this run id instead of `<job>-<UTC time>`.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Process every selected object, even those an incremental job's ledger holds (the
    /// ledger is updated as usual once the run publishes).
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let loaded = spec::load_file(&args.job, &args.params)?;
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(loaded.job.endpoint.as_deref()).await?;
        if conn.embedded.is_some() {
            conn.storage
                .create_bucket(&loaded.job.sink.uri.bucket)
                .await?;
            conn.storage.create_bucket(&loaded.job.state.bucket).await?;
        }
        let options = LocalRunOptions {
            program: std::env::current_exe()?,
            env: conn.endpoint.env.clone(),
            parallelism: args.parallelism,
            run_id: args.run_id.clone(),
            bar: std::io::stderr().is_terminal(),
            cpus: None,
            resume: false,
            full: args.full,
        };
        let run = run_locally(&conn.storage, &loaded, options).await?;
        print!(
            "{}",
            summary::render(&run.report, &run.layout, &loaded.job.sink.uri)
        );
        Ok(run.exit)
    })
}
