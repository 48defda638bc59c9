//! `sluice runs JOB`: the runs of a job, from the state in the bucket: when each was
//! planned and whether it published.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::spec;
use crate::spec::size::human_bytes;
use crate::state::RunLayout;
use crate::state::manifest::is_published;
use crate::state::plan::read_plan;
use crate::state::report::read_report;

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// The job file (its name and state prefix locate the runs).
    pub job: PathBuf,
    /// Set a param (repeatable), for a job whose state prefix uses params.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = spec::parse_param_override)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let loaded = spec::load_file(&args.job, &args.params)?;
    let job = &loaded.job;
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(job.endpoint.as_deref()).await?;
        let runs = RunLayout::runs_of(&job.state, &job.name);
        let dirs = conn.storage.list_dirs(&runs).await?;
        println!(
            "{:<40}  {:<10}  {:>8}  {:>10}  {:>12}",
            "run", "status", "objects", "bytes", "records out"
        );
        for dir in dirs {
            let run_id = dir.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            let layout = RunLayout::new(&job.state, &job.name, run_id);
            let plan = read_plan(&conn.storage, &layout).await.ok().flatten();
            let report = read_report(&conn.storage, &layout).await.ok().flatten();
            let published = is_published(&conn.storage, &layout).await?;
            let status = match (&report, published) {
                (_, true) => "published",
                (Some(_), false) => "failed",
                (None, false) => "unfinished",
            };
            println!(
                "{:<40}  {:<10}  {:>8}  {:>10}  {:>12}",
                run_id,
                status,
                plan.as_ref().map_or(0, |p| p.objects),
                human_bytes(plan.as_ref().map_or(0, |p| p.bytes)),
                report
                    .as_ref()
                    .map_or("-".to_string(), |r| r.records.output.to_string())
            );
        }
        Ok(ExitCode::Done)
    })
}
