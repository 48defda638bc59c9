//! `kind: TaskDefinition`: a container task after ECS task definitions (family, task role,
//! cpu units and memory, container definitions with entryPoint and command), its raw
//! structs, the validated `TaskDefinition` and the checks between them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ResourceRequirements, SecretKeySelector};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::container::{LocalConfig, duration};
use crate::spec::error::Problem;
use crate::spec::file::API_VERSION;
use crate::spec::kubernetes::{
    self, KubernetesConfig, NumberOrText, PodSettings, ResourcesConfig, is_credential_name,
};
use crate::spec::metadata::{Metadata, check_metadata, is_dns_label};
use crate::spec::span::FieldPath;

/// The `kind` of a task definition file.
pub const KIND: &str = "TaskDefinition";

/// A task definition: one pod of containers, run once per `sluice task run` (or per
/// scheduled time), with its command or arguments overridden per run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// The version of the file format. Must be `sluice.dev/v1alpha1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The kind of file. Must be `TaskDefinition`.
    pub kind: String,
    /// The task's name (its family unless `spec.family` names one) and labels.
    pub metadata: Metadata,
    /// What the task runs.
    pub spec: TaskSpecConfig,
}

/// The `spec:` section of a task definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpecConfig {
    /// The task's family (ECS `family`): names its runs (`<family>-<UTC time>`) and labels
    /// its Jobs `sluice.dev/task`. A DNS-1123 label. Default: `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The role the task's containers act as (ECS `taskRoleArn`): the Kubernetes service
    /// account of the pod, for example one bound to an IAM role (IRSA, EKS Pod Identity).
    /// Default: the namespace's default service account.
    #[serde(rename = "taskRole", default, skip_serializing_if = "Option::is_none")]
    pub task_role: Option<String>,
    /// CPU units of the whole task (1024 = 1 CPU). Containers that give their own `cpu`
    /// take it from this budget; the essential container gets what is left unless it
    /// gives its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u64>,
    /// Memory of the whole task in MiB, shared out like `cpu`. Memory is requested and
    /// limited; CPU is only requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// The containers of the task. Exactly one is essential (the main container, whose
    /// exit code is the task's); the others run as sidecars, started before it and
    /// stopped after it.
    #[serde(rename = "containerDefinitions")]
    pub container_definitions: Vec<ContainerDefinition>,
    /// How many times a failed run is retried (the Job's `backoffLimit`, 0 to 100).
    #[serde(default)]
    pub retries: u32,
    /// How long a run may take, retries included, before it is stopped and failed (the
    /// Job's `activeDeadlineSeconds`), such as `90m` or `2h`. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How the task's pod runs on Kubernetes: namespace and scheduling.
    #[serde(default, skip_serializing_if = "is_default")]
    pub kubernetes: TaskKubernetesConfig,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// One entry of `spec.containerDefinitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerDefinition {
    /// The container's name: a DNS-1123 label, unique in the task.
    pub name: String,
    /// The container image.
    pub image: String,
    /// Whether this is the task's main container. Exactly one container is essential;
    /// mark the others `essential: false`. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    /// The program to run instead of the image's entrypoint (the Kubernetes `command`).
    #[serde(
        rename = "entryPoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entry_point: Option<Vec<String>>,
    /// The arguments given to the entrypoint (the Kubernetes `args`); replaced per run by
    /// `sluice task run FILE -- ARGS...` or `--command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// CPU units of this container (1024 = 1 CPU), requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u64>,
    /// Memory of this container in MiB, requested and limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Environment variables with literal values. A credential (a name with SECRET,
    /// PASSWORD, TOKEN, ... in it) is refused here: put it in `secrets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<EnvironmentVariable>,
    /// Environment variables taken from Kubernetes Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretVariable>,
    /// How `sluice task run` runs this container on this machine: `command` stands in
    /// for the image and its entrypoint, and the container's `command` (its arguments)
    /// follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalConfig>,
}

/// `environment[]`: a name and a literal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentVariable {
    pub name: String,
    pub value: String,
}

/// `secrets[]`: a variable whose value is one key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretVariable {
    /// The environment variable's name.
    pub name: String,
    /// Which Secret and key hold the value.
    #[serde(rename = "valueFrom")]
    pub value_from: SecretSource,
}

