//! A test Job controller for an in-memory Kubernetes API (kube-fake-client): it plays the
//! Job controller and kubelet for the Jobs that appear in a namespace, executing each one
//! with the local pod runner, and writes back the pods and the Job status a cluster would
//! leave: success, failed indexes, disruptions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job as KubeJob, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodSpec,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, PostParams};
use sluice::kubernetes::cluster::{COMPLETION_INDEX_LABEL, format_indexes};
use sluice::pod::{LocalPodRunner, PodOutput};

/// What the controller does with a Job.
#[derive(Debug, Clone)]
pub enum Script {
    /// Run every index; the Job completes if they all exit 0.
    Run,
    /// Run every index, then report `index` failed for good with `exit` (as if its pod
    /// crashed after its work), so the Job fails.
    FailIndex { index: u32, exit: i32 },
    /// The first pod of `index` is evicted (DisruptionTarget, not counted), then every
    /// index runs and the Job completes.
    Disrupt { index: u32 },
    /// Nothing happens: the Job stays active with no pods, as one whose pods are pending.
    Hold,
    /// The Job stays active until the test opens the gate, then runs as `Run`.
    Gate(Arc<tokio::sync::Notify>),
}

/// How the controller's "kubelet" runs a pod on this machine.
#[derive(Debug, Clone)]
pub struct Kubelet {
    /// The image that runs the sluice binary; `None`: the image of the Job's main
    /// container (worker Jobs).
    pub sluice_image: Option<String>,
    /// What stands in for the other images, by container name.
    pub local_commands: BTreeMap<String, Vec<String>>,
    pub env: Vec<(String, String)>,
}

pub struct Controller {
    scripts: Arc<Mutex<Vec<Script>>>,
    handled: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    /// Handles the Jobs of `namespace` that match the label `selector`; scripts apply to
    /// them in the order they are created (then `Run`).
    pub fn start(
        client: kube::Client,
        namespace: &'static str,
        selector: &'static str,
        kubelet: Kubelet,
        scripts: Vec<Script>,
    ) -> Controller {
        let scripts = Arc::new(Mutex::new(scripts));
        let handled = Arc::new(Mutex::new(Vec::<String>::new()));
        let (s, h) = (scripts.clone(), handled.clone());
        let task = tokio::spawn(async move {
            let jobs: Api<KubeJob> = Api::namespaced(client.clone(), namespace);
            loop {
                let list = jobs
                    .list(&ListParams::default().labels(selector))
                    .await
                    .unwrap();
                for job in list.items {
                    let name = job.metadata.name.clone().unwrap();
                    if h.lock().unwrap().contains(&name) {
                        continue;
                    }
                    h.lock().unwrap().push(name.clone());
                    let script = {
                        let mut scripts = s.lock().unwrap();
                        if scripts.is_empty() {
                            Script::Run
                        } else {
                            scripts.remove(0)
                        }
                    };
                    execute(&client, namespace, &kubelet, job, script).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Controller {
            scripts,
            handled,
            task,
        }
    }

    pub fn jobs_handled(&self) -> Vec<String> {
        self.handled.lock().unwrap().clone()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.scripts.lock().map(|mut s| s.clear());
    }
}

fn indexed(job: &KubeJob) -> bool {
    job.spec.as_ref().unwrap().completion_mode.as_deref() == Some("Indexed")
}

async fn execute(
    client: &kube::Client,
    namespace: &str,
    kubelet: &Kubelet,
    job: KubeJob,
    script: Script,
) {
    match &script {
        Script::Hold => return,
        Script::Gate(gate) => gate.notified().await,
        _ => {}
    }
    let name = job.metadata.name.clone().unwrap();
    let main = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .clone();
    if let Script::Disrupt { index } = script {
        let pod = format!("{name}-{index}-evicted");
        create_pod(client, namespace, &job, index, &pod, None, true).await;
    }
    let runner = LocalPodRunner {
        sluice_image: kubelet
            .sluice_image
            .clone()
            .unwrap_or_else(|| main.image.clone().unwrap()),
        program: PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
        local_commands: kubelet.local_commands.clone(),
        env: kubelet.env.clone(),
        bar: false,
        cpus: None,
        output: PodOutput::Prefixed,
    };
    let outcomes = runner.run(&job, None).await.unwrap();
    let mut completed = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for outcome in &outcomes {
        let code = match &script {
            Script::FailIndex { index, exit } if *index == outcome.index => *exit,
            _ => outcome.code.unwrap_or(1),
        };
        let pod = format!("{name}-{}", outcome.index);
        create_pod(
            client,
            namespace,
            &job,
            outcome.index,
            &pod,
            Some(code),
            false,
        )
        .await;
        if code == 0 {
            completed.insert(outcome.index);
        } else {
            failed.insert(outcome.index);
        }
    }
    let jobs: Api<KubeJob> = Api::namespaced(client.clone(), namespace);
    let mut current = jobs.get(&name).await.unwrap();
    let (kind, reason) = match (failed.is_empty(), indexed(&job)) {
        (true, _) => ("Complete", "CompletionsReached"),
        (false, true) => ("Failed", "FailedIndexes"),
        (false, false) => ("Failed", "BackoffLimitExceeded"),
    };
    let indexes = |set: &BTreeSet<u32>| indexed(&job).then(|| format_indexes(set));
    current.status = Some(JobStatus {
        completed_indexes: indexes(&completed),
        failed_indexes: indexes(&failed),
        succeeded: Some(completed.len() as i32),
        failed: Some(failed.len() as i32),
        active: Some(0),
        conditions: Some(vec![JobCondition {
            type_: kind.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    jobs.replace(&name, &PostParams::default(), &current)
        .await
        .unwrap();
}

/// A pod of `job` at `index` as the kubelet would leave it.
async fn create_pod(
    client: &kube::Client,
    namespace: &str,
    job: &KubeJob,
    index: u32,
    name: &str,
    exit: Option<i32>,
    evicted: bool,
) {
    let template = &job.spec.as_ref().unwrap().template;
    let containers = template.spec.as_ref().unwrap().containers.clone();
    let mut labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
    labels.insert(
        "batch.kubernetes.io/job-name".into(),
        job.metadata.name.clone().unwrap(),
    );
    if indexed(job) {
        labels.insert(COMPLETION_INDEX_LABEL.into(), index.to_string());
    }
    // Owned by its Job, as the Job controller makes it, so the Job's deletion takes it.
    let owner = job.metadata.uid.clone().map(|uid| {
        vec![OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: job.metadata.name.clone().unwrap(),
            uid,
            controller: Some(true),
            ..Default::default()
        }]
    });
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            owner_references: owner,
            ..Default::default()
        },
        status: Some(PodStatus {
            phase: Some(
                if exit == Some(0) {
                    "Succeeded"
                } else {
                    "Failed"
                }
                .into(),
            ),
            conditions: evicted.then(|| {
                vec![PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some("EvictionByEvictionAPI".into()),
                    ..Default::default()
                }]
            }),
            container_statuses: exit.map(|code| {
                vec![ContainerStatus {
                    name: containers[0].name.clone(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers,
            ..Default::default()
        }),
    };
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}
