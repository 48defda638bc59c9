//! A pipeline run as Kubernetes objects: a ConfigMap holding the pipeline file and every
//! step's file, and a launcher Job that runs `sluice submit --in-cluster` on it, driving the
//! DAG from inside the cluster (each job step through the submit path, each task step as
//! its Job). A retried launcher resumes the pipeline run.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::kubernetes::cluster::{Cluster, ClusterError};
use crate::kubernetes::render::{
    ANNOTATION_RUN_ID, LABEL_COMPONENT, LABEL_RUN, Launcher, Target, launcher_of, object_name,
    run_label,
};
use crate::spec::pipeline::{BUNDLE_KEY, Pipeline};

/// Label naming the pipeline on its launcher, ConfigMap and pods.
pub const LABEL_PIPELINE: &str = "sluice.dev/pipeline";
/// The service account of pipeline launchers (manifests/rbac-pipeline.yaml grants it what
/// driving the steps needs).
pub const PIPELINE_SERVICE_ACCOUNT: &str = "sluice-pipeline";

/// Where and as what a pipeline run's objects are rendered: the flags win over the first
/// job step's `kubernetes` settings, which win over the defaults.
pub fn pipeline_target(
    pipeline: &Pipeline,
    image: Option<&str>,
    namespace: Option<&str>,
    run_id: String,
) -> Target {
    Target::from_settings(&pipeline.kubernetes, image, namespace, run_id)
}

pub fn pipeline_config_map_name(run_id: &str) -> String {
    object_name(run_id, "pipeline")
}

pub fn pipeline_launcher_name(run_id: &str) -> String {
    object_name(run_id, "pipeline-launcher")
}

fn metadata(pipeline: &Pipeline, target: &Target, name: String, component: &str) -> ObjectMeta {
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
    target: &Target,
) -> Result<KubeJob, ClusterError> {
    cluster
        .create_once(&pipeline_config_map(pipeline, target))
        .await?;
    cluster
        .create_once(&pipeline_launcher_job(pipeline, target))
        .await
}

/// The ConfigMap of the pipeline's files (see `Pipeline::bundle`).
pub fn pipeline_config_map(pipeline: &Pipeline, target: &Target) -> ConfigMap {
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
pub fn pipeline_launcher_job(pipeline: &Pipeline, target: &Target) -> KubeJob {
    launcher_of(Launcher {
        meta: metadata(
            pipeline,
            target,
            pipeline_launcher_name(&target.run_id),
            "pipeline-launcher",
        ),
        settings: &pipeline.kubernetes,
        endpoint: pipeline.endpoint.as_deref(),
        image: &target.image,
        namespace: &target.namespace,
        run_id: &target.run_id,
        file: BUNDLE_KEY,
        config_map: pipeline_config_map_name(&target.run_id),
        service_account: PIPELINE_SERVICE_ACCOUNT,
    })
}
