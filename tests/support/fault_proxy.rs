//! A fault-injecting HTTP proxy on loopback, placed in front of a test S3 server.
//!
//! At seeded rates it answers 500 InternalError or 503 SlowDown (with S3's XML error body),
//! breaks the connection in the middle of a GET response body or of an upload's request
//! body, and adds latency; it counts every fault it injects. Paths can be denied for good
//! (403 AccessDenied). It also watches the request stream for the points where a crash
//! hurts most (a GET of a source object, an UploadPart, the answer to a
//! CompleteMultipartUpload, the PUT of a done marker or of `_SUCCESS.json`) and can run an
//! action, such as killing the client, at a chosen occurrence of one of them.
//!
//! Requests are signed for the proxy's address; the proxy keeps the `Host` header, so the
//! server checks the signature against the same host the client signed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// How often each transient fault is injected, per request, and how it is bounded.
#[derive(Debug, Clone, Copy)]
pub struct FaultRates {
    pub seed: u64,
    /// 500 InternalError, before the request reaches the server.
    pub internal_error: f64,
    /// 503 SlowDown, before the request reaches the server.
    pub slow_down: f64,
    /// A GET whose response body stops halfway with a broken connection.
    pub reset_get_body: f64,
    /// A PUT or POST whose request body is cut halfway by a broken connection.
    pub reset_upload_body: f64,
    /// A CompleteMultipartUpload that the server carries out but whose answer is lost
    /// (the connection breaks), so the client retries a completed upload.
    pub lose_complete_answer: f64,
    /// Extra latency (up to `max_latency`) before the request is forwarded.
    pub latency: f64,
    pub max_latency: Duration,
    /// Faults in a row for one request target (method, path and query) at most, so a
    /// client that retries a few times always gets through.
    pub max_in_a_row: u32,
    /// A fault chosen for a request of run state (a key under `_sluice/`, or a listing of
    /// it) repeats for this many attempts of the request in a row, beyond `max_in_a_row`:
    /// set it to the client's attempts to make bookkeeping outlast them (0: no bursts).
    pub state_burst: u32,
}

impl FaultRates {
    /// No faults at all: a transparent proxy that only observes.
    pub fn none() -> FaultRates {
        FaultRates {
            seed: 0,
            internal_error: 0.0,
            slow_down: 0.0,
            reset_get_body: 0.0,
            reset_upload_body: 0.0,
            lose_complete_answer: 0.0,
            latency: 0.0,
            max_latency: Duration::ZERO,
            max_in_a_row: 0,
            state_burst: 0,
        }
    }
}

/// What the proxy injected, by kind.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub requests: AtomicU64,
    pub internal_error: AtomicU64,
    pub slow_down: AtomicU64,
    pub reset_get_body: AtomicU64,
    pub reset_upload_body: AtomicU64,
    pub lost_complete_answer: AtomicU64,
    pub latency: AtomicU64,
    pub denied: AtomicU64,
    /// Faults on run state repeated for `state_burst` attempts in a row.
    pub state_bursts: AtomicU64,
}

impl FaultCounts {
    /// Transient faults injected (latency not counted: it breaks nothing).
    pub fn faults(&self) -> u64 {
        self.internal_error.load(Ordering::Relaxed)
            + self.slow_down.load(Ordering::Relaxed)
            + self.reset_get_body.load(Ordering::Relaxed)
            + self.reset_upload_body.load(Ordering::Relaxed)
            + self.lost_complete_answer.load(Ordering::Relaxed)
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "{} requests: {} x 500 InternalError, {} x 503 SlowDown, {} GET bodies reset, \
             {} upload bodies reset, {} completion answers lost, {} delayed, {} denied, \
             {} bursts on run state",
            n(&self.requests),
            n(&self.internal_error),
            n(&self.slow_down),
            n(&self.reset_get_body),
            n(&self.reset_upload_body),
            n(&self.lost_complete_answer),
            n(&self.latency),
            n(&self.denied),
            n(&self.state_bursts)
        )
    }
}

