//! The Python client (`clients/python`) against the real binaries: runs its pytest suite with
//! `PM_SCHEDULER_BIN` pointing at the `pm-scheduler` this workspace built, and fails with pytest's output when
//! pytest fails. The suite also checks that the generated `pm_pb2.py` still matches `pm.proto`.
//!
//! Needs `python3` with the packages of `clients/python/requirements-dev.txt` (`.ci/run` installs them).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("clients/python")
}

#[test]
fn the_python_client_passes_its_tests_against_the_real_scheduler() {
    let scheduler = pm_testkit::bin("pm-scheduler");
    assert!(scheduler.exists(), "{} was not built", scheduler.display());
    let out = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(client_dir())
        .env("PM_SCHEDULER_BIN", &scheduler)
        // Plugins installed for other tools (charts/requirements.txt) stay out of this suite.
        .env("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 -m pytest (pip install -r clients/python/requirements-dev.txt)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pytest failed ({}):\n{text}", out.status);
    let summary = text.lines().rev().find(|l| l.contains(" passed")).unwrap_or_default();
    assert!(!summary.contains("failed") && !summary.contains("error"), "{summary}");
    println!("pytest: {summary}");
}
