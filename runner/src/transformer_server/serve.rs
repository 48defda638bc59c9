//! The server side of the transformer protocol on loopback: `GET /health`, hpush
//! (`POST /`, the object is the body), hpull (`GET /?url=`, the object is fetched) and hrev
//! (`GET /<key>` with `X-Sluice-Url`, the object is fetched), each object streamed through
//! an [`Op`] into the response.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use percent_encoding::percent_decode;
use tokio::net::TcpListener;

use super::ops::{Op, OpError, Transform};
use crate::exit::error_chain;
use crate::transform::container::protocol::{KEY_HEADER, URL_HEADER, decode_key};
use crate::transform::container::transport::{http_client, no_delay};

/// Output held back before the status line is sent, so that an object whose whole output
/// fits gets a clean 4xx when the operation fails on it. Past this, a failure can only
/// abort the response.
const HOLD_BACK: usize = 1 << 20;

/// How long a failed hpush keeps reading the rest of the request before answering.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// A `--listen` address that a transformer may not use.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "{0:?} is not an address to listen on: expected 127.0.0.1:PORT, [::1]:PORT or localhost:PORT"
    )]
    Invalid(String),
    #[error(
        "refusing to listen on {0}: a transformer listens on loopback only (127.0.0.1 or ::1), beside the worker in its pod"
    )]
    NotLoopback(SocketAddr),
}

/// Parses a listen address and refuses any that is not loopback.
pub fn parse_listen(text: &str) -> Result<SocketAddr, ListenError> {
    let invalid = || ListenError::Invalid(text.to_string());
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match text.rsplit_once(':') {
            Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
                SocketAddr::from(([127, 0, 0, 1], port.parse().map_err(|_| invalid())?))
            }
            _ => return Err(invalid()),
        },
    };
    if !addr.ip().is_loopback() {
        return Err(ListenError::NotLoopback(addr));
    }
    Ok(addr)
}

/// Serves `op` on `listener` until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub async fn serve(listener: TcpListener, op: Op) -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    serve_with_shutdown(listener, op, shutdown).await
}

/// Serves `op` on `listener` until `shutdown` completes, then finishes the requests in
/// flight. Refuses a listener that is not on loopback.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    op: Op,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            ListenError::NotLoopback(addr),
        ));
    }
    let state = Arc::new(State {
        op,
        client: http_client(),
    });
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        no_delay(&socket);
        let state = state.clone();
        let service = hyper::service::service_fn(move |request| handle(request, state.clone()));
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(socket), service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "transformer connection ended");
            }
        });
    }
    drop(listener);
    let in_flight = connections.count();
    tracing::info!(
        connections = in_flight,
        "stopping: finishing the requests in flight"
    );
    connections.shutdown().await;
    Ok(())
}

struct State {
    op: Op,
    /// Fetches hpull objects from the worker's loopback endpoint.
    client: Client<HttpConnector, Empty<Bytes>>,
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let response = match (request.uri().path(), request.method()) {
        ("/health", &Method::GET | &Method::HEAD) => text(StatusCode::OK, "ok"),
        ("/health", _) => not_allowed("GET, HEAD"),
        ("/", &Method::POST) => hpush(request, &state).await,
        ("/", &Method::GET) => fetch(request, &state, Comm::Hpull).await,
        ("/", _) => not_allowed("GET, POST"),
        // hrev: the object's own path, and where to fetch it.
        (_, &Method::GET) if request.headers().contains_key(URL_HEADER) => {
            fetch(request, &state, Comm::Hrev).await
        }
        (path, _) => text(
            StatusCode::NOT_FOUND,
            format!(
                "no such path: {path} (this transformer answers on / and /health, and GET /<key> with {URL_HEADER} for hrev)\n"
            ),
        ),
    };
    Ok(response)
}

async fn hpush(request: Request<Incoming>, state: &State) -> Response<Body> {
    let key = object_key(request.headers()).unwrap_or_default();
    let input_type = request.headers().get(CONTENT_TYPE).cloned();
    let pipeline = Pipeline::new(request.into_body(), state.op, Comm::Hpush, key);
    respond(pipeline, input_type).await
}

