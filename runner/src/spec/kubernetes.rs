//! `spec.kubernetes`: how the job's pods run on a cluster. The fields keep the Kubernetes
//! spelling (camelCase) so that they can be pasted from a pod spec; objects such as
//! tolerations, affinity, env and envFrom are Kubernetes objects, checked field by field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::spec::error::Problem;
use crate::spec::span::FieldPath;

/// The image that runs workers and the launcher unless the job or `--image` names another.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/sluice-dev/sluice:", env!("CARGO_PKG_VERSION"));
/// A step image that stands for the run's sluice image (the built-in transformer server).
pub const SLUICE_IMAGE_ALIAS: &str = "sluice";
/// How long a finished Job and its pods stay for inspection: one day.
pub const DEFAULT_TTL_SECONDS: i32 = 86_400;

/// `spec.kubernetes`: the pods of the job on a cluster. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The namespace of the job's objects. Default: `sluice` (`--namespace` overrides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The sluice image that runs the workers and the launcher (`--image` overrides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The service account of the worker pods, for example one bound to an IAM role
    /// (IRSA, EKS Pod Identity) so that workers reach S3 without stored keys.
    #[serde(
        rename = "serviceAccountName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account_name: Option<String>,
    /// CPU and memory of each worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesConfig>,
    /// Node labels a worker pod's node must have.
    #[serde(
        rename = "nodeSelector",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub node_selector: BTreeMap<String, String>,
    /// Kubernetes tolerations of the worker pods (`key`, `operator`, `value`, `effect`,
    /// `tolerationSeconds`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub tolerations: Vec<serde_json::Value>,
    /// A Kubernetes affinity of the worker pods (`nodeAffinity`, `podAffinity`,
    /// `podAntiAffinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub affinity: Option<serde_json::Value>,
    /// The PriorityClass of the worker pods.
    #[serde(
        rename = "priorityClassName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub priority_class_name: Option<String>,
    /// Names of Secrets that hold registry credentials for pulling the images.
    #[serde(
        rename = "imagePullSecrets",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub image_pull_secrets: Vec<String>,
    /// Environment variables of the worker container (Kubernetes EnvVar objects). A
    /// credential must come from a Secret (`valueFrom.secretKeyRef`), never as a literal
    /// `value`: a literal would be stored in the job's ConfigMap and in the pod spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub env: Vec<serde_json::Value>,
    /// Sources of environment variables (Kubernetes EnvFromSource objects, such as
    /// `secretRef: {name: s3-credentials}`).
    #[serde(rename = "envFrom", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub env_from: Vec<serde_json::Value>,
    /// Seconds a finished Job (and its pods and logs) is kept before Kubernetes deletes it.
    /// Default: 86400 (one day).
    #[serde(
        rename = "ttlSecondsAfterFinished",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Seconds after which the worker Job is stopped and failed, however far it got.
    /// Default: no limit.
    #[serde(
        rename = "activeDeadlineSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub active_deadline_seconds: Option<i64>,
    /// How many shards may fail before the whole Job is stopped. Default: no limit, so
    /// every shard that can finish does, and `sluice resume` redoes only the failed ones.
    #[serde(
        rename = "maxFailedIndexes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_failed_indexes: Option<i32>,
}

impl KubernetesConfig {
    /// The keys of `spec.kubernetes` (kept equal to the JSON Schema by a test).
    pub const FIELDS: &'static [&'static str] = &[
        "namespace",
        "image",
        "serviceAccountName",
        "resources",
        "nodeSelector",
        "tolerations",
        "affinity",
        "priorityClassName",
        "imagePullSecrets",
        "env",
        "envFrom",
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "maxFailedIndexes",
    ];
}

/// `spec.kubernetes.resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// CPU requested per worker: ECS-style CPU units as a number (1024 = 1 CPU, so `512`
    /// is half a CPU) or a Kubernetes quantity as text (`"500m"`, `"2"`). No CPU limit is
    /// set, so a worker may use idle CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<NumberOrText>,
    /// Memory per worker, requested and limited: MiB as a number (`2048`) or a Kubernetes
    /// quantity as text (`"2Gi"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<NumberOrText>,
}

