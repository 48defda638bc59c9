//! `container:` transform steps: the user's own transformer, run beside the worker in the
//! same pod (a native sidecar on a cluster, a local process on the embedded default) and
//! spoken to over loopback.

use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::error::Problem;
use crate::spec::kubernetes::{self, ResourcesConfig, is_credential_name};
use crate::spec::span::FieldPath;

/// `spec.transform[].container`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// The transformer's image. `sluice` stands for the run's sluice image, which holds the
    /// built-in transformer server (`sluice transformer serve`).
    pub image: String,
    /// How the worker talks to it: `hpush` (the worker POSTs each object and reads the
    /// result from the reply), `hpull` (the worker serves each object on loopback and sends
    /// its URL), `hrev` (the worker sends `GET <path>/<key>`, as a reverse proxy would, and
    /// the transformer fetches the object from the URL it is given) or `io` (one process per
    /// object: object on stdin, result on stdout).
    pub comm: Comm,
    /// The loopback port the transformer listens on (`hpush`, `hpull`, `hrev`): 1024 to 65535,
    /// different for every container step of the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The request path for `hpush` and `hpull`; for `hrev`, the prefix of `<path>/<key>`.
    #[serde(default = "default_path")]
    pub path: String,
    /// The container's command on a cluster (default: the image's entrypoint). For `io`,
    /// the command run for every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The container's arguments on a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// How `sluice run` runs it on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalConfig>,
    /// Environment of the transformer (Kubernetes EnvVar objects; credentials only through
    /// `valueFrom.secretKeyRef`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<serde_json::Map<String, serde_json::Value>>")]
    pub env: Vec<serde_json::Value>,
    /// CPU and memory of the transformer container (as `spec.kubernetes.resources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesConfig>,
    /// How long the transformer may take to answer `GET /health` with 200 (readiness).
    #[serde(default = "default_init_timeout")]
    pub init_timeout: String,
    /// How long one object may take, from the first byte sent to the last byte received.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// How many times an object is retried after a transient transformer failure
    /// (connection refused or reset, a 5xx reply, a timeout).
    #[serde(default = "default_step_retries")]
    pub retries: u32,
    /// What the transformer receives: `raw` (the source object's bytes, decompressed; only
    /// for the first step), or the records coming into the step encoded as `csv` (with a
    /// header), `jsonl` or `arrow` (an Arrow IPC stream). Default: `raw` for the first step,
    /// `jsonl` after another step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<StepInput>,
    /// What the transformer returns.
    #[serde(default)]
    pub output: OutputConfig,
}

fn default_path() -> String {
    "/".into()
}
fn default_init_timeout() -> String {
    "2m".into()
}
fn default_timeout() -> String {
    "60s".into()
}
fn default_step_retries() -> u32 {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The command (and arguments) that stands in for the image on this machine.
    pub command: Vec<String>,
}

/// `spec.transform[].container.output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `csv` (with a header), `jsonl`, `parquet` or `arrow` (an Arrow IPC stream) are
    /// decoded into records again; `opaque` is written as it is, one output object per
    /// source object (only for the last step).
    #[serde(default = "default_output_format")]
    pub format: OutputFormat,
    /// The extension of the output keys of an `opaque` output (without the dot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            format: default_output_format(),
            extension: None,
        }
    }
}

