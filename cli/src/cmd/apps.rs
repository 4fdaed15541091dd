//! `pmctl app create|put-pipeline|list|show|delete`: the applications and pipeline templates stored in the
//! scheduler (tasks are then submitted by their parameters: `pmctl submit --app A --pipeline P`).
//!
//! The `pmctl app` group also holds the deployer's `render` and `apply`, which never talk to the scheduler;
//! they are handed to [`super::deploy`]. A definition the server refuses exits 65, like an invalid task file.

use pm_client::json::app_json as to_json;
use pm_client::{AppChange, ConnectOptions};
use pm_protocol::pb::AppInfo;
use serde_json::Value;

use super::deploy;
use crate::shared::{read_input, Failure, ServerArgs, EXIT_INVALID};

/// The subcommands of `pmctl app`.
#[derive(Debug, clap::Subcommand)]
pub enum AppCmd {
    /// Store an application and its pipeline templates in the scheduler (JSON or YAML: `{"name", "pipelines":
    /// [{"name", "params", "template"}]}`, see docs/apps.md; `-` reads stdin). Prints it as stored.
    Create {
        /// The application document.
        file: String,
        /// Replace an application of the same name whole (else that is an error).
        #[arg(long)]
        replace: bool,
    },
    /// Store one pipeline definition (`{"name", "params", "template"}`) in an application, creating the
    /// application if needed.
    PutPipeline {
        /// The application.
        app: String,
        /// The pipeline definition (JSON or YAML; `-` reads stdin).
        file: String,
        /// Replace a pipeline of the same name (else that is an error).
        #[arg(long)]
        replace: bool,
    },
    /// The stored applications: one line per pipeline with its queue and parameters.
    List {
        /// Print one JSON object per application.
        #[arg(long)]
        json: bool,
    },
    /// One stored application; with --json, its whole document.
    Show {
        /// The application.
        name: String,
        /// Print JSON (with the document).
        #[arg(long)]
        json: bool,
    },
    /// Delete a stored application (or one of its pipelines). Tasks already queued still run.
    Delete {
        /// The application.
        name: String,
        /// Delete only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Print the manifests of an application spec (YAML; `-` reads stdin) as one YAML stream.
    Render(deploy::RenderArgs),
    /// Render the spec and pipe the manifests to `kubectl apply -f -` (needs a cluster in kubectl's context).
    Apply(deploy::ApplyArgs),
}

/// Prints the node's warning about a change on stderr (`pmctl: warning: ...`): the change is stored, so the
/// command still succeeds, but a member of the cluster does not have it yet.
fn warn(change: &AppChange) {
    if let Some(w) = &change.warning {
        eprintln!("pmctl: warning: {w}");
    }
}

/// `pmctl app ...`.
pub async fn run(server: &ServerArgs, cmd: &AppCmd) -> Result<(), Failure> {
    match cmd {
        AppCmd::Render(args) => deploy::render(args)?,
        AppCmd::Apply(args) => deploy::apply(args)?,
        AppCmd::Create { file, replace } => {
            let doc = read_document(file)?;
            let client = server.connect(ConnectOptions::admin()).await?;
            let bytes = serde_json::to_vec(&doc).map_err(Failure::failed)?;
            let change = client.put_app(bytes, *replace).await.map_err(Failure::of_app_request)?;
            print!("{}", human(&change.app));
            warn(&change);
        }
        AppCmd::PutPipeline { app, file, replace } => {
            let doc = read_document(file)?;
            let client = server.connect(ConnectOptions::admin()).await?;
            let bytes = serde_json::to_vec(&doc).map_err(Failure::failed)?;
            let change = client.put_pipeline(app, bytes, *replace).await.map_err(Failure::of_app_request)?;
            print!("{}", human(&change.app));
            warn(&change);
        }
        AppCmd::List { json } => {
            let client = server.connect(ConnectOptions::producer()).await?;
            for app in client.list_apps().await.map_err(Failure::of_app_request)? {
                if *json {
                    println!("{}", to_json(&app));
                } else {
                    print!("{}", human(&app));
                }
            }
        }
        AppCmd::Show { name, json } => {
            let client = server.connect(ConnectOptions::producer()).await?;
            let app = client.get_app(name).await.map_err(Failure::of_app_request)?;
            if *json {
                println!("{}", to_json(&app));
            } else {
                print!("{}", human(&app));
            }
        }
        AppCmd::Delete { name, pipeline } => {
            let client = server.connect(ConnectOptions::admin()).await?;
            match pipeline {
                Some(p) => {
                    let change = client.delete_pipeline(name, p).await.map_err(Failure::of_app_request)?;
                    println!("{name}/{p} deleted");
                    warn(&change);
                }
                None => {
                    let change = client.delete_app(name).await.map_err(Failure::of_app_request)?;
                    println!("{name} deleted");
                    warn(&change);
                }
            }
        }
    }
    Ok(())
}

/// Reads a file (`-`: stdin) as one JSON value; YAML is accepted too (anything not starting with `{` or `[`).
fn read_document(file: &str) -> Result<Value, Failure> {
    let text = read_input(file)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| Failure(EXIT_INVALID, format!("{file}: {e}")))
    } else {
        serde_saphyr::from_str(&text).map_err(|e| Failure(EXIT_INVALID, format!("{file}: {e}")))
    }
}

/// One line per pipeline: `APP/PIPELINE  queue Q  params a, b (required: a)`.
fn human(app: &AppInfo) -> String {
    let mut out = format!("{}  version {}  {} pipeline(s)\n", app.name, app.version, app.pipelines.len());
    for p in &app.pipelines {
        let params = if p.params.is_empty() { "none".to_string() } else { p.params.join(", ") };
        let required =
            if p.required.is_empty() { String::new() } else { format!(" (required: {})", p.required.join(", ")) };
        out.push_str(&format!("  {}/{}  queue {}  params {params}{required}\n", app.name, p.name, p.queue));
    }
    out
}