/// A number, or text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(u64),
    Text(String),
}

/// The validated `spec.kubernetes`, in Kubernetes types.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSettings {
    pub namespace: Option<String>,
    pub image: Option<String>,
    pub service_account_name: Option<String>,
    pub resources: Option<ResourceRequirements>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub priority_class_name: Option<String>,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    pub ttl_seconds_after_finished: i32,
    pub active_deadline_seconds: Option<i64>,
    pub max_failed_indexes: Option<i32>,
}

/// Environment variable names that hold credentials and must come from a Secret.
const CREDENTIAL_MARKERS: &[&str] = &[
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "CREDENTIAL",
    "PRIVATE_KEY",
    "API_KEY",
    "ACCESS_KEY",
];

/// Whether an environment variable of this name holds a credential.
pub fn is_credential_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    CREDENTIAL_MARKERS.iter().any(|m| upper.contains(m))
}

/// Validates `spec.kubernetes`; every problem goes to `problems`.
pub fn check(config: &KubernetesConfig, problems: &mut Vec<Problem>) -> Option<PodSettings> {
    let before = problems.len();
    let at = FieldPath::parse("spec.kubernetes");
    if let Some(ns) = &config.namespace
        && !crate::spec::metadata::is_dns_label(ns)
    {
        problems.push(Problem::new(
            at.key("namespace"),
            format!("must be a DNS-1123 label (got {ns:?})"),
        ));
    }
    for (field, value) in [
        ("image", &config.image),
        ("serviceAccountName", &config.service_account_name),
        ("priorityClassName", &config.priority_class_name),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            problems.push(Problem::new(at.key(field), "must not be empty"));
        }
    }
    let resources = config
        .resources
        .as_ref()
        .map(|r| resources(r, &at.key("resources"), problems));
    let tolerations = config
        .tolerations
        .iter()
        .enumerate()
        .filter_map(|(i, v)| typed::<Toleration>(v, &at.key("tolerations").index(i), problems))
        .collect();
    let affinity = config
        .affinity
        .as_ref()
        .and_then(|v| typed::<Affinity>(v, &at.key("affinity"), problems));
    let mut env = Vec::new();
    for (i, value) in config.env.iter().enumerate() {
        let item = at.key("env").index(i);
        if let Some(var) = typed::<EnvVar>(value, &item, problems) {
            if var.value.is_some() && is_credential_name(&var.name) {
                problems.push(Problem::new(
                    item.key("value"),
                    format!(
                        "{} looks like a credential: a literal value would be stored in the job's ConfigMap and pod spec; take it from a Secret with `valueFrom: {{secretKeyRef: {{name: SECRET, key: KEY}}}}`",
                        var.name
                    ),
                ));
            }
            env.push(var);
        }
    }
    let env_from = config
        .env_from
        .iter()
        .enumerate()
        .filter_map(|(i, v)| typed::<EnvFromSource>(v, &at.key("envFrom").index(i), problems))
        .collect();
    for (field, value) in [
        (
            "ttlSecondsAfterFinished",
            config.ttl_seconds_after_finished.map(i64::from),
        ),
        ("activeDeadlineSeconds", config.active_deadline_seconds),
    ] {
        if value.is_some_and(|v| v < 1) {
            problems.push(Problem::new(at.key(field), "must be at least 1"));
        }
    }
    if config.max_failed_indexes.is_some_and(|v| v < 0) {
        problems.push(Problem::new(
            at.key("maxFailedIndexes"),
            "must be at least 0",
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(PodSettings {
        namespace: config.namespace.clone(),
        image: config.image.clone(),
        service_account_name: config.service_account_name.clone(),
        resources: resources.flatten(),
        node_selector: config.node_selector.clone(),
        tolerations,
        affinity,
        priority_class_name: config.priority_class_name.clone(),
        image_pull_secrets: config
            .image_pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect(),
        env,
        env_from,
        ttl_seconds_after_finished: config
            .ttl_seconds_after_finished
            .unwrap_or(DEFAULT_TTL_SECONDS),
        active_deadline_seconds: config.active_deadline_seconds,
        max_failed_indexes: config.max_failed_indexes,
    })
}

pub(crate) fn resources(
    r: &ResourcesConfig,
    at: &FieldPath,
    problems: &mut Vec<Problem>,
) -> Option<ResourceRequirements> {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    match &r.cpu {
        Some(NumberOrText::Number(0)) => {
            problems.push(Problem::new(at.key("cpu"), "must be more than 0"));
        }
        // 1024 ECS units are one CPU; Kubernetes counts in millicores.
        Some(NumberOrText::Number(units)) => {
            let millis = (units * 1000).div_ceil(1024);
            requests.insert("cpu".to_string(), Quantity(format!("{millis}m")));
        }
        Some(NumberOrText::Text(text)) => match quantity(text) {
            Ok(q) => {
                requests.insert("cpu".to_string(), q);
            }
            Err(why) => problems.push(Problem::new(at.key("cpu"), why)),
        },
        None => {}
    }
    let memory = match &r.memory {
        Some(NumberOrText::Number(0)) => {
            problems.push(Problem::new(at.key("memory"), "must be more than 0"));
            None
        }
        Some(NumberOrText::Number(mib)) => Some(Quantity(format!("{mib}Mi"))),
        Some(NumberOrText::Text(text)) => match quantity(text) {
            Ok(q) => Some(q),
            Err(why) => {
                problems.push(Problem::new(at.key("memory"), why));
                None
            }
        },
        None => None,
    };
    if let Some(memory) = memory {
        requests.insert("memory".to_string(), memory.clone());
        limits.insert("memory".to_string(), memory);
    }
    if requests.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        requests: Some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    })
}

