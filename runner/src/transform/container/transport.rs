//! Talking to a transformer: readiness on `/health`, `hpush` (POST the object, read the
//! reply), `hpull` (serve the object on loopback, send its URL), `io` (a process per
//! object), each bounded by the step's per-object timeout.

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, ReadBuf};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::spec::container::{Comm, ContainerStep};
use crate::transform::container::protocol::{
    KEY_ENV, KEY_HEADER, OBJECT_SIZE_HEADER, URL_HEADER, encode_key,
};
use crate::transform::container::wire::ByteStream;

/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(200);

/// A transformer's reply: the transformed object as a byte stream.
pub type Reply = Pin<Box<dyn AsyncRead + Send>>;

/// How one exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach the transformer at 127.0.0.1:{port}: {detail}")]
    Unreachable { port: u16, detail: String },
    #[error("the transformer replied {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the object took longer than the step's timeout of {0:?}")]
    Timeout(Duration),
    #[error("the transformer was not ready (GET /health) within {0:?}")]
    NotReady(Duration),
    #[error("the connection broke: {0}")]
    Broken(String),
    #[error("the command {command:?} exited with {code:?}: {stderr}")]
    Exit {
        command: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("starting {command:?}: {detail}")]
    Spawn { command: String, detail: String },
}

impl TransportError {
    /// Whether another attempt can succeed: the transformer was unreachable or restarting,
    /// failed on its side (5xx), broke the connection or ran out of time.
    pub fn transient(&self) -> bool {
        match self {
            TransportError::Unreachable { .. }
            | TransportError::Timeout(_)
            | TransportError::NotReady(_)
            | TransportError::Broken(_) => true,
            TransportError::Status { status, .. } => *status >= 500 || *status == 429,
            // Killed by a signal (no code): the process did not decide to fail.
            TransportError::Exit { code, .. } => code.is_none(),
            TransportError::Spawn { .. } => false,
        }
    }
}

