//! plan.json and job.yaml: what a run was planned to do, written once when it starts; their
//! one reader and writer.

use crate::plan::Plan;
use crate::state::{RunLayout, StateError, exists, read_bytes, read_json, write_json};
use crate::storage::Storage;

/// The run's plan, `None` when the run was never planned.
pub async fn read_plan(storage: &Storage, layout: &RunLayout) -> Result<Option<Plan>, StateError> {
    read_json(storage, &layout.plan(), "plan").await
}

/// The run's plan; a run without one is an error that says so.
pub async fn load_plan(storage: &Storage, layout: &RunLayout) -> Result<Plan, StateError> {
    read_plan(storage, layout)
        .await?
        .ok_or_else(|| StateError::Missing { uri: layout.plan() })
}

/// The resolved job file the run was planned with.
pub async fn load_job_text(storage: &Storage, layout: &RunLayout) -> Result<String, StateError> {
    let uri = layout.job();
    let bytes = read_bytes(storage, &uri)
        .await?
        .ok_or(StateError::Missing { uri })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether the run has a plan already (a run id is used once).
pub async fn is_planned(storage: &Storage, layout: &RunLayout) -> Result<bool, StateError> {
    exists(storage, layout.plan()).await
}

/// Writes the resolved job, then the plan: a run whose plan exists has its job file.
pub async fn write_run(
    storage: &Storage,
    layout: &RunLayout,
    plan: &Plan,
    resolved_yaml: &str,
) -> Result<(), StateError> {
    let uri = layout.job();
    storage
        .put_bytes(&uri, resolved_yaml.to_string().into())
        .await
        .map_err(|source| StateError::Write {
            uri,
            source: Box::new(source),
        })?;
    write_json(storage, &layout.plan(), plan).await
}
