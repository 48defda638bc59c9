//! The pipeline side of `run`, `resume --local`, `submit`, `render`, `check` and `status`:
//! the commands hand a file of `kind: Pipeline` (or a pipeline run) to these functions.

use std::path::Path;
use std::time::Duration;

use crate::cli::connect::ConnectArgs;
use crate::cli::exit::UsageError;
use crate::cli::submit::SubmitArgs;
use crate::exit::ExitCode;
use crate::kubernetes::cluster::Cluster;
use crate::kubernetes::pipeline::{
    create_launcher, pipeline_config_map, pipeline_launcher_job, pipeline_target,
};
use crate::kubernetes::render::to_yaml;
use crate::pipeline::summary::{self, StepProgress};
use crate::pipeline::{Executor, PipelineOptions, run_pipeline, running_progress};
use crate::spec::pipeline::{Pipeline, load_pipeline_file};
use crate::state::pipeline::{PipelineLayout, read_record};

/// Whether the file declares `kind: Pipeline`.
pub fn is_pipeline(path: &Path) -> bool {
    crate::spec::kind_of(path).as_deref() == Some(crate::spec::pipeline::KIND)
}

/// `sluice run PIPELINE` (and `sluice resume RUN --local PIPELINE` with `resume`): the DAG
/// on this machine, every job step through the local pod runner.
pub fn run_here(
    file: &Path,
    params: &[(String, String)],
    run_id: Option<String>,
    connect: &ConnectArgs,
    resume: bool,
) -> anyhow::Result<ExitCode> {
    let pipeline = load_pipeline_file(file, params)?;
    crate::cli::runtime()?.block_on(async {
        let conn = connect.connect(pipeline.endpoint.as_deref()).await?;
        if conn.embedded.is_some() {
            for bucket in &pipeline.buckets {
                conn.storage.create_bucket(bucket).await?;
            }
        }
        let executor = Executor::Local {
            program: std::env::current_exe()?,
            env: conn.endpoint.env.clone(),
        };
        let options = PipelineOptions {
            run_id: run_id.unwrap_or_else(|| new_run_id(&pipeline)),
            resume,
            create_buckets: conn.embedded.is_some(),
        };
        let run = run_pipeline(&executor, &conn.storage, &pipeline, options).await?;
        print!("{}", summary::render(&run.record, &run.layout, &|_| None));
        Ok(run.exit)
    })
}

fn new_run_id(pipeline: &Pipeline) -> String {
    crate::plan::new_run_id(&pipeline.name, chrono::Utc::now())
}

/// `sluice submit PIPELINE`: drive the DAG from here with every step on the cluster (as the
/// launcher does inside it, `--in-cluster`); with `--detach`, create the pipeline's
/// ConfigMap and launcher Job instead and return. Submitting an existing run id resumes it.
pub fn submit(args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    let pipeline = load_pipeline_file(&args.job, &args.params)?;
    let run_id = crate::cli::submit::run_id_of(args, &pipeline.name)?;
    let target = pipeline_target(
        &pipeline,
        args.image.as_deref(),
        args.namespace.as_deref(),
        run_id.clone(),
    );
    crate::cli::runtime()?.block_on(async {
        let cluster = Cluster::connect(&target.namespace).await?;
        if args.detach {
            create_launcher(&cluster, &pipeline, &target).await?;
            println!("{run_id}");
            return Ok(ExitCode::Done);
        }
        let refuse = args
            .in_cluster
            .then_some("`sluice submit --in-cluster` is the launcher of a run on the cluster");
        let conn = args
            .connect
            .connect_refusing_embedded(pipeline.endpoint.as_deref(), refuse)
            .await?;
        let layout = PipelineLayout::new(&pipeline.state, &pipeline.name, &run_id);
        let resume = read_record(&conn.storage, &layout).await?.is_some();
        let on = OnCluster {
            cluster: &cluster,
            image: &target.image,
            namespace: args.namespace.clone(),
            poll: args.poll,
        };
        let options = PipelineOptions {
            run_id,
            resume,
            create_buckets: false,
        };
        drive(&pipeline, options, &on, &conn.storage).await
    })
}

/// Where a pipeline's steps run on a cluster.
struct OnCluster<'a> {
    cluster: &'a Cluster,
    image: &'a str,
    /// Every step's namespace, when one is forced (the launcher's own).
    namespace: Option<String>,
    poll: u64,
}

