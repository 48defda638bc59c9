//! A run's objects on a Kubernetes cluster: create them idempotently, read the worker Jobs'
//! status, find their pods, delete them. Everything goes through `kube::Api`, so an
//! in-memory API server can stand in for a cluster in tests.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::exit::ExitCode;
use crate::kubernetes::render::{
    ANNOTATION_PLAN, LABEL_COMPONENT, WORKER_CONTAINER, config_map_name, run_selector,
};
use crate::storage::uri::S3Uri;

/// The completion-index label Kubernetes puts on the pods of an Indexed Job.
pub const COMPLETION_INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("no Kubernetes configuration: {0} (set KUBECONFIG, or run inside a cluster)")]
    Config(String),
    #[error("no worker Job of run {run_id} in namespace {namespace}")]
    NoRun { run_id: String, namespace: String },
    #[error("worker Job {job} has no {ANNOTATION_PLAN} annotation (not rendered by sluice?)")]
    NoPlan { job: String },
    #[error("worker Job {job}: {why}")]
    Malformed { job: String, why: String },
}

impl ClusterError {
    /// 2 for what is the setup's (denied, invalid or missing objects, no such run); 1 for
    /// the cluster's own trouble (5xx, throttling, the network).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ClusterError::Api(kube::Error::Api(status))
                if status.code < 500 && status.code != 429 =>
            {
                ExitCode::Config
            }
            ClusterError::Api(_) => ExitCode::Transient,
            ClusterError::Config(_)
            | ClusterError::NoRun { .. }
            | ClusterError::NoPlan { .. }
            | ClusterError::Malformed { .. } => ExitCode::Config,
        }
    }
}

/// The API of one namespace.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

/// What a worker Job's status says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobState {
    pub name: String,
    /// The shards this Job runs, in completion-index order.
    pub shards: Vec<u32>,
    /// Shards (not indexes) that completed and that failed for good.
    pub completed: BTreeSet<u32>,
    pub failed: BTreeSet<u32>,
    pub active: i32,
    /// `Complete` or `SuccessCriteriaMet`: it succeeded.
    pub succeeded: bool,
    /// `Failed` or `FailureTarget`: it failed (or is being terminated as failed).
    pub failed_job: bool,
    /// The reason and message of the terminal condition.
    pub reason: Option<String>,
}

impl JobState {
    pub fn finished(&self) -> bool {
        self.succeeded || self.failed_job
    }
}

impl Cluster {
    /// Connects with the kubeconfig (KUBECONFIG or ~/.kube/config) or, inside a pod, the
    /// service account.
    pub async fn connect(namespace: &str) -> Result<Cluster, ClusterError> {
        let client = Client::try_default()
            .await
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(Cluster::new(client, namespace))
    }

