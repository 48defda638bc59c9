//! A task run on this machine: the rendered Job executed by the local pod runner, each
//! image replaced by its container's `local.command`, the main container's output passed
//! through to this process's stdout and stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::batch::v1::Job as KubeJob;

use crate::pod::{LocalPodRunner, PodOutput, ShardOutcome};
use crate::spec::kubernetes::DEFAULT_IMAGE;
use crate::spec::task::TaskDefinition;
use crate::task::error::TaskError;
use crate::task::{Logs, TaskOutcome};

/// What runs each container on this machine, by container name: its `local.command`
/// (an `--entrypoint` override replaced it already). The container's arguments follow.
pub fn local_commands(def: &TaskDefinition) -> BTreeMap<String, Vec<String>> {
    def.containers
        .iter()
        .filter_map(|c| Some((c.name.clone(), c.local_command.clone()?)))
        .collect()
}

/// Executes the task's Job here; the container's exit code is the outcome's.
pub async fn run(
    def: &TaskDefinition,
    job: &KubeJob,
    program: PathBuf,
    env: Vec<(String, String)>,
    output: PodOutput,
) -> Result<TaskOutcome, TaskError> {
    let runner = LocalPodRunner {
        // A container of the sluice image runs this executable.
        sluice_image: DEFAULT_IMAGE.to_string(),
        program,
        local_commands: local_commands(def),
        env,
        bar: false,
        cpus: None,
        output,
    };
    let outcomes = runner.run(job, None).await.map_err(TaskError::Local)?;
    let outcome = outcomes.into_iter().next();
    let exit_code = match &outcome {
        Some(ShardOutcome {
            code: Some(code), ..
        }) => *code,
        Some(o) => {
            for line in &o.last_lines {
                tracing::error!("{line}");
            }
            1
        }
        None => 1,
    };
    Ok(TaskOutcome {
        run_id: run_id_of(job),
        job: job.metadata.name.clone().unwrap_or_default(),
        exit_code,
        attempts: outcome.map_or(0, |o| o.attempts),
        logs: Logs::Streamed,
    })
}

fn run_id_of(job: &KubeJob) -> String {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::kubernetes::render::ANNOTATION_RUN_ID))
        .cloned()
        .unwrap_or_default()
}
