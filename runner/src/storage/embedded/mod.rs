//! The embedded S3 server: a local directory served over loopback, each sub-directory a bucket.
//!
//! s3s speaks the protocol. The objects' bytes and the hot operations are sluice's own:
//! GET, HEAD and PUT (objects.rs), multipart parts, listing, completion and aborts
//! (multipart.rs), ListObjectsV2 from a sorted walk that resumes where the last page ended
//! (list.rs), and ListMultipartUploads. Each reads and writes files off the request
//! threads in large chunks and computes each digest once. s3s-fs, whose on-disk layout
//! they share (meta.rs), serves the rest: buckets, copies, deletes, opening an upload.

mod body;
mod copy;
mod layer;
mod list;
mod meta;
mod multipart;
mod objects;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s_fs::FileSystem;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::StorageError;
use layer::Store;

/// The fixed credentials of the embedded server. It listens on loopback only.
pub const EMBEDDED_ACCESS_KEY: &str = "sluice";
pub const EMBEDDED_SECRET_KEY: &str = "sluice-local-secret";
pub const EMBEDDED_REGION: &str = "us-east-1";

/// A running embedded S3 server; it stops when dropped.
#[derive(Debug)]
pub struct EmbeddedServer {
    url: String,
    addr: SocketAddr,
    dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl EmbeddedServer {
    /// Serves `dir` (created if missing) on 127.0.0.1, on `port` or a free one.
    pub async fn start(dir: &Path, port: Option<u16>) -> Result<EmbeddedServer, StorageError> {
        let failed = |source: std::io::Error| StorageError::EmbeddedServer {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(failed)?;
        let fs =
            FileSystem::new(dir).map_err(|e| failed(std::io::Error::other(format!("{e:?}"))))?;
        let root = dir.canonicalize().map_err(failed)?;
        let store = Store::new(fs, root.clone()).map_err(failed)?;
        let service = {
            let mut builder = S3ServiceBuilder::new(store);
            builder.set_auth(SimpleAuth::from_single(
                EMBEDDED_ACCESS_KEY,
                EMBEDDED_SECRET_KEY,
            ));
            builder.build()
        };
        let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
            .await
            .map_err(failed)?;
        let addr = listener.local_addr().map_err(failed)?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(error) => {
                            tracing::warn!(%error, "embedded S3 server: accepting a connection");
                            continue;
                        }
                    },
                    _ = &mut stopped => break,
                };
                // A response's head and body go out in separate writes: with Nagle's
                // algorithm the body waits for the client's delayed ACK of the head, about
                // 40 ms on every GET of a small object.
                if let Err(error) = socket.set_nodelay(true) {
                    tracing::debug!(%error, "embedded S3 server: setting TCP_NODELAY");
                }
                let service = service.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let close = expects_continue_without_body(&req);
                        let response = hyper::service::Service::call(&service, req);
                        async move {
                            let mut response = response.await?;
                            if close {
                                response.headers_mut().insert(
                                    hyper::header::CONNECTION,
                                    hyper::header::HeaderValue::from_static("close"),
                                );
                            }
                            Ok::<_, s3s::HttpError>(response)
                        }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service);
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "embedded S3 server: connection ended");
                    }
                });
            }
        });
        Ok(EmbeddedServer {
            url: format!("http://{addr}"),
            addr,
            dir: root,
            stop: Some(stop),
            task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory served (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn access_key(&self) -> &'static str {
        EMBEDDED_ACCESS_KEY
    }

    pub fn secret_key(&self) -> &'static str {
        EMBEDDED_SECRET_KEY
    }
}

/// A request with `Expect: 100-continue` and no body gets its answer without a 100
/// Continue first (there is no body to ask for). Some clients (botocore) then keep a stale
/// status for the next request on the connection and hang on its answer; closing the
/// connection after such a request spares them.
fn expects_continue_without_body<B>(req: &hyper::Request<B>) -> bool {
    let headers = req.headers();
    headers
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && headers
            .get(hyper::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0")
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
