//! What every pod sluice renders shares, written once for worker, launcher and task pods:
//! `restartPolicy: Never`, the file's placement settings, a hardened security context, the
//! scratch directory (the root filesystem is read-only), and a Job whose pod template
//! carries the Job's own labels and annotations.

use k8s_openapi::api::batch::v1::{Job as KubeJob, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec,
    PodTemplateSpec, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::spec::kubernetes::PodSettings;

/// The writable scratch directory of every pod (the root filesystem is read-only).
pub const SCRATCH_DIR: &str = "/tmp";
/// The non-root user of the sluice image (distroless `nonroot`).
pub const NON_ROOT_UID: i64 = 65532;

/// Who a pod runs as and whether it gets a Kubernetes API token.
pub struct Identity {
    pub service_account: Option<String>,
    /// Only the launcher calls the Kubernetes API.
    pub api_token: bool,
}

/// A pod of `containers` (and native sidecars `init`), placed by `settings`, hardened,
/// with the scratch volume and `volumes`.
pub fn pod_spec(
    settings: &PodSettings,
    identity: Identity,
    containers: Vec<Container>,
    init: Vec<Container>,
    volumes: Vec<Volume>,
) -> PodSpec {
    let mut all_volumes = vec![scratch_volume()];
    all_volumes.extend(volumes);
    PodSpec {
        containers,
        init_containers: (!init.is_empty()).then_some(init),
        restart_policy: Some("Never".into()),
        service_account_name: identity.service_account,
        automount_service_account_token: Some(identity.api_token),
        node_selector: (!settings.node_selector.is_empty()).then(|| settings.node_selector.clone()),
        tolerations: (!settings.tolerations.is_empty()).then(|| settings.tolerations.clone()),
        affinity: settings.affinity.clone(),
        priority_class_name: settings.priority_class_name.clone(),
        image_pull_secrets: (!settings.image_pull_secrets.is_empty())
            .then(|| settings.image_pull_secrets.clone()),
        security_context: Some(pod_security()),
        volumes: Some(all_volumes),
        ..Default::default()
    }
}

/// A Job named by `meta` that runs `pod`; its pod template carries the Job's labels and
/// annotations, so pods are found by the same selectors as their Job.
pub fn job_of(meta: ObjectMeta, spec: JobSpec, pod: PodSpec) -> KubeJob {
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone(),
            ..Default::default()
        }),
        spec: Some(pod),
    };
    KubeJob {
        metadata: meta,
        spec: Some(JobSpec { template, ..spec }),
        status: None,
    }
}

/// `container` hardened (no privilege escalation, read-only root, all capabilities
/// dropped, seccomp RuntimeDefault) with the scratch directory mounted first.
pub fn hardened(mut container: Container) -> Container {
    container.security_context = Some(container_security());
    let mut mounts = vec![scratch_mount()];
    mounts.extend(container.volume_mounts.take().unwrap_or_default());
    container.volume_mounts = Some(mounts);
    container
}

/// A container's environment: `TMPDIR` (the scratch directory), then `defaults`, then the
/// file's own variables, which override both.
pub fn environment(defaults: Vec<EnvVar>, own: &[EnvVar]) -> Vec<EnvVar> {
    let mut env = vec![EnvVar {
        name: "TMPDIR".into(),
        value: Some(SCRATCH_DIR.into()),
        ..Default::default()
    }];
    env.extend(defaults);
    env.retain(|e| !own.iter().any(|o| o.name == e.name));
    env.extend(own.iter().cloned());
    env
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT_UID),
        run_as_group: Some(NON_ROOT_UID),
        fs_group: Some(NON_ROOT_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The hardened security context of every container.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn scratch_volume() -> Volume {
    Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn scratch_mount() -> VolumeMount {
    VolumeMount {
        name: "scratch".into(),
        mount_path: SCRATCH_DIR.into(),
        ..Default::default()
    }
}