/// A point in the request stream where a crash is interesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Point {
    /// A GET of an object under the source prefix: the action runs once half the body
    /// has been sent.
    SourceGet,
    /// An UploadPart: the action runs before the part reaches the server.
    UploadPart,
    /// A CompleteMultipartUpload: the action runs after the server completed the upload,
    /// before the client hears of it.
    CompleteUpload,
    /// The PUT of a done marker: the action runs before or after the server stores it.
    MarkerPut,
    /// The PUT of `_SUCCESS.json`: the action runs before or after the server stores it.
    Publish,
    /// The PUT of a Delta table's log entry (`_delta_log/<version>.json`), its commit: the
    /// action runs before or after the server stores it. Not among the crash trials' points.
    TableCommit,
}

impl Point {
    pub const ALL: [Point; 5] = [
        Point::SourceGet,
        Point::UploadPart,
        Point::CompleteUpload,
        Point::MarkerPut,
        Point::Publish,
    ];
}

/// Runs `action` at the `occurrence`-th (1-based) request of `point`.
pub struct Trap {
    pub point: Point,
    pub occurrence: u64,
    /// For puts: run the action after the server stored the object (else before).
    pub after: bool,
    pub action: Box<dyn Fn() + Send + Sync>,
}

struct Shared {
    upstream: String,
    rates: Mutex<FaultRates>,
    rng: Mutex<ChaCha8Rng>,
    counts: FaultCounts,
    /// Faults in a row per request target.
    streaks: Mutex<HashMap<String, u32>>,
    /// Bursts on run state: the fault and how many more attempts it takes.
    bursts: Mutex<HashMap<String, (Fault, u32)>>,
    /// Path prefixes (`/bucket/key...`) answered 403 AccessDenied.
    denied: Mutex<Vec<String>>,
    /// Path prefixes whose GET answers lose their last line, as a store that lost a write.
    tampered: Mutex<Vec<String>>,
    source_prefix: String,
    seen: Mutex<HashMap<Point, u64>>,
    trap: Mutex<Option<Trap>>,
    fired: AtomicBool,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The proxy; it serves until dropped.
pub struct FaultProxy {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 in front of `upstream` (`http://host:port`). GETs of keys
    /// that start with `source_prefix` count as [`Point::SourceGet`].
    pub async fn start(upstream: &str, source_prefix: &str, rates: FaultRates) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fault proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(rates.seed)),
            rates: Mutex::new(rates),
            counts: FaultCounts::default(),
            streaks: Mutex::new(HashMap::new()),
            bursts: Mutex::new(HashMap::new()),
            denied: Mutex::new(Vec::new()),
            tampered: Mutex::new(Vec::new()),
            source_prefix: source_prefix.to_string(),
            seen: Mutex::new(HashMap::new()),
            trap: Mutex::new(None),
            fired: AtomicBool::new(false),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { shared.handle(req).await }
                    });
                    // A connection we break on purpose ends with an error: expected.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { url, shared, task }
    }

    /// The URL clients use instead of the server's.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn counts(&self) -> &FaultCounts {
        &self.shared.counts
    }

    /// Changes the fault rates from now on.
    pub fn set_rates(&self, rates: FaultRates) {
        *self.shared.rng.lock().unwrap() = ChaCha8Rng::seed_from_u64(rates.seed);
        *self.shared.rates.lock().unwrap() = rates;
    }

    /// Answers every request whose path starts with `/bucket/key_prefix` with 403
    /// AccessDenied, for good.
    pub fn deny(&self, bucket: &str, key_prefix: &str) {
        self.shared
            .denied
            .lock()
            .unwrap()
            .push(format!("/{bucket}/{key_prefix}"));
    }

    /// Requests of each point seen since the last [`reset_points`](Self::reset_points).
    /// From now on, a whole-object GET under `key_prefix` in `bucket` answers the stored
    /// text without its last line (and without checksum headers, which it no longer
    /// matches): what a read-back would find had the store lost a record.
    pub fn tamper(&self, bucket: &str, key_prefix: &str) {
        self.shared
            .tampered
            .lock()
            .unwrap()
            .push(format!("/{bucket}/{key_prefix}"));
    }

    pub fn seen(&self, point: Point) -> u64 {
        self.shared
            .seen
            .lock()
            .unwrap()
            .get(&point)
            .copied()
            .unwrap_or(0)
    }

    /// Starts counting points afresh and disarms any trap.
    pub fn reset_points(&self) {
        self.shared.seen.lock().unwrap().clear();
        *self.shared.trap.lock().unwrap() = None;
        self.shared.fired.store(false, Ordering::SeqCst);
    }

    /// Arms a trap (counting points afresh).
    pub fn arm(&self, trap: Trap) {
        self.reset_points();
        *self.shared.trap.lock().unwrap() = Some(trap);
    }

    /// Whether the armed trap ran its action.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }
}

