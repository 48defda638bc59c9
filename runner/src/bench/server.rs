//! `sluice bench server`: the embedded S3 server alone, run as its own process (`sluice s3
//! serve`) so that its CPU time is its own: large GET and multipart PUT per CPU-second of
//! the server, and the latency of small GET, PUT and HEAD as the Rust client sees it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;

use crate::storage::uri::S3Uri;
use crate::storage::{Storage, UploadOptions};

/// `sluice s3 serve` in a child process, stopped when dropped.
pub struct ServerProcess {
    child: Child,
    /// Kept open: the server writes more lines after the first, and a closed pipe would
    /// fail its writes.
    _stdout: BufReader<std::process::ChildStdout>,
    pub url: String,
}

impl ServerProcess {
    /// Serves `dir` with the running binary.
    pub fn start(dir: &Path) -> anyhow::Result<ServerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["s3", "serve", "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first)?;
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("`sluice s3 serve` printed {first:?}"))?;
        Ok(ServerProcess {
            child,
            _stdout: stdout,
            url,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn storage(&self) -> Storage {
        Storage::with_endpoint(
            &self.url,
            crate::storage::embedded::EMBEDDED_ACCESS_KEY,
            crate::storage::embedded::EMBEDDED_SECRET_KEY,
        )
        .await
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds a process has used (Linux `/proc`), `None` elsewhere.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// What one measured operation cost.
pub struct Measured {
    pub bytes: u64,
    pub wall: Duration,
    pub server_cpu: Option<f64>,
}

impl Measured {
    pub fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }

    /// MB per CPU-second of the server: what one of its cores sustains.
    pub fn mb_per_server_core(&self) -> Option<f64> {
        self.server_cpu
            .filter(|cpu| *cpu > 0.0)
            .map(|cpu| self.bytes as f64 / 1e6 / cpu)
    }
}

async fn measured<F: std::future::Future<Output = anyhow::Result<u64>>>(
    pid: u32,
    work: F,
) -> anyhow::Result<Measured> {
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let bytes = work.await?;
    let wall = started.elapsed();
    let server_cpu = cpu_before.zip(cpu_seconds(pid)).map(|(a, b)| b - a);
    Ok(Measured {
        bytes,
        wall,
        server_cpu,
    })
}

/// Writes `mib` MiB of incompressible bytes to `path` unless a file of that size is there.
fn large_file(path: &Path, mib: usize) -> std::io::Result<()> {
    let size = (mib as u64) << 20;
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == size {
        return Ok(());
    }
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let chunk = pattern_chunk(1 << 20);
    for _ in 0..mib {
        std::io::Write::write_all(&mut out, &chunk)?;
    }
    std::io::Write::flush(&mut out)
}

/// `len` bytes that do not compress (xxh3 of a counter).
fn pattern_chunk(len: usize) -> Vec<u8> {
    (0..len.div_ceil(8) as u64)
        .flat_map(|i| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()).to_le_bytes())
        .take(len)
        .collect()
}

/// The figures of `sluice bench server`.
pub struct ServerFigures {
    pub get: Measured,
    pub put: Measured,
    pub latency: Vec<(&'static str, Latency)>,
}

pub struct Latency {
    pub median_ms: f64,
    pub p95_ms: f64,
}

fn latency_of(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Latency {
        median_ms: at(0.5),
        p95_ms: at(0.95),
    }
}

/// Runs the scenario against a server process serving `dir`.
pub async fn run(
    server: &ServerProcess,
    dir: &Path,
    mib: usize,
    small: usize,
) -> anyhow::Result<ServerFigures> {
    let storage = server.storage().await;
    let bucket = "bench-server";
    storage.create_bucket(bucket).await?;
    let key = format!("large-{mib}mib.bin");
    large_file(&dir.join(bucket).join(&key), mib)?;
    let uri = S3Uri::new(bucket.to_string(), key);
    // The first look at a file dropped in by hand computes its ETag: not part of a GET.
    storage.head(&uri).await?;
    let pid = server.pid();
    let get = measured(pid, async {
        let mut stream = storage.get(&uri, None).await?;
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            bytes += chunk?.len() as u64;
        }
        Ok(bytes)
    })
    .await?;
    // An earlier run's object is deleted first: replacing it would count freeing its pages.
    let put_uri = S3Uri::new(bucket.to_string(), format!("put-{mib}mib.bin"));
    storage.delete(&put_uri).await?;
    let put = measured(pid, async {
        let mut upload = storage.upload(
            put_uri.clone(),
            UploadOptions {
                part_size: 16 << 20,
                parts_in_flight: 4,
            },
        );
        let chunk = Bytes::from(pattern_chunk(8 << 20));
        for _ in 0..mib.div_ceil(8) {
            upload.write(chunk.clone()).await?;
        }
        let size = upload.bytes_written();
        upload.finish().await?.complete().await?;
        Ok(size)
    })
    .await?;
    let latency = small_latency(&storage, bucket, small).await?;
    Ok(ServerFigures { get, put, latency })
}

/// One request at a time: PUT, GET and HEAD of 1 KiB objects.
async fn small_latency(
    storage: &Storage,
    bucket: &str,
    n: usize,
) -> anyhow::Result<Vec<(&'static str, Latency)>> {
    let body = Bytes::from(vec![b'x'; 1024]);
    let uris: Vec<S3Uri> = (0..n)
        .map(|i| S3Uri::new(bucket.to_string(), format!("small/{i:06}")))
        .collect();
    let mut put = Vec::with_capacity(n);
    for uri in &uris {
        let t = Instant::now();
        storage.put_bytes(uri, body.clone()).await?;
        put.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut get = Vec::with_capacity(n);
    for uri in &uris {
        let t = Instant::now();
        storage.get_bytes(uri).await?;
        get.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut head = Vec::with_capacity(n);
    for uri in &uris {
        let t = Instant::now();
        storage.head(uri).await?;
        head.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(vec![
        ("PUT", latency_of(put)),
        ("GET", latency_of(get)),
        ("HEAD", latency_of(head)),
    ])
}

/// Runs the scenario on a server process of its own, serving a directory beside the
/// embedded one, and prints the figures next to boto3's.
pub async fn report(embedded_dir: &Path, mib: usize, anchors: bool) -> anyhow::Result<()> {
    let dir: PathBuf = embedded_dir.with_file_name("bench-server");
    std::fs::create_dir_all(&dir)?;
    let server = ServerProcess::start(&dir)?;
    println!(
        "the embedded server alone (`sluice s3 serve` at {}):",
        server.url
    );
    let figures = run(&server, &dir, mib, 500).await?;
    let line = |what: &str, m: &Measured| {
        let per_core = m
            .mb_per_server_core()
            .map(|r| format!("{r:>7.0} MB per server CPU-second"))
            .unwrap_or_else(|| "server CPU not measurable here".into());
        println!(
            "  {what}: {:>7.0} MB/s wall, {per_core} ({:.2} CPU-s for {})",
            m.mb_per_second(),
            m.server_cpu.unwrap_or_default(),
            crate::spec::size::human_bytes(m.bytes)
        );
    };
    line(&format!("GET of a {mib} MiB object"), &figures.get);
    line("multipart PUT, 16 MiB parts, 4 in flight", &figures.put);
    for (what, l) in &figures.latency {
        println!(
            "  {what:<4} 1 KiB, one at a time (Rust SDK): median {:.2} ms, p95 {:.2} ms",
            l.median_ms, l.p95_ms
        );
    }
    if anchors {
        match super::anchor::run(
            "small_object_latency.py",
            &[server.url.clone(), "200".into(), "--json".into()],
            &[],
        ) {
            Ok(value) => {
                for what in ["PUT", "GET", "HEAD"] {
                    if let Some(median) = value
                        .get(what)
                        .and_then(|v| super::anchor::number(v, "median_ms"))
                    {
                        println!(
                            "  {what:<4} 1 KiB, one at a time ({}): median {median:.2} ms",
                            super::anchor::name(&value)
                        );
                    }
                }
                if let Some(pairs) = super::anchor::number(&value, "pairs_per_second") {
                    println!(
                        "  GET+PUT pairs of 1 KiB, 16 threads ({}): {pairs:.0}/s",
                        super::anchor::name(&value)
                    );
                }
            }
            Err(why) => println!("  boto3 latency: skipped: {why}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_does_not_repeat_within_a_chunk() {
        let chunk = pattern_chunk(1 << 16);
        assert_eq!(chunk.len(), 1 << 16);
        let words: std::collections::HashSet<&[u8]> = chunk.chunks(8).collect();
        assert_eq!(words.len(), (1 << 16) / 8);
    }

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        let spent = cpu_seconds(std::process::id());
        if cfg!(target_os = "linux") {
            assert!(spent.is_some_and(|s| s >= 0.0));
        }
    }

    #[test]
    fn percentiles_come_from_the_sorted_values() {
        let l = latency_of((1..=100).rev().map(f64::from).collect());
        assert_eq!(l.median_ms, 51.0);
        assert_eq!(l.p95_ms, 95.0);
    }
}
