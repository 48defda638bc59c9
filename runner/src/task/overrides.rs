//! What one run of a task changes: the essential (or a named) container's entrypoint,
//! command and environment, the run id and the namespace. The definition stays as it is.

use k8s_openapi::api::core::v1::EnvVar;

use crate::kubernetes::render::DEFAULT_NAMESPACE;
use crate::spec::kubernetes::is_credential_name;
use crate::spec::task::TaskDefinition;
use crate::task::error::TaskError;

/// Per-run overrides of a task definition (ECS `containerOverrides`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The container the entrypoint, command and environment apply to. Default: the
    /// essential one.
    pub container: Option<String>,
    /// Replaces the container's `entryPoint` (the Kubernetes `command`). On this machine
    /// it also replaces `local.command`: the program must exist here.
    pub entry_point: Option<Vec<String>>,
    /// Replaces the container's `command` (the Kubernetes `args`).
    pub command: Option<Vec<String>>,
    /// Set or replace environment variables of the container (literal values).
    pub env: Vec<(String, String)>,
    /// The run id. Default: `<family>-<UTC start, YYYYMMDDTHHMMSSZ>`.
    pub run_id: Option<String>,
    /// The namespace. Default: the definition's `kubernetes.namespace`, else `sluice`.
    pub namespace: Option<String>,
}

impl Overrides {
    /// The definition as this run sees it.
    pub fn apply(&self, def: &TaskDefinition) -> Result<TaskDefinition, TaskError> {
        let target = self.target(def)?;
        if self.entry_point.as_ref().is_some_and(Vec::is_empty) {
            return Err(TaskError::EmptyEntryPoint);
        }
        let mut out = def.clone();
        let container = out
            .containers
            .iter_mut()
            .find(|c| c.name == target)
            .expect("target() found it");
        if let Some(entry_point) = &self.entry_point {
            container.entry_point = Some(entry_point.clone());
            // On this machine the given program runs instead of `local.command`.
            container.local_command = Some(entry_point.clone());
        }
        if let Some(command) = &self.command {
            container.command = Some(command.clone());
        }
        for (name, value) in &self.env {
            if is_credential_name(name) {
                return Err(TaskError::CredentialOverride { name: name.clone() });
            }
            let var = EnvVar {
                name: name.clone(),
                value: Some(value.clone()),
                ..Default::default()
            };
            match container.env.iter_mut().find(|e| e.name == *name) {
                Some(existing) => *existing = var,
                None => container.env.push(var),
            }
        }
        Ok(out)
    }

    /// The name of the container the overrides apply to.
    pub fn target(&self, def: &TaskDefinition) -> Result<String, TaskError> {
        match &self.container {
            None => Ok(def.essential().name.clone()),
            Some(name) if def.container(name).is_some() => Ok(name.clone()),
            Some(name) => Err(TaskError::UnknownContainer {
                name: name.clone(),
                known: def
                    .containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The namespace of this run: the flag, the definition, the default.
    pub fn namespace(&self, def: &TaskDefinition) -> String {
        self.namespace
            .clone()
            .or_else(|| def.pod.namespace.clone())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    }
}

/// Parses `--env NAME=VALUE` (the value may be empty and may contain `=`).
pub fn parse_env(given: &str) -> Result<(String, String), TaskError> {
    match given.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(TaskError::BadEnv {
            given: given.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> TaskDefinition {
        crate::spec::load_task_str(
            "apiVersion: sluice.dev/v1alpha1
kind: TaskDefinition
metadata: {name: t}
spec:
  containerDefinitions:
    - name: main
      image: app
      entryPoint: [/app/run]
      command: [a, b]
      environment: [{name: MODE, value: full}]
      local: {command: [sh, run.sh]}
    - {name: side, image: proxy, essential: false}
",
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn overrides_change_the_essential_container_for_one_run() {
        let def = def();
        let overrides = Overrides {
            command: Some(vec!["2018-01-01".into(), "2019-01-01".into()]),
            env: vec![
                ("MODE".into(), "delta".into()),
                ("EXTRA".into(), "1".into()),
            ],
            ..Default::default()
        };
        let run = overrides.apply(&def).unwrap();
        let main = run.essential();
        assert_eq!(
            main.command.as_deref().unwrap(),
            ["2018-01-01", "2019-01-01"]
        );
        assert_eq!(main.entry_point.as_deref().unwrap(), ["/app/run"]);
        assert_eq!(main.local_command.as_deref().unwrap(), ["sh", "run.sh"]);
        let env: Vec<_> = main
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
            .collect();
        assert_eq!(env, [("MODE", "delta"), ("EXTRA", "1")]);
        assert_eq!(def.essential().command.as_deref().unwrap(), ["a", "b"]);
    }

    #[test]
    fn an_entrypoint_override_runs_here_too_and_bad_overrides_are_refused() {
        let def = def();
        let run = Overrides {
            container: Some("side".into()),
            entry_point: Some(vec!["echo".into()]),
            ..Default::default()
        }
        .apply(&def)
        .unwrap();
        let side = run.container("side").unwrap();
        assert_eq!(side.local_command.as_deref().unwrap(), ["echo"]);
        assert_eq!(side.entry_point.as_deref().unwrap(), ["echo"]);
        let unknown = Overrides {
            container: Some("nope".into()),
            ..Default::default()
        }
        .apply(&def)
        .unwrap_err();
        assert!(
            unknown.to_string().contains("it has main, side"),
            "{unknown}"
        );
        let secret = Overrides {
            env: vec![("API_TOKEN".into(), "x".into())],
            ..Default::default()
        }
        .apply(&def)
        .unwrap_err();
        assert!(matches!(secret, TaskError::CredentialOverride { .. }));
        assert!(parse_env("A=b=c").is_ok_and(|(k, v)| k == "A" && v == "b=c"));
        assert!(parse_env("novalue").is_err());
    }
}
