//! `sluice bench list`: a bucket of N tiny objects (1,000 per "directory"), listed whole
//! with ListObjectsV2 and planned (listing, filtering, balancing, the plan written to the
//! run's state) on the embedded default.

use std::path::Path;
use std::time::Instant;

use crate::bench::Target;
use crate::spec;
use crate::storage::uri::S3Uri;

/// The bucket of the listing scenario.
const BUCKET: &str = "bench-keys";

/// Files per directory.
const PER_DIR: usize = 1000;

/// Writes `count` tiny CSV objects under `dir` (`d00000/f000.csv`, ...) unless a previous
/// call completed the same set (a marker next to the bucket says so). Two threads.
pub fn write_keys(dir: &Path, count: usize) -> std::io::Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("keys");
    let marker = dir
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!(".{name}-{count}.complete"));
    if marker.exists() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    let dirs = count.div_ceil(PER_DIR);
    let body = b"id,name\n1,a\n";
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|worker| {
                scope.spawn(move || -> std::io::Result<()> {
                    for d in (worker..dirs).step_by(2) {
                        let sub = dir.join(format!("d{d:05}"));
                        std::fs::create_dir_all(&sub)?;
                        let files = PER_DIR.min(count - d * PER_DIR);
                        for f in 0..files {
                            std::fs::write(sub.join(format!("f{f:03}.csv")), body)?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a writer panicked")))
        })
    })?;
    std::fs::write(marker, b"")
}

/// Runs the scenario over `count` keys.
pub async fn run(target: &Target, count: usize) -> anyhow::Result<()> {
    target.require_embedded("listing")?;
    let prefix = format!("n{count}");
    let dir = target.dir.join(BUCKET).join(&prefix);
    eprintln!("writing {count} keys under {} (once) ...", dir.display());
    let started = Instant::now();
    write_keys(&dir, count)?;
    eprintln!("  ready in {:.1}s", started.elapsed().as_secs_f64());
    {
        target.storage.create_bucket(BUCKET).await?;
        let uri = S3Uri::new(BUCKET.to_string(), format!("{prefix}/"));
        println!("{count} keys, 1,000 per directory, embedded default:");
        let started = Instant::now();
        let listed = target.storage.list(&uri).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "  ListObjectsV2, pages of 1,000: {} keys in {seconds:.2}s ({:.0} keys/s)",
            listed.len(),
            listed.len() as f64 / seconds
        );
        drop(listed);
        let yaml = format!(
            "apiVersion: sluice.dev/v1alpha1
kind: Job
metadata:
  name: bench-plan
spec:
  source:
    uri: s3://{BUCKET}/{prefix}/
    format: csv
    schema:
      - {{ name: id, type: int64 }}
      - {{ name: name, type: string }}
  sink:
    uri: s3://{BUCKET}-out/
    format: parquet
  shards: 64
"
        );
        let loaded = spec::load_str(&yaml, "listing bench job", &[])?;
        for bucket in [&loaded.job.sink.uri.bucket, &loaded.job.state.bucket] {
            target.storage.create_bucket(bucket).await?;
        }
        let run_id = crate::plan::new_run_id(&loaded.job.name, chrono::Utc::now());
        let started = Instant::now();
        let plan =
            crate::run::start::make_plan(&target.storage, &loaded.job, &run_id, false).await?;
        let planned = started.elapsed().as_secs_f64();
        let layout = crate::state::RunLayout::new(&loaded.job.state, &loaded.job.name, &run_id);
        let body = serde_json::to_vec(&plan)?;
        target
            .storage
            .put_bytes(&layout.plan(), body.clone().into())
            .await?;
        let total = started.elapsed().as_secs_f64();
        println!(
            "  plan (list, select, balance into {} shards): {planned:.2}s; with the plan written ({}): {total:.2}s",
            plan.shards.len(),
            crate::spec::size::human_bytes(body.len() as u64)
        );
        println!(
            "  peak RSS of this process (client and embedded server): {}",
            crate::spec::size::human_bytes(crate::worker::peak_rss_bytes())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spread_over_directories_of_a_thousand() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = dir.path().join("keys");
        write_keys(&bucket, 2500).unwrap();
        let mut total = 0;
        for d in std::fs::read_dir(&bucket).unwrap() {
            total += std::fs::read_dir(d.unwrap().path()).unwrap().count();
        }
        assert_eq!(total, 2500);
        assert_eq!(std::fs::read_dir(&bucket).unwrap().count(), 3);
    }
}