/// What one request is, as far as faults and traps care.
struct Classified {
    point: Option<Point>,
    has_body: bool,
    /// A request for run state: a key under `_sluice/`, or a listing of it.
    state: bool,
    target: String,
}

fn classify(req: &Request<Incoming>, source_prefix: &str) -> Classified {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let key = path
        .trim_start_matches('/')
        .split_once('/')
        .map_or("", |(_, key)| key);
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    let method = req.method();
    let point = if method == Method::GET && !key.is_empty() && key.starts_with(source_prefix) {
        Some(Point::SourceGet)
    } else if method == Method::PUT && has("partNumber") && has("uploadId") {
        Some(Point::UploadPart)
    } else if method == Method::POST && has("uploadId") {
        Some(Point::CompleteUpload)
    } else if method == Method::PUT && key.contains("_sluice/") && key.contains("/done/") {
        Some(Point::MarkerPut)
    } else if method == Method::PUT && key.ends_with("/_SUCCESS.json") {
        Some(Point::Publish)
    } else if method == Method::PUT && key.contains("_delta_log/") && key.ends_with(".json") {
        Some(Point::TableCommit)
    } else {
        None
    };
    Classified {
        point,
        has_body: method == Method::PUT || method == Method::POST,
        state: key.starts_with("_sluice/") || query.contains("prefix=_sluice"),
        target: format!("{method} {path}?{query}"),
    }
}

/// The transient fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    InternalError,
    SlowDown,
    ResetGetBody,
    ResetUploadBody,
    LoseCompleteAnswer,
}

