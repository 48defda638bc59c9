//! A job as Kubernetes objects, built from typed k8s-openapi structs: the ConfigMap that
//! holds the resolved job file, the worker Indexed Job, and the launcher Job that plans,
//! submits and publishes from inside the cluster. The local pod runner executes the very
//! same worker Job, so what runs on a laptop is what runs on a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job as KubeJob, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::exit::ExitCode;
use crate::kubernetes::pod::{Identity, environment, hardened, job_of, pod_spec};
use crate::kubernetes::sidecars::{sidecar_volumes, transformer_sidecars};
use crate::spec::Job;
use crate::spec::kubernetes::{DEFAULT_IMAGE, PodSettings};
use crate::storage::uri::S3Uri;

/// The namespace of a job's objects unless the job or `--namespace` names another.
pub const DEFAULT_NAMESPACE: &str = "sluice";
/// The service account of launcher pods (manifests/ grants it what `submit` needs).
pub const LAUNCHER_SERVICE_ACCOUNT: &str = "sluice-launcher";
/// The service account of worker pods unless the job names one (it has no API rights).
pub const WORKER_SERVICE_ACCOUNT: &str = "sluice-worker";
/// The worker container's name (podFailurePolicy rules refer to it).
pub const WORKER_CONTAINER: &str = "worker";
pub const LAUNCHER_CONTAINER: &str = "launcher";
/// Labels on every object and pod of a run.
pub const LABEL_JOB: &str = "sluice.dev/job";
pub const LABEL_RUN: &str = "sluice.dev/run";
/// `worker` or `launcher`.
pub const LABEL_COMPONENT: &str = "sluice.dev/component";
/// The full run id (a label value is limited to 63 characters).
pub const ANNOTATION_RUN_ID: &str = "sluice.dev/run-id";
/// The plan a worker Job runs.
pub const ANNOTATION_PLAN: &str = "sluice.dev/plan";
/// Where the launcher finds the job file (the ConfigMap mounted as a directory).
pub const JOB_FILE_DIR: &str = "/etc/sluice";
pub const JOB_FILE_KEY: &str = "job.yaml";

/// Where and as what a run's objects are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub image: String,
    pub namespace: String,
    pub run_id: String,
}

impl Target {
    /// The flags win over the job file, which wins over the defaults.
    pub fn new(job: &Job, image: Option<&str>, namespace: Option<&str>, run_id: String) -> Target {
        Target::from_settings(&job.kubernetes, image, namespace, run_id)
    }

    /// The flags win over `settings` (a job file's `kubernetes`), which win over the defaults.
    pub fn from_settings(
        settings: &PodSettings,
        image: Option<&str>,
        namespace: Option<&str>,
        run_id: String,
    ) -> Target {
        Target {
            image: image
                .or(settings.image.as_deref())
                .unwrap_or(DEFAULT_IMAGE)
                .to_string(),
            namespace: namespace
                .or(settings.namespace.as_deref())
                .unwrap_or(DEFAULT_NAMESPACE)
                .to_string(),
            run_id,
        }
    }
}

/// What a worker Job runs: a plan, and which shard each completion index takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlan {
    pub plan: S3Uri,
    /// The shards to run, in completion-index order: index i runs `shards[i]`. A fresh run
    /// lists every shard; a resumed run only the unfinished ones.
    pub shards: Vec<u32>,
    /// Distinguishes the Jobs of one run (`None` for the first, `resume-1`, ...).
    pub attempt: Option<String>,
}

impl WorkerPlan {
    pub fn all(plan: S3Uri, shards: u32) -> WorkerPlan {
        WorkerPlan {
            plan,
            shards: (0..shards).collect(),
            attempt: None,
        }
    }

    fn is_identity(&self) -> bool {
        self.shards.iter().enumerate().all(|(i, s)| i as u32 == *s)
    }
}

