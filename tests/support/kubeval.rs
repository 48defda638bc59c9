//! Strict Kubernetes schema checks for manifests, with the `kubernetes-validate` package.
//!
//! kubernetes-validate ships the JSON schemas of each Kubernetes release in a strict variant
//! that rejects unknown properties, so a misspelt field fails here instead of being dropped
//! (or refused) by a cluster the tests do not have. When the machine has no copy that knows
//! [`KUBERNETES_VERSION`], it is installed with pip into `target/tmp/kubeval-site/`, once per
//! test process, the way moto is.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Where the tests install kubernetes-validate themselves when the machine has none (or an
/// old one), so that `cargo test` alone works on a fresh machine with Python and network.
fn private_site() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubeval-site")
}

fn check(site: Option<&PathBuf>) -> Result<(), String> {
    let mut command = Command::new(python());
    command.args(["-c", CHECK, KUBERNETES_VERSION]);
    if let Some(site) = site {
        command.env("PYTHONPATH", site);
    }
    let check = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running {}: {e}. {INSTALL_HINT}", python()))?;
    if check.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&check.stderr).trim().to_string())
    }
}

/// Installs kubernetes-validate into the private site (once per target directory).
fn install_private(site: &PathBuf) -> Result<(), String> {
    eprintln!(
        "installing kubernetes-validate for the manifest tests into {}",
        site.display()
    );
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--upgrade",
            "--target",
        ])
        .arg(site)
        .arg("kubernetes-validate>=1.33")
        .status()
        .map_err(|e| format!("running pip: {e}. {INSTALL_HINT}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "pip could not install kubernetes-validate ({status}). {INSTALL_HINT}"
        ))
    }
}

/// The PYTHONPATH to run kubernetes-validate with: `None` when the machine's own copy does.
fn site() -> Result<Option<PathBuf>, String> {
    static SITE: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();
    SITE.get_or_init(|| {
        let site = private_site();
        if check(None).is_ok() {
            Ok(None)
        } else if check(Some(&site)).is_ok() {
            Ok(Some(site))
        } else {
            install_private(&site)?;
            check(Some(&site)).map_err(|e| format!("{INSTALL_HINT}\n{e}"))?;
            Ok(Some(site))
        }
    })
    .clone()
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

    let mut command = Command::new(python());
    command
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
        ])
        .arg(file.path());
    if let Some(site) = &site {
        command.env("PYTHONPATH", site);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}. {INSTALL_HINT}", python()))?;
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