fn default_output_format() -> OutputFormat {
    OutputFormat::Jsonl
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Comm {
    Hpush,
    Hpull,
    Hrev,
    Io,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepInput {
    Raw,
    Csv,
    Jsonl,
    Arrow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Csv,
    Jsonl,
    Parquet,
    Arrow,
    Opaque,
}

/// A validated container step.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStep {
    pub image: String,
    pub comm: Comm,
    /// `None` for `io`.
    pub port: Option<u16>,
    /// The loopback port of an `io` step's bridge (`sluice transformer serve --exec`),
    /// which runs the command per object: `IO_BRIDGE_BASE_PORT` + the step's index.
    pub bridge_port: u16,
    pub path: String,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub local_command: Option<Vec<String>>,
    pub env: Vec<EnvVar>,
    pub resources: Option<ResourceRequirements>,
    pub init_timeout: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub input: StepInput,
    pub output: OutputFormat,
    /// The key extension of an opaque output.
    pub extension: String,
}

/// Where a container step sits in the job, for the checks that depend on it.
pub struct Position {
    pub index: usize,
    pub first: bool,
    pub last: bool,
}

/// The first port of the io bridges; step i's bridge listens on this + i.
pub const IO_BRIDGE_BASE_PORT: u16 = 9400;

impl ContainerStep {
    /// The loopback port the worker talks to: the transformer's, or an io step's bridge.
    pub fn listen_port(&self) -> u16 {
        self.port.unwrap_or(self.bridge_port)
    }
}

/// Validates one container step; problems go to `problems`.
pub fn check(
    c: &ContainerConfig,
    at: &FieldPath,
    position: Position,
    problems: &mut Vec<Problem>,
) -> Option<ContainerStep> {
    let before = problems.len();
    if c.image.trim().is_empty() {
        problems.push(Problem::new(at.key("image"), "must not be empty"));
    }
    let port = match (c.comm, c.port) {
        (Comm::Io, Some(_)) => {
            problems.push(Problem::new(
                at.key("port"),
                "is only for hpush, hpull and hrev (io runs a process per object)",
            ));
            None
        }
        (Comm::Io, None) => None,
        (_, None) => {
            problems.push(Problem::new(
                at.clone(),
                "needs `port`: the loopback port the transformer listens on",
            ));
            None
        }
        (_, Some(port)) if port < 1024 => {
            problems.push(Problem::new(
                at.key("port"),
                format!("must be 1024 to 65535 (got {port}): the pods run as a non-root user"),
            ));
            None
        }
        (_, Some(port)) => Some(port),
    };
    if !c.path.starts_with('/') {
        problems.push(Problem::new(
            at.key("path"),
            format!("must start with '/' (got {:?})", c.path),
        ));
    }
    if c.comm == Comm::Io && c.command.is_none() && c.local.is_none() {
        problems.push(Problem::new(
            at.clone(),
            "an io step needs `command` (run for every object) or `local.command`",
        ));
    }
    if let Some(local) = &c.local
        && local.command.is_empty()
    {
        problems.push(Problem::new(
            at.key("local").key("command"),
            "must name a program",
        ));
    }
    let mut env = Vec::new();
    for (i, value) in c.env.iter().enumerate() {
        let item = at.key("env").index(i);
        if let Some(var) = kubernetes::typed::<EnvVar>(value, &item, problems) {
            if var.value.is_some() && is_credential_name(&var.name) {
                problems.push(Problem::new(
                    item.key("value"),
                    format!(
                        "{} looks like a credential: take it from a Secret with `valueFrom: {{secretKeyRef: {{name: SECRET, key: KEY}}}}`",
                        var.name
                    ),
                ));
            }
            env.push(var);
        }
    }
    let resources = c
        .resources
        .as_ref()
        .and_then(|r| kubernetes::resources(r, &at.key("resources"), problems));
    let init_timeout = duration(&c.init_timeout, &at.key("init_timeout"), problems);
    let timeout = duration(&c.timeout, &at.key("timeout"), problems);
    let input = match c.input {
        Some(StepInput::Raw) if !position.first => {
            problems.push(Problem::new(
                at.key("input"),
                "raw input is only for the first step: later steps receive records (csv, jsonl or arrow)",
            ));
            StepInput::Raw
        }
        Some(input) => input,
        None if position.first => StepInput::Raw,
        None => StepInput::Jsonl,
    };
    if c.output.format == OutputFormat::Opaque && !position.last {
        problems.push(Problem::new(
            at.key("output").key("format"),
            "opaque output has no records, so it can only be the last step",
        ));
    }
    let extension = match (&c.output.extension, c.output.format) {
        (Some(ext), OutputFormat::Opaque) => {
            if ext.is_empty()
                || !ext
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' || ch == '-')
            {
                problems.push(Problem::new(
                    at.key("output").key("extension"),
                    format!("must be letters, digits, '.', '_' or '-' (got {ext:?})"),
                ));
            }
            ext.trim_start_matches('.').to_string()
        }
        (Some(_), _) => {
            problems.push(Problem::new(
                at.key("output").key("extension"),
                "is only for opaque output (structured output takes the sink's extension)",
            ));
            String::new()
        }
        (None, _) => "out".to_string(),
    };
    if problems.len() > before {
        return None;
    }
    Some(ContainerStep {
        image: c.image.clone(),
        comm: c.comm,
        port,
        bridge_port: if c.comm == Comm::Io {
            IO_BRIDGE_BASE_PORT + position.index as u16
        } else {
            0
        },
        path: c.path.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        local_command: c.local.as_ref().map(|l| l.command.clone()),
        env,
        resources,
        init_timeout: init_timeout?,
        timeout: timeout?,
        retries: c.retries,
        input,
        output: c.output.format,
        extension,
    })
}

pub(crate) fn duration(
    text: &str,
    at: &FieldPath,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d > Duration::ZERO => Some(d),
        Ok(_) => {
            problems.push(Problem::new(at.clone(), "must be more than 0"));
            None
        }
        Err(e) => {
            problems.push(Problem::new(
                at.clone(),
                format!("is not a duration (got {text:?}: {e}); write for example 90s, 2m or 1h"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_yaml(yaml: &str, first: bool, last: bool) -> Result<ContainerStep, Vec<String>> {
        let config: ContainerConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        check(
            &config,
            &FieldPath::parse("spec.transform[0].container"),
            Position {
                index: 0,
                first,
                last,
            },
            &mut problems,
        )
        .ok_or_else(|| {
            problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect()
        })
    }

    #[test]
    fn defaults_follow_the_position() {
        let step = check_yaml("{image: t, comm: hpush, port: 8801}", true, true).unwrap();
        assert_eq!(step.input, StepInput::Raw);
        assert_eq!(step.output, OutputFormat::Jsonl);
        assert_eq!(step.init_timeout, Duration::from_secs(120));
        assert_eq!(step.timeout, Duration::from_secs(60));
        assert_eq!(step.retries, 2);
        let step = check_yaml("{image: t, comm: hpull, port: 8801}", false, true).unwrap();
        assert_eq!(step.input, StepInput::Jsonl);
    }

    #[test]
    fn every_problem_is_reported() {
        let found = check_yaml(
            "{image: t, comm: hpush, port: 80, path: x, timeout: soon, input: raw, output: {format: opaque, extension: 'a b'}}",
            false,
            false,
        )
        .unwrap_err();
        assert_eq!(found.len(), 6, "{found:?}");
        assert!(found[0].starts_with("spec.transform[0].container.port: must be 1024"));
        assert!(found[1].starts_with("spec.transform[0].container.path:"));
        assert!(found[2].starts_with("spec.transform[0].container.timeout: is not a duration"));
        assert!(found[3].starts_with("spec.transform[0].container.input: raw input is only"));
        assert!(found[4].starts_with("spec.transform[0].container.output.format: opaque"));
        assert!(found[5].starts_with("spec.transform[0].container.output.extension:"));
        let found = check_yaml("{image: t, comm: io}", true, true).unwrap_err();
        assert!(found[0].contains("an io step needs `command`"), "{found:?}");
        let found = check_yaml("{image: t, comm: hpush}", true, true).unwrap_err();
        assert!(found[0].contains("needs `port`"), "{found:?}");
    }
}
