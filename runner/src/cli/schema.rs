//! `sluice schema`.

use crate::error::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub fn run(_args: SchemaArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("sluice schema is being written")
}
