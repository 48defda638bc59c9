//! The built-in transformer server (`sluice transformer serve`), in process and through the
//! binary: health, hpush and hpull with streamed bodies, status codes, loopback only,
//! graceful shutdown. The HTTP helpers here also serve the Python transformer's tests.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use md5::Md5;
use sha2::{Digest, Sha256};
use sluice::transformer_server::{ListenError, Op, parse_listen, serve_with_shutdown};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::free_port;

pub(crate) type TestBody = UnsyncBoxBody<Bytes, Infallible>;

/// A request body with a Content-Length.
pub(crate) fn sized(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).boxed_unsync()
}

/// A request body of unknown length, so sent with chunked transfer encoding, cut into
/// pieces of `piece` bytes (which split lines and UTF-8 characters anywhere).
pub(crate) fn chunked(data: &[u8], piece: usize) -> TestBody {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = data
        .chunks(piece)
        .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
}

pub(crate) fn empty() -> TestBody {
    Empty::new().boxed_unsync()
}

pub(crate) fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A reply read to its end.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` and reads the whole reply, within a minute.
pub(crate) async fn send(request: Request<TestBody>) -> Reply {
    send_with(&client(), request).await
}

pub(crate) async fn send_with(
    client: &Client<HttpConnector, TestBody>,
    request: Request<TestBody>,
) -> Reply {
    let what = format!("{} {}", request.method(), request.uri());
    let exchange = async {
        let response = client
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the reply: {e:?}"))
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .unwrap_or_else(|_| panic!("{what}: no reply within a minute"))
}

/// Sends `request`, expecting 200 and then a body that breaks off: how a transformer
/// says that an object failed after its output started.
pub(crate) async fn send_expecting_abort(request: Request<TestBody>) {
    let what = format!("{} {}", request.method(), request.uri());
    let exchange = async {
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        response.into_body().collect().await
    };
    let body = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .unwrap_or_else(|_| panic!("{what}: no reply within a minute"));
    assert!(body.is_err(), "{what}: the body ended as if whole");
}

pub(crate) fn get(url: &str) -> Request<TestBody> {
    Request::get(url).body(empty()).unwrap()
}

pub(crate) fn post(url: &str, key: &str, body: TestBody) -> Request<TestBody> {
    Request::post(url)
        .header("x-sluice-key", key)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap()
}

/// The hpull request for the object at `object_url`.
pub(crate) fn pull(transformer: &str, object_url: &str, key: &str) -> Request<TestBody> {
    let encoded =
        percent_encoding::utf8_percent_encode(object_url, percent_encoding::NON_ALPHANUMERIC);
    Request::get(format!("{transformer}/?url={encoded}"))
        .header("x-sluice-key", key)
        .header("x-sluice-url", object_url)
        .body(empty())
        .unwrap()
}

/// An hrev request: the object's own path below `path`, with where to fetch it.
pub(crate) fn rev(transformer: &str, path: &str, key: &str, object_url: &str) -> Request<TestBody> {
    Request::get(format!("{transformer}{path}{key}"))
        .header("x-sluice-key", key)
        .header("x-sluice-url", object_url)
        .body(empty())
        .unwrap()
}

/// Polls `GET /health` until it answers 200; panics after `within`.
pub(crate) async fn wait_healthy(base: &str, within: Duration, child: &mut Child) {
    let client = client();
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the transformer exited before it was ready: {status}");
        }
        let attempt = client.request(get(&format!("{base}/health")));
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), attempt).await
            && response.status() == StatusCode::OK
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{base}/health not 200 within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process that is killed when the test ends, however it ends.
pub(crate) struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The worker's side of hpull in miniature: serves one object at `url`, chunked.
pub(crate) struct ObjectServer {
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for ObjectServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `object` at `/objects/<path>`; `path` is sent as given (percent-encoded).
pub(crate) async fn serve_object(path: &'static str, object: Bytes) -> ObjectServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let object = object.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let object = object.clone();
                async move {
                    let response = if request.uri().path() == format!("/objects/{path}") {
                        let pieces: Vec<Result<Frame<Bytes>, Infallible>> = (0..object.len())
                            .step_by(65_536)
                            .map(|at| {
                                Ok(Frame::data(
                                    object.slice(at..(at + 65_536).min(object.len())),
                                ))
                            })
                            .collect();
                        Response::new(StreamBody::new(futures::stream::iter(pieces)).boxed_unsync())
                    } else {
                        let mut response = Response::new(empty());
                        *response.status_mut() = StatusCode::NOT_FOUND;
                        response
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service),
            );
        }
    });
    ObjectServer {
        url: format!("http://{addr}/objects/{path}"),
        task,
    }
}

/// Deterministic bytes that compress somewhat.
fn object(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        writeln!(out, "{},{:x},{}", out.len(), state, state % 1000).unwrap();
    }
    out.truncate(len);
    out
}

/// The built-in server running in this process.
struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(op: Op) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_shutdown(listener, op, async {
            let _ = stopped.await;
        }));
        Server {
            base: format!("http://{addr}"),
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server and waits until its requests in flight are done.
    async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the server stops")
            .expect("the server task did not panic")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn health_answers_ok() {
    let server = Server::start(Op::Identity).await;
    let reply = send(get(&server.url("/health"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "ok");
    let reply = send(post(&server.url("/health"), "k", sized("x"))).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn hpush_md5_of_a_streamed_chunked_body() {
    let server = Server::start(Op::Md5).await;
    let input = object(5 << 20);
    let reply = send(post(
        &server.url("/"),
        "dir/a%20b.csv",
        chunked(&input, 100_003),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.text(),
        format!("{}\n", hex::encode(<Md5 as md5::Digest>::digest(&input)))
    );
    assert_eq!(
        reply.headers[CONTENT_TYPE], "text/plain; charset=utf-8",
        "{:?}",
        reply.headers
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn hpush_gzip_then_gunzip_round_trips() {
    let gzip = Server::start(Op::Gzip).await;
    let gunzip = Server::start(Op::Gunzip).await;
    let input = object(3 << 20);
    let compressed = send(post(&gzip.url("/"), "big.csv", chunked(&input, 65_536))).await;
    assert_eq!(compressed.status, StatusCode::OK, "{}", compressed.text());
    assert!(
        compressed.body.len() < input.len() * 3 / 4,
        "{} bytes",
        compressed.body.len()
    );
    // Standard gzip, not just something our gunzip reads.
    let mut local = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&compressed.body[..]),
        &mut local,
    )
    .unwrap();
    assert!(local == input);
    let back = send(post(
        &gunzip.url("/"),
        "big.csv.gz",
        chunked(&compressed.body, 10_007),
    ))
    .await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.text());
    assert_eq!(back.body.len(), input.len());
    assert!(back.body == input);
    gzip.stop().await.unwrap();
    gunzip.stop().await.unwrap();
}

#[tokio::test]
async fn gunzip_of_a_highly_compressed_object() {
    let server = Server::start(Op::Gunzip).await;
    let zeros = vec![0u8; 8 << 20];
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&zeros).unwrap();
    let compressed = encoder.finish().unwrap();
    assert!(compressed.len() < 64 << 10, "{}", compressed.len());
    let reply = send(post(&server.url("/"), "zeros.gz", sized(compressed))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.body == zeros);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn hpush_with_content_length_and_upper() {
    let server = Server::start(Op::Upper).await;
    let reply = send(post(&server.url("/"), "k", sized("Hello, wörld!\n"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "HELLO, WöRLD!\n");
    assert_eq!(reply.headers[CONTENT_TYPE], "application/octet-stream");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn hpull_fetches_the_object_from_the_url() {
    let server = Server::start(Op::Sha256).await;
    let input = Bytes::from(object(2 << 20));
    let source = serve_object("a%20b%2Bc.csv", input.clone()).await;
    let reply = send(pull(&server.base, &source.url, "a%20b%2Bc.csv")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.text(),
        format!("{}\n", hex::encode(Sha256::digest(&input)))
    );
    server.stop().await.unwrap();
}

/// hrev: the request names the object by its own path, as a reverse proxy would
/// forward it; the server fetches the bytes from the URL it is given.
#[tokio::test]
async fn hrev_fetches_the_object_named_by_the_path() {
    let server = Server::start(Op::Md5).await;
    let input = Bytes::from(object(2 << 20));
    let source = serve_object("in/a%20b.csv", input.clone()).await;
    let reply = send(rev(&server.base, "/", "in/a%20b.csv", &source.url)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let digest = <md5::Md5 as md5::Digest>::digest(&input);
    assert_eq!(reply.text(), format!("{}\n", hex::encode(digest)));
    // The source cannot be read: a retry may help. No URL: not an hrev request at all.
    let closed = format!("http://127.0.0.1:{}/objects/x", free_port());
    let reply = send(rev(&server.base, "/", "x", &closed)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let reply = send(get(&server.url("/in/x"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn hpull_failures_are_4xx_for_the_request_and_5xx_for_the_source() {
    let server = Server::start(Op::Identity).await;
    // The worker's endpoint is down or does not have the object: a retry may help.
    let closed = format!("http://127.0.0.1:{}/objects/x", free_port());
    let reply = send(pull(&server.base, &closed, "x")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let source = serve_object("x", Bytes::from_static(b"x")).await;
    let missing = source.url.replace("/objects/x", "/objects/y");
    let reply = send(pull(&server.base, &missing, "y")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert!(reply.text().contains("404"), "{}", reply.text());
    // Not a loopback URL, or no URL at all: the request is wrong.
    let reply = send(pull(&server.base, "http://example.com/objects/x", "x")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text().contains("loopback"), "{}", reply.text());
    let reply = send(get(&server.url("/"))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_object_the_op_cannot_take_is_a_4xx_and_the_connection_stays_usable() {
    let server = Server::start(Op::Gunzip).await;
    let client = client();
    let input = object(2 << 20);
    let reply = send_with(
        &client,
        post(&server.url("/"), "plain.csv", chunked(&input, 65_536)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.text().contains("not a valid gzip stream"),
        "{}",
        reply.text()
    );
    let reply = send_with(&client, get(&server.url("/health"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_failure_after_the_output_started_aborts_the_response() {
    let server = Server::start(Op::Gunzip).await;
    let gzip = Server::start(Op::Gzip).await;
    let input = object(4 << 20);
    let compressed = send(post(&gzip.url("/"), "k", chunked(&input, 65_536))).await;
    let truncated = &compressed.body[..compressed.body.len() - 100];
    send_expecting_abort(post(&server.url("/"), "k", chunked(truncated, 65_536))).await;
    // A small object that fails the same way gets a clean 400.
    let small = send(post(&gzip.url("/"), "k", sized(object(1000)))).await;
    let truncated = small.body.slice(..small.body.len() - 4);
    let reply = send(post(&server.url("/"), "k", sized(truncated))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    server.stop().await.unwrap();
    gzip.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let server = Server::start(Op::Identity).await;
    let reply = send(get(&server.url("/transform"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = send(post(&server.url("/nope"), "k", sized("x"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let put = Request::builder()
        .method(Method::PUT)
        .uri(server.url("/"))
        .body(sized("x"))
        .unwrap();
    let reply = send(put).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["allow"], "GET, POST");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_non_loopback_address_is_refused() {
    for address in ["0.0.0.0:8080", "[::]:8080", "192.168.1.10:80"] {
        let error = parse_listen(address).unwrap_err();
        assert!(matches!(error, ListenError::NotLoopback(_)), "{address}");
    }
    // A listener bound by someone else is checked too.
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = serve_with_shutdown(listener, Op::Identity, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("loopback only"), "{error}");
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let server = Server::start(Op::Upper).await;
    let (mut feed, body) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let url = server.url("/");
    // A first request makes sure the connection is accepted before the server stops.
    let client = client();
    let reply = send_with(&client, get(&server.url("/health"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let request = tokio::spawn(async move {
        let slow = post(&url, "slow", StreamBody::new(body).boxed_unsync());
        send_with(&client, slow).await
    });
    use futures::SinkExt;
    feed.send(Ok(Frame::data(Bytes::from_static(b"hello, "))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "waits for the request in flight");
    feed.send(Ok(Frame::data(Bytes::from_static(b"world\n"))))
        .await
        .unwrap();
    drop(feed);
    let reply = request.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "HELLO, WORLD\n");
    stopping.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn the_binary_serves_until_sigterm() {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["transformer", "serve", "--op", "upper"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running sluice");
    let mut child = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, Duration::from_secs(10), &mut child.0).await;
    let reply = send(post(
        &format!("{base}/"),
        "k",
        chunked(b"make me loud\n", 5),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "MAKE ME LOUD\n");
    // SAFETY: a plain kill(2) of our own child.
    let sent = unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains(&format!("serving upper on http://127.0.0.1:{port}\n")),
        "{stderr}"
    );
}

#[test]
fn the_binary_refuses_a_non_loopback_address() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "transformer",
            "serve",
            "--op",
            "md5",
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .expect("running sluice");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("loopback only"), "{stderr}");
}
