//! `sluice bench convert` (the default): CSV -> typed Parquet, decode + encode alone and end
//! to end through the embedded server, next to DuckDB converting the same file locally and
//! polars converting it through the same S3 endpoint.

use std::path::Path;

use crate::bench::{
    BUCKET, Target, anchor, csv_to_parquet_job, decode_encode, local_run, taxi_schema,
    write_dataset,
};
use crate::spec;
use crate::spec::size::human_bytes;
use crate::state::progress::ShardProgress;
use crate::storage::UploadOptions;

pub struct ConvertOptions {
    pub mib: usize,
    pub end_to_end: bool,
    pub anchors: bool,
}

pub async fn run(target: &Target, options: &ConvertOptions) -> anyhow::Result<()> {
    let name = format!("taxi-{}mib.csv", options.mib);
    let path = target.dir.join(BUCKET).join(&name);
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < (options.mib as u64) << 20 {
        eprintln!("generating {} ...", path.display());
        write_dataset(&path, options.mib << 20)?;
    }
    let size = std::fs::metadata(&path)?.len();
    println!("input: {} ({})", path.display(), human_bytes(size));
    println!("decode + encode alone (CSV -> typed Parquet, zstd, in one process):");
    let mut alone = Vec::new();
    for threads in [1, 2] {
        let t = decode_encode(&path, taxi_schema(), threads)?;
        println!(
            "  {threads} thread(s): {:>7.1} MB/s  ({} records in {:.2}s; decoding {:.2}s, encoding {:.2}s, {} of Parquet)",
            t.mb_per_second(),
            t.records,
            t.elapsed.as_secs_f64(),
            t.decode.as_secs_f64(),
            t.encode.as_secs_f64(),
            human_bytes(t.output_bytes)
        );
        alone.push(t.mb_per_second());
    }
    let whole_run = if options.end_to_end {
        end_to_end(target, &name, &path).await?
    } else {
        Vec::new()
    };
    if !options.anchors {
        return Ok(());
    }
    println!("anchors, on the same file:");
    let duckdb = anchor::run(
        "duckdb_csv_to_parquet.py",
        &["--json".into(), path.display().to_string()],
        &[],
    );
    report_duckdb(&duckdb, size, &alone, &whole_run);
    if target.embedded {
        let polars = anchor::run(
            "polars_s3_csv_to_parquet.py",
            &[
                target.endpoint.url.clone(),
                format!("s3://{BUCKET}/{name}"),
                format!(
                    "s3://{BUCKET}-out/polars/{}.parquet",
                    name.trim_end_matches(".csv")
                ),
            ],
            &target.endpoint.env,
        );
        report_polars(&polars, size, &whole_run);
    } else {
        println!("  polars through S3: runs on the embedded default only");
    }
    Ok(())
}

fn report_duckdb(
    result: &Result<serde_json::Value, String>,
    size: u64,
    alone: &[f64],
    whole_run: &[f64],
) {
    let value = match result {
        Ok(v) => v,
        Err(why) => {
            println!("  DuckDB: skipped: {why}");
            return;
        }
    };
    let runs = value
        .get("runs")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    for run in runs {
        let (Some(threads), Some(seconds)) = (
            anchor::number(&run, "threads"),
            anchor::number(&run, "seconds"),
        ) else {
            continue;
        };
        let rate = size as f64 / 1e6 / seconds;
        let i = (threads as usize).clamp(1, 2) - 1;
        let mut line = format!(
            "  {} (local file), {threads} thread(s): {rate:>7.1} MB/s; sluice decode + encode {:.2}x",
            anchor::name(value),
            alone.get(i).copied().unwrap_or_default() / rate
        );
        if let Some(e2e) = whole_run.get(i) {
            line.push_str(&format!(", sluice end to end {:.2}x", e2e / rate));
        }
        println!("{line}");
    }
    if let Some(rss) = anchor::number(value, "peak_rss_mib") {
        println!("  DuckDB peak RSS: {rss:.0} MiB");
    }
}

fn report_polars(result: &Result<serde_json::Value, String>, size: u64, whole_run: &[f64]) {
    let value = match result {
        Ok(v) => v,
        Err(why) => {
            println!("  polars through S3: skipped: {why}");
            return;
        }
    };
    let Some(seconds) = anchor::number(value, "seconds") else {
        println!("  polars through S3: no time in its output");
        return;
    };
    let rate = size as f64 / 1e6 / seconds;
    let ratio = whole_run
        .last()
        .map(|e2e| format!("; sluice end to end (2 CPUs) {:.2}x", e2e / rate))
        .unwrap_or_default();
    println!(
        "  {} through the same S3 endpoint: {rate:>7.1} MB/s ({seconds:.2}s, {} rows){ratio}",
        anchor::name(value),
        anchor::number(value, "rows").unwrap_or_default()
    );
}

/// `sluice run` of the one-object job, the worker pinned to 1 then 2 CPUs; returns the
/// whole run's MB/s for each.
async fn end_to_end(target: &Target, name: &str, path: &Path) -> anyhow::Result<Vec<f64>> {
    let job_yaml = csv_to_parquet_job("bench", &format!("s3://{BUCKET}/"), Some(name), 1);
    let loaded = spec::load_str(&job_yaml, "bench job", &[])?;
    if target.embedded {
        let job = &loaded.job;
        for bucket in [BUCKET, &job.sink.uri.bucket, &job.state.bucket] {
            target.storage.create_bucket(bucket).await?;
        }
    }
    let source = loaded.job.source.uri.join(name);
    if !target.embedded {
        // Not the embedded server: upload the file so the run reads it from S3.
        let mut upload = target.storage.upload(
            source.clone(),
            UploadOptions {
                part_size: 16 << 20,
                parts_in_flight: 4,
            },
        );
        let mut file = tokio::fs::File::open(path).await?;
        loop {
            let mut chunk = vec![0u8; 8 << 20];
            let n = tokio::io::AsyncReadExt::read(&mut file, &mut chunk).await?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            upload.write(chunk.into()).await?;
        }
        upload.finish().await?.complete().await?;
    }
    println!("end to end (S3 -> worker -> S3 multipart, read back and verified):");
    let mut rates = Vec::new();
    for cpus in [1, 2] {
        let run = local_run(target, &loaded, 1, Some(cpus)).await?;
        let progress: ShardProgress = target
            .storage
            .get_bytes(&run.layout.progress(0))
            .await?
            .map(|b| serde_json::from_slice(&b))
            .transpose()?
            .unwrap_or_default();
        let whole = run.report.bytes as f64 / 1e6 / run.report.seconds;
        println!(
            "  {cpus} cpu(s): {:>7.1} MB/s worker, {whole:>7.1} MB/s whole run, peak RSS {}, exit {}",
            progress.rate / 1e6,
            human_bytes(progress.peak_rss_bytes),
            run.exit.code()
        );
        let phases = &run.report.phases;
        println!(
            "    phases (s): get {:.2}, decode {:.2}, encode {:.2}, upload {:.2}, read back {:.2}, commit {:.2}",
            phases.get,
            phases.decode,
            phases.encode,
            phases.upload,
            phases.read_back,
            phases.commit
        );
        rates.push(whole);
    }
    Ok(rates)
}
