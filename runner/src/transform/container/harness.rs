//! A contract test for transformer authors: start one container step's transformer on this
//! machine as `sluice run` would, send it one input, and compare the reply with what is
//! expected.

use std::path::Path;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::spec::container::{Comm, ContainerStep};
use crate::transform::container::transport::{self, TransportError};
use crate::transform::container::{ContainerError, content_type};

/// A transformer started for a test; stopped on drop.
pub struct Harness {
    step: ContainerStep,
    name: String,
    _child: Option<tokio::process::Child>,
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "step {step} uses image {image:?}, which has no local command: give the step a `local.command`"
    )]
    NoLocalCommand { step: String, image: String },
    #[error("starting step {step} ({command}): {detail}")]
    Spawn {
        step: String,
        command: String,
        detail: String,
    },
    #[error(transparent)]
    Exchange(Box<ContainerError>),
}

/// The argv that runs a step's transformer on this machine: its `local.command`, or for
/// the sluice image its command with `sluice` being `program`. An io step's command runs
/// behind its bridge (`program transformer serve --exec`).
pub fn local_argv(
    step: &ContainerStep,
    name: &str,
    program: &Path,
) -> Result<Vec<String>, HarnessError> {
    if step.comm == Comm::Io {
        let command: Vec<String> = match &step.local_command {
            Some(local) => local.clone(),
            None => step
                .command
                .iter()
                .flatten()
                .chain(step.args.iter().flatten())
                .cloned()
                .collect(),
        };
        let mut argv = bridge_argv(&program.display().to_string(), step.bridge_port);
        argv.extend(command);
        return Ok(argv);
    }
    if let Some(local) = &step.local_command {
        return Ok(local.clone());
    }
    if step.image == crate::spec::kubernetes::SLUICE_IMAGE_ALIAS {
        let mut argv = vec![program.display().to_string()];
        let command = step.command.clone().unwrap_or_default();
        let rest = match command.first().map(String::as_str) {
            Some("sluice") => &command[1..],
            _ => &command[..],
        };
        argv.extend(rest.iter().cloned());
        argv.extend(step.args.iter().flatten().cloned());
        return Ok(argv);
    }
    Err(HarnessError::NoLocalCommand {
        step: name.to_string(),
        image: step.image.clone(),
    })
}

/// The command line of an io step's bridge up to `--`, after which the command follows.
pub fn bridge_argv(sluice: &str, port: u16) -> Vec<String> {
    [
        sluice,
        "transformer",
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--exec",
        "--",
    ]
    .map(String::from)
    .to_vec()
}

impl From<ContainerError> for HarnessError {
    fn from(error: ContainerError) -> Self {
        HarnessError::Exchange(Box::new(error))
    }
}

impl Harness {
    /// Starts the step's transformer (an io step's bridge) and waits until it is ready.
    pub async fn start(
        step: &ContainerStep,
        name: &str,
        program: &Path,
    ) -> Result<Harness, HarnessError> {
        let argv = local_argv(step, name, program)?;
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .envs(
                step.env
                    .iter()
                    .filter_map(|e| Some((e.name.clone(), e.value.clone()?))),
            )
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HarnessError::Spawn {
                step: name.to_string(),
                command: argv.join(" "),
                detail: e.to_string(),
            })?;
        transport::wait_ready(step.listen_port(), step.init_timeout)
            .await
            .map_err(|e| ContainerError::new(name, "(readiness)", e))?;
        Ok(Harness {
            step: step.clone(),
            name: name.to_string(),
            _child: Some(child),
        })
    }

    /// The same transformer spoken to over another communication type (one it serves on the
    /// same port and path).
    pub fn over(&self, comm: Comm) -> Harness {
        let mut step = self.step.clone();
        step.comm = comm;
        Harness {
            step,
            name: self.name.clone(),
            _child: None,
        }
    }

    /// Sends one input as the step would send an object, and returns the whole reply.
    pub async fn send(&self, key: &str, input: Bytes) -> Result<Vec<u8>, HarnessError> {
        let size = input.len() as u64;
        let body = Box::pin(futures::stream::once(async move { Ok(input) }));
        self.exchange(key, size, body).await
    }

    async fn exchange(
        &self,
        key: &str,
        size: u64,
        body: crate::transform::container::wire::ByteStream,
    ) -> Result<Vec<u8>, HarnessError> {
        let failed = |e: TransportError| ContainerError::new(&self.name, key, e);
        let mut reply = transport::exchange(
            &self.step,
            key,
            Some(size),
            content_type(self.step.input),
            body,
        )
        .await
        .map_err(failed)?;
        let mut out = Vec::new();
        reply.read_to_end(&mut out).await.map_err(|e| {
            failed(
                transport::transport_error(&e)
                    .cloned()
                    .unwrap_or_else(|| TransportError::Broken(e.to_string())),
            )
        })?;
        Ok(out)
    }
}

