//! A pipeline run as Kubernetes objects: a ConfigMap holding the pipeline file and every
//! step's file, and a launcher Job that runs `sluice submit --in-cluster` on it, driving the
//! DAG from inside the cluster (each job step through the submit path, each task step as
//! its Job). A retried launcher resumes the pipeline run.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job as KubeJob, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::kubernetes::cluster::{Cluster, ClusterError};
use crate::kubernetes::pod::{Identity, environment, hardened, job_of, pod_spec};
use crate::kubernetes::render::{
    ANNOTATION_RUN_ID, JOB_FILE_DIR, LABEL_COMPONENT, LABEL_RUN, LAUNCHER_CONTAINER,
    launcher_failure_policy, object_name, run_label,
};
use crate::spec::kubernetes::DEFAULT_IMAGE;
use crate::spec::pipeline::{BUNDLE_KEY, Pipeline};

/// Label naming the pipeline on its launcher, ConfigMap and pods.
pub const LABEL_PIPELINE: &str = "sluice.dev/pipeline";
/// The service account of pipeline launchers (manifests/rbac-pipeline.yaml grants it what
/// driving the steps needs).
pub const PIPELINE_SERVICE_ACCOUNT: &str = "sluice-pipeline";

/// Where and as what a pipeline run's objects are rendered: the flags win over the first
/// job step's `kubernetes` settings, which win over the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineTarget {
    pub image: String,
    pub namespace: String,
    pub run_id: String,
}

impl PipelineTarget {
    pub fn new(
        pipeline: &Pipeline,
        image: Option<&str>,
        namespace: Option<&str>,
        run_id: String,
    ) -> PipelineTarget {
        let settings = &pipeline.kubernetes;
        PipelineTarget {
            image: image
                .or(settings.image.as_deref())
                .unwrap_or(DEFAULT_IMAGE)
                .to_string(),
            namespace: namespace
                .or(settings.namespace.as_deref())
                .unwrap_or(crate::kubernetes::render::DEFAULT_NAMESPACE)
                .to_string(),
            run_id,
        }
    }
}

pub fn pipeline_config_map_name(run_id: &str) -> String {
    object_name(run_id, "pipeline")
}

pub fn pipeline_launcher_name(run_id: &str) -> String {
    object_name(run_id, "pipeline-launcher")
}

fn metadata(
    pipeline: &Pipeline,
    target: &PipelineTarget,
    name: String,
    component: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(target.namespace.clone()),
        labels: Some(BTreeMap::from([
            (LABEL_PIPELINE.to_string(), pipeline.name.clone()),
            (LABEL_RUN.to_string(), run_label(&target.run_id)),
            (LABEL_COMPONENT.to_string(), component.to_string()),
            (
                "app.kubernetes.io/part-of".to_string(),
                "sluice".to_string(),
            ),
        ])),
        annotations: Some(BTreeMap::from([(
            ANNOTATION_RUN_ID.to_string(),
            target.run_id.clone(),
        )])),
        ..Default::default()
    }
}

/// Creates a pipeline run's ConfigMap and launcher Job on the cluster (each unless it
/// exists), so that the launcher drives the run from inside; returns the launcher Job.
pub async fn create_launcher(
    cluster: &Cluster,
    pipeline: &Pipeline,
    target: &PipelineTarget,
) -> Result<KubeJob, ClusterError> {
    cluster
        .create_once(&pipeline_config_map(pipeline, target))
        .await?;
    cluster
        .create_once(&pipeline_launcher_job(pipeline, target))
        .await
}

/// The ConfigMap of the pipeline's files (see `Pipeline::bundle`).
pub fn pipeline_config_map(pipeline: &Pipeline, target: &PipelineTarget) -> ConfigMap {
    ConfigMap {
        metadata: metadata(
            pipeline,
            target,
            pipeline_config_map_name(&target.run_id),
            "pipeline",
        ),
        data: Some(pipeline.bundle()),
        ..Default::default()
    }
}

/// The launcher Job of a pipeline run: one pod running `sluice submit --in-cluster` on the
/// mounted pipeline file. It exits with the pipeline's outcome; a run that ended with a code
/// a retry cannot fix fails the Job at once, a transient failure retries it (and the retry
/// resumes the run).
pub fn pipeline_launcher_job(pipeline: &Pipeline, target: &PipelineTarget) -> KubeJob {
    let settings = &pipeline.kubernetes;
    let meta = metadata(
        pipeline,
        target,
        pipeline_launcher_name(&target.run_id),
        "pipeline-launcher",
    );
    let endpoint = pipeline.endpoint.iter().map(|endpoint| EnvVar {
        name: "AWS_ENDPOINT_URL".into(),
        value: Some(endpoint.clone()),
        ..Default::default()
    });
    let container = hardened(Container {
        name: LAUNCHER_CONTAINER.into(),
        image: Some(target.image.clone()),
        command: Some(vec!["sluice".into()]),
        args: Some(vec![
            "submit".into(),
            "--in-cluster".into(),
            format!("{JOB_FILE_DIR}/{BUNDLE_KEY}"),
            "--run-id".into(),
            target.run_id.clone(),
            "--image".into(),
            target.image.clone(),
            "--namespace".into(),
            target.namespace.clone(),
        ]),
        env: Some(environment(endpoint.collect(), &settings.env)),
        env_from: (!settings.env_from.is_empty()).then(|| settings.env_from.clone()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("256Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("512Mi".into()),
            )])),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "pipeline".into(),
            mount_path: JOB_FILE_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let identity = Identity {
        service_account: Some(PIPELINE_SERVICE_ACCOUNT.into()),
        api_token: true,
    };
    let files = Volume {
        name: "pipeline".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: pipeline_config_map_name(&target.run_id),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod = pod_spec(settings, identity, vec![container], Vec::new(), vec![files]);
    pod.affinity = None;
    let spec = JobSpec {
        completions: Some(1),
        parallelism: Some(1),
        backoff_limit: Some(3),
        pod_failure_policy: Some(launcher_failure_policy()),
        pod_replacement_policy: Some("Failed".into()),
        ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
        ..Default::default()
    };
    job_of(meta, spec, pod)
}
