//! `sluice schema`: the JSON Schema of job files, task definitions or schedules, for
//! editors and linters.

use crate::exit::ExitCode;

/// Prints the JSON Schema of job files (or of task definitions, or schedules) to stdout. Point an
/// editor's YAML support at it, for example with a
/// `# yaml-language-server: $schema=sluice-job.schema.json` comment.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Which file format: `Job`, `TaskDefinition`, `Schedule` or `Pipeline`.
    #[arg(long, default_value = "Job", value_parser = ["Job", "TaskDefinition", "Schedule", "Pipeline"])]
    pub kind: String,
}

pub fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let schema = match args.kind.as_str() {
        "TaskDefinition" => crate::spec::task::json_schema(),
        "Schedule" => crate::spec::schedule::json_schema(),
        "Pipeline" => crate::spec::pipeline::json_schema(),
        _ => crate::spec::json_schema(),
    };
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::Done)
}