    pub fn new(client: Client, namespace: &str) -> Cluster {
        Cluster {
            client,
            namespace: namespace.to_string(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The objects of kind `K` that `selector` matches, oldest first (then by name).
    async fn list_oldest_first<K>(&self, selector: &str) -> Result<Vec<K>, ClusterError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let mut objects = self
            .api::<K>()
            .list(&ListParams::default().labels(selector))
            .await?
            .items;
        objects.sort_by(|a, b| {
            let (a, b) = (a.meta(), b.meta());
            (a.creation_timestamp.as_ref(), &a.name).cmp(&(b.creation_timestamp.as_ref(), &b.name))
        });
        Ok(objects)
    }

    /// Creates an object unless one of that name exists; returns the one in the cluster.
    pub async fn create_once<K>(&self, object: &K) -> Result<K, ClusterError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api();
        match api.create(&PostParams::default(), object).await {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                let name = object.meta().name.clone().unwrap_or_default();
                Ok(api.get(&name).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn config_map(&self, map: &ConfigMap) -> Result<ConfigMap, ClusterError> {
        self.create_once(map).await
    }

    /// Makes a run's ConfigMap (`<run>-job`, if there is one) a dependent of `owner`, a Job
    /// of the run, so Kubernetes' garbage collector removes it with the run's Jobs (after
    /// `ttlSecondsAfterFinished`, or at `cancel`) instead of leaving one per run. A schedule's
    /// shared ConfigMap, named after the schedule, is not touched.
    pub async fn own_config_map(&self, run_id: &str, owner: &KubeJob) -> Result<(), ClusterError> {
        let (Some(name), Some(uid)) = (&owner.metadata.name, &owner.metadata.uid) else {
            return Ok(());
        };
        let maps: Api<ConfigMap> = self.api();
        let Some(mut map) = maps.get_opt(&config_map_name(run_id)).await? else {
            return Ok(());
        };
        let owners = map.metadata.owner_references.get_or_insert_default();
        if owners.iter().any(|o| &o.uid == uid) {
            return Ok(());
        }
        owners.push(OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: name.clone(),
            uid: uid.clone(),
            ..Default::default()
        });
        let map_name = map.metadata.name.clone().unwrap_or_default();
        match maps.replace(&map_name, &PostParams::default(), &map).await {
            Ok(_) => Ok(()),
            // Someone else changed it meanwhile (another owner): the next submit adds ours.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn job(&self, name: &str) -> Result<Option<KubeJob>, ClusterError> {
        Ok(self.api::<KubeJob>().get_opt(name).await?)
    }

    /// The worker Jobs of a run (the first and any resumed ones), oldest first.
    pub async fn worker_jobs(&self, run_id: &str) -> Result<Vec<KubeJob>, ClusterError> {
        let selector = format!("{},{LABEL_COMPONENT}=worker", run_selector(run_id));
        self.list_oldest_first(&selector).await
    }

    /// The worker pods of a run, optionally of one completion index.
    pub async fn worker_pods(
        &self,
        run_id: &str,
        index: Option<u32>,
    ) -> Result<Vec<Pod>, ClusterError> {
        let mut selector = format!("{},{LABEL_COMPONENT}=worker", run_selector(run_id));
        if let Some(index) = index {
            selector.push_str(&format!(",{COMPLETION_INDEX_LABEL}={index}"));
        }
        let mut pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// A pod's worker log, whole or followed.
    pub async fn logs(
        &self,
        pod: &str,
        follow: bool,
    ) -> Result<impl futures::AsyncBufRead + use<>, ClusterError> {
        self.container_logs(pod, WORKER_CONTAINER, follow).await
    }

    /// The log of one container of a pod, whole or followed.
    pub async fn container_logs(
        &self,
        pod: &str,
        container: &str,
        follow: bool,
    ) -> Result<impl futures::AsyncBufRead + use<>, ClusterError> {
        let params = LogParams {
            container: Some(container.into()),
            follow,
            ..Default::default()
        };
        Ok(self.api::<Pod>().log_stream(pod, &params).await?)
    }

    /// The pods of one completion index of one worker Job.
    pub async fn worker_pods_of_job(
        &self,
        job: &str,
        index: u32,
    ) -> Result<Vec<Pod>, ClusterError> {
        self.pods_of_job(job, Some(index)).await
    }

    /// The pods of a Job (of one completion index, for an Indexed Job), oldest first.
    pub async fn pods_of_job(
        &self,
        job: &str,
        index: Option<u32>,
    ) -> Result<Vec<Pod>, ClusterError> {
        let mut selector = format!("batch.kubernetes.io/job-name={job}");
        if let Some(index) = index {
            selector.push_str(&format!(",{COMPLETION_INDEX_LABEL}={index}"));
        }
        self.list_oldest_first(&selector).await
    }

    /// Deletes a run's Jobs (worker and launcher) and their pods; the run's state in the
    /// bucket stays. Returns the names of the deleted Jobs.
    pub async fn delete_run(&self, run_id: &str) -> Result<Vec<String>, ClusterError> {
        let selector = run_selector(run_id);
        let params = ListParams::default().labels(&selector);
        let jobs: Api<KubeJob> = self.api();
        let background = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        let mut deleted = Vec::new();
        for job in jobs.list(&params).await?.items {
            let name = job.metadata.name.unwrap_or_default();
            match jobs.delete(&name, &background).await {
                Ok(_) => deleted.push(name),
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Pods go with their Job; deleting them too stops them now, not at the next sweep.
        let pods: Api<Pod> = self.api();
        for pod in pods.list(&params).await?.items {
            let name = pod.metadata.name.unwrap_or_default();
            match pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deleted)
    }
}

/// The plan a worker Job runs (from its annotation).
pub fn plan_of(job: &KubeJob) -> Result<S3Uri, ClusterError> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let text = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_PLAN))
        .ok_or_else(|| ClusterError::NoPlan { job: name.clone() })?;
    text.parse().map_err(|e| ClusterError::Malformed {
        job: name,
        why: format!("plan annotation {text:?}: {e}"),
    })
}

/// The shards a worker Job runs, in completion-index order (from `--shard-map`, else
/// index i is shard i).
pub fn shards_of(job: &KubeJob) -> Result<Vec<u32>, ClusterError> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let spec = job.spec.as_ref().ok_or_else(|| ClusterError::Malformed {
        job: name.clone(),
        why: "no spec".into(),
    })?;
    let args = spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers.iter().find(|c| c.name == WORKER_CONTAINER))
        .and_then(|c| c.args.clone())
        .unwrap_or_default();
    if let Some(i) = args.iter().position(|a| a == "--shard-map") {
        let list = args.get(i + 1).cloned().unwrap_or_default();
        return list
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|e| ClusterError::Malformed {
                job: name,
                why: format!("--shard-map {list:?}: {e}"),
            });
    }
    Ok((0..spec.completions.unwrap_or(1).max(0) as u32).collect())
}

/// Reads a worker Job's status.
pub fn state_of(job: &KubeJob) -> Result<JobState, ClusterError> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let shards = shards_of(job)?;
    let mut state = JobState {
        name: name.clone(),
        ..Default::default()
    };
    let Some(status) = &job.status else {
        state.shards = shards;
        return Ok(state);
    };
    let to_shards = |text: Option<&String>| -> Result<BTreeSet<u32>, ClusterError> {
        let indexes = parse_indexes(text.map_or("", String::as_str)).map_err(|why| {
            ClusterError::Malformed {
                job: name.clone(),
                why,
            }
        })?;
        Ok(indexes
            .into_iter()
            .filter_map(|i| shards.get(i as usize).copied())
            .collect())
    };
    state.completed = to_shards(status.completed_indexes.as_ref())?;
    state.failed = to_shards(status.failed_indexes.as_ref())?;
    state.active = status.active.unwrap_or(0);
    for condition in status.conditions.iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        let terminal = match condition.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => {
                state.succeeded = true;
                true
            }
            "Failed" | "FailureTarget" => {
                state.failed_job = true;
                true
            }
            _ => false,
        };
        if terminal && state.reason.is_none() {
            state.reason = Some(
                [condition.reason.clone(), condition.message.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
            )
            .filter(|r| !r.is_empty());
        }
    }
    state.shards = shards;
    Ok(state)
}

/// Parses Kubernetes' compressed index lists: `"1,3-5,7"`.
pub fn parse_indexes(text: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("index list {text:?}: {part:?} is not an index or a range");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.parse::<u32>().map_err(|_| bad())?,
                    b.parse::<u32>().map_err(|_| bad())?,
                );
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

/// Writes indexes the way Kubernetes does (`"1,3-5,7"`).
pub fn format_indexes(indexes: &BTreeSet<u32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_round_trip() {
        assert_eq!(parse_indexes("1,3-5,7").unwrap(), [1, 3, 4, 5, 7]);
        assert_eq!(parse_indexes("").unwrap(), Vec::<u32>::new());
        assert!(parse_indexes("3-1").is_err());
        assert!(parse_indexes("a").is_err());
        let set: BTreeSet<u32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(
            parse_indexes(&format_indexes(&set)).unwrap(),
            set.into_iter().collect::<Vec<_>>()
        );
    }
}