/// The longest name of an object that is not an Indexed Job (a DNS-1123 label).
pub const MAX_NAME: usize = 63;
/// The longest name of an Indexed Job. The API server refuses an Indexed Job whose pod
/// hostname `<job>-<highest index>` is not a DNS label of at most 63 characters; an Indexed
/// Job has at most 100000 completions, so 6 characters (`-99999`) are kept free for it.
pub const MAX_INDEXED_JOB_NAME: usize = MAX_NAME - 6;
/// The longest CronJob name: the CronJob controller names each Job
/// `<cronjob>-<scheduled time in minutes since the epoch>`, 11 more characters, which must
/// stay within 63.
pub const MAX_CRON_JOB_NAME: usize = 52;

/// A Kubernetes object name (DNS-1123, at most 63 characters) for a run and a suffix.
pub fn object_name(run_id: &str, suffix: &str) -> String {
    name_within(run_id, suffix, MAX_NAME)
}

/// A DNS-1123 name of at most `max` characters for a run id and a suffix. Run ids are
/// lowercased; a name that would be too long cuts the run id and puts a hash of the whole
/// run id after it, keeping the suffix: `<run id cut>-<hash>-<suffix>`, so the names of
/// one run share the hash and stay distinct.
pub fn name_within(run_id: &str, suffix: &str, max: usize) -> String {
    let base: String = run_id
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    let base = base.trim_matches('-');
    let full = if suffix.is_empty() {
        base.to_string()
    } else {
        format!("{base}-{suffix}")
    };
    if full.len() <= max {
        return full;
    }
    let tail = if suffix.is_empty() {
        String::new()
    } else {
        format!("-{suffix}")
    };
    shorten(base, max - tail.len()) + &tail
}

/// The `sluice.dev/run` label value of a run (at most 63 characters).
pub fn run_label(run_id: &str) -> String {
    let value: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    shorten(value.trim_matches(|c: char| !c.is_ascii_alphanumeric()), 63)
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let hash = &hex::encode(Sha256::digest(text.as_bytes()))[..8];
    let keep = text[..max - 9].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{keep}-{hash}")
}

/// The labels of every object and pod of a run: the job's own, then sluice's.
pub fn run_labels(job: &Job, run_id: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = job.labels.clone();
    labels.insert(LABEL_JOB.into(), job.name.clone());
    labels.insert(LABEL_RUN.into(), run_label(run_id));
    labels.insert(LABEL_COMPONENT.into(), component.into());
    labels.insert("app.kubernetes.io/part-of".into(), "sluice".into());
    labels
}

/// The label selector of a run's objects.
pub fn run_selector(run_id: &str) -> String {
    format!("{LABEL_RUN}={}", run_label(run_id))
}

fn metadata(job: &Job, target: &Target, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(target.namespace.clone()),
        labels: Some(run_labels(job, &target.run_id, component)),
        annotations: Some(BTreeMap::from([(
            ANNOTATION_RUN_ID.to_string(),
            target.run_id.clone(),
        )])),
        ..Default::default()
    }
}

/// The ConfigMap holding the resolved job file (params applied), read by the launcher.
pub fn config_map(job: &Job, resolved_yaml: &str, target: &Target) -> ConfigMap {
    ConfigMap {
        metadata: metadata(job, target, config_map_name(&target.run_id), "job"),
        data: Some(BTreeMap::from([(
            JOB_FILE_KEY.to_string(),
            resolved_yaml.to_string(),
        )])),
        ..Default::default()
    }
}

pub fn config_map_name(run_id: &str) -> String {
    object_name(run_id, "job")
}

/// The worker Job of a run (`None`) or of one of its resumes (`resume-1`, ...): an Indexed
/// Job, so its name leaves room for the completion index in its pods' hostnames.
pub fn worker_job_name(run_id: &str, attempt: Option<&str>) -> String {
    name_within(run_id, attempt.unwrap_or(""), MAX_INDEXED_JOB_NAME)
}

pub fn launcher_job_name(run_id: &str) -> String {
    object_name(run_id, "launcher")
}

