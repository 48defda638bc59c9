//! The `sluice` binary: parse arguments, start tracing, call the library, map the outcome to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = sluice::cli::Cli::parse();
    sluice::cli::init_tracing(cli.verbose);
    match sluice::cli::dispatch(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(error) => {
            let code = sluice::cli::exit_code_of(&error);
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(code.code() as u8)
        }
    }
}
