//! `sluice report RUN --job JOB`: write a run's report page again from its state (report.json,
//! the done markers, the rejects), to the bucket and to a local file, and open it on request.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::cli::cluster_args::RunStateArgs;
use crate::cli::connect::ConnectArgs;
use crate::cli::exit::UsageError;
use crate::exit::ExitCode;
use crate::run::report::write_html;
use crate::spec;
use crate::state::marker::read_markers;
use crate::state::plan::{load_job_text, load_plan};
use crate::state::report::read_report;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run id.
    pub run: String,
    #[command(flatten)]
    pub state: RunStateArgs,
    /// Where to write the page (default: report-<run>.html in the current directory).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Open the page in the default browser once written.
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let Some(layout) = args.state.layout(&args.run)? else {
        return Err(
            UsageError::new("name the run's state: give --job FILE or --state S3_URI").into(),
        );
    };
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("report-{}.html", args.run)));
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(None).await?;
        let storage = &conn.storage;
        let Some(report) = read_report(storage, &layout).await? else {
            return Err(UsageError::new(format!(
                "{} has no report.json: the run was not published yet (see `sluice status` or `sluice resume`)",
                layout.root()
            ))
            .into());
        };
        let plan = load_plan(storage, &layout).await?;
        let markers = read_markers(storage, &layout, plan.task_keys()).await?;
        let markers: Vec<_> = markers.iter().filter_map(|(_, m)| m.as_ref()).collect();
        let sink = match load_job_text(storage, &layout).await {
            Ok(text) => spec::load_str(&text, "job.yaml", &[])
                .ok()
                .map(|loaded| loaded.job.sink.uri),
            Err(_) => None,
        };
        let html = write_html(storage, &layout, &report, &markers, sink.as_ref()).await?;
        std::fs::write(&output, html).with_context(|| format!("writing {}", output.display()))?;
        println!("{}", layout.report_html());
        println!("{}", output.display());
        if args.open {
            opener::open(&output).with_context(|| format!("opening {}", output.display()))?;
        }
        Ok(ExitCode::Done)
    })
}
