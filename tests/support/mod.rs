//! S3 servers for tests: one embedded s3s-fs server and one moto server per test process,
//! each test working in a fresh bucket of its own.
//!
//! moto is required unless `SLUICE_SKIP_MOTO=1` is set; install it with
//! `pip install 'moto[server]'`.

#![allow(dead_code)]

pub mod controller;
pub mod delta_reader;
mod embedded;
pub mod fault_proxy;
pub mod job_yaml;
pub mod kubeval;
mod moto;
mod python;
pub mod scheduling;
pub mod state;
pub mod strict_api;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use sluice::storage::Storage;

/// One S3 server the tests can talk to.
#[derive(Debug)]
pub struct TestServer {
    /// `embedded` or `moto`, for assertion messages.
    pub name: &'static str,
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
}

impl TestServer {
    /// A client for this server.
    pub async fn storage(&self) -> Storage {
        Storage::with_endpoint(&self.url, &self.access_key, &self.secret_key).await
    }

    /// The environment that points the `sluice` binary (or any AWS client) at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.url.clone()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
            // Keep the developer's own AWS settings out of the child's way.
            ("AWS_PROFILE".into(), String::new()),
            ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
        ]
    }

    /// A fresh bucket on this server, with a client for it.
    pub async fn fresh(&self) -> (Storage, String) {
        let storage = self.storage().await;
        let bucket = fresh_bucket(&storage).await;
        (storage, bucket)
    }
}

/// The `sluice` binary the crash and fault tests run: `SLUICE_BIN` when set (a release
/// build, or a private copy of this build), else the one cargo built with the tests.
pub fn sluice_bin() -> std::path::PathBuf {
    std::env::var_os("SLUICE_BIN")
        .filter(|p| !p.is_empty())
        .map_or_else(|| env!("CARGO_BIN_EXE_sluice").into(), Into::into)
}

/// Runs the `sluice` binary in `dir` against `server`, and prints what it said (shown
/// when a test fails).
pub fn sluice(args: &[&str], server: &TestServer, dir: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .envs(server.env())
        .env("RUST_LOG", "sluice=info,warn")
        .current_dir(dir)
        .output()
        .expect("running sluice");
    eprintln!(
        "sluice {args:?} on {} -> {:?}\nstdout:\n{}\nstderr:\n{}",
        server.name,
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// An in-memory Kubernetes API (kube-fake-client) that applies each request atomically, as
/// a real API server does: the fake checks and stores an object in two steps, so two
/// concurrent creates (or updates of one resourceVersion) could both succeed. Requests
/// from concurrent callers still interleave, one whole request at a time.
pub async fn atomic_fake_api() -> kube::Client {
    let inner = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .expect("an in-memory API");
    let lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let service = tower::service_fn(move |request: hyper::Request<kube::client::Body>| {
        let (inner, lock) = (inner.clone(), lock.clone());
        async move {
            let _one_at_a_time = lock.lock().await;
            inner.send(request).await
        }
    });
    kube::Client::new(service, "default")
}

/// The shared embedded server.
pub fn embedded() -> &'static TestServer {
    embedded::server()
}

/// The shared moto server; `None` only when `SLUICE_SKIP_MOTO=1`. Panics with the install
/// hint when moto is missing.
pub fn moto() -> Option<&'static TestServer> {
    moto::server()
}

/// Every server a storage test must pass on.
pub fn servers() -> Vec<&'static TestServer> {
    let mut all = vec![embedded()];
    all.extend(moto());
    all
}

/// Creates a bucket with a name no other test in this process uses.
pub async fn fresh_bucket(storage: &Storage) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let bucket = format!("test-{}-{n}", std::process::id());
    storage
        .create_bucket(&bucket)
        .await
        .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e:#}"));
    bucket
}

/// Deterministic bytes that differ in every position of a small window, so misplaced
/// ranges show.
pub fn pattern(len: usize, seed: u64) -> bytes::Bytes {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

/// `bytes` gzip-compressed, at the fastest level.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for test servers).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port")
}
