//! `sluice plan JOB`: list and shard the source, print the shard table; runs nothing.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::run::start::make_plan_observed;
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
        let mut listing = ListingProgress::new(&loaded.job.source.uri.to_string());
        let plan = make_plan_observed(&conn.storage, &loaded.job, &run_id, false, &mut |n| {
            listing.listed(n)
        })
        .await?;
        listing.done();
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

/// Objects listed so far, on stderr: a spinner on a terminal, else a line every 10 s.
struct ListingProgress {
    source: String,
    spinner: Option<indicatif::ProgressBar>,
    last_line: std::time::Instant,
}

impl ListingProgress {
    fn new(source: &str) -> ListingProgress {
        use std::io::IsTerminal as _;
        let spinner = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar.set_message(format!("listing {source}"));
            bar
        });
        ListingProgress {
            source: source.to_string(),
            spinner,
            last_line: std::time::Instant::now(),
        }
    }

    fn listed(&mut self, n: usize) {
        match &self.spinner {
            Some(bar) => bar.set_message(format!("listing {}: {n} objects", self.source)),
            None if self.last_line.elapsed() >= std::time::Duration::from_secs(10) => {
                eprintln!("listing {}: {n} objects so far", self.source);
                self.last_line = std::time::Instant::now();
            }
            None => {}
        }
    }

    fn done(self) {
        if let Some(bar) = self.spinner {
            bar.finish_and_clear();
        }
    }
}
