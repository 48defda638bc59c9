//! `sluice transform JOB s3://bucket/key`: one object through the job's steps, written to a
//! file or stdout: for trying a job, or a transformer, on a sample.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cli::connect::ConnectArgs;
use crate::exit::ExitCode;
use crate::format::options::SourceFormat;
use crate::plan::PlannedObject;
use crate::spec::{self, job::StepKind};
use crate::storage::uri::S3Uri;
use crate::transform::container::harness::Harness;
use crate::worker::inline::transform_object;
use crate::worker::object::ObjectContext;

#[derive(Debug, clap::Args)]
pub struct TransformArgs {
    /// The job file.
    pub job: PathBuf,
    /// The object: s3://bucket/key
    pub object: S3Uri,
    /// Where the result goes: a file, or `-` for stdout.
    #[arg(short, long, default_value = "-")]
    pub output: String,
    /// Set a param (repeatable): --param month=2026-01
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = spec::parse_param_override)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(args: TransformArgs) -> anyhow::Result<ExitCode> {
    let loaded = spec::load_file(&args.job, &args.params)?;
    let mut job = loaded.job;
    crate::cli::runtime()?.block_on(async {
        let conn = args.connect.connect(job.endpoint.as_deref()).await?;
        let head = conn.storage.head(&args.object).await?.ok_or_else(|| {
            crate::cli::exit::UsageError::new(format!("{} does not exist", args.object))
        })?;
        let object = PlannedObject {
            key: args.object.key.clone(),
            size: head.size,
            etag: head.etag.clone(),
            range: None,
        };
        job.source.uri = S3Uri::new(args.object.bucket.clone(), job.source.uri.key.clone());
        let schema = match (&job.source.schema, job.source.format) {
            (Some(schema), _) => Some(schema.clone()),
            (None, SourceFormat::Csv | SourceFormat::Jsonl) => Some(
                crate::run::start::infer_object(&conn.storage, &job, &object.key, &object.etag)
                    .await?,
            ),
            _ => None,
        };
        // The transformers (an io step's bridge) run here for the time of the transform.
        let program = std::env::current_exe()?;
        let mut transformers = Vec::new();
        for step in &job.steps {
            if let StepKind::Container(c) = &step.kind {
                transformers.push(Harness::start(c, &step.name, &program).await?);
            }
        }
        let out: Box<dyn std::io::Write + Send> = match args.output.as_str() {
            "-" => Box::new(std::io::stdout()),
            path => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        };
        let ctx = ObjectContext {
            storage: conn.storage.clone(),
            job: Arc::new(job),
            schema,
            fingerprint: String::new(),
            keys: None,
        };
        let counts = transform_object(&ctx, &object, out).await?;
        drop(transformers);
        if counts.bytes > 0 {
            eprintln!("{}: {} bytes out", args.object, counts.bytes);
        } else {
            eprintln!(
                "{}: {} records in, {} out, {} bad",
                args.object, counts.input, counts.output, counts.bad
            );
        }
        Ok(ExitCode::Done)
    })
}