/// One protocol check of the contract harness and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolCheck {
    pub name: String,
    /// `Err` says what the transformer did instead.
    pub outcome: Result<(), String>,
}

impl Harness {
    /// Checks the transformer speaks the protocol of its step's `comm`, beyond one reply:
    /// the object streamed in small chunks gives the same reply as in one piece; a client
    /// that drops a request midway leaves it serving (the worker does so on a timeout); for
    /// hpull and hrev, an object it cannot fetch is answered with a 5xx (the worker retries
    /// those), not a 2xx; with `reject`, an input it must refuse is answered with a 4xx (the
    /// worker then fails the object with exit 4 and no retry).
    pub async fn check_protocol(
        &self,
        key: &str,
        input: Bytes,
        reject: Option<Bytes>,
    ) -> Vec<ProtocolCheck> {
        let mut checks = Vec::new();
        let whole = self.send(key, input.clone()).await;
        let pieces = self.send_in_pieces(key, input.clone(), 1024).await;
        checks.push(ProtocolCheck {
            name: "the object in 1 KiB chunks (chunked transfer encoding) gives the reply of the object in one piece".into(),
            outcome: match (&whole, &pieces) {
                (Ok(a), Ok(b)) if a == b => Ok(()),
                (Ok(a), Ok(b)) => Err(format!("{} bytes in one piece, {} bytes in chunks", a.len(), b.len())),
                (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
            },
        });
        let dropped = self.drop_a_request().await;
        let again = match dropped {
            Ok(()) => self.send(key, input).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        checks.push(ProtocolCheck {
            name: "a request dropped midway leaves the transformer serving the next one alike"
                .into(),
            outcome: match (&whole, again) {
                (Ok(a), Ok(b)) if *a == b => Ok(()),
                (Ok(_), Ok(_)) => Err("the reply after the dropped request differs".into()),
                (_, Err(e)) => Err(e),
                (Err(e), _) => Err(e.to_string()),
            },
        });
        if matches!(self.step.comm, Comm::Hpull | Comm::Hrev) {
            let status = transport::status_for_unfetchable_object(&self.step, key).await;
            checks.push(ProtocolCheck {
                name: "an object it cannot fetch is answered 5xx (retried by the worker)".into(),
                outcome: match status {
                    Ok(s) if (500..600).contains(&s) || s == 429 => Ok(()),
                    Ok(s) => Err(format!("answered {s}")),
                    Err(e) => Err(e.to_string()),
                },
            });
        }
        if let Some(bad) = reject {
            let refused = self.send(key, bad).await;
            checks.push(ProtocolCheck {
                name: "the input it must refuse is answered 4xx (the object fails with exit 4, no retry)".into(),
                outcome: match refused {
                    Err(HarnessError::Exchange(e)) if e.exit_code() == crate::exit::ExitCode::BadData => Ok(()),
                    Err(e) => Err(format!("failed otherwise: {e}")),
                    Ok(reply) => Err(format!("answered 200 with {} bytes", reply.len())),
                },
            });
        }
        checks
    }

    /// Sends one input in pieces of `piece` bytes.
    async fn send_in_pieces(
        &self,
        key: &str,
        input: Bytes,
        piece: usize,
    ) -> Result<Vec<u8>, HarnessError> {
        let size = input.len() as u64;
        let pieces: Vec<std::io::Result<Bytes>> = (0..input.len())
            .step_by(piece.max(1))
            .map(|at| Ok(input.slice(at..(at + piece).min(input.len()))))
            .collect();
        let body = Box::pin(futures::stream::iter(pieces));
        self.exchange(key, size, body).await
    }

    /// Opens a connection, writes half a request and closes it, as a worker that gives up.
    async fn drop_a_request(&self) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        let port = self.step.listen_port();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connecting to port {port}: {e}"))?;
        let half = format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{}",
            self.step.path,
            "x".repeat(100)
        );
        stream
            .write_all(half.as_bytes())
            .await
            .map_err(|e| format!("writing to port {port}: {e}"))?;
        drop(stream);
        transport::wait_ready(port, self.step.init_timeout)
            .await
            .map_err(|e| format!("not ready again after the dropped request: {e}"))
    }
}

/// A unified diff of expected and actual text, or `None` when they are equal.
pub fn diff(expected: &[u8], actual: &[u8], expected_name: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let (e, a) = (
        String::from_utf8_lossy(expected),
        String::from_utf8_lossy(actual),
    );
    Some(
        similar::TextDiff::from_lines(e.as_ref(), a.as_ref())
            .unified_diff()
            .context_radius(2)
            .header(expected_name, "transformer output")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_shows_the_changed_lines_only() {
        assert_eq!(diff(b"a\nb\n", b"a\nb\n", "x"), None);
        let d = diff(b"a\nb\nc\n", b"a\nB\nc\n", "expected.jsonl").unwrap();
        assert!(d.contains("--- expected.jsonl"), "{d}");
        assert!(d.contains("-b\n+B\n"), "{d}");
    }
}
