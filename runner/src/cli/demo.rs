//! `sluice demo`: generate the sample dataset into the bucket `raw` and run the main job.

use std::io::IsTerminal;

use crate::cli::connect::ConnectArgs;
use crate::demo::{DatasetShape, generate_object};
use crate::exit::ExitCode;
use crate::run::{LocalRunOptions, run_locally, summary};
use crate::spec;
use crate::storage::uri::S3Uri;

/// The main job, built into the binary so that the demo runs from any directory.
const MAIN_JOB: &str = include_str!("../../../jobs/taxi-csv-to-parquet.yaml");
const MAIN_JOB_PATH: &str = "jobs/taxi-csv-to-parquet.yaml";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Objects to generate.
    #[arg(long, default_value_t = 20)]
    pub objects: usize,
    /// Uncompressed MiB per object.
    #[arg(long, default_value_t = 10)]
    pub object_mib: usize,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let loaded = spec::load_str(MAIN_JOB, MAIN_JOB_PATH, &[])?;
    let shape = DatasetShape {
        objects: args.objects,
        object_bytes: args.object_mib * 1024 * 1024,
        ..DatasetShape::default()
    };
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(loaded.job.endpoint.as_deref()).await?;
        let job = &loaded.job;
        for bucket in [
            &job.source.uri.bucket,
            &job.sink.uri.bucket,
            &job.state.bucket,
        ] {
            conn.storage.create_bucket(bucket).await?;
        }
        let source = &job.source.uri;
        let existing = conn.storage.list(source).await?;
        let mut generated = 0;
        for index in 0..shape.objects {
            let object =
                tokio::task::spawn_blocking(move || generate_object(&shape, index)).await?;
            let uri: S3Uri = source.join(&object.name);
            let size = object.body.len() as u64;
            if existing.iter().any(|o| o.key == uri.key && o.size == size) {
                continue;
            }
            conn.storage.put_bytes(&uri, object.body.into()).await?;
            generated += 1;
        }
        eprintln!(
            "demo dataset: {} objects under {source} ({generated} written now)",
            shape.objects
        );
        let options = LocalRunOptions {
            program: std::env::current_exe()?,
            env: conn.endpoint.env.clone(),
            parallelism: None,
            run_id: None,
            bar: std::io::stderr().is_terminal(),
            cpus: None,
            resume: false,
            full: false,
        };
        let run = run_locally(&conn.storage, &loaded, options).await?;
        print!(
            "{}",
            summary::render(&run.report, &run.layout, &job.sink.uri)
        );
        if conn.embedded.is_some() {
            let dir = args.connect.embedded_dir.display();
            let sink = &job.sink.uri;
            println!("  on disk   {dir}/{}/{}", sink.bucket, sink.key);
        }
        Ok(run.exit)
    })
}
