//! `sluice bench small`: many small CSV objects (about 100 rows each) converted to typed
//! Parquet by `sluice run` on the embedded default, next to boto3 fetching and storing the
//! same objects with 16 threads through the same server.

use std::path::Path;

use crate::bench::{BUCKET, Target, anchor, csv_to_parquet_job, local_run};
use crate::demo::{DatasetShape, generate_object};
use crate::spec;
use crate::spec::size::human_bytes;

/// Rows per object, about.
const ROWS: usize = 100;
/// Bytes of a taxi row, about.
const ROW_BYTES: usize = 106;

/// Writes `count` small CSV objects into `dir` unless exactly that many are there; returns
/// their total size.
pub fn write_small_objects(dir: &Path, count: usize) -> std::io::Result<u64> {
    let existing = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    if existing != count {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let shape = DatasetShape {
            objects: count,
            object_bytes: ROWS * ROW_BYTES,
            gzip_every: 0,
            malformed_every: 0,
            seed: 7,
        };
        for i in 0..count {
            let object = generate_object(&shape, i);
            std::fs::write(dir.join(format!("part-{i:06}.csv")), &object.body)?;
        }
    }
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

/// Runs the scenario: `count` objects, 2 shards, the job's default tuning.
pub async fn run(target: &Target, count: usize, anchors: bool) -> anyhow::Result<()> {
    target.require_embedded("small-objects")?;
    let prefix = format!("small-{count}");
    let dir = target.dir.join(BUCKET).join(&prefix);
    eprintln!("writing {count} small objects under {} ...", dir.display());
    let bytes = write_small_objects(&dir, count)?;
    println!(
        "{count} CSV objects of about {ROWS} rows ({} in all) -> typed Parquet, 2 shards, embedded default:",
        human_bytes(bytes)
    );
    {
        let yaml = csv_to_parquet_job("bench-small", &format!("s3://{BUCKET}/{prefix}/"), None, 2);
        let loaded = spec::load_str(&yaml, "small-objects bench job", &[])?;
        for bucket in [
            BUCKET,
            &loaded.job.sink.uri.bucket,
            &loaded.job.state.bucket,
        ] {
            target.storage.create_bucket(bucket).await?;
        }
        let run = local_run(target, &loaded, 2, None).await?;
        let rate = run.report.objects_done as f64 / run.report.seconds;
        println!(
            "  sluice run: {rate:>7.1} objects/s ({} objects, {} records in {:.2}s, exit {})",
            run.report.objects_done,
            run.report.records.output,
            run.report.seconds,
            run.exit.code()
        );
        let p = &run.report.phases;
        println!(
            "    phases (s, summed over objects): get {:.2}, decode {:.2}, encode {:.2}, upload {:.2}, read back {:.2}, commit {:.2}",
            p.get, p.decode, p.encode, p.upload, p.read_back, p.commit
        );
        if anchors {
            let boto3 = anchor::run(
                "boto3_get_put.py",
                &[
                    target.endpoint.url.clone(),
                    format!("s3://{BUCKET}/{prefix}/"),
                    format!("s3://{BUCKET}-out/boto3-{prefix}/"),
                    "--threads".into(),
                    "16".into(),
                ],
                &target.endpoint.env,
            );
            match boto3 {
                Ok(value) => match (
                    anchor::number(&value, "objects"),
                    anchor::number(&value, "seconds"),
                ) {
                    (Some(objects), Some(seconds)) if seconds > 0.0 => {
                        let theirs = objects / seconds;
                        println!(
                            "  {} with 16 threads, GET + PUT of each object through the same server: {theirs:>7.1} objects/s; sluice {:.2}x",
                            anchor::name(&value),
                            rate / theirs
                        );
                    }
                    _ => println!("  boto3: no figures in its output"),
                },
                Err(why) => println!("  boto3: skipped: {why}"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_objects_are_written_once_with_about_a_hundred_rows() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("small");
        let bytes = write_small_objects(&target, 5).unwrap();
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 5);
        let first = std::fs::read_to_string(target.join("part-000000.csv")).unwrap();
        let rows = first.lines().count() - 1;
        assert!((80..=130).contains(&rows), "{rows} rows");
        // A second call finds them and writes nothing new.
        assert_eq!(write_small_objects(&target, 5).unwrap(), bytes);
    }
}
