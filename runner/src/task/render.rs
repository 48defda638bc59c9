//! A task run as a Kubernetes Job, built from typed k8s-openapi structs: one pod,
//! `restartPolicy: Never`, `backoffLimit` from `retries`, `activeDeadlineSeconds` from
//! `timeout`; the essential container as the pod's container, the others as native
//! sidecars; hardened like the worker pods. `sluice task run` executes this very Job,
//! locally with the local pod runner or on a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job as KubeJob, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern,
    PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::kubernetes::pod::{Identity, environment, hardened, job_of, pod_spec};
use crate::kubernetes::render::{
    ANNOTATION_RUN_ID, LABEL_COMPONENT, LABEL_RUN, object_name, run_label,
};
use crate::spec::task::{TaskContainer, TaskDefinition};

/// The label naming a task's family on its Job and pod.
pub const LABEL_TASK: &str = "sluice.dev/task";
/// The `sluice.dev/component` of task Jobs.
pub const TASK_COMPONENT: &str = "task";

/// The Job's name for a run id.
pub fn task_job_name(run_id: &str) -> String {
    object_name(run_id, "")
}

/// The labels of a task run's Job and pod: the definition's own, then sluice's.
pub fn task_labels(def: &TaskDefinition, run_id: &str) -> BTreeMap<String, String> {
    let mut labels = def.labels.clone();
    labels.insert(LABEL_TASK.into(), def.family.clone());
    labels.insert(LABEL_RUN.into(), run_label(run_id));
    labels.insert(LABEL_COMPONENT.into(), TASK_COMPONENT.into());
    labels.insert("app.kubernetes.io/part-of".into(), "sluice".into());
    labels
}

/// The Job of one run of `def` (overrides applied already).
pub fn task_job(def: &TaskDefinition, namespace: &str, run_id: &str) -> KubeJob {
    let settings = &def.pod;
    let labels = task_labels(def, run_id);
    let annotations = BTreeMap::from([(ANNOTATION_RUN_ID.to_string(), run_id.to_string())]);
    let sidecars: Vec<Container> = def.sidecars().map(container).collect();
    // A task role reaches cloud APIs through its own projected token (IRSA, Pod Identity);
    // the Kubernetes API token is not mounted.
    let identity = Identity {
        service_account: def.task_role.clone(),
        api_token: false,
    };
    let pod = pod_spec(
        settings,
        identity,
        vec![container(def.essential())],
        sidecars,
        Vec::new(),
    );
    let meta = ObjectMeta {
        name: Some(task_job_name(run_id)),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        annotations: Some(annotations),
        ..Default::default()
    };
    let spec = JobSpec {
        completions: Some(1),
        parallelism: Some(1),
        backoff_limit: Some(def.retries as i32),
        // An eviction or preemption does not use up a retry.
        pod_failure_policy: Some(PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "Ignore".into(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
                on_exit_codes: None,
            }],
        }),
        pod_replacement_policy: Some("Failed".into()),
        active_deadline_seconds: def.timeout.map(|t| t.as_secs_f64().ceil() as i64),
        ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
        ..Default::default()
    };
    job_of(meta, spec, pod)
}

/// One container definition; a non-essential one becomes a native sidecar.
fn container(c: &TaskContainer) -> Container {
    hardened(Container {
        name: c.name.clone(),
        image: Some(c.image.clone()),
        command: c.entry_point.clone(),
        args: c.command.clone(),
        env: Some(environment(Vec::new(), &c.env)),
        resources: c.resources.clone(),
        restart_policy: (!c.essential).then(|| "Always".into()),
        // A failed run shows the end of its log in the pod's status.
        termination_message_policy: c.essential.then(|| "FallbackToLogsOnError".into()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pod_with_sidecars_first_and_the_definitions_limits() {
        let def = crate::spec::load_task_str(
            "apiVersion: sluice.dev/v1alpha1
kind: TaskDefinition
metadata: {name: nightly}
spec:
  retries: 2
  timeout: 90m
  containerDefinitions:
    - {name: main, image: app, command: [x]}
    - {name: proxy, image: envoy, essential: false}
",
            "t.yaml",
        )
        .unwrap();
        let job = task_job(&def, "etl", "nightly-20260101T000000Z");
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(spec.active_deadline_seconds, Some(5400));
        assert_eq!(spec.completion_mode, None);
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.containers[0].name, "main");
        assert_eq!(pod.containers[0].args.as_deref().unwrap(), ["x"]);
        let sidecar = &pod.init_containers.unwrap()[0];
        assert_eq!(sidecar.name, "proxy");
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_TASK], "nightly");
        assert_eq!(labels[LABEL_RUN], "nightly-20260101T000000Z");
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("nightly-20260101t000000z")
        );
    }
}
