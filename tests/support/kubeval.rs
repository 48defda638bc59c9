//! Strict Kubernetes schema checks for manifests, with the `kubernetes-validate` package.
//!
//! kubernetes-validate ships the JSON schemas of each Kubernetes release in a strict variant
//! that rejects unknown properties, so a misspelt field fails here instead of being dropped
//! (or refused) by a cluster the tests do not have. When the machine has no copy that knows
//! [`KUBERNETES_VERSION`], it is installed with pip into `target/tmp/kubeval-site/`, once per
//! test process, the way moto is.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use super::python::{self, Package};

/// The Kubernetes release whose schemas every manifest must pass.
pub const KUBERNETES_VERSION: &str = "1.33.0";

const INSTALL_HINT: &str = "kubernetes-validate 1.33 or newer is needed for the manifest tests: \
     pip install -U 'kubernetes-validate>=1.33'";

/// Fails unless the installed package has the schemas of the version given as argv[1].
const CHECK: &str = r#"
import sys
import kubernetes_validate.utils as utils
if sys.argv[1] not in utils.all_versions():
    raise SystemExit(f"kubernetes-validate has no schemas for Kubernetes {sys.argv[1]}")
"#;

const KUBERNETES_VALIDATE: Package = Package {
    name: "kubernetes-validate",
    site: "kubeval",
    requirement: "kubernetes-validate>=1.33",
    needed_by: "the manifest tests",
    check: CHECK,
    check_args: &[KUBERNETES_VERSION],
    install_hint: INSTALL_HINT,
};

/// The PYTHONPATH to run kubernetes-validate with (looked for once per test process).
fn site() -> Result<Option<PathBuf>, String> {
    static SITE: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    SITE.get_or_init(|| KUBERNETES_VALIDATE.site()).clone()
}

/// Checks every object of a (multi-document) YAML string against the strict schemas of
/// [`KUBERNETES_VERSION`]. `Err` carries kubernetes-validate's whole output.
///
/// Stricter than the tool's exit status: it only warns about a kind or apiVersion it has no
/// schema for, which would let `kind: Deploymnet` through, so any warning fails too, and so
/// does input with no object in it.
pub fn check_manifests(yaml: &str) -> Result<(), String> {
    let site = site()?;
    let mut file = tempfile::Builder::new()
        .prefix("kubeval-")
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| format!("creating a temporary file: {e}"))?;
    file.write_all(yaml.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| format!("writing {}: {e}", file.path().display()))?;

    let output = python::command(site.as_deref())
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
        ])
        .arg(file.path())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}. {INSTALL_HINT}", python::python()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(format!(
            "kubernetes-validate --strict --kubernetes-version {KUBERNETES_VERSION} failed \
             ({}):\n{text}",
            output.status
        ));
    }
    if text.lines().any(|line| line.starts_with("WARN")) {
        return Err(format!(
            "kubernetes-validate could not check every object against Kubernetes \
             {KUBERNETES_VERSION}:\n{text}"
        ));
    }
    if !text.lines().any(|line| line.starts_with("INFO")) {
        return Err(format!("no Kubernetes object in the input:\n{text}"));
    }
    Ok(())
}
