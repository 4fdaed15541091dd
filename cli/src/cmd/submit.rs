//! `pmctl submit`: put tasks on queues, from task files (`pmctl submit FILE...`) or as tasks of a stored
//! pipeline given by their parameters (`pmctl submit --app A --pipeline P --param NAME=VALUE...`).
//!
//! Invariant: everything is read and validated before the first task is sent, so an invalid file or
//! parameter set submits nothing. Each accepted task prints its id on a line of stdout; a refused one prints
//! a line on stderr, and the command then fails (exit 1).

use std::collections::HashMap;
use std::io::Read;

use pm_client::{Cluster, ConnectOptions};
use pm_protocol::pb::{SubmitResult, TaskSpec, TemplateTask};
use pm_protocol::ErrorCode;
use pm_task::pipeline::task_spec_from_json;
use pm_task::template::params_of;
use serde_json::Value;

use crate::shared::{read_input, Failure, ServerArgs, EXIT_FAILED, EXIT_INVALID, EXIT_USAGE};

/// The arguments of `pmctl submit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task files.
    #[arg(required_unless_present = "app", conflicts_with = "app")]
    files: Vec<String>,
    /// Put every task on this queue (overrides the file's `queue`).
    #[arg(long, conflicts_with = "app")]
    queue: Option<String>,
    /// Submit tasks of this application's pipeline (see `pmctl app create`).
    #[arg(long, requires = "pipeline")]
    app: Option<String>,
    /// The pipeline of --app.
    #[arg(long, requires = "app")]
    pipeline: Option<String>,
    /// A parameter, `NAME=VALUE` (repeat the flag): one task.
    #[arg(long = "param", requires = "app")]
    params: Vec<String>,
    /// Parameter sets, one task each: JSON objects, one per line, or a JSON array of them (`-` reads stdin).
    #[arg(long, requires = "app")]
    params_file: Option<String>,
    /// Key of every task (--app; a task file names its own).
    #[arg(long, default_value = "", requires = "app")]
    key: String,
    /// Idempotency key (--app).
    #[arg(long, default_value = "", requires = "app")]
    idempotency_key: String,
    /// Priority, overriding the pipeline's (--app).
    #[arg(long, requires = "app", allow_hyphen_values = true)]
    priority: Option<i32>,
}

/// `pmctl submit`.
pub async fn run(server: &ServerArgs, args: &Args) -> Result<(), Failure> {
    match &args.app {
        Some(app) => {
            let sets = param_sets(&args.params, args.params_file.as_deref())?;
            let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
            let opts = TemplateOpts { key: &args.key, idempotency_key: &args.idempotency_key, priority: args.priority };
            submit_template(&cluster, app, args.pipeline.as_deref().unwrap_or_default(), sets, &opts).await
        }
        None => {
            let tasks = read_tasks(&args.files, args.queue.as_deref())?;
            let client = server.connect_cluster(ConnectOptions::producer()).await?;
            submit_files(&client, tasks).await
        }
    }
}

/// Prints the id of an accepted task on stdout, or why it was refused on stderr; true if it was accepted.
fn print_result(r: &SubmitResult) -> bool {
    match ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal) {
        ErrorCode::Ok => {
            println!("{}", r.task_id);
            true
        }
        code => {
            eprintln!("pmctl: task refused ({}): {}", code.as_str_name(), r.message);
            false
        }
    }
}

/// The failure when some tasks were refused.
fn refused(failed: usize) -> Result<(), Failure> {
    if failed > 0 {
        return Err(Failure(EXIT_FAILED, format!("{failed} task(s) were not submitted")));
    }
    Ok(())
}

/// Submits the tasks of files, in batches the server accepts, each to the member its key routes to.
async fn submit_files(client: &Cluster, tasks: Vec<TaskSpec>) -> Result<(), Failure> {
    let max_batch = client.welcome().max_batch.max(1) as usize;
    let mut failed = 0;
    for chunk in tasks.chunks(max_batch) {
        for r in client.submit_each(chunk.to_vec()).await {
            let r = r.map_err(Failure::failed)?;
            failed += usize::from(!print_result(&r));
        }
    }
    refused(failed)
}

/// Reads and validates every file before anything is sent.
fn read_tasks(files: &[String], queue: Option<&str>) -> Result<Vec<TaskSpec>, Failure> {
    let mut tasks = Vec::new();
    for f in files {
        let data = if f == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| Failure(EXIT_FAILED, format!("stdin: {e}")))?;
            buf
        } else {
            std::fs::read(f).map_err(|e| Failure(EXIT_FAILED, format!("{f}: {e}")))?
        };
        let name = if f == "-" { "stdin" } else { f.as_str() };
        let docs: Vec<Vec<u8>> = match serde_json::from_slice::<Value>(&data) {
            Ok(Value::Array(items)) => items.iter().map(|v| serde_json::to_vec(v).unwrap_or_default()).collect(),
            _ => vec![data],
        };
        for (i, doc) in docs.iter().enumerate() {
            let mut spec = task_spec_from_json(doc).map_err(|e| {
                let at = if docs.len() > 1 { format!(" (task {})", i + 1) } else { String::new() };
                Failure(EXIT_INVALID, format!("{name}{at}: {e}; nothing was submitted"))
            })?;
            if let Some(q) = queue {
                spec.queue = q.to_string();
            }
            tasks.push(spec);
        }
    }
    Ok(tasks)
}

