//! The embedded server shared by the tests of one process, on a runtime of its own so it
//! outlives each test's runtime.

use std::path::PathBuf;
use std::sync::OnceLock;

use sluice::storage::EmbeddedServer;

use super::TestServer;

pub(super) fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn start() -> TestServer {
    let dir = data_dir();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("embedded-s3".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the embedded server");
            runtime.block_on(async move {
                match EmbeddedServer::start(&dir, None).await {
                    Ok(server) => {
                        tx.send(Ok(server.url().to_string())).unwrap();
                        // Serve until the test process exits.
                        std::future::pending::<()>().await;
                        drop(server);
                    }
                    Err(e) => tx.send(Err(format!("{e:#}"))).unwrap(),
                }
            });
        })
        .expect("spawning the embedded server thread");
    let url = rx
        .recv()
        .expect("the embedded server thread ended")
        .unwrap_or_else(|e| panic!("starting the embedded S3 server: {e}"));
    TestServer {
        name: "embedded",
        url,
        access_key: sluice::storage::embedded::EMBEDDED_ACCESS_KEY.into(),
        secret_key: sluice::storage::embedded::EMBEDDED_SECRET_KEY.into(),
    }
}

/// `target/tmp/embedded-s3-<pid>`; directories left by earlier test processes that are no
/// longer running are removed first.
fn data_dir() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("embedded-s3-"))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("embedded-s3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the embedded server's directory");
    dir
}