/// Checks a Kubernetes quantity (`500m`, `2`, `1.5Gi`, `2e3`).
pub fn quantity(text: &str) -> Result<Quantity, String> {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let bad = || {
        format!(
            "is not a Kubernetes quantity (got {text:?}); write a number with an optional suffix such as 500m, 2, 512Mi or 4Gi"
        )
    };
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let number_ok = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && number.parse::<f64>().is_ok_and(|v| v > 0.0);
    let suffix_ok = SUFFIXES.contains(&suffix)
        || suffix
            .strip_prefix(['e', 'E'])
            .is_some_and(|exp| !exp.is_empty() && exp.parse::<i32>().is_ok());
    if number_ok && suffix_ok {
        Ok(Quantity(text.to_string()))
    } else {
        Err(bad())
    }
}

/// Reads a Kubernetes object from the file, reporting serde's error and every field that
/// the Kubernetes type does not have (a typo would otherwise vanish silently).
pub(crate) fn typed<T: DeserializeOwned + Serialize>(
    value: &serde_json::Value,
    at: &FieldPath,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let before = problems.len();
    let out: T = match serde_path_to_error::deserialize(value) {
        Ok(out) => out,
        Err(e) => {
            let mut path = at.clone();
            for segment in e.path().iter() {
                path = match segment {
                    serde_path_to_error::Segment::Seq { index } => path.index(*index),
                    serde_path_to_error::Segment::Map { key } => path.key(key),
                    _ => path,
                };
            }
            problems.push(Problem::new(path, e.into_inner().to_string()));
            return None;
        }
    };
    let kept = serde_json::to_value(&out).unwrap_or(serde_json::Value::Null);
    unknown_fields(value, &kept, at, problems);
    (problems.len() == before).then_some(out)
}