/// The worker Indexed Job: one completion index per shard to run.
pub fn worker_job(job: &Job, target: &Target, work: &WorkerPlan) -> KubeJob {
    let settings = &job.kubernetes;
    let mut args = vec![
        "worker".to_string(),
        "--plan".to_string(),
        work.plan.to_string(),
    ];
    if !work.is_identity() {
        let shards: Vec<String> = work.shards.iter().map(u32::to_string).collect();
        args.push("--shard-map".into());
        args.push(shards.join(","));
    }
    let container = hardened(Container {
        name: WORKER_CONTAINER.into(),
        image: Some(target.image.clone()),
        command: Some(vec!["sluice".into()]),
        args: Some(args),
        env: Some(pod_env(job)),
        env_from: (!settings.env_from.is_empty()).then(|| settings.env_from.clone()),
        resources: settings.resources.clone(),
        ..Default::default()
    });
    let count = work.shards.len() as i32;
    let mut meta = metadata(
        job,
        target,
        worker_job_name(&target.run_id, work.attempt.as_deref()),
        "worker",
    );
    meta.annotations
        .get_or_insert_default()
        .insert(ANNOTATION_PLAN.into(), work.plan.to_string());
    let sidecars = transformer_sidecars(job, &target.image);
    let volumes = sidecar_volumes(&sidecars);
    let identity = Identity {
        service_account: Some(
            settings
                .service_account_name
                .clone()
                .unwrap_or_else(|| WORKER_SERVICE_ACCOUNT.into()),
        ),
        // Workers never call the Kubernetes API.
        api_token: false,
    };
    let pod = pod_spec(settings, identity, vec![container], sidecars, volumes);
    let spec = JobSpec {
        completion_mode: Some("Indexed".into()),
        completions: Some(count),
        parallelism: Some((job.parallelism as i32).min(count.max(1))),
        backoff_limit_per_index: Some(job.retries as i32),
        max_failed_indexes: settings.max_failed_indexes,
        pod_failure_policy: Some(pod_failure_policy()),
        pod_replacement_policy: Some("Failed".into()),
        ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
        active_deadline_seconds: settings.active_deadline_seconds,
        ..Default::default()
    };
    job_of(meta, spec, pod)
}

/// Exit codes that mean "this fails again" fail the index at once; a disruption (eviction,
/// preemption, node loss) does not count against the index's retries.
pub fn pod_failure_policy() -> PodFailurePolicy {
    failure_policy(WORKER_CONTAINER, "FailIndex")
}

/// The launcher's policy: a run that ended with a code a retry cannot fix (configuration,
/// validation, bad data) fails the launcher Job at once instead of running it again; a
/// disruption does not count against its `backoffLimit`.
pub fn launcher_failure_policy() -> PodFailurePolicy {
    failure_policy(LAUNCHER_CONTAINER, "FailJob")
}

/// Ignore disruptions; `action` on the exit codes of `container` that are not retryable
/// (derived from [`ExitCode::retryable`], so the policy follows the contract).
fn failure_policy(container: &str, action: &str) -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
                on_exit_codes: None,
            },
            PodFailurePolicyRule {
                action: action.into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(container.into()),
                    operator: "In".into(),
                    values: ExitCode::ALL
                        .into_iter()
                        .filter(|c| *c != ExitCode::Done && !c.retryable())
                        .map(ExitCode::code)
                        .collect(),
                }),
                on_pod_conditions: None,
            },
        ],
    }
}

/// The launcher Job: one pod that runs `sluice submit --in-cluster` on the ConfigMap's job:
/// it plans, creates the worker Job, waits for it, publishes the run and exits with the
/// run's outcome. Submitting is idempotent per run id, so a retried launcher resumes.
pub fn launcher_job(job: &Job, target: &Target) -> KubeJob {
    launcher_of(Launcher {
        meta: metadata(job, target, launcher_job_name(&target.run_id), "launcher"),
        settings: &job.kubernetes,
        endpoint: job.endpoint.as_deref(),
        image: &target.image,
        namespace: &target.namespace,
        run_id: &target.run_id,
        file: JOB_FILE_KEY,
        config_map: config_map_name(&target.run_id),
        service_account: LAUNCHER_SERVICE_ACCOUNT,
    })
}

