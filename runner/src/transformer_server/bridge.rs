//! The io bridge: an hpush server that runs a command per object (object on stdin, result
//! on stdout). On a cluster an `io` step's container runs it, so that the worker reaches the
//! step over loopback like any other transformer; locally the worker runs the command itself.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::spec::container::{Comm, ContainerStep, OutputFormat, StepInput};
use crate::transform::container::protocol::{KEY_HEADER, decode_key};
use crate::transform::container::transport::{self, TransportError};

/// Output held back before answering, so that a command failing early gets a clean 4xx.
const HOLD_BACK: usize = 1 << 20;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, io::Error>;

/// Serves `argv` as an io transformer over hpush on `listener` until `shutdown`.
pub async fn serve_exec(
    listener: TcpListener,
    argv: Vec<String>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let step = Arc::new(ContainerStep {
        image: String::new(),
        comm: Comm::Io,
        port: None,
        bridge_port: 0,
        path: "/".into(),
        command: Some(argv),
        args: None,
        local_command: None,
        env: Vec::new(),
        resources: None,
        init_timeout: std::time::Duration::from_secs(1),
        // The worker bounds each object; the bridge does not add its own limit.
        timeout: std::time::Duration::from_secs(365 * 24 * 3600),
        retries: 0,
        input: StepInput::Raw,
        output: OutputFormat::Opaque,
        extension: String::new(),
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => accepted?.0,
            () = &mut shutdown => return Ok(()),
        };
        crate::transform::container::transport::no_delay(&socket);
        let step = step.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(request, step.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(
            Full::new(Bytes::from(message))
                .map_err(|never: Infallible| match never {})
                .boxed_unsync(),
        )
        .expect("valid response")
}

async fn handle(
    request: Request<Incoming>,
    step: Arc<ContainerStep>,
) -> Result<Response<Body>, Infallible> {
    if request.uri().path() == "/health" {
        return Ok(text(StatusCode::OK, "ok".into()));
    }
    if request.method() != Method::POST {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the io bridge takes POST (hpush)\n".into(),
        ));
    }
    let key = request
        .headers()
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(decode_key)
        .unwrap_or_default();
    let body = request
        .into_body()
        .into_data_stream()
        .map_err(io::Error::other);
    let mut reply = match transport::io(&step, &key, Box::pin(body)).await {
        Ok(reply) => reply,
        Err(e) => return Ok(failure(&e)),
    };
    // Hold back the start of the output: a command that fails early gets a clean status.
    let mut held = Vec::new();
    loop {
        let mut chunk = vec![0u8; 64 << 10];
        match reply.read(&mut chunk).await {
            Ok(0) => return Ok(ok(Bytes::from(held), None)),
            Ok(n) => {
                held.extend_from_slice(&chunk[..n]);
                if held.len() >= HOLD_BACK {
                    return Ok(ok(Bytes::from(held), Some(reply)));
                }
            }
            Err(e) => {
                return Ok(match transport::transport_error(&e) {
                    Some(t) => failure(t),
                    None => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                });
            }
        }
    }
}

/// A failing command is refused for this object (422); one that could not be started or
/// was killed is the transformer's failure (500).
fn failure(error: &TransportError) -> Response<Body> {
    let status = match error {
        TransportError::Exit { code: Some(_), .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(status, format!("{error}\n"))
}

fn ok(head: Bytes, rest: Option<transport::Reply>) -> Response<Body> {
    let first = futures::stream::once(async move { Ok(Frame::data(head)) });
    let body: Body = match rest {
        None => StreamBody::new(first).boxed_unsync(),
        Some(rest) => {
            // A failure now can only abort the response: the worker sees a broken reply.
            let tail = tokio_util::io::ReaderStream::new(rest).map_ok(Frame::data);
            StreamBody::new(first.chain(tail)).boxed_unsync()
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .body(body)
        .expect("valid response")
}
