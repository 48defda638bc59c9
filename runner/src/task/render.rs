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
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::kubernetes::render::{
    ANNOTATION_RUN_ID, LABEL_COMPONENT, LABEL_RUN, SCRATCH_DIR, container_security, object_name,
    pod_security, run_label, scratch_mount, scratch_volume,
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
    let pod = PodSpec {
        containers: vec![container(def.essential())],
        init_containers: (!sidecars.is_empty()).then_some(sidecars),
        restart_policy: Some("Never".into()),
        service_account_name: def.task_role.clone(),
        // A task role reaches cloud APIs through its own projected token (IRSA, Pod
        // Identity); the Kubernetes API token is not mounted.
        automount_service_account_token: Some(false),
        node_selector: (!settings.node_selector.is_empty()).then(|| settings.node_selector.clone()),
        tolerations: (!settings.tolerations.is_empty()).then(|| settings.tolerations.clone()),
        affinity: settings.affinity.clone(),
        priority_class_name: settings.priority_class_name.clone(),
        image_pull_secrets: (!settings.image_pull_secrets.is_empty())
            .then(|| settings.image_pull_secrets.clone()),
        security_context: Some(pod_security()),
        volumes: Some(vec![scratch_volume()]),
        ..Default::default()
    };
    KubeJob {
        metadata: ObjectMeta {
            name: Some(task_job_name(run_id)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
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
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// One container definition; a non-essential one becomes a native sidecar.
fn container(c: &TaskContainer) -> Container {
    // The root filesystem is read-only; /tmp is the pod's scratch directory.
    let mut env = vec![EnvVar {
        name: "TMPDIR".into(),
        value: Some(SCRATCH_DIR.into()),
        ..Default::default()
    }];
    env.retain(|e| !c.env.iter().any(|own| own.name == e.name));
    env.extend(c.env.iter().cloned());
    Container {
        name: c.name.clone(),
        image: Some(c.image.clone()),
        command: c.entry_point.clone(),
        args: c.command.clone(),
        env: Some(env),
        resources: c.resources.clone(),
        restart_policy: (!c.essential).then(|| "Always".into()),
        // A failed run shows the end of its log in the pod's status.
        termination_message_policy: c.essential.then(|| "FallbackToLogsOnError".into()),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![scratch_mount()]),
        ..Default::default()
    }
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
