//! `sluice schema`: the job file's JSON Schema, for editors and linters.

use crate::error::ExitCode;

/// Prints the JSON Schema of job files to stdout. Point an editor's YAML support at it, for
/// example with a `# yaml-language-server: $schema=sluice-job.schema.json` comment.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub fn run(_args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let schema = crate::spec::json_schema();
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::Done)
}
