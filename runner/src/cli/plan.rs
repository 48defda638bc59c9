//! `sluice plan JOB`: list and shard the source, print the shard table; runs nothing.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::run::start::make_plan;
use crate::spec;
use crate::spec::size::human_bytes;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The job file.
    pub job: PathBuf,
    /// Set a param (repeatable): --param month=2026-01
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = spec::parse_param_override)]
    pub params: Vec<(String, String)>,
    /// Print the whole plan as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let loaded = spec::load_file(&args.job, &args.params)?;
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(loaded.job.endpoint.as_deref()).await?;
        let run_id = crate::plan::new_run_id(&loaded.job.name, chrono::Utc::now());
        let plan = make_plan(&conn.storage, &loaded.job, &run_id, false).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
            return Ok(ExitCode::Done);
        }
        println!(
            "{}: {} objects, {} in {} shards",
            plan.source,
            plan.objects,
            human_bytes(plan.bytes),
            plan.shards.len()
        );
        println!(
            "{:>5}  {:>8}  {:>12}  largest object",
            "shard", "objects", "bytes"
        );
        for shard in &plan.shards {
            let largest = shard.objects.first().map_or("-", |o| o.key.as_str());
            println!(
                "{:>5}  {:>8}  {:>12}  {largest}",
                shard.index,
                shard.objects.len(),
                human_bytes(shard.bytes)
            );
        }
        if let Some(schema) = &plan.schema {
            println!("schema:");
            for column in schema {
                println!("  {}: {}", column.name, column.data_type);
            }
        }
        Ok(ExitCode::Done)
    })
}