/// Waits until `GET /health` answers 200, or fails after `within`.
pub async fn wait_ready(port: u16, within: Duration) -> Result<(), TransportError> {
    let started = Instant::now();
    let client = client();
    loop {
        let request = Request::get(format!("http://127.0.0.1:{port}/health"))
            .body(empty())
            .expect("valid request");
        if let Ok(Ok(reply)) =
            tokio::time::timeout(Duration::from_secs(2), client.request(request)).await
            && reply.status() == StatusCode::OK
        {
            return Ok(());
        }
        if started.elapsed() >= within {
            return Err(TransportError::NotReady(within));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn client() -> Client<HttpConnector, Body> {
    http_client()
}

/// An HTTP/1 client for loopback peers (transformers, a Pushgateway). TCP_NODELAY: a request's
/// head and body go out in separate writes, and with Nagle's algorithm the body would wait
/// for the peer's delayed ACK of the head (about 40 ms per request).
pub fn http_client<B>() -> Client<HttpConnector, B>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Turns Nagle's algorithm off on an accepted connection, for the same reason as
/// [`http_client`]: a response's head and body are separate writes.
pub fn no_delay(stream: &tokio::net::TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "setting TCP_NODELAY");
    }
}

/// Sends one object through the step's transformer and returns its reply, which must be
/// read within the step's timeout (the returned reader fails with `TimedOut` after it).
pub async fn exchange(
    step: &ContainerStep,
    key: &str,
    size: Option<u64>,
    content_type: &str,
    body: ByteStream,
) -> Result<Reply, TransportError> {
    let deadline = tokio::time::Instant::now() + step.timeout;
    let reply = tokio::time::timeout_at(deadline, async {
        match step.comm {
            Comm::Hpush => hpush(step, key, size, content_type, body).await,
            Comm::Hpull | Comm::Hrev => fetched(step, key, body).await,
            // The step's bridge runs the command per object; the worker pushes to it.
            Comm::Io => hpush(step, key, size, content_type, body).await,
        }
    })
    .await
    .map_err(|_| TransportError::Timeout(step.timeout))??;
    Ok(Box::pin(Deadline {
        inner: reply,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
        timeout: step.timeout,
    }))
}

async fn hpush(
    step: &ContainerStep,
    key: &str,
    size: Option<u64>,
    content_type: &str,
    body: ByteStream,
) -> Result<Reply, TransportError> {
    let port = step.listen_port();
    let frames = body.map_ok(Frame::data);
    let mut request = Request::post(format!("http://127.0.0.1:{port}{}", step.path))
        .header(KEY_HEADER, encode_key(key))
        .header("content-type", content_type);
    if let Some(size) = size {
        request = request.header(OBJECT_SIZE_HEADER, size.to_string());
    }
    let request = request
        .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
        .expect("valid request");
    send(port, request).await
}

async fn send(port: u16, request: Request<Body>) -> Result<Reply, TransportError> {
    let reply = client().request(request).await.map_err(|e| {
        if e.is_connect() {
            TransportError::Unreachable {
                port,
                detail: e.to_string(),
            }
        } else {
            TransportError::Broken(crate::exit::error_chain(&e))
        }
    })?;
    let status = reply.status();
    if !status.is_success() {
        let body = reply.into_body().collect().await.map(|b| b.to_bytes());
        let text = body
            .map(|b| {
                String::from_utf8_lossy(&b[..b.len().min(2048)])
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        return Err(TransportError::Status {
            status: status.as_u16(),
            body: text,
        });
    }
    let stream = reply
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    Ok(Box::pin(StreamReader::new(stream)))
}

/// hpull and hrev: the object is staged in a temporary file and served on a loopback port
/// of the worker's own (GET and HEAD, single byte ranges) until the transformer's reply
/// ends. hpull sends `GET <path>?url=<object URL>`; hrev sends `GET <path>/<key>`, the
/// object's own path as a reverse proxy forwards it, with the object URL in a header.
async fn fetched(
    step: &ContainerStep,
    key: &str,
    body: ByteStream,
) -> Result<Reply, TransportError> {
    let port = step.listen_port();
    let staged = stage(body).await?;
    let size = staged.as_file().metadata().map(|m| m.len()).ok();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| TransportError::Broken(format!("binding the object endpoint: {e}")))?;
    let addr = listener.local_addr().expect("bound");
    let server = tokio::spawn(serve_file(listener, staged.path().to_path_buf()));
    let url = format!("http://{addr}/objects/{}", encode_key(key));
    let mut request = fetch_request(step, key, &url);
    if let Some(size) = size {
        request = request.header(OBJECT_SIZE_HEADER, size.to_string());
    }
    let request = request.body(empty()).expect("valid request");
    let reply = send(port, request).await;
    // The object stays served until the reply is read to its end.
    reply.map(|reply| -> Reply {
        Box::pin(Holding {
            inner: reply,
            _held: Box::new((staged, AbortOnDrop(server))),
        })
    })
}

/// The status a transformer answers to an hpull or hrev request whose object cannot be
/// fetched (its URL names a closed loopback port): the contract harness expects a `5xx`,
/// which makes the worker retry, never a `2xx`.
pub async fn status_for_unfetchable_object(
    step: &ContainerStep,
    key: &str,
) -> Result<u16, TransportError> {
    let port = step.listen_port();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| TransportError::Broken(format!("finding a closed port: {e}")))?;
    let url = format!("http://{closed}/objects/{}", encode_key(key));
    let request = fetch_request(step, key, &url)
        .body(empty())
        .expect("valid request");
    match send(port, request).await {
        Ok(_) => Ok(200),
        Err(TransportError::Status { status, .. }) => Ok(status),
        Err(other) => Err(other),
    }
}

/// The request that asks the transformer to fetch the object at `url`: hpull's
/// `GET <path>?url=`, or hrev's `GET <path>/<key>`, both with the key and URL headers.
fn fetch_request(step: &ContainerStep, key: &str, url: &str) -> hyper::http::request::Builder {
    let port = step.listen_port();
    let target = match step.comm {
        Comm::Hrev => format!("http://127.0.0.1:{port}{}", hrev_path(&step.path, key)),
        _ => format!(
            "http://127.0.0.1:{port}{}?url={}",
            step.path,
            encode_key(url).replace('/', "%2F")
        ),
    };
    Request::get(target)
        .header(KEY_HEADER, encode_key(key))
        .header(URL_HEADER, url)
}

/// The path an hrev request names: the step's path, then the object key (percent-encoded,
/// slashes kept), with one `/` between.
pub fn hrev_path(path: &str, key: &str) -> String {
    format!("{}/{}", path.trim_end_matches('/'), encode_key(key))
}

async fn stage(mut body: ByteStream) -> Result<tempfile::NamedTempFile, TransportError> {
    let staged = tempfile::NamedTempFile::new()
        .map_err(|e| TransportError::Broken(format!("staging the object: {e}")))?;
    let mut file = tokio::fs::File::from_std(
        staged
            .reopen()
            .map_err(|e| TransportError::Broken(format!("staging the object: {e}")))?,
    );
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| TransportError::Broken(format!("reading the object: {e}")))?;
        file.write_all(&chunk)
            .await
            .map_err(|e| TransportError::Broken(format!("staging the object: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| TransportError::Broken(format!("staging the object: {e}")))?;
    Ok(staged)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve_file(listener: tokio::net::TcpListener, path: PathBuf) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        no_delay(&stream);
        let path = path.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| serve_range(req, path.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn serve_range(
    request: Request<hyper::body::Incoming>,
    path: PathBuf,
) -> Result<Response<Body>, Infallible> {
    let reply = |status: StatusCode, body: Body| {
        Response::builder()
            .status(status)
            .body(body)
            .expect("valid response")
    };
    if !request.uri().path().starts_with("/objects/") {
        return Ok(reply(StatusCode::NOT_FOUND, empty()));
    }
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, empty()));
    };
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let range = request
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size));
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(None) => {
            return Ok(Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header("content-range", format!("bytes */{size}"))
                .body(empty())
                .expect("valid response"));
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-length", len)
        .header("accept-ranges", "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            "content-range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if request.method() == hyper::Method::HEAD {
        return Ok(builder.body(empty()).expect("valid response"));
    }
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, empty()));
    }
    let stream = ReaderStream::new(file.take(len)).map_ok(Frame::data);
    Ok(builder
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .expect("valid response"))
}