/// Drives a pipeline run with every step on the cluster.
async fn drive(
    pipeline: &Pipeline,
    options: PipelineOptions,
    on: &OnCluster<'_>,
    storage: &crate::storage::Storage,
) -> anyhow::Result<ExitCode> {
    let executor = Executor::Cluster {
        client: on.cluster.client.clone(),
        image: Some(on.image.to_string()),
        namespace: on.namespace.clone(),
        poll: Duration::from_secs(on.poll.max(1)),
    };
    let run = run_pipeline(&executor, storage, pipeline, options).await?;
    print!("{}", summary::render(&run.record, &run.layout, &|_| None));
    Ok(run.exit)
}

/// `sluice resume RUN --pipeline FILE`: the pipeline run finished with its steps on the
/// cluster; every step that did not succeed runs again.
pub fn resume_on_cluster(
    run_id: &str,
    file: &Path,
    namespace: &str,
    image: Option<&str>,
    poll: u64,
    connect: &ConnectArgs,
) -> anyhow::Result<ExitCode> {
    let pipeline = load_pipeline_file(file, &[])?;
    let target = pipeline_target(&pipeline, image, Some(namespace), run_id.to_string());
    crate::cli::runtime()?.block_on(async {
        let cluster = Cluster::connect(&target.namespace).await?;
        let layout = PipelineLayout::new(&pipeline.state, &pipeline.name, run_id);
        let conn = connect.connect(pipeline.endpoint.as_deref()).await?;
        if read_record(&conn.storage, &layout).await?.is_none() {
            return Err(UsageError::new(format!(
                "pipeline {} has no run {run_id} (no {}) to resume",
                pipeline.name,
                layout.record()
            ))
            .into());
        }
        let on = OnCluster {
            cluster: &cluster,
            image: &target.image,
            namespace: Some(target.namespace.clone()),
            poll,
        };
        let options = PipelineOptions {
            run_id: run_id.to_string(),
            resume: true,
            create_buckets: false,
        };
        drive(&pipeline, options, &on, &conn.storage).await
    })
}

/// `sluice render PIPELINE`: its ConfigMap and launcher Job.
pub fn render(
    file: &Path,
    params: &[(String, String)],
    image: Option<&str>,
    namespace: Option<&str>,
    run_id: Option<String>,
) -> anyhow::Result<ExitCode> {
    let pipeline = load_pipeline_file(file, params)?;
    let run_id = run_id.unwrap_or_else(|| new_run_id(&pipeline));
    let target = pipeline_target(&pipeline, image, namespace, run_id);
    let objects = [
        serde_json::to_value(pipeline_config_map(&pipeline, &target))?,
        serde_json::to_value(pipeline_launcher_job(&pipeline, &target))?,
    ];
    print!("{}", to_yaml(&objects));
    Ok(ExitCode::Done)
}

/// `sluice check PIPELINE`: the file, its DAG, its templates and every step's target.
pub fn check(file: &Path, params: &[(String, String)]) -> anyhow::Result<String> {
    let pipeline = load_pipeline_file(file, params)?;
    let order: Vec<&str> = pipeline
        .order
        .iter()
        .map(|&i| pipeline.steps[i].name.as_str())
        .collect();
    Ok(format!(
        "pipeline {}: {} step{} ({}), state {}",
        pipeline.name,
        order.len(),
        if order.len() == 1 { "" } else { "s" },
        order.join(" -> "),
        pipeline.state
    ))
}

/// `sluice status RUN --pipeline FILE`: the pipeline run from its record in the bucket, each
/// running job step with its progress.
pub fn status(run_id: &str, file: &Path, connect: &ConnectArgs) -> anyhow::Result<ExitCode> {
    let pipeline = load_pipeline_file(file, &[])?;
    crate::cli::runtime()?.block_on(async {
        let conn = connect.connect(pipeline.endpoint.as_deref()).await?;
        let layout = PipelineLayout::new(&pipeline.state, &pipeline.name, run_id);
        let Some(record) = read_record(&conn.storage, &layout).await? else {
            return Err(UsageError::new(format!(
                "pipeline {} has no run {run_id} (no {})",
                pipeline.name,
                layout.record()
            ))
            .into());
        };
        let progress = running_progress(&conn.storage, &record).await?;
        let look = |name: &str| -> Option<StepProgress> { progress.get(name).copied() };
        print!("{}", summary::render(&record, &layout, &look));
        Ok(ExitCode::Done)
    })
}
