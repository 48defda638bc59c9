//! `sluice run JOB`: plan and run a job locally, then publish it.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::run::{LocalRunOptions, run_locally, summary};
use crate::spec;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job file (or pipeline file).
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
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Where a run's metrics go once it ended (see docs/report.md#metrics).
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Write the run's metrics (OpenMetrics text) to this file, e.g. for node exporter's
    /// textfile collector.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Push the run's metrics to this Pushgateway (http://host:port), grouped by job and run.
    #[arg(long, value_name = "URL", value_parser = parse_pushgateway)]
    pub pushgateway: Option<String>,
}

impl MetricsArgs {
    /// Exports the run's metrics where asked; a failure is logged, the run stands.
    pub async fn export(&self, report: &crate::state::report::RunReport) {
        if let Err(error) = crate::run::metrics::export(
            report,
            self.metrics_file.as_deref(),
            self.pushgateway.as_deref(),
        )
        .await
        {
            tracing::error!("{}", crate::exit::error_chain(&error));
        }
    }
}

fn parse_pushgateway(url: &str) -> Result<String, String> {
    if url.starts_with("http://") {
        Ok(url.to_string())
    } else {
        Err("give the Pushgateway as http://host:port (https is not supported: reach it through a TLS-terminating proxy or a sidecar)".into())
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if crate::cli::pipeline::is_pipeline(&args.job) {
        if args.parallelism.is_some() || args.full {
            return Err(crate::cli::exit::UsageError::new(
                "--parallelism and --full are for job files; a pipeline's steps run as their files say",
            )
            .into());
        }
        return crate::cli::pipeline::run_here(
            &args.job,
            &args.params,
            args.run_id.clone(),
            &args.connect,
            false,
        );
    }
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
        args.metrics.export(&run.report).await;
        print!(
            "{}",
            summary::render(&run.report, &run.layout, &loaded.job.sink.uri)
        );
        Ok(run.exit)
    })
}
