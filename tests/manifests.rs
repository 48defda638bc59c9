//! manifests/: every object passes the strict Kubernetes schema, and the kustomization
//! installs every file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::support::kubeval::{KUBERNETES_VERSION, check_manifests};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// The file names of manifests/*.yaml but kustomization.yaml, sorted.
fn object_files() -> BTreeSet<String> {
    let dir = manifests_dir();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    entries
        .map(|entry| entry.expect("reading manifests/").file_name())
        .map(|name| name.into_string().expect("a UTF-8 file name in manifests/"))
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect()
}

#[test]
fn every_manifest_passes_the_strict_schema() {
    let files = object_files();
    assert!(!files.is_empty(), "no manifests/*.yaml to check");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|name| {
            let path = manifests_dir().join(name);
            let yaml = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            check_manifests(&yaml)
                .err()
                .map(|e| format!("manifests/{name}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "manifests that fail the Kubernetes {KUBERNETES_VERSION} strict schema:\n{}",
        failures.join("\n")
    );
}

/// A Job whose `spec` gets `extra_spec` and whose container gets `extra_container`.
fn job(extra_spec: &str, extra_container: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: typo
spec:
  completions: 2
  {extra_spec}
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: worker
          image: ghcr.io/sluice-dev/sluice:0.1.0
          {extra_container}
"
    )
}

#[test]
fn the_checker_rejects_misspelt_fields() {
    const MODE: &str = "completionMode: Indexed";
    const PULL: &str = "imagePullPolicy: IfNotPresent";
    // The control: spelt right, the same Job passes, so each failure below is the typo's.
    check_manifests(&job(MODE, PULL)).expect("the well-spelt Job passes");

    let err = check_manifests(&job("completionMod: Indexed", PULL))
        .expect_err("a misspelt Job spec field fails");
    assert!(err.contains("completionMod"), "{err}");

    let err = check_manifests(&job(MODE, "imagePullPolicyy: IfNotPresent"))
        .expect_err("a misspelt container field in the pod template fails");
    assert!(err.contains("imagePullPolicyy"), "{err}");
}

#[test]
fn the_checker_rejects_an_unknown_kind_and_empty_input() {
    // kubernetes-validate only warns about a kind it has no schema for.
    let err = check_manifests("apiVersion: v1\nkind: ServiceAcount\nmetadata:\n  name: typo\n")
        .expect_err("a misspelt kind fails");
    assert!(err.contains("ServiceAcount"), "{err}");

    check_manifests("# nothing\n---\n").expect_err("input with no object fails");
}

#[derive(Deserialize)]
struct Kustomization {
    resources: Vec<String>,
}

#[test]
fn kustomization_lists_every_manifest() {
    let path = manifests_dir().join("kustomization.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let kustomization: Kustomization = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let listed: BTreeSet<String> = kustomization.resources.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        kustomization.resources.len(),
        "kustomization.yaml lists a resource twice: {:?}",
        kustomization.resources
    );

    let files = object_files();
    let unlisted: Vec<_> = files.difference(&listed).collect();
    let missing: Vec<_> = listed.difference(&files).collect();
    assert!(
        unlisted.is_empty() && missing.is_empty(),
        "kustomization.yaml resources do not match manifests/*.yaml: not listed {unlisted:?}, \
         listed but no such file {missing:?}"
    );
}