/// What a launcher Job (of a job's run or of a pipeline's) is made of.
pub struct Launcher<'a> {
    pub meta: ObjectMeta,
    pub settings: &'a PodSettings,
    pub endpoint: Option<&'a str>,
    pub image: &'a str,
    pub namespace: &'a str,
    pub run_id: &'a str,
    /// The file `sluice submit --in-cluster` reads, a key of the ConfigMap.
    pub file: &'a str,
    /// The ConfigMap mounted at [`JOB_FILE_DIR`].
    pub config_map: String,
    pub service_account: &'a str,
}

/// One pod running `sluice submit --in-cluster` on a file of a mounted ConfigMap, retried
/// for transient failures only (its podFailurePolicy), placed by the settings but for the
/// workers' affinity (the launcher only plans and waits).
pub fn launcher_of(launcher: Launcher) -> KubeJob {
    let settings = launcher.settings;
    let endpoint = launcher.endpoint.map(|endpoint| EnvVar {
        name: "AWS_ENDPOINT_URL".into(),
        value: Some(endpoint.to_string()),
        ..Default::default()
    });
    let container = hardened(Container {
        name: LAUNCHER_CONTAINER.into(),
        image: Some(launcher.image.to_string()),
        command: Some(vec!["sluice".into()]),
        args: Some(vec![
            "submit".into(),
            "--in-cluster".into(),
            format!("{JOB_FILE_DIR}/{}", launcher.file),
            "--run-id".into(),
            launcher.run_id.to_string(),
            "--image".into(),
            launcher.image.to_string(),
            "--namespace".into(),
            launcher.namespace.to_string(),
        ]),
        env: Some(environment(endpoint.into_iter().collect(), &settings.env)),
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
            name: "job".into(),
            mount_path: JOB_FILE_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let identity = Identity {
        service_account: Some(launcher.service_account.into()),
        api_token: true,
    };
    let files = Volume {
        name: "job".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: launcher.config_map,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod = pod_spec(settings, identity, vec![container], Vec::new(), vec![files]);
    // The launcher only plans and waits: the workers' affinity is theirs, not its.
    pod.affinity = None;
    let spec = JobSpec {
        completions: Some(1),
        parallelism: Some(1),
        // A retried launcher picks the run up where it was (plan and Job are reused); only
        // transient failures are retried.
        backoff_limit: Some(3),
        pod_failure_policy: Some(launcher_failure_policy()),
        pod_replacement_policy: Some("Failed".into()),
        ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
        ..Default::default()
    };
    job_of(launcher.meta, spec, pod)
}

/// The environment of worker and launcher containers: the job's endpoint, the scratch
/// directory, then the job's own variables (which may override both).
fn pod_env(job: &Job) -> Vec<EnvVar> {
    let endpoint = job.endpoint.iter().map(|endpoint| EnvVar {
        name: "AWS_ENDPOINT_URL".into(),
        value: Some(endpoint.clone()),
        ..Default::default()
    });
    environment(endpoint.collect(), &job.kubernetes.env)
}

/// Objects as one multi-document YAML stream (`kubectl apply -f -` reads it).
pub fn to_yaml<T: Serialize>(objects: &[T]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).expect("Kubernetes objects serialize"))
        .map(|text| quote_dates(&text))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Quotes plain scalars that a YAML 1.1 reader would take for a timestamp (a task argument
/// such as `2018-01-01`): serde_yaml_ng writes YAML 1.2, where they are strings, but
/// PyYAML-based tools read them as dates and the schema then refuses them.
fn quote_dates(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let split = line.rfind(": ").map(|i| i + 2).or_else(|| {
            line.trim_start()
                .starts_with("- ")
                .then(|| line.find("- ").unwrap() + 2)
        });
        match split {
            Some(at) if looks_like_date(&line[at..]) => {
                out.push_str(&line[..at]);
                out.push('\'');
                out.push_str(&line[at..]);
                out.push('\'');
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `YYYY-M-D`, optionally followed by a time: the start of a YAML 1.1 timestamp.
fn looks_like_date(value: &str) -> bool {
    let mut parts = value.splitn(3, '-');
    let (Some(year), Some(month), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let day: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let digits = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    digits(year, 4, 4)
        && digits(month, 1, 2)
        && digits(&day, 1, 2)
        && matches!(
            rest[day.len()..].chars().next(),
            None | Some('T' | 't' | ' ')
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_dns_labels_even_for_long_run_ids() {
        assert_eq!(
            object_name("taxi-20261122T020000Z", ""),
            "taxi-20261122t020000z"
        );
        assert_eq!(
            object_name("taxi-20261122T020000Z", "launcher"),
            "taxi-20261122t020000z-launcher"
        );
        let long = format!("{}-20261122T020000Z", "a".repeat(63));
        let name = object_name(&long, "launcher");
        assert!(name.len() <= 63, "{name}");
        assert!(crate::spec::metadata::is_dns_label(&name), "{name}");
        assert_ne!(name, object_name(&long, "job"));
        let label = run_label(&long);
        assert!(label.len() <= 63);
        assert_eq!(run_label("taxi-20261122T020000Z"), "taxi-20261122T020000Z");
    }

    #[test]
    fn dates_are_quoted_for_yaml_1_1_readers() {
        let text = "args:\n- 2018-01-01\n- x2018-01-01\n- 2018-01-01T02:00:00Z\nrun: 2018-1-2\nname: a-b-c\nport: 2018-01\n";
        assert_eq!(
            quote_dates(text),
            "args:\n- '2018-01-01'\n- x2018-01-01\n- '2018-01-01T02:00:00Z'\nrun: '2018-1-2'\nname: a-b-c\nport: 2018-01\n"
        );
    }

    #[test]
    fn the_failure_policy_fails_the_index_on_permanent_exit_codes_only() {
        let policy = pod_failure_policy();
        let codes = policy.rules[1].on_exit_codes.as_ref().unwrap();
        assert_eq!(codes.values, [2, 3, 4]);
        assert_eq!(policy.rules[0].action, "Ignore");
        let launcher = launcher_failure_policy();
        assert_eq!(launcher.rules[1].action, "FailJob");
        let codes = launcher.rules[1].on_exit_codes.as_ref().unwrap();
        assert_eq!(codes.values, [2, 3, 4]);
        assert_eq!(codes.container_name.as_deref(), Some(LAUNCHER_CONTAINER));
    }

    #[test]
    fn indexed_job_names_leave_room_for_the_completion_index() {
        let run = format!("{}-20261122T020000Z", "j".repeat(58));
        let worker = worker_job_name(&run, None);
        assert!(worker.len() <= MAX_INDEXED_JOB_NAME, "{worker}");
        assert!(crate::spec::metadata::is_dns_label(&format!(
            "{worker}-99999"
        )));
        let resume = worker_job_name(&run, Some("resume-12"));
        assert!(resume.len() <= MAX_INDEXED_JOB_NAME, "{resume}");
        assert!(resume.ends_with("-resume-12"), "{resume}");
        // Both carry the hash of the run id.
        let hash = &worker[worker.len() - 8..];
        assert!(
            resume.contains(&format!("-{hash}-resume-12")),
            "{resume} vs {worker}"
        );
        assert_ne!(resume, worker_job_name(&run, Some("resume-13")));
        // Short names stay as they were.
        assert_eq!(
            worker_job_name("taxi-20261122T020000Z", Some("resume-1")),
            "taxi-20261122t020000z-resume-1"
        );
    }
}