/// hpull and hrev: fetch the object from the worker's loopback endpoint, then transform it.
async fn fetch(request: Request<Incoming>, state: &State, comm: Comm) -> Response<Body> {
    let url = match pull_url(request.uri(), request.headers()) {
        Ok(url) => url,
        Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    let key = object_key(request.headers()).unwrap_or_else(|| url.to_string());
    // The worker serves the object: when it cannot, a retry may help.
    let reply = match state.client.get(url.clone()).await {
        Ok(reply) if reply.status() == StatusCode::OK => reply,
        Ok(reply) => {
            let status = reply.status();
            tracing::warn!(key, %url, %status, comm = comm.name(), "fetching the object");
            return text(
                StatusCode::BAD_GATEWAY,
                format!("GET {url} answered {status}\n"),
            );
        }
        Err(error) => {
            let error = error_chain(&error);
            tracing::warn!(key, %url, error, comm = comm.name(), "fetching the object");
            return text(StatusCode::BAD_GATEWAY, format!("GET {url}: {error}\n"));
        }
    };
    let input_type = reply.headers().get(CONTENT_TYPE).cloned();
    let pipeline = Pipeline::new(reply.into_body(), state.op, comm, key);
    respond(pipeline, input_type).await
}

/// Answers 200 with the output of `pipeline`, or the status of its failure when that
/// comes before [`HOLD_BACK`] bytes of output.
async fn respond(mut pipeline: Pipeline, input_type: Option<HeaderValue>) -> Response<Body> {
    let content_type = output_type(pipeline.op, input_type);
    let mut held = Vec::new();
    let mut held_len = 0;
    while held_len < HOLD_BACK {
        match pipeline.next_chunk().await {
            Ok(Some(chunk)) => {
                held_len += chunk.len();
                held.push(chunk);
            }
            Ok(None) => {
                pipeline.log_done();
                return ok(content_type, full(concat(held)));
            }
            Err(error) => return pipeline.fail(error).await,
        }
    }
    let rest = futures::stream::unfold(Some(pipeline), |pipeline| async move {
        let mut pipeline = pipeline?;
        match pipeline.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), Some(pipeline))),
            Ok(None) => {
                pipeline.log_done();
                None
            }
            Err(error) => {
                // The status is sent: ending the body with an error aborts the response,
                // so the worker cannot take a partial object for a whole one.
                pipeline.log_failed(&error, None);
                Some((Err(io::Error::other(error)), None))
            }
        }
    });
    let frames = futures::stream::iter(held.into_iter().map(|chunk| Ok(Frame::data(chunk))));
    ok(
        content_type,
        StreamBody::new(frames.chain(rest)).boxed_unsync(),
    )
}

#[derive(Debug, Clone, Copy)]
enum Comm {
    Hpush,
    Hpull,
    Hrev,
}

