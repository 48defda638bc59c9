//! A moto server for the tests of one process.
//!
//! moto runs under a small Python wrapper that exits as soon as its parent (this test
//! process) is gone, however the process ends, so `cargo test` never leaves servers behind.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::TestServer;
use super::python::{self, Package};

const INSTALL_HINT: &str = "moto 5.2.5 or newer is needed for the S3 tests: \
     pip install -U 'moto[server]' (or set SLUICE_SKIP_MOTO=1 to run them against the embedded \
     server only)";

/// moto 5.2.1 answers CompleteMultipartUpload with a `CompleteMultipartUploadResponse` root
/// element, which the AWS SDK rejects; 5.2.5 is the first release checked to work.
const CHECK: &str = r#"
import moto.server, flask, werkzeug, moto
v = tuple(int(p) for p in moto.__version__.split(".")[:3] if p.isdigit())
if v < (5, 2, 5):
    raise SystemExit(f"moto {moto.__version__} is too old")
"#;

const MOTO: Package = Package {
    name: "moto",
    site: "moto",
    requirement: "moto[server]>=5.2.5",
    needed_by: "the S3 tests",
    check: CHECK,
    check_args: &[],
    install_hint: INSTALL_HINT,
};

/// Starts moto in this process and exits when the parent process goes away.
const WRAPPER: &str = r#"
import os, sys, threading, time
parent = os.getppid()
def watch():
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.3)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
"#;

pub(super) fn server() -> Option<&'static TestServer> {
    if std::env::var("SLUICE_SKIP_MOTO").is_ok_and(|v| v == "1") {
        static NOTED: OnceLock<()> = OnceLock::new();
        NOTED.get_or_init(|| {
            eprintln!("SLUICE_SKIP_MOTO=1: S3 tests run against the embedded server only")
        });
        return None;
    }
    static SERVER: OnceLock<Result<TestServer, String>> = OnceLock::new();
    match SERVER.get_or_init(start) {
        Ok(server) => Some(server),
        Err(e) => panic!("{e}"),
    }
}

/// The child, kept so that it is not reaped early; the wrapper ends it with the process.
static CHILD: Mutex<Option<Child>> = Mutex::new(None);

fn start() -> Result<TestServer, String> {
    let site = MOTO.site()?;

    let port = super::free_port();
    let log_path =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let mut child = python::command(site.as_deref())
        .args(["-c", WRAPPER, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting moto: {e}. {INSTALL_HINT}"))?;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let output = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "moto exited ({status}) before it answered:\n{output}\n{INSTALL_HINT}"
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "moto did not answer on port {port} within 60 s (log: {})",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    *CHILD.lock().unwrap() = Some(child);
    Ok(TestServer {
        name: "moto",
        url: format!("http://127.0.0.1:{port}"),
        access_key: "testing".into(),
        secret_key: "testing".into(),
    })
}
