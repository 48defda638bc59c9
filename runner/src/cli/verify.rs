//! `sluice verify RUN --job JOB` (or `sluice verify s3://.../_SUCCESS.json`): re-check a
//! published run against its manifest; exit 3 when anything is lost, changed or extra.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::run::verify::{DEFAULT_CONCURRENCY, locate, verify_run};
use crate::spec;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The run id (with --job), or the run's manifest as s3://.../_SUCCESS.json.
    pub run: String,
    /// The job file whose state prefix holds the run (needed with a run id).
    #[arg(long, value_name = "JOB")]
    pub job: Option<PathBuf>,
    /// Set a param (repeatable), for a job whose state prefix uses params.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = spec::parse_param_override)]
    pub params: Vec<(String, String)>,
    /// Objects read back at the same time.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let loaded = args
        .job
        .as_deref()
        .map(|job| spec::load_file(job, &args.params))
        .transpose()?;
    let job = loaded.as_ref().map(|l| &l.job);
    let layout = locate(&args.run, job)?;
    crate::cli::runtime()?.block_on(async {
        let conn = args
            .connect
            .connect(job.and_then(|j| j.endpoint.as_deref()))
            .await?;
        let verification = verify_run(&conn.storage, &layout, job, args.concurrency.into()).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&verification)?);
        } else {
            print!("{}", verification.render());
        }
        Ok(if verification.clean {
            ExitCode::Done
        } else {
            ExitCode::Validation
        })
    })
}
