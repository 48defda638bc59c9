//! `sluice transformer ...`: the built-in transformer server.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::cli::exit::UsageError;
use crate::exit::ExitCode;
use crate::transformer_server::{Op, parse_listen};

#[derive(Debug, clap::Subcommand)]
pub enum TransformerCommand {
    /// Serve one built-in operation over the transformer protocol (hpush: POST /, hpull:
    /// GET /?url=, hrev: GET /<key> with X-Sluice-Url, readiness: GET /health) on loopback, in the foreground until SIGTERM or
    /// Ctrl-C. Meant as a sidecar beside the worker; see docs/transformers.md.
    Serve(ServeArgs),
    /// Contract-test one container step: start its transformer here as `sluice run` would,
    /// send it FILE as one object, and print the reply, or with --expect compare it and
    /// print a diff (exit 3 when it differs); then check the protocol (chunked bodies, a
    /// dropped request, a source it cannot fetch, --reject), one line each on stderr
    /// (exit 3 when one fails).
    Test(TestArgs),
    /// Copy this sluice binary into DIR (how an io step's container gets the bridge on a
    /// cluster: an init container of the sluice image fills a shared volume).
    Install(InstallArgs),
    /// Exit 0 when the transformer on 127.0.0.1:PORT answers GET /health with 200, else 1:
    /// the readiness probe of transformer sidecars, run inside their container.
    Probe(ProbeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The transformer's loopback port.
    #[arg(long)]
    pub port: u16,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The directory to copy the binary into (as DIR/sluice).
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The job file.
    pub job: PathBuf,
    /// The container step to test (its `name`).
    #[arg(long)]
    pub step: String,
    /// The input, sent as the step sends an object (raw bytes, or records in the step's
    /// `input` format).
    #[arg(long)]
    pub input: PathBuf,
    /// The expected reply; without it the reply is written to stdout.
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// The object key the transformer is told (`X-Sluice-Key`, `SLUICE_KEY`).
    #[arg(long, default_value = "test-object")]
    pub key: String,
    /// Test over these communication types (repeatable; default: the step's `comm`): for
    /// a transformer that serves several on its port and path, as the built-in one does.
    #[arg(long, value_enum)]
    pub comm: Vec<HttpComm>,
    /// An input the transformer must refuse with a 4xx (the worker then fails the object
    /// with exit 4 and does not retry it).
    #[arg(long, value_name = "FILE")]
    pub reject: Option<PathBuf>,
}

/// The HTTP communication types a transformer can be tested over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpComm {
    Hpush,
    Hpull,
    Hrev,
}

impl From<HttpComm> for crate::spec::container::Comm {
    fn from(comm: HttpComm) -> Self {
        match comm {
            HttpComm::Hpush => crate::spec::container::Comm::Hpush,
            HttpComm::Hpull => crate::spec::container::Comm::Hpull,
            HttpComm::Hrev => crate::spec::container::Comm::Hrev,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The operation applied to every object.
    #[arg(
        long,
        value_enum,
        required_unless_present = "exec",
        conflicts_with = "exec"
    )]
    pub op: Option<Op>,
    /// Instead of an operation, run this command per object (object on stdin, result on
    /// stdout): the bridge that serves an `io` step over hpush. Give it after `--`.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "COMMAND")]
    pub exec: Vec<String>,
    /// The loopback address to listen on: 127.0.0.1:PORT, [::1]:PORT or localhost:PORT
    /// (port 0: a free one).
    #[arg(long, value_parser = parse_listen)]
    pub listen: SocketAddr,
}