impl Comm {
    fn name(self) -> &'static str {
        match self {
            Comm::Hpush => "hpush",
            Comm::Hpull => "hpull",
            Comm::Hrev => "hrev",
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PipelineError {
    #[error("reading the object")]
    Read(#[source] hyper::Error),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error("the {0} operation panicked")]
    Panicked(Op),
}

impl PipelineError {
    /// 4xx: this object cannot be transformed; 5xx: a retry can help.
    fn status(&self, comm: Comm) -> StatusCode {
        match (self, comm) {
            (PipelineError::Read(_), Comm::Hpush) => StatusCode::BAD_REQUEST,
            (PipelineError::Read(_), Comm::Hpull | Comm::Hrev) => StatusCode::BAD_GATEWAY,
            (PipelineError::Op(_), _) => StatusCode::BAD_REQUEST,
            (PipelineError::Panicked(_), _) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One object on its way: the input body, chunk by chunk, through the operation.
struct Pipeline {
    body: Incoming,
    op: Op,
    /// `None` once finished.
    transform: Option<Transform>,
    /// Input read but not yet given to the transform.
    pending: Bytes,
    comm: Comm,
    key: String,
    bytes_in: u64,
    bytes_out: u64,
    started: Instant,
}

impl Pipeline {
    fn new(body: Incoming, op: Op, comm: Comm, key: String) -> Pipeline {
        Pipeline {
            body,
            op,
            transform: Some(op.start()),
            pending: Bytes::new(),
            comm,
            key,
            bytes_in: 0,
            bytes_out: 0,
            started: Instant::now(),
        }
    }

    /// The next non-empty piece of output; `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, PipelineError> {
        while self.transform.is_some() {
            let out = if !self.pending.is_empty() {
                let take = self.pending.len().min(self.op.input_slice());
                let data = self.pending.split_to(take);
                self.update(data).await?
            } else {
                match self.body.frame().await {
                    Some(frame) => {
                        // Trailers carry nothing for us.
                        if let Ok(data) = frame.map_err(PipelineError::Read)?.into_data() {
                            self.bytes_in += data.len() as u64;
                            self.pending = data;
                        }
                        continue;
                    }
                    None => self.finish().await?,
                }
            };
            if !out.is_empty() {
                self.bytes_out += out.len() as u64;
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    // Compressing and hashing are CPU work: they run off the async I/O threads.
    async fn update(&mut self, data: Bytes) -> Result<Bytes, PipelineError> {
        let mut transform = self.transform.take().expect("not finished");
        let (transform, out) = if self.op.is_cheap() {
            let out = transform.update(data);
            (transform, out)
        } else {
            tokio::task::spawn_blocking(move || {
                let out = transform.update(data);
                (transform, out)
            })
            .await
            .map_err(|_| PipelineError::Panicked(self.op))?
        };
        self.transform = Some(transform);
        Ok(out?)
    }

    async fn finish(&mut self) -> Result<Bytes, PipelineError> {
        let transform = self.transform.take().expect("not finished");
        let out = if self.op.is_cheap() {
            transform.finish()
        } else {
            tokio::task::spawn_blocking(move || transform.finish())
                .await
                .map_err(|_| PipelineError::Panicked(self.op))?
        };
        Ok(out?)
    }

    /// The answer to a failure before any output was sent.
    async fn fail(mut self, error: PipelineError) -> Response<Body> {
        let status = error.status(self.comm);
        self.log_failed(&error, Some(status));
        if matches!(self.comm, Comm::Hpush) && !matches!(error, PipelineError::Read(_)) {
            // Reading the rest of the object keeps the connection usable and lets the
            // worker see the answer rather than a connection reset mid-upload.
            let drain = async { while let Some(Ok(_)) = self.body.frame().await {} };
            let _ = tokio::time::timeout(DRAIN_LIMIT, drain).await;
        }
        text(status, format!("{}\n", error_chain(&error)))
    }

    fn log_done(&self) {
        let key = &self.key;
        tracing::debug!(
            key,
            op = %self.op,
            comm = self.comm.name(),
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "transformed {key}"
        );
    }

    fn log_failed(&self, error: &PipelineError, status: Option<StatusCode>) {
        let key = &self.key;
        tracing::warn!(
            key,
            op = %self.op,
            comm = self.comm.name(),
            status = status.map(|s| s.as_u16()),
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            error = error_chain(error),
            "transforming {key} failed"
        );
    }
}

/// The decoded `X-Sluice-Key`.
fn object_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(KEY_HEADER)?;
    Some(decode_key(&String::from_utf8_lossy(value.as_bytes())))
}

/// The object URL of an hpull request: the `url` query parameter (percent-encoded), else
/// the `X-Sluice-Url` header. Only plain http on loopback: the worker serves the object
/// on its own loopback endpoint, and nothing else should be fetched on its behalf.
fn pull_url(uri: &Uri, headers: &HeaderMap) -> Result<Uri, String> {
    let from_query = uri
        .query()
        .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("url=")));
    let text = match (from_query, headers.get(URL_HEADER)) {
        (Some(encoded), _) => percent_decode(encoded.as_bytes())
            .decode_utf8()
            .map_err(|_| "the url query parameter is not percent-encoded UTF-8".to_string())?
            .into_owned(),
        (None, Some(header)) => header
            .to_str()
            .map_err(|_| "the X-Sluice-Url header is not ASCII".to_string())?
            .to_string(),
        (None, None) => {
            return Err(
                "GET / fetches the object named by ?url=<percent-encoded URL> (hpull); none given"
                    .to_string(),
            );
        }
    };
    let url: Uri = text
        .parse()
        .map_err(|error| format!("url {text:?}: {error}"))?;
    if url.scheme_str() != Some("http") {
        return Err(format!("url {text:?}: hpull fetches over plain http only"));
    }
    let host = url.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "url {text:?}: hpull fetches from the worker's loopback endpoint only"
        ));
    }
    Ok(url)
}

fn output_type(op: Op, input: Option<HeaderValue>) -> HeaderValue {
    let octets = HeaderValue::from_static("application/octet-stream");
    match op {
        Op::Md5 | Op::Sha256 => HeaderValue::from_static("text/plain; charset=utf-8"),
        Op::Gzip => HeaderValue::from_static("application/gzip"),
        Op::Gunzip => octets,
        Op::Identity | Op::Upper => input.unwrap_or(octets),
    }
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(chunks) {
        Ok([one]) => one,
        Err(chunks) => {
            let mut all = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in chunks {
                all.extend_from_slice(&chunk);
            }
            all.freeze()
        }
    }
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn ok(content_type: HeaderValue, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

fn text(status: StatusCode, message: impl Into<Bytes>) -> Response<Body> {
    let mut response = ok(
        HeaderValue::from_static("text/plain; charset=utf-8"),
        full(message.into()),
    );
    *response.status_mut() = status;
    response
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; allowed: {allow}\n"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_loopback_only() {
        assert_eq!(
            parse_listen("127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen("[::1]:9000").unwrap(),
            "[::1]:9000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("localhost:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        for refused in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:80"] {
            let error = parse_listen(refused).unwrap_err();
            assert!(matches!(error, ListenError::NotLoopback(_)), "{refused}");
            assert!(error.to_string().contains("loopback only"), "{error}");
        }
        for invalid in ["8080", "127.0.0.1", "example.com:80", "localhost:http", ""] {
            assert!(
                matches!(parse_listen(invalid), Err(ListenError::Invalid(_))),
                "{invalid}"
            );
        }
    }

    fn pull(uri: &str, header: Option<&str>) -> Result<Uri, String> {
        let mut headers = HeaderMap::new();
        if let Some(header) = header {
            headers.insert(URL_HEADER, header.parse().unwrap());
        }
        pull_url(&uri.parse().unwrap(), &headers)
    }

    #[test]
    fn the_pull_url_is_decoded_from_the_query_or_the_header() {
        let url = pull(
            "/?url=http%3A%2F%2F127.0.0.1%3A4000%2Fobjects%2Fa%2520b%2Bc.csv",
            None,
        )
        .unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:4000/objects/a%20b+c.csv");
        let url = pull("/?x=1&url=http://localhost:1/o", None).unwrap();
        assert_eq!(url.to_string(), "http://localhost:1/o");
        let url = pull("/", Some("http://[::1]:5/o")).unwrap();
        assert_eq!(url.host(), Some("[::1]"));
    }

    #[test]
    fn the_pull_url_must_be_plain_http_on_loopback() {
        assert!(pull("/", None).unwrap_err().contains("?url="));
        assert!(
            pull("/?url=https%3A%2F%2F127.0.0.1%2Fo", None)
                .unwrap_err()
                .contains("plain http")
        );
        assert!(
            pull("/?url=http%3A%2F%2Fexample.com%2Fo", None)
                .unwrap_err()
                .contains("loopback")
        );
        assert!(pull("/?url=%FF", None).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn held_chunks_are_joined() {
        assert_eq!(concat(vec![]), Bytes::new());
        assert_eq!(concat(vec![Bytes::from_static(b"one")]), "one");
        assert_eq!(
            concat(vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")]),
            "abc"
        );
    }
}
