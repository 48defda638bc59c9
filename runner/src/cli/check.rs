//! `sluice check`: load and validate job files, task definitions and schedules without
//! touching any bucket.

use std::path::{Path, PathBuf};

use crate::exit::ExitCode;
use crate::schedule::fire::FireTarget;
use crate::spec::{self, Job};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Job files, task definitions, schedules or pipelines to check. Each problem prints as FILE:LINE:COLUMN: FIELD: MESSAGE.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Set a param for `{{ params.NAME }}` templates, replacing or adding to spec.params.
    /// Repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = spec::parse_param_override)]
    pub params: Vec<(String, String)>,
}

/// Prints `FILE: ok (...)` for each valid file on stdout and every problem on stderr.
/// Exit code 0 when every file is valid, 2 otherwise.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut all_ok = true;
    let runtime = crate::cli::runtime()?;
    for file in &args.files {
        let checked = match spec::kind_of(file).as_deref() {
            Some(spec::task::KIND) => check_task(file),
            Some(spec::schedule::KIND) => check_schedule(file),
            Some(spec::pipeline::KIND) => crate::cli::pipeline::check(file, &args.params),
            _ => check_job(file, &args.params, &runtime),
        };
        match checked {
            Ok(summary) => println!("{}: ok ({summary})", file.display()),
            Err(errors) => {
                all_ok = false;
                eprintln!("{errors:#}");
            }
        }
    }
    Ok(if all_ok {
        ExitCode::Done
    } else {
        ExitCode::Config
    })
}

fn check_job(
    file: &Path,
    params: &[(String, String)],
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<String> {
    let loaded = spec::load_file(file, params)?;
    // Rules against the output schema, when it is known without reading data.
    let origin = file.display().to_string();
    let input = crate::validate::schema::declared_input(&loaded.job);
    runtime.block_on(crate::validate::schema::check(
        &loaded.job,
        &loaded.resolved_yaml,
        &origin,
        input,
    ))?;
    Ok(summary(&loaded.job))
}

fn check_task(file: &Path) -> anyhow::Result<String> {
    let task = spec::load_task_file(file)?;
    Ok(format!(
        "task {}: {} container{}, essential {}",
        task.family,
        task.containers.len(),
        if task.containers.len() == 1 { "" } else { "s" },
        task.essential().name
    ))
}

/// A schedule is checked with its next fire: its params and args render, and its target
/// loads with them (a job's rules are checked as `sluice check JOB` checks them).
fn check_schedule(file: &Path) -> anyhow::Result<String> {
    let schedule = spec::schedule::load_schedule_file(file)?;
    let now = chrono::Utc::now();
    let next = schedule
        .cron
        .next_after(now, schedule.time_zone)
        .unwrap_or(now);
    let fire = crate::schedule::fire::prepare(&schedule, next)?;
    let target = match &fire.target {
        FireTarget::Job(loaded) => format!("job {}", loaded.job.name),
        FireTarget::Task { def, .. } => format!("task {}", def.family),
        FireTarget::Pipeline(pipeline) => format!("pipeline {}", pipeline.name),
    };
    Ok(format!(
        "schedule {}: {target}, next {}",
        schedule.name,
        crate::spec::schedule::cron::describe(next, schedule.time_zone)
    ))
}

fn summary(job: &Job) -> String {
    let steps = job.steps.len();
    format!(
        "job {}: {steps} step{}, source {} ({}), sink {} ({})",
        job.name,
        if steps == 1 { "" } else { "s" },
        job.source.uri,
        serde_json::to_value(job.source.format)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        job.sink.uri,
        if job.sink.delta {
            "delta"
        } else {
            job.sink.format.extension()
        },
    )
}
