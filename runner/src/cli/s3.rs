//! `sluice s3 ...`: S3 utilities.

use std::path::PathBuf;

use crate::exit::ExitCode;
use crate::storage::{DEFAULT_EMBEDDED_DIR, EmbeddedServer};

#[derive(Debug, clap::Subcommand)]
pub enum S3Command {
    /// Serve a directory as an S3 endpoint on 127.0.0.1 (each sub-directory is a bucket),
    /// in the foreground until Ctrl-C.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The directory to serve; created if missing.
    #[arg(long, default_value = DEFAULT_EMBEDDED_DIR)]
    pub dir: PathBuf,
    /// The port to listen on (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
}

pub fn run(cmd: S3Command) -> anyhow::Result<ExitCode> {
    match cmd {
        S3Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::cli::runtime()?.block_on(async {
        let server = EmbeddedServer::start(&args.dir, args.port).await?;
        let url = server.url();
        println!("Serving {} as S3 at {url}", server.dir().display());
        println!("  AWS_ENDPOINT_URL={url}");
        println!("  AWS_ACCESS_KEY_ID={}", server.access_key());
        println!("  AWS_SECRET_ACCESS_KEY={}", server.secret_key());
        println!("  AWS_REGION=us-east-1");
        println!("Try: aws --endpoint-url {url} s3 ls");
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
        drop(server);
        Ok(ExitCode::Done)
    })
}