/// The parameter sets of `pmctl submit --app`: the `--param` pairs as one set, or each line (JSON object) or
/// array element of `--params-file`.
fn param_sets(params: &[String], file: Option<&str>) -> Result<Vec<HashMap<String, String>>, Failure> {
    let mut sets = Vec::new();
    if let Some(file) = file {
        let text = read_input(file)?;
        let objects: Vec<Value> = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => items,
            Ok(one @ Value::Object(_)) => vec![one],
            _ => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str(l).map_err(|e| Failure(EXIT_INVALID, format!("{file}:{}: {e}", i + 1)))
                })
                .collect::<Result<_, _>>()?,
        };
        for (i, obj) in objects.iter().enumerate() {
            sets.push(params_of(obj).map_err(|e| Failure(EXIT_INVALID, format!("{file} (set {}): {e}", i + 1)))?);
        }
        if sets.is_empty() {
            return Err(Failure(EXIT_INVALID, format!("{file}: no parameter sets; nothing was submitted")));
        }
    }
    if !params.is_empty() || file.is_none() {
        let mut one = HashMap::new();
        for p in params {
            let Some((k, v)) = p.split_once('=') else {
                return Err(Failure(EXIT_USAGE, format!("--param {p:?}: expected NAME=VALUE")));
            };
            one.insert(k.trim().to_string(), v.to_string());
        }
        sets.push(one);
    }
    Ok(sets)
}

/// Options given with every task of a template submit.
struct TemplateOpts<'a> {
    /// `--key`.
    key: &'a str,
    /// `--idempotency-key`.
    idempotency_key: &'a str,
    /// `--priority`.
    priority: Option<i32>,
}

/// Submits one task per parameter set, to the member owning `--key` (any member without one).
async fn submit_template(
    cluster: &Cluster,
    app: &str,
    pipeline: &str,
    sets: Vec<HashMap<String, String>>,
    opts: &TemplateOpts<'_>,
) -> Result<(), Failure> {
    if sets.len() > 1 && !opts.idempotency_key.is_empty() {
        return Err(Failure(EXIT_USAGE, "--idempotency-key names one task: give one parameter set".into()));
    }
    let ring = cluster.ring();
    let node = match ring.owner(opts.key.as_bytes()).filter(|_| !opts.key.is_empty()) {
        Some(o) => ring.members()[o].clone(),
        None => cluster.nodes().first().cloned().unwrap_or_default(),
    };
    let client = cluster.client(&node).await.map_err(Failure::failed)?;
    let max_batch = cluster.welcome().max_batch.max(1) as usize;
    let tasks: Vec<TemplateTask> = sets
        .into_iter()
        .map(|params| TemplateTask {
            params,
            key: opts.key.to_string(),
            idempotency_key: opts.idempotency_key.to_string(),
            priority: opts.priority,
            delay_ms: None,
        })
        .collect();
    let mut failed = 0;
    for chunk in tasks.chunks(max_batch) {
        let results = client.submit_template(app, pipeline, chunk.to_vec()).await.map_err(Failure::failed)?;
        for r in &results {
            failed += usize::from(!print_result(r));
        }
    }
    refused(failed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn params_come_from_flags_or_a_file() {
        let sets = param_sets(&["url=http://a/b?c=d".into(), "n=1".into()], None).unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0]["url"], "http://a/b?c=d");
        assert!(param_sets(&["novalue".into()], None).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.jsonl");
        std::fs::write(&f, "{\"url\":\"a\",\"n\":2}\n\n{\"url\":\"b\",\"ok\":true}\n").unwrap();
        let sets = param_sets(&[], Some(f.to_str().unwrap())).unwrap();
        assert_eq!((sets.len(), sets[0]["n"].as_str(), sets[1]["ok"].as_str()), (2, "2", "true"));
        std::fs::write(&f, "\n").unwrap();
        assert_eq!(param_sets(&[], Some(f.to_str().unwrap())).unwrap_err().0, 65, "an empty file submits nothing");
        std::fs::write(&f, "[{\"url\":\"a\"},{\"url\":[1]}]").unwrap();
        let e = param_sets(&[], Some(f.to_str().unwrap())).unwrap_err();
        assert!(e.1.contains("set 2") && e.0 == 65, "{}", e.1);
    }
}
