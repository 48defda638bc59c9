//! `sluice check`: load and validate job files without touching any bucket.

use std::path::PathBuf;

use crate::error::ExitCode;
use crate::spec::{self, Job};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Job files or task definitions to check. Each problem prints as FILE:LINE:COLUMN: FIELD: MESSAGE.
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
        if spec::kind_of(file).as_deref() == Some(spec::task::KIND) {
            match spec::load_task_file(file) {
                Ok(task) => println!(
                    "{}: ok (task {}: {} container{}, essential {})",
                    file.display(),
                    task.family,
                    task.containers.len(),
                    if task.containers.len() == 1 { "" } else { "s" },
                    task.essential().name
                ),
                Err(errors) => {
                    all_ok = false;
                    eprintln!("{errors}");
                }
            }
            continue;
        }
        let checked = spec::load_file(file, &args.params).and_then(|loaded| {
            // Rules against the output schema, when it is known without reading data.
            let origin = file.display().to_string();
            let input = crate::validate::schema::declared_input(&loaded.job);
            runtime.block_on(crate::validate::schema::check(
                &loaded.job,
                &loaded.resolved_yaml,
                &origin,
                input,
            ))?;
            Ok(loaded)
        });
        match checked {
            Ok(loaded) => println!("{}: ok ({})", file.display(), summary(&loaded.job)),
            Err(errors) => {
                all_ok = false;
                eprintln!("{errors}");
            }
        }
    }
    Ok(if all_ok {
        ExitCode::Done
    } else {
        ExitCode::Config
    })
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
        job.sink.format.extension(),
    )
}
