//! Reading a rendered Job: its shape (indexed or one pod, completions, parallelism, retry
//! limits, deadline), its containers, and the podFailurePolicy's verdict on an exit code.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job as KubeJob, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::pod::PodRunError;

/// What the Job asks of the runner, read once from the manifest.
pub(super) struct JobShape {
    /// An Indexed Job (the workers' shards) rather than a single pod (a task).
    pub(super) indexed: bool,
    pub(super) completions: u32,
    pub(super) parallelism: usize,
    /// Failed pods retried per index (`backoffLimitPerIndex`, or `backoffLimit` for a
    /// single-pod Job, where the one index is the whole Job).
    pub(super) backoff_limit: u32,
    pub(super) max_failed_indexes: Option<usize>,
    pub(super) deadline: Option<Duration>,
    pub(super) rules: Vec<PodFailurePolicyRule>,
    pub(super) pod: PodSpec,
}

/// What the policy decides about a finished pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Succeeded,
    /// Counts against `backoffLimitPerIndex`; retried while within it.
    Count,
    /// Retried without counting.
    Ignore,
    FailIndex,
    FailJob,
}

pub(super) fn shape(job: &KubeJob) -> Result<JobShape, PodRunError> {
    let unsupported = |why: &str| PodRunError::Unsupported(why.to_string());
    let spec = job.spec.as_ref().ok_or_else(|| unsupported("no spec"))?;
    let pod = spec
        .template
        .spec
        .clone()
        .ok_or_else(|| unsupported("no pod template"))?;
    if pod.restart_policy.as_deref() != Some("Never") {
        return Err(unsupported("restartPolicy is not Never"));
    }
    let (completions, backoff_limit) = match spec.completion_mode.as_deref() {
        Some("Indexed") => (
            spec.completions.unwrap_or(1).max(0) as u32,
            spec.backoff_limit_per_index
                .ok_or_else(|| unsupported("no backoffLimitPerIndex"))?,
        ),
        None | Some("NonIndexed") if spec.completions.unwrap_or(1) == 1 => {
            // Kubernetes' default backoffLimit is 6.
            (1, spec.backoff_limit.unwrap_or(6))
        }
        _ => {
            return Err(unsupported(
                "a non-indexed Job with more than one completion",
            ));
        }
    };
    Ok(JobShape {
        indexed: spec.completion_mode.as_deref() == Some("Indexed"),
        completions,
        parallelism: spec.parallelism.unwrap_or(1).max(1) as usize,
        backoff_limit: backoff_limit.max(0) as u32,
        max_failed_indexes: spec.max_failed_indexes.map(|m| m.max(0) as usize),
        deadline: spec
            .active_deadline_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64)),
        rules: spec
            .pod_failure_policy
            .as_ref()
            .map(|p| p.rules.clone())
            .unwrap_or_default(),
        pod,
    })
}

pub(super) fn main_container(pod: &PodSpec) -> Result<&Container, PodRunError> {
    match pod.containers.as_slice() {
        [one] => Ok(one),
        _ => Err(PodRunError::Unsupported(format!(
            "the pod has {} containers; sluice renders one (sidecars are init containers)",
            pod.containers.len()
        ))),
    }
}

/// Native sidecars: init containers with `restartPolicy: Always`, in order.
pub(super) fn sidecars(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
}

/// The podFailurePolicy's verdict on a main container that exited with `code` (not 0);
/// the first matching rule wins, as in Kubernetes. No match counts against the index.
pub(super) fn judge(rules: &[PodFailurePolicyRule], code: i32) -> Verdict {
    for rule in rules {
        let Some(codes) = &rule.on_exit_codes else {
            // Pod conditions (DisruptionTarget) never arise for a local process.
            continue;
        };
        let listed = codes.values.contains(&code);
        let matches = match codes.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        if matches {
            return match rule.action.as_str() {
                "Ignore" => Verdict::Ignore,
                "FailIndex" => Verdict::FailIndex,
                "FailJob" => Verdict::FailJob,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::render::pod_failure_policy;

    #[test]
    fn the_rendered_policy_retries_only_transient_exits() {
        let rules = pod_failure_policy().rules;
        assert_eq!(judge(&rules, 1), Verdict::Count);
        assert_eq!(judge(&rules, 137), Verdict::Count);
        for code in [2, 3, 4] {
            assert_eq!(judge(&rules, code), Verdict::FailIndex);
        }
    }
}
