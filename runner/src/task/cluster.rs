//! A task run on a cluster: create its Job, poll it until `Complete` or `Failed`, print the
//! main container's log from the last pod and report that container's exit code.

use std::io::Write;
use std::time::Duration;

use futures::AsyncReadExt;
use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::Pod;

use crate::kubernetes::cluster::{Cluster, state_of};
use crate::spec::task::TaskDefinition;
use crate::task::error::TaskError;
use crate::task::{Logs, TaskOutcome};

/// Creates the Job (or finds the one of this run id), waits for it and prints its log.
pub async fn run(
    def: &TaskDefinition,
    job: &KubeJob,
    cluster: &Cluster,
    poll: Duration,
) -> Result<TaskOutcome, TaskError> {
    let created = cluster.create_once(job).await.map_err(TaskError::Cluster)?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let run_id = created
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::kubernetes::render::ANNOTATION_RUN_ID))
        .cloned()
        .unwrap_or_default();
    tracing::info!(run = %run_id, job = %name, namespace = %cluster.namespace, "task submitted");
    let state = loop {
        let current = cluster
            .job(&name)
            .await
            .map_err(TaskError::Cluster)?
            .ok_or_else(|| {
                TaskError::Cluster(crate::kubernetes::cluster::ClusterError::Malformed {
                    job: name.clone(),
                    why: "the Job was deleted while the task ran".into(),
                })
            })?;
        let state = state_of(&current).map_err(TaskError::Cluster)?;
        if state.finished() {
            break state;
        }
        tokio::time::sleep(poll).await;
    };
    let container = def.essential().name.clone();
    let pods = cluster
        .pods_of_job(&name, None)
        .await
        .map_err(TaskError::Cluster)?;
    let attempts = pods.len() as u32;
    let last = pods.last();
    let exit_code = match last.and_then(|pod| exit_code_of(pod, &container)) {
        Some(code) => code,
        None => {
            tracing::error!(
                job = %name,
                reason = state.reason.as_deref().unwrap_or("unknown"),
                "the task's Job ended without its container exiting"
            );
            if state.succeeded { 0 } else { 1 }
        }
    };
    let pod = last.and_then(|p| p.metadata.name.clone());
    if let Some(pod) = &pod {
        print_log(cluster, pod, &container).await?;
    }
    Ok(TaskOutcome {
        run_id,
        job: name,
        exit_code,
        attempts,
        logs: Logs::Pod {
            namespace: cluster.namespace.clone(),
            pod: pod.unwrap_or_default(),
            container,
        },
    })
}

/// The exit code of `container` in a finished pod.
fn exit_code_of(pod: &Pod, container: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// Copies a container's whole log to stdout.
async fn print_log(cluster: &Cluster, pod: &str, container: &str) -> Result<(), TaskError> {
    let mut log = match cluster.container_logs(pod, container, false).await {
        Ok(log) => log,
        Err(error) => {
            // The run's outcome stands without its log.
            tracing::warn!(%error, pod, "the task's log is not available");
            return Ok(());
        }
    };
    let mut bytes = Vec::new();
    log.read_to_end(&mut bytes)
        .await
        .map_err(|source| TaskError::Logs {
            pod: pod.to_string(),
            source,
        })?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&bytes)
        .and_then(|_| stdout.flush())
        .map_err(|source| TaskError::Logs {
            pod: pod.to_string(),
            source,
        })
}
