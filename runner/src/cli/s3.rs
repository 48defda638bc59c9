//! `sluice s3 ...`.

use crate::error::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum S3Command {}

pub fn run(cmd: S3Command) -> anyhow::Result<ExitCode> {
    match cmd {}
}