/// `secrets[].valueFrom`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// The Secret's name, in the task's namespace.
    pub secret: String,
    /// The key in the Secret.
    pub key: String,
}

/// `spec.kubernetes` of a task definition: the pod settings of jobs that apply to a task.
/// The fields repeat those of the job's `KubernetesConfig` rather than share a flattened
/// struct: serde's `flatten` does not combine with `deny_unknown_fields`, and a misspelt
/// field must stay an error with its line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskKubernetesConfig {
    /// The namespace of the task's Job. Default: `sluice` (`--namespace` overrides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Node labels the pod's node must have.
    #[serde(
        rename = "nodeSelector",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub node_selector: BTreeMap<String, String>,
    /// Kubernetes tolerations of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub tolerations: Vec<serde_json::Value>,
    /// A Kubernetes affinity of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub affinity: Option<serde_json::Value>,
    /// The PriorityClass of the pod.
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
    /// Seconds a finished Job (and its pod and logs) is kept. Default: 86400 (one day).
    #[serde(
        rename = "ttlSecondsAfterFinished",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_seconds_after_finished: Option<i32>,
}

impl TaskKubernetesConfig {
    /// The same settings as a job's `spec.kubernetes`, so that one check validates both.
    fn as_job_settings(&self) -> KubernetesConfig {
        KubernetesConfig {
            namespace: self.namespace.clone(),
            node_selector: self.node_selector.clone(),
            tolerations: self.tolerations.clone(),
            affinity: self.affinity.clone(),
            priority_class_name: self.priority_class_name.clone(),
            image_pull_secrets: self.image_pull_secrets.clone(),
            ttl_seconds_after_finished: self.ttl_seconds_after_finished,
            ..Default::default()
        }
    }
}

/// A validated task definition.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinition {
    pub family: String,
    pub labels: BTreeMap<String, String>,
    /// The pod's service account.
    pub task_role: Option<String>,
    pub retries: u32,
    pub timeout: Option<Duration>,
    /// In file order; exactly one is essential.
    pub containers: Vec<TaskContainer>,
    /// Namespace and scheduling (image, env, resources and service account stay unset:
    /// they belong to the containers and the task role).
    pub pod: PodSettings,
}

impl TaskDefinition {
    /// The main container.
    pub fn essential(&self) -> &TaskContainer {
        self.containers
            .iter()
            .find(|c| c.essential)
            .expect("validation keeps exactly one essential container")
    }

    /// The non-essential containers, in file order.
    pub fn sidecars(&self) -> impl Iterator<Item = &TaskContainer> {
        self.containers.iter().filter(|c| !c.essential)
    }

    pub fn container(&self, name: &str) -> Option<&TaskContainer> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// A validated container definition.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskContainer {
    pub name: String,
    pub image: String,
    pub essential: bool,
    /// Kubernetes `command`.
    pub entry_point: Option<Vec<String>>,
    /// Kubernetes `args`.
    pub command: Option<Vec<String>>,
    /// `environment`, then `secrets` as `secretKeyRef`s.
    pub env: Vec<EnvVar>,
    /// Its share of the task's CPU and memory.
    pub resources: Option<ResourceRequirements>,
    pub local_command: Option<Vec<String>>,
}

