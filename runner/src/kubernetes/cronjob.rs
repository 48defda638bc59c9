//! A schedule as a native Kubernetes CronJob: the ConfigMap of its job or pipeline (with the
//! schedule's fixed params) and a CronJob whose pods run the launcher, as `sluice render`
//! renders it for one run; or, for a task definition, a CronJob of the task's Job. Kubernetes starts at most one missed run and knows no data intervals, so
//! templated params cannot be rendered (docs/scheduling.md).

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job as KubeJob, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, EnvVarSource, ObjectFieldSelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::kubernetes::pipeline::{pipeline_config_map, pipeline_launcher_job, pipeline_target};
use crate::kubernetes::render::{
    ANNOTATION_RUN_ID, LABEL_RUN, MAX_CRON_JOB_NAME, Target, config_map, launcher_job, name_within,
};
use crate::spec::Job;
use crate::spec::pipeline::Pipeline;
use crate::spec::schedule::Schedule;

/// Label naming the schedule on the CronJob, its Jobs and pods.
pub const LABEL_SCHEDULE: &str = "sluice.dev/schedule";

/// The CronJob's successful and failed Jobs kept for inspection.
pub const SUCCESSFUL_JOBS_HISTORY_LIMIT: i32 = 3;
pub const FAILED_JOBS_HISTORY_LIMIT: i32 = 3;

/// The variable of the CronJob's launcher holding its Job's name (from the pod label the Job
/// controller sets), which Kubernetes substitutes into `--scheduled-job $(...)`.
pub const LAUNCHER_JOB_ENV: &str = "SLUICE_LAUNCHER_JOB";
/// The pod label naming a pod's Job, set by the Job controller.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The ConfigMap and CronJob of a schedule. `job` is its target loaded with the
/// schedule's params; each run gets the id `<job>-<scheduled time>` (as the scheduler names
/// runs) from the name of the Job the CronJob controller created for it.
pub fn cron_job(
    schedule: &Schedule,
    job: &Job,
    resolved_yaml: &str,
    image: Option<&str>,
    namespace: Option<&str>,
) -> (ConfigMap, CronJob) {
    // The objects shared by every run are named after the schedule.
    let target = Target::new(job, image, namespace, schedule.name.clone());
    let map = config_map(job, resolved_yaml, &target);
    let launcher = launcher_job(job, &target);
    launcher_cron_job(schedule, map, launcher)
}

/// The ConfigMap and CronJob of a schedule whose target is a pipeline: the pipeline's files
/// (with the schedule's fixed params) and a CronJob of its launcher; each run gets the id
/// `<pipeline>-<scheduled time>`, as with a job.
pub fn pipeline_cron_job(
    schedule: &Schedule,
    pipeline: &Pipeline,
    image: Option<&str>,
    namespace: Option<&str>,
) -> (ConfigMap, CronJob) {
    let target = pipeline_target(pipeline, image, namespace, schedule.name.clone());
    let map = pipeline_config_map(pipeline, &target);
    let launcher = pipeline_launcher_job(pipeline, &target);
    launcher_cron_job(schedule, map, launcher)
}

/// A launcher Job (and the ConfigMap it mounts) made into a CronJob of the schedule.
fn launcher_cron_job(
    schedule: &Schedule,
    mut map: ConfigMap,
    mut launcher: KubeJob,
) -> (ConfigMap, CronJob) {
    let strip = |meta: &mut ObjectMeta| {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(LABEL_RUN);
            labels.insert(LABEL_SCHEDULE.into(), schedule.name.clone());
        }
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.remove(ANNOTATION_RUN_ID);
        }
        if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
            meta.annotations = None;
        }
    };
    strip(&mut map.metadata);
    strip(&mut launcher.metadata);
    let mut spec = launcher.spec.take().expect("the launcher Job has a spec");
    if let Some(meta) = spec.template.metadata.as_mut() {
        strip(meta);
    }
    if let Some(pod) = spec.template.spec.as_mut() {
        for container in &mut pod.containers {
            // Each fire's run id comes from its scheduled time, which the CronJob controller
            // puts into the Job's name: a retried launcher pod resumes the same run.
            if let Some(args) = container.args.as_mut()
                && let Some(i) = args.iter().position(|a| a == "--run-id")
            {
                args.splice(
                    i..i + 2,
                    [
                        "--scheduled-job".to_string(),
                        format!("$({LAUNCHER_JOB_ENV})"),
                    ],
                );
            }
            container.env.get_or_insert_default().push(EnvVar {
                name: LAUNCHER_JOB_ENV.into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.labels['{JOB_NAME_LABEL}']"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    let cron = cron_job_of(schedule, launcher.metadata, spec);
    (map, cron)
}

/// The CronJob of a schedule whose target is a task definition: `job` is the task's Job as
/// `sluice task run` would create it (with the schedule's fixed args and params); every
/// fire creates one like it. The run label and id, which name a single run, are left out.
pub fn task_cron_job(schedule: &Schedule, job: KubeJob) -> CronJob {
    let strip = |meta: &mut ObjectMeta| {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(LABEL_RUN);
            labels.insert(LABEL_SCHEDULE.into(), schedule.name.clone());
        }
        meta.annotations = None;
    };
    let mut metadata = job.metadata;
    strip(&mut metadata);
    let mut spec = job.spec.expect("a task's Job has a spec");
    if let Some(meta) = spec.template.metadata.as_mut() {
        strip(meta);
    }
    cron_job_of(schedule, metadata, spec)
}

/// A CronJob of `schedule` creating Jobs of `spec`, named after the schedule; `metadata`
/// gives its labels and namespace (and its Jobs' labels).
fn cron_job_of(schedule: &Schedule, metadata: ObjectMeta, spec: JobSpec) -> CronJob {
    CronJob {
        metadata: ObjectMeta {
            name: Some(name_within(&schedule.name, "", MAX_CRON_JOB_NAME)),
            ..metadata.clone()
        },
        spec: Some(CronJobSpec {
            schedule: schedule.cron.expr().to_string(),
            time_zone: Some(schedule.time_zone.name().to_string()),
            concurrency_policy: Some(schedule.concurrency.as_str().to_string()),
            starting_deadline_seconds: schedule.starting_deadline.map(|d| d.as_secs() as i64),
            suspend: Some(schedule.suspend),
            successful_jobs_history_limit: Some(SUCCESSFUL_JOBS_HISTORY_LIMIT),
            failed_jobs_history_limit: Some(FAILED_JOBS_HISTORY_LIMIT),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: metadata.labels,
                    ..Default::default()
                }),
                spec: Some(spec),
            },
        }),
        status: None,
    }
}

/// The scheduled time in the name of a Job that a CronJob created: the controller names it
/// `<cronjob>-<scheduled time in minutes since the Unix epoch>`.
pub fn scheduled_time_of(job_name: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, minutes) = job_name.rsplit_once('-')?;
    if minutes.is_empty() || !minutes.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    chrono::DateTime::from_timestamp(minutes.parse::<i64>().ok()?.checked_mul(60)?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduled_time_comes_from_the_job_name() {
        // 2026-11-22T02:00:00Z is 29_921_880 minutes after the epoch.
        let time = scheduled_time_of("nightly-29921880").unwrap();
        assert_eq!(time.to_rfc3339(), "2026-11-22T02:00:00+00:00");
        assert_eq!(scheduled_time_of("nightly"), None);
        assert_eq!(scheduled_time_of("nightly-x1"), None);
        assert_eq!(scheduled_time_of("nightly-"), None);
    }
}
