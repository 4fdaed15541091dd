//! `pmctl app render` and `pmctl app apply`: the app deployer's commands. They read an application spec,
//! check it whole (see [`spec`]: the spec format, its validation and the manifests it renders to), and print
//! the manifests or pipe them to `kubectl apply`.
//!
//! Invariant: an invalid spec (exit 65) renders nothing, so `apply` never sends a part of an application.

pub mod render;
pub mod spec;

use crate::shared::{read_input, Failure, EXIT_FAILED, EXIT_INVALID};

/// The arguments of `pmctl app render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The application spec, e.g. examples/ocr/app.yaml.
    file: String,
}

/// The arguments of `pmctl app apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The application spec.
    file: String,
    /// The kubectl to run.
    #[arg(long, env = "PM_KUBECTL", default_value = "kubectl")]
    kubectl: String,
    /// More arguments for `kubectl apply` (after `--`), e.g. `-- --context prod --dry-run=server`.
    #[arg(last = true)]
    kubectl_args: Vec<String>,
}

/// `pmctl app render`: prints the manifests as one YAML stream.
pub fn render(args: &RenderArgs) -> Result<(), Failure> {
    print!("{}", render_file(&args.file)?);
    Ok(())
}

/// `pmctl app apply`: pipes the manifests to `kubectl apply -f - ARGS...`; kubectl's own output passes
/// through.
pub fn apply(args: &ApplyArgs) -> Result<(), Failure> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let manifests = render_file(&args.file)?;
    let kubectl = &args.kubectl;
    let mut child = Command::new(kubectl)
        .args(["apply", "-f", "-"])
        .args(&args.kubectl_args)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Failure(EXIT_FAILED, format!("cannot run {kubectl}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(manifests.as_bytes()).map_err(|e| Failure(EXIT_FAILED, format!("{kubectl}: {e}")))?;
    }
    let status = child.wait().map_err(|e| Failure(EXIT_FAILED, format!("{kubectl}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(EXIT_FAILED, format!("{kubectl} apply failed ({status})")))
    }
}

/// Reads and validates an application spec, and renders its manifests as YAML.
fn render_file(file: &str) -> Result<String, Failure> {
    let text = read_input(file)?;
    let spec = spec::AppSpec::from_yaml(&text).map_err(|e| Failure(EXIT_INVALID, format!("{file}: {e}")))?;
    render::to_yaml(&spec.render()).map_err(|e| Failure(EXIT_FAILED, format!("{file}: {e}")))
}