/// Parses one `bytes=a-b`, `bytes=a-` or `bytes=-n` range; `None` when unsatisfiable.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?.trim();
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?),
        ),
    };
    (start <= end && end < size).then_some((start, end))
}

/// io: one process per object, the object on stdin, the reply on stdout; stderr goes to
/// the log with the key. A non-zero exit fails the object when the output ends. The io
/// bridge (`sluice transformer serve --exec`) runs it; the worker talks to the bridge.
pub async fn io(
    step: &ContainerStep,
    key: &str,
    mut body: ByteStream,
) -> Result<Reply, TransportError> {
    let argv: Vec<String> = step
        .command
        .iter()
        .flatten()
        .chain(step.args.iter().flatten())
        .cloned()
        .collect();
    let shown = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Err(TransportError::Spawn {
            command: shown,
            detail: "no command".into(),
        });
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(
            step.env
                .iter()
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?))),
        )
        .env(KEY_ENV, key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| TransportError::Spawn {
            command: shown.clone(),
            detail: e.to_string(),
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let feeder = tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if stdin.write_all(&chunk).await.is_err() {
                // The process stopped reading; its exit status tells why.
                break;
            }
        }
        drop(stdin);
        Ok::<_, std::io::Error>(())
    });
    let stderr = child.stderr.take().expect("piped");
    let key_for_log = key.to_string();
    let errors = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut kept = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(key = %key_for_log, "transformer: {line}");
            if kept.len() < 20 {
                kept.push(line);
            }
        }
        kept.join("\n")
    });
    let stdout = child.stdout.take().expect("piped");
    Ok(Box::pin(Process {
        stdout,
        child: Some(child),
        feeder: Some(feeder),
        errors: Some(errors),
        waiting: None,
        finished: false,
        command: shown,
    }))
}

type ExitFuture = Pin<Box<dyn std::future::Future<Output = Result<(), TransportError>> + Send>>;

/// An io process's stdout; at its end the exit status decides.
struct Process {
    stdout: tokio::process::ChildStdout,
    child: Option<tokio::process::Child>,
    feeder: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    errors: Option<tokio::task::JoinHandle<String>>,
    waiting: Option<ExitFuture>,
    /// The exit status was judged: only end of file remains.
    finished: bool,
    command: String,
}

impl AsyncRead for Process {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(Ok(()));
        }
        if this.waiting.is_none() {
            let before = buf.filled().len();
            match Pin::new(&mut this.stdout).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let mut child = this.child.take().expect("child kept until the end");
                    let feeder = this.feeder.take();
                    let errors = this.errors.take();
                    let command = this.command.clone();
                    this.waiting = Some(Box::pin(async move {
                        let status = child.wait().await;
                        let fed = match feeder {
                            Some(f) => f.await.unwrap_or(Ok(())),
                            None => Ok(()),
                        };
                        let stderr = match errors {
                            Some(e) => e.await.unwrap_or_default(),
                            None => String::new(),
                        };
                        match status {
                            Ok(s) if s.success() => fed.map_err(|e| {
                                TransportError::Broken(format!("feeding the object: {e}"))
                            }),
                            Ok(s) => Err(TransportError::Exit {
                                command,
                                code: s.code(),
                                stderr,
                            }),
                            Err(e) => Err(TransportError::Broken(e.to_string())),
                        }
                    }));
                }
                other => return other,
            }
        }
        let verdict =
            std::task::ready!(this.waiting.as_mut().expect("set above").as_mut().poll(cx));
        this.waiting = None;
        this.finished = true;
        Poll::Ready(verdict.map_err(std::io::Error::other))
    }
}

/// Keeps something alive (a staged file, a server) while the reply is read.
struct Holding {
    inner: Reply,
    _held: Box<dyn Send>,
}

impl AsyncRead for Holding {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_read(cx, buf)
    }
}

/// Fails a reply that is still being read when the step's timeout passes.
struct Deadline {
    inner: Reply,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl AsyncRead for Deadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            let timeout = self.timeout;
            return Poll::Ready(Err(std::io::Error::other(TransportError::Timeout(timeout))));
        }
        self.inner.as_mut().poll_read(cx, buf)
    }
}

/// The transport error behind an I/O error from a reply, if it carries one.
pub fn transport_error(error: &std::io::Error) -> Option<&TransportError> {
    error.get_ref()?.downcast_ref::<TransportError>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrev_names_the_object_below_the_steps_path() {
        assert_eq!(hrev_path("/", "in/a b.csv"), "/in/a%20b.csv");
        assert_eq!(hrev_path("/etl/", "k"), "/etl/k");
        assert_eq!(hrev_path("/etl", "k"), "/etl/k");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