/// Validates a task file; every problem goes to `problems`.
pub fn check(file: &TaskFile, problems: &mut Vec<Problem>) -> Option<TaskDefinition> {
    let before = problems.len();
    let root = FieldPath::root();
    if file.api_version != API_VERSION {
        problems.push(Problem::new(
            root.key("apiVersion"),
            format!("must be {API_VERSION} (got {:?})", file.api_version),
        ));
    }
    if file.kind != KIND {
        problems.push(Problem::new(
            root.key("kind"),
            format!("must be {KIND} in a task definition (got {:?})", file.kind),
        ));
    }
    check_metadata(&file.metadata, problems);
    let spec = &file.spec;
    let at = root.key("spec");
    let family = spec
        .family
        .clone()
        .unwrap_or_else(|| file.metadata.name.clone());
    if spec.family.is_some() && !is_dns_label(&family) {
        problems.push(Problem::new(
            at.key("family"),
            format!(
                "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (got {family:?})"
            ),
        ));
    }
    if let Some(role) = &spec.task_role
        && !is_dns_subdomain(role)
    {
        problems.push(Problem::new(
            at.key("taskRole"),
            format!("must name a Kubernetes service account, a DNS-1123 subdomain (got {role:?})"),
        ));
    }
    if spec.retries > 100 {
        problems.push(Problem::new(
            at.key("retries"),
            format!("must be 0 to 100 (got {})", spec.retries),
        ));
    }
    let timeout = spec
        .timeout
        .as_ref()
        .and_then(|t| duration(t, &at.key("timeout"), problems));
    let mut containers = containers(spec, &at, problems);
    shares(spec, &at, &mut containers, problems);
    let pod = kubernetes::check(&spec.kubernetes.as_job_settings(), problems);
    if problems.len() > before {
        return None;
    }
    Some(TaskDefinition {
        family,
        labels: file.metadata.labels.clone(),
        task_role: spec.task_role.clone(),
        retries: spec.retries,
        timeout,
        containers: containers.into_iter().map(|(c, _, _)| c).collect(),
        pod: pod?,
    })
}

/// Each container with the cpu units and MiB it gives itself.
type Declared = (TaskContainer, Option<u64>, Option<u64>);

fn containers(spec: &TaskSpecConfig, at: &FieldPath, problems: &mut Vec<Problem>) -> Vec<Declared> {
    let list = at.key("containerDefinitions");
    if spec.container_definitions.is_empty() {
        problems.push(Problem::new(list.clone(), "needs at least one container"));
        return Vec::new();
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, c) in spec.container_definitions.iter().enumerate() {
        let at = list.index(i);
        if !is_dns_label(&c.name) {
            problems.push(Problem::new(
                at.key("name"),
                format!("must be a DNS-1123 label (got {:?})", c.name),
            ));
        } else if !names.insert(c.name.clone()) {
            problems.push(Problem::new(
                at.key("name"),
                format!("{:?} names two containers; each needs its own name", c.name),
            ));
        }
        if c.image.trim().is_empty() {
            problems.push(Problem::new(at.key("image"), "must not be empty"));
        }
        if c.entry_point.as_ref().is_some_and(Vec::is_empty) {
            problems.push(Problem::new(at.key("entryPoint"), "must name a program"));
        }
        if c.local.as_ref().is_some_and(|l| l.command.is_empty()) {
            problems.push(Problem::new(
                at.key("local").key("command"),
                "must name a program",
            ));
        }
        for (field, value) in [("cpu", c.cpu), ("memory", c.memory)] {
            if value == Some(0) {
                problems.push(Problem::new(at.key(field), "must be more than 0"));
            }
        }
        let env = environment(c, &at, problems);
        out.push((
            TaskContainer {
                name: c.name.clone(),
                image: c.image.clone(),
                essential: c.essential.unwrap_or(true),
                entry_point: c.entry_point.clone(),
                command: c.command.clone(),
                env,
                resources: None,
                local_command: c.local.as_ref().map(|l| l.command.clone()),
            },
            c.cpu,
            c.memory,
        ));
    }
    let essential: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, (c, _, _))| c.essential)
        .map(|(i, _)| i)
        .collect();
    match essential.as_slice() {
        [] => problems.push(Problem::new(
            list,
            "needs exactly one essential container (the main one); every container says `essential: false`",
        )),
        [_] => {}
        [first, rest @ ..] => {
            for i in rest {
                let c = &spec.container_definitions[*i];
                let at = if c.essential.is_some() {
                    list.index(*i).key("essential")
                } else {
                    list.index(*i)
                };
                problems.push(Problem::new(
                    at,
                    format!(
                        "a second essential container: {:?} is the main one already; mark sidecars `essential: false` (essential is true unless given)",
                        spec.container_definitions[*first].name
                    ),
                ));
            }
        }
    }
    out
}