impl Shared {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, std::io::Error> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.uri().path().to_string();
        if self
            .denied
            .lock()
            .unwrap()
            .iter()
            .any(|p| path.starts_with(p))
        {
            self.counts.denied.fetch_add(1, Ordering::Relaxed);
            return Ok(s3_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Access Denied",
                &path,
            ));
        }
        let class = classify(&req, &self.source_prefix);
        let trap = class.point.and_then(|point| self.trap_for(point));
        if let Some(trap) = trap {
            return self.spring(trap, req).await;
        }

        let (fault, delay) = self.choose(&class, req.method() == Method::GET);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match fault {
            Some(Fault::InternalError) => {
                return Ok(s3_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                    &path,
                ));
            }
            Some(Fault::SlowDown) => {
                return Ok(s3_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                    "Please reduce your request rate.",
                    &path,
                ));
            }
            Some(Fault::ResetUploadBody) => {
                // Read about half of what the client sends, then break the connection.
                let length = content_length(&req);
                let mut body = req.into_body();
                let mut read = 0u64;
                while read < length / 2 {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            read += frame.data_ref().map_or(0, |d| d.len() as u64);
                        }
                        _ => break,
                    }
                }
                return Err(broken("upload body reset by the fault proxy"));
            }
            Some(Fault::ResetGetBody | Fault::LoseCompleteAnswer) | None => {}
        }
        let tamper = req.method() == Method::GET
            && self
                .tampered
                .lock()
                .unwrap()
                .iter()
                .any(|p| path.starts_with(p));
        let (status, mut headers, mut body) = self.forward(req).await?;
        // A whole object, asked for whole or as a range from byte 0 that covers it all.
        let whole = status == StatusCode::OK
            || (status == StatusCode::PARTIAL_CONTENT
                && headers
                    .get(hyper::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(covers_all));
        if tamper && whole {
            let text = body.strip_suffix(b"\n").unwrap_or(&body);
            let keep = text
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |at| at + 1);
            body = body.slice(..keep);
            let checksums: Vec<_> = headers
                .keys()
                .filter(|name| name.as_str().starts_with("x-amz-checksum"))
                .cloned()
                .collect();
            for name in checksums {
                headers.remove(name);
            }
            headers.insert(hyper::header::CONTENT_LENGTH, body.len().into());
            if status == StatusCode::PARTIAL_CONTENT {
                let range = format!("bytes 0-{}/{}", body.len().saturating_sub(1), body.len());
                headers.insert(hyper::header::CONTENT_RANGE, range.parse().unwrap());
            }
        }
        if fault == Some(Fault::LoseCompleteAnswer) {
            return Err(broken(
                "the answer to a completion was lost by the fault proxy",
            ));
        }
        if fault == Some(Fault::ResetGetBody) && status.is_success() && body.len() > 1 {
            let half = body.slice(..body.len() / 2);
            return Ok(respond(status, headers, broken_body(half, || {})));
        }
        Ok(respond(status, headers, full(body)))
    }

    /// The armed trap if this request is its occurrence; counts the point either way.
    fn trap_for(&self, point: Point) -> Option<Trap> {
        let n = {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(point).or_default();
            *n += 1;
            *n
        };
        let mut trap = self.trap.lock().unwrap();
        if trap
            .as_ref()
            .is_some_and(|t| t.point == point && t.occurrence == n)
        {
            return trap.take();
        }
        None
    }

    fn fire(&self, trap: &Trap) {
        self.fired.store(true, Ordering::SeqCst);
        (trap.action)();
    }

    /// Lets the request reach the server or not, runs the trap's action at its moment,
    /// and then breaks the connection: the client is gone by then.
    async fn spring(
        self: Arc<Self>,
        trap: Trap,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, std::io::Error> {
        match trap.point {
            Point::SourceGet => {
                let (status, headers, body) = self.forward(req).await?;
                let half = body.slice(..body.len() / 2);
                let shared = self.clone();
                Ok(respond(
                    status,
                    headers,
                    broken_body(half, move || shared.fire(&trap)),
                ))
            }
            Point::UploadPart => {
                self.fire(&trap);
                Err(broken("killed before the part reached the server"))
            }
            Point::CompleteUpload => {
                self.forward(req).await?;
                self.fire(&trap);
                Err(broken("killed after the upload completed"))
            }
            Point::MarkerPut | Point::Publish | Point::TableCommit => {
                if trap.after {
                    self.forward(req).await?;
                }
                self.fire(&trap);
                Err(broken("killed around a put"))
            }
        }
    }

    /// Seeded choice of a fault (bounded per target) and of extra latency.
    fn choose(&self, class: &Classified, is_get: bool) -> (Option<Fault>, Option<Duration>) {
        let rates = *self.rates.lock().unwrap();
        let mut rng = self.rng.lock().unwrap();
        let delay = (rates.latency > 0.0 && rng.random_bool(rates.latency.min(1.0))).then(|| {
            self.counts.latency.fetch_add(1, Ordering::Relaxed);
            rates.max_latency.mul_f64(rng.random_range(0.1..1.0))
        });
        let roll: f64 = rng.random();
        drop(rng);
        // A burst on run state goes on, whatever the roll.
        if let Some((fault, left)) = self.bursts.lock().unwrap().get_mut(&class.target)
            && *left > 0
        {
            *left -= 1;
            self.count(*fault);
            return (Some(*fault), delay);
        }
        let mut edge = 0.0;
        let mut pick = None;
        for (fault, rate, applies) in [
            (
                Fault::LoseCompleteAnswer,
                rates.lose_complete_answer,
                class.point == Some(Point::CompleteUpload),
            ),
            (Fault::InternalError, rates.internal_error, true),
            (Fault::SlowDown, rates.slow_down, true),
            (Fault::ResetGetBody, rates.reset_get_body, is_get),
            (
                Fault::ResetUploadBody,
                rates.reset_upload_body,
                class.has_body,
            ),
        ] {
            if !applies {
                continue;
            }
            edge += rate;
            if roll < edge {
                pick = Some(fault);
                break;
            }
        }
        let mut streaks = self.streaks.lock().unwrap();
        let streak = streaks.entry(class.target.clone()).or_default();
        let fault = match pick {
            Some(_) if *streak >= rates.max_in_a_row => None,
            other => other,
        };
        match fault {
            Some(fault) => {
                *streak += 1;
                self.count(fault);
                if class.state && rates.state_burst > 1 {
                    self.counts.state_bursts.fetch_add(1, Ordering::Relaxed);
                    self.bursts
                        .lock()
                        .unwrap()
                        .insert(class.target.clone(), (fault, rates.state_burst - 1));
                }
            }
            None => *streak = 0,
        }
        (fault, delay)
    }

    fn count(&self, fault: Fault) {
        let counter = match fault {
            Fault::InternalError => &self.counts.internal_error,
            Fault::SlowDown => &self.counts.slow_down,
            Fault::ResetGetBody => &self.counts.reset_get_body,
            Fault::ResetUploadBody => &self.counts.reset_upload_body,
            Fault::LoseCompleteAnswer => &self.counts.lost_complete_answer,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends the request to the server and reads the whole answer.
    async fn forward(
        &self,
        req: Request<Incoming>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), std::io::Error> {
        let (mut parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = format!("{}{path_and_query}", self.upstream)
            .parse()
            .map_err(std::io::Error::other)?;
        for hop in ["expect", "transfer-encoding", "connection"] {
            parts.headers.remove(hop);
        }
        parts
            .headers
            .insert(hyper::header::CONTENT_LENGTH, body.len().into());
        let response = self
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(std::io::Error::other)?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        let mut headers = parts.headers;
        headers.remove("transfer-encoding");
        headers.remove("connection");
        Ok((parts.status, headers, body))
    }
}

/// The error that makes hyper drop a connection.
fn broken(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, what.to_string())
}

fn content_length(req: &Request<Incoming>) -> u64 {
    req.headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn respond(status: StatusCode, headers: hyper::HeaderMap, body: ProxyBody) -> Response<ProxyBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// A body that sends `half`, runs `then`, and fails: hyper breaks the connection with
/// fewer bytes than the Content-Length promised.
fn broken_body(half: Bytes, then: impl FnOnce() + Send + Sync + 'static) -> ProxyBody {
    let first = futures::stream::once(async move { Ok::<_, BoxError>(Frame::data(half)) });
    let last = futures::stream::once(async move {
        // Give the client a moment to take in the first half.
        tokio::time::sleep(Duration::from_millis(20)).await;
        then();
        Err::<Frame<Bytes>, BoxError>(Box::new(broken("response body reset by the fault proxy")))
    });
    BodyExt::boxed_unsync(StreamBody::new(futures::StreamExt::chain(first, last)))
}

/// An S3 error response with its XML body.
fn s3_error(status: StatusCode, code: &str, message: &str, resource: &str) -> Response<ProxyBody> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><Resource>{resource}</Resource>\
         <RequestId>fault-{id:08}</RequestId></Error>"
    );
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    response.headers_mut().insert(
        "x-amz-request-id",
        format!("fault-{id:08}").parse().unwrap(),
    );
    response
}

/// `bytes 0-(n-1)/n`: a range answer that is the whole object.
fn covers_all(content_range: &str) -> bool {
    let Some(rest) = content_range.strip_prefix("bytes 0-") else {
        return false;
    };
    let Some((last, total)) = rest.split_once('/') else {
        return false;
    };
    matches!((last.parse::<u64>(), total.parse::<u64>()), (Ok(l), Ok(t)) if l + 1 == t)
}
