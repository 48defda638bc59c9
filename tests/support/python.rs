//! Python packages the tests run (moto, kubernetes-validate): the machine's own copy when it
//! passes a check, else one installed with pip into `target/tmp/<site>-site/`, so that
//! `cargo test` alone works on a fresh machine with Python and network access.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The interpreter: `$PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A command of the interpreter that imports from `site` first, when there is one.
pub fn command(site: Option<&Path>) -> Command {
    let mut command = Command::new(python());
    if let Some(site) = site {
        command.env("PYTHONPATH", site);
    }
    command
}

/// A package the tests need, and how to tell that a copy of it will do.
pub struct Package {
    /// The package as messages name it.
    pub name: &'static str,
    /// Names the private site, `target/tmp/<site>-site/`.
    pub site: &'static str,
    /// What pip installs into the private site.
    pub requirement: &'static str,
    /// The tests that need the package, for the install message.
    pub needed_by: &'static str,
    /// A script that exits non-zero, saying why on stderr, when a copy will not do.
    pub check: &'static str,
    /// The arguments of `check`.
    pub check_args: &'static [&'static str],
    /// How to install the package by hand, added to every error.
    pub install_hint: &'static str,
}

impl Package {
    /// The PYTHONPATH to run the package with: `None` when the machine's own copy passes the
    /// check, else the private site, installed first when the copy there does not pass.
    pub fn site(&self) -> Result<Option<PathBuf>, String> {
        let site = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-site", self.site));
        if self.check(None).is_ok() {
            Ok(None)
        } else if self.check(Some(&site)).is_ok() {
            Ok(Some(site))
        } else {
            self.install(&site)?;
            self.check(Some(&site))
                .map_err(|e| format!("{}\n{e}", self.install_hint))?;
            Ok(Some(site))
        }
    }

    fn check(&self, site: Option<&Path>) -> Result<(), String> {
        let check = command(site)
            .args(["-c", self.check])
            .args(self.check_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("running {}: {e}. {}", python(), self.install_hint))?;
        if check.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&check.stderr).trim().to_string())
        }
    }

    /// Installs the package into the private site. `--upgrade` replaces a copy that is
    /// there but fails the check; without it pip leaves that copy as it is.
    fn install(&self, site: &Path) -> Result<(), String> {
        eprintln!(
            "installing {} for {} into {}",
            self.name,
            self.needed_by,
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
            .arg(self.requirement)
            .status()
            .map_err(|e| format!("running pip: {e}. {}", self.install_hint))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "pip could not install {} ({status}). {}",
                self.name, self.install_hint
            ))
        }
    }
}