/// `environment` and `secrets` as Kubernetes env vars.
fn environment(
    c: &ContainerDefinition,
    at: &FieldPath,
    problems: &mut Vec<Problem>,
) -> Vec<EnvVar> {
    let mut seen = BTreeSet::new();
    let mut env = Vec::new();
    let mut name_ok = |name: &str, at: FieldPath, problems: &mut Vec<Problem>| {
        if name.is_empty() || name.contains('=') {
            problems.push(Problem::new(
                at,
                format!("is not an environment variable name (got {name:?})"),
            ));
        } else if !seen.insert(name.to_string()) {
            problems.push(Problem::new(
                at,
                format!("{name} is set twice in this container"),
            ));
        }
    };
    for (i, var) in c.environment.iter().enumerate() {
        let at = at.key("environment").index(i);
        name_ok(&var.name, at.key("name"), problems);
        if is_credential_name(&var.name) {
            problems.push(Problem::new(
                at.key("value"),
                format!(
                    "{} looks like a credential: a literal value would be stored in the Job's pod spec; put it in `secrets` with `valueFrom: {{secret: SECRET, key: KEY}}`",
                    var.name
                ),
            ));
        }
        env.push(EnvVar {
            name: var.name.clone(),
            value: Some(var.value.clone()),
            ..Default::default()
        });
    }
    for (i, var) in c.secrets.iter().enumerate() {
        let at = at.key("secrets").index(i);
        name_ok(&var.name, at.key("name"), problems);
        if !is_dns_subdomain(&var.value_from.secret) {
            problems.push(Problem::new(
                at.key("valueFrom").key("secret"),
                format!(
                    "must name a Kubernetes Secret, a DNS-1123 subdomain (got {:?})",
                    var.value_from.secret
                ),
            ));
        }
        if var.value_from.key.is_empty() {
            problems.push(Problem::new(
                at.key("valueFrom").key("key"),
                "must not be empty",
            ));
        }
        env.push(EnvVar {
            name: var.name.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: var.value_from.secret.clone(),
                    key: var.value_from.key.clone(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    env
}

/// Shares the task's cpu and memory out: containers that give their own keep it, the
/// essential container gets the rest of the task's budget unless it gives its own.
fn shares(
    spec: &TaskSpecConfig,
    at: &FieldPath,
    containers: &mut [Declared],
    problems: &mut Vec<Problem>,
) {
    for (field, total) in [("cpu", spec.cpu), ("memory", spec.memory)] {
        if total == Some(0) {
            problems.push(Problem::new(at.key(field), "must be more than 0"));
        }
    }
    let declared =
        |pick: fn(&Declared) -> Option<u64>| -> u64 { containers.iter().filter_map(pick).sum() };
    let cpu_given = declared(|d| d.1);
    let memory_given = declared(|d| d.2);
    let unit = |field: &str| if field == "cpu" { "CPU units" } else { "MiB" };
    let mut rest = BTreeMap::new();
    for (field, total, given) in [
        ("cpu", spec.cpu, cpu_given),
        ("memory", spec.memory, memory_given),
    ] {
        let Some(total) = total.filter(|t| *t > 0) else {
            continue;
        };
        if given > total {
            problems.push(Problem::new(
                at.key(field),
                format!(
                    "the containers ask for {given} {} together, more than the task's {total}",
                    unit(field)
                ),
            ));
        }
        // Past the budget is reported once, above, not again for the essential container.
        rest.insert(field, (total.saturating_sub(given), given > total));
    }
    for (i, (container, cpu, memory)) in containers.iter_mut().enumerate() {
        let mut cpu = *cpu;
        let mut memory = *memory;
        if container.essential {
            for (field, own) in [("cpu", &mut cpu), ("memory", &mut memory)] {
                if own.is_none()
                    && let Some((left, over)) = rest.get(field)
                {
                    if *left == 0 && !over {
                        problems.push(Problem::new(
                            at.key("containerDefinitions").index(i),
                            format!(
                                "the essential container gets no {field}: the other containers take all of the task's {}",
                                unit(field)
                            ),
                        ));
                    }
                    *own = Some(*left);
                }
            }
        }
        let config = ResourcesConfig {
            cpu: cpu.filter(|v| *v > 0).map(NumberOrText::Number),
            memory: memory.filter(|v| *v > 0).map(NumberOrText::Number),
        };
        container.resources =
            kubernetes::resources(&config, &at.key("containerDefinitions").index(i), problems);
    }
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// The JSON Schema of task definition files.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(TaskFile).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_yaml(yaml: &str) -> Result<TaskDefinition, Vec<String>> {
        let file: TaskFile = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        check(&file, &mut problems).ok_or_else(|| {
            problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect()
        })
    }

    const HEAD: &str =
        "apiVersion: sluice.dev/v1alpha1\nkind: TaskDefinition\nmetadata: {name: backfill}\n";

    #[test]
    fn the_essential_container_gets_what_the_others_leave() {
        let task = check_yaml(&format!(
            "{HEAD}spec:
  cpu: 2048
  memory: 4096
  containerDefinitions:
    - {{name: main, image: app}}
    - {{name: proxy, image: envoy, essential: false, cpu: 512, memory: 1024}}
"
        ))
        .unwrap();
        assert_eq!(task.family, "backfill");
        assert_eq!(task.essential().name, "main");
        let main = task.essential().resources.clone().unwrap();
        let requests = main.requests.unwrap();
        assert_eq!(requests["cpu"].0, "1500m");
        assert_eq!(requests["memory"].0, "3072Mi");
        assert_eq!(main.limits.unwrap()["memory"].0, "3072Mi");
        let proxy = task.sidecars().next().unwrap().resources.clone().unwrap();
        assert_eq!(proxy.requests.unwrap()["cpu"].0, "500m");
    }

    #[test]
    fn every_problem_is_reported() {
        let found = check_yaml(&format!(
            "{HEAD}spec:
  family: Back_Fill
  cpu: 512
  timeout: soon
  retries: 101
  containerDefinitions:
    - name: main
      image: app
      cpu: 1024
      environment: [{{name: DB_PASSWORD, value: hunter2}}]
      secrets: [{{name: TOKEN, valueFrom: {{secret: Bad_Name, key: ''}}}}]
    - {{name: main, image: '', entryPoint: []}}
"
        ))
        .unwrap_err();
        let expect = [
            "spec.family: must be a DNS-1123 label",
            "spec.retries: must be 0 to 100",
            "spec.timeout: is not a duration",
            "spec.containerDefinitions[0].environment[0].value: DB_PASSWORD looks like a credential",
            "spec.containerDefinitions[0].secrets[0].valueFrom.secret: must name a Kubernetes Secret",
            "spec.containerDefinitions[0].secrets[0].valueFrom.key: must not be empty",
            "spec.containerDefinitions[1].name: \"main\" names two containers",
            "spec.containerDefinitions[1].image: must not be empty",
            "spec.containerDefinitions[1].entryPoint: must name a program",
            "spec.containerDefinitions[1]: a second essential container",
            "spec.cpu: the containers ask for 1024 CPU units together, more than the task's 512",
        ];
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (got, want) in found.iter().zip(expect) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn no_essential_container_is_an_error() {
        let found = check_yaml(&format!(
            "{HEAD}spec:\n  containerDefinitions: [{{name: a, image: x, essential: false}}]\n"
        ))
        .unwrap_err();
        assert!(found[0].starts_with("spec.containerDefinitions: needs exactly one essential"));
    }

    #[test]
    fn secrets_render_as_secret_key_refs() {
        let task = check_yaml(&format!(
            "{HEAD}spec:
  containerDefinitions:
    - name: main
      image: app
      environment: [{{name: MODE, value: full}}]
      secrets: [{{name: DB_PASSWORD, valueFrom: {{secret: db, key: password}}}}]
"
        ))
        .unwrap();
        let env = &task.essential().env;
        assert_eq!(env[0].value.as_deref(), Some("full"));
        let secret = env[1]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("db", "password")
        );
    }

    /// The key lists used to report unknown fields come from serde; the schema must agree.
    #[test]
    fn the_schema_names_every_field() {
        let schema = json_schema();
        let spec = &schema["$defs"]["TaskSpecConfig"]["properties"];
        for field in [
            "family",
            "taskRole",
            "cpu",
            "memory",
            "containerDefinitions",
            "retries",
            "timeout",
            "kubernetes",
        ] {
            assert!(spec.get(field).is_some(), "{field}");
        }
        let container = &schema["$defs"]["ContainerDefinition"]["properties"];
        for field in [
            "name",
            "image",
            "essential",
            "entryPoint",
            "command",
            "environment",
            "secrets",
            "local",
        ] {
            assert!(container.get(field).is_some(), "{field}");
        }
    }
}
