//! `sluice transformer ...`: the built-in transformer server.

use std::net::SocketAddr;

use anyhow::Context;

use crate::error::ExitCode;
use crate::transformer::{Op, parse_listen};

#[derive(Debug, clap::Subcommand)]
pub enum TransformerCommand {
    /// Serve one built-in operation over the transformer protocol (hpush: POST /, hpull:
    /// GET /?url=, readiness: GET /health) on loopback, in the foreground until SIGTERM or
    /// Ctrl-C. Meant as a sidecar beside the worker; see docs/transformers.md.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The operation applied to every object.
    #[arg(long, value_enum)]
    pub op: Op,
    /// The loopback address to listen on: 127.0.0.1:PORT, [::1]:PORT or localhost:PORT
    /// (port 0: a free one).
    #[arg(long, value_parser = parse_listen)]
    pub listen: SocketAddr,
}

pub fn run(cmd: TransformerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TransformerCommand::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::cli::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        eprintln!("serving {} on http://{addr}", args.op);
        crate::transformer::serve(listener, args.op)
            .await
            .with_context(|| format!("serving {} on http://{addr}", args.op))?;
        Ok(ExitCode::Done)
    })
}