/// Reports keys of `given` that did not survive a round trip through the Kubernetes type.
fn unknown_fields(
    given: &serde_json::Value,
    kept: &serde_json::Value,
    at: &FieldPath,
    problems: &mut Vec<Problem>,
) {
    use serde_json::Value;
    match (given, kept) {
        (Value::Object(given), Value::Object(kept)) => {
            for (key, value) in given {
                match kept.get(key) {
                    Some(inner) => unknown_fields(value, inner, &at.key(key), problems),
                    None if value.is_null() => {}
                    None => problems.push(Problem::at_key(
                        at.key(key),
                        format!("is not a field of this Kubernetes object (check the spelling of {key:?})"),
                    )),
                }
            }
        }
        (Value::Array(given), Value::Array(kept)) => {
            for (i, (value, inner)) in given.iter().zip(kept).enumerate() {
                unknown_fields(value, inner, &at.index(i), problems);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> KubernetesConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn messages(yaml: &str) -> Vec<String> {
        let mut problems = Vec::new();
        assert!(check(&config(yaml), &mut problems).is_none());
        problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn ecs_cpu_units_and_mib_become_kubernetes_quantities() {
        let mut problems = Vec::new();
        let settings = check(
            &config("resources: {cpu: 512, memory: 2048}\nimagePullSecrets: [regcred]"),
            &mut problems,
        )
        .unwrap();
        let r = settings.resources.unwrap();
        let requests = r.requests.unwrap();
        assert_eq!(requests["cpu"], Quantity("500m".into()));
        assert_eq!(requests["memory"], Quantity("2048Mi".into()));
        assert_eq!(r.limits.unwrap()["memory"], Quantity("2048Mi".into()));
        assert_eq!(settings.image_pull_secrets[0].name, "regcred");
        assert_eq!(settings.ttl_seconds_after_finished, DEFAULT_TTL_SECONDS);
        let settings = check(&config("resources: {cpu: 1024}"), &mut problems).unwrap();
        let requests = settings.resources.unwrap().requests.unwrap();
        assert_eq!(requests["cpu"], Quantity("1000m".into()));
        assert!(problems.is_empty());
    }

    #[test]
    fn quantities() {
        for ok in ["500m", "2", "1.5Gi", "512Mi", "2e3", "100k"] {
            assert!(quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Gi", "2GB", "-1", "1..5", "0", "two"] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn literal_credentials_are_rejected_and_secret_references_accepted() {
        let found = messages(
            "env:\n- {name: AWS_SECRET_ACCESS_KEY, value: abc}\n- {name: LOG_LEVEL, value: debug}\n- name: DB_PASSWORD\n  valueFrom: {secretKeyRef: {name: db, key: password}}",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("spec.kubernetes.env[0].value: AWS_SECRET_ACCESS_KEY"));
        assert!(found[0].contains("secretKeyRef"), "{}", found[0]);
    }

    #[test]
    fn a_misspelt_field_inside_a_kubernetes_object_is_reported_with_its_path() {
        let found = messages(
            "tolerations:\n- {key: spot, operator: Exists, efect: NoSchedule}\naffinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms:\n      - matchExpresions: []",
        );
        assert_eq!(
            found,
            [
                "spec.kubernetes.tolerations[0].efect: is not a field of this Kubernetes object (check the spelling of \"efect\")",
                "spec.kubernetes.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpresions: is not a field of this Kubernetes object (check the spelling of \"matchExpresions\")",
            ]
        );
    }

    #[test]
    fn wrong_types_and_bounds_are_reported() {
        let found = messages(
            "namespace: Bad_NS\nresources: {cpu: 0, memory: 2GB}\ntolerations: [{tolerationSeconds: soon}]\nttlSecondsAfterFinished: 0",
        );
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(found[0].starts_with("spec.kubernetes.namespace:"));
        assert!(found[1].starts_with("spec.kubernetes.resources.cpu: must be more than 0"));
        assert!(
            found[2].starts_with("spec.kubernetes.resources.memory: is not a Kubernetes quantity")
        );
        assert!(found[3].starts_with("spec.kubernetes.tolerations[0].tolerationSeconds:"));
        assert!(found[4].starts_with("spec.kubernetes.ttlSecondsAfterFinished:"));
    }
}
