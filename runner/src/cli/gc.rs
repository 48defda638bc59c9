//! `sluice gc JOB`: abort multipart uploads left open under the job's sink and state, and
//! remove the state of abandoned runs.

use std::path::PathBuf;

use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::run::gc::{abort_stale_uploads, remove_abandoned_runs};
use crate::spec;

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// The job file (its sink and state prefixes are cleaned).
    pub job: PathBuf,
    /// Only uploads started longer ago than this are aborted (`90m`, `24h`, `7d`): a
    /// younger one may belong to a run in progress.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub older_than: std::time::Duration,
    /// The state of a run that was never published and whose state nobody wrote to for
    /// this long (`7d`, `36h`) is removed: such a run is neither running nor worth
    /// resuming. Published runs are never removed.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub state_retention: std::time::Duration,
    /// List what would be aborted or removed without doing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Set a param (repeatable), for prefixes that use params.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = spec::parse_param_override)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: GcArgs) -> anyhow::Result<ExitCode> {
    let loaded = spec::load_file(&args.job, &args.params)?;
    let job = &loaded.job;
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(args.older_than)?;
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(job.endpoint.as_deref()).await?;
        let prefixes = [job.sink.uri.as_prefix(), job.state.clone()];
        let report = abort_stale_uploads(&conn.storage, &prefixes, cutoff, args.dry_run).await?;
        let verb = if args.dry_run {
            "would abort"
        } else {
            "aborted"
        };
        for (uri, upload) in &report.stale {
            let started = upload.initiated.map(|t| t.to_rfc3339()).unwrap_or_default();
            println!(
                "{verb} {uri} (upload {}, started {started})",
                upload.upload_id
            );
        }
        println!(
            "{verb} {} stale upload(s); left {} younger than {} and {} of unknown age",
            report.stale.len(),
            report.young,
            humantime::format_duration(args.older_than),
            report.unknown_age
        );
        let retention_cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(args.state_retention)?;
        let state = remove_abandoned_runs(
            &conn.storage,
            &job.state,
            &job.name,
            retention_cutoff,
            args.dry_run,
        )
        .await?;
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for run in &state.abandoned {
            println!(
                "{verb} abandoned run {} ({}: {} object(s), {} bytes, last written {})",
                run.run_id,
                run.root,
                run.objects,
                run.bytes,
                run.last_written.to_rfc3339()
            );
        }
        println!(
            "{verb} the state of {} abandoned run(s); kept {} published and {} written to within {}",
            state.abandoned.len(),
            state.published,
            state.recent,
            humantime::format_duration(args.state_retention)
        );
        Ok(ExitCode::Done)
    })
}