pub fn run(cmd: TransformerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TransformerCommand::Serve(args) => serve(args),
        TransformerCommand::Test(args) => test(args),
        TransformerCommand::Install(args) => install(args),
        TransformerCommand::Probe(args) => probe(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::cli::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        match args.op {
            Some(op) => {
                eprintln!("serving {op} on http://{addr}");
                crate::transformer_server::serve(listener, op)
                    .await
                    .with_context(|| format!("serving {op} on http://{addr}"))?;
            }
            None => {
                // `--exec -- CMD ...`: the separator is not part of the command.
                let mut command = args.exec;
                if command.first().is_some_and(|a| a == "--") {
                    command.remove(0);
                }
                anyhow::ensure!(!command.is_empty(), "--exec needs a command after `--`");
                eprintln!(
                    "serving `{}` per object on http://{addr}",
                    command.join(" ")
                );
                use tokio::signal::unix::{SignalKind, signal};
                let mut terminate = signal(SignalKind::terminate())?;
                let shutdown = async move {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                };
                crate::transformer_server::bridge::serve_exec(listener, command, shutdown)
                    .await
                    .with_context(|| format!("serving on http://{addr}"))?;
            }
        }
        Ok(ExitCode::Done)
    })
}

fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let target = args.dir.join("sluice");
    std::fs::copy(std::env::current_exe()?, &target)
        .with_context(|| format!("copying the binary to {}", target.display()))?;
    eprintln!("installed {}", target.display());
    Ok(ExitCode::Done)
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    use crate::spec::job::StepKind;
    use crate::transform::container::harness::{Harness, diff};
    let loaded = crate::spec::load_file(&args.job, &[])?;
    let job = &loaded.job;
    let Some(step) = job.steps.iter().find(|s| s.name == args.step) else {
        let names: Vec<&str> = job.steps.iter().map(|s| s.name.as_str()).collect();
        return Err(UsageError::new(format!(
            "{}: no step named {:?} (the steps are {names:?})",
            args.job.display(),
            args.step
        ))
        .into());
    };
    let StepKind::Container(container) = &step.kind else {
        return Err(UsageError::new(format!(
            "{}: step {:?} is not a container step",
            args.job.display(),
            args.step
        ))
        .into());
    };
    // A file that cannot be read is the command line's, not a transient failure.
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| UsageError::new(format!("reading {}: {e}", path.display())))
    };
    let input = read(&args.input)?;
    let expected = match &args.expect {
        Some(path) => Some(read(path)?),
        None => None,
    };
    let reject = match &args.reject {
        Some(path) => Some(bytes::Bytes::from(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )),
        None => None,
    };
    use crate::spec::container::Comm;
    let comms: Vec<Comm> = if args.comm.is_empty() {
        vec![container.comm]
    } else {
        anyhow::ensure!(
            container.comm != Comm::Io,
            "{}: step {:?} is an io step: --comm takes the HTTP types of an HTTP step",
            args.job.display(),
            args.step
        );
        args.comm.iter().map(|c| (*c).into()).collect()
    };
    let input = bytes::Bytes::from(input);
    crate::cli::runtime()?.block_on(async {
        let harness = Harness::start(container, &step.name, &std::env::current_exe()?).await?;
        let mut exit = ExitCode::Done;
        for comm in comms {
            let harness = harness.over(comm);
            let label = format!("{comm:?}").to_lowercase();
            let reply = harness.send(&args.key, input.clone()).await?;
            match (&expected, &args.expect) {
                (Some(expected), Some(path)) => {
                    match diff(expected, &reply, &path.display().to_string()) {
                        None => println!(
                            "ok: the reply matches {} ({} bytes, {label})",
                            path.display(),
                            reply.len()
                        ),
                        Some(diff) => {
                            print!("{diff}");
                            exit = ExitCode::Validation;
                        }
                    }
                }
                _ => std::io::stdout().write_all(&reply)?,
            }
            for check in harness
                .check_protocol(&args.key, input.clone(), reject.clone())
                .await
            {
                match check.outcome {
                    Ok(()) => eprintln!("{label}: ok: {}", check.name),
                    Err(why) => {
                        eprintln!("{label}: FAILED: {}: {why}", check.name);
                        exit = ExitCode::Validation;
                    }
                }
            }
        }
        Ok(exit)
    })
}

fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let ready = crate::cli::runtime()?.block_on(
        crate::transform::container::transport::wait_ready(args.port, std::time::Duration::ZERO),
    );
    Ok(match ready {
        Ok(()) => ExitCode::Done,
        Err(_) => ExitCode::Transient,
    })
}
