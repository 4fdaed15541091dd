//! `pmctl submit`: put tasks on queues, from task files (`pmctl submit FILE...`) or as tasks of a stored
//! pipeline given by their parameters (`pmctl submit --app A --pipeline P --param NAME=VALUE...`).
//!
//! Invariant: everything is read and validated before the first task is sent, so an invalid file or
//! parameter set submits nothing. Then every task is sent, whatever happens to the others (a member that is
//! down fails only the tasks it owns), and one line per input task says what became of it, in input order
//! ([`report`]); the command fails (exit 1) if any task is not on its queue. Every task carries an
//! idempotency key ([`idempotency`]), so running the same command again sends the missing ones and
//! duplicates none.

mod idempotency;
mod report;

use std::collections::HashMap;
use std::io::Read;

use pm_client::{Cluster, ConnectOptions};
use pm_protocol::pb::{SubmitResult, TaskSpec, TemplateTask};
use pm_task::pipeline::task_spec_from_json;
use pm_task::template::params_of;
use serde_json::Value;

use self::idempotency::{KeyMode, Keys};
use self::report::{Origin, Outcome};
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
    /// Idempotency key, instead of the one pmctl derives from each task's content: the key of the only task,
    /// or with several tasks `KEY-0`, `KEY-1`, ... in input order. A repeat within the scheduler's
    /// `--idempotency-window` (24 h) is answered `duplicate of ID` and not enqueued again.
    #[arg(long, conflicts_with = "no_idempotency_key")]
    idempotency_key: Option<String>,
    /// Give the tasks no idempotency key (a file's own `idempotencyKey` stays): running the command again
    /// enqueues every task again. By default each task gets `pmctl-<hash of its content>-<n>` (n counts the
    /// identical tasks before it), so running the same command again never enqueues a task twice.
    #[arg(long)]
    no_idempotency_key: bool,
    /// Priority, overriding the pipeline's (--app).
    #[arg(long, requires = "app", allow_hyphen_values = true)]
    priority: Option<i32>,
    /// Print the results as one JSON list (per task: `taskId` and `duplicate`, or `error`, `code` and
    /// `maybeSubmitted`; and its `index`, `file` and `idempotencyKey`).
    #[arg(long)]
    json: bool,
}

impl Args {
    fn key_mode(&self) -> KeyMode<'_> {
        match (&self.idempotency_key, self.no_idempotency_key) {
            (Some(k), _) => KeyMode::Given(k),
            (None, true) => KeyMode::None,
            (None, false) => KeyMode::Derived,
        }
    }
}

/// `pmctl submit`.
pub async fn run(server: &ServerArgs, args: &Args) -> Result<(), Failure> {
    let outcomes = match &args.app {
        Some(app) => {
            let sets = param_sets(&args.params, args.params_file.as_deref())?;
            let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
            let opts = TemplateOpts { key: &args.key, keys: args.key_mode(), priority: args.priority };
            submit_template(&cluster, app, args.pipeline.as_deref().unwrap_or_default(), sets, &opts).await?
        }
        None => {
            let (origins, tasks) = read_tasks(&args.files, args.queue.as_deref(), args.key_mode())?;
            let client = server.connect_cluster(ConnectOptions::producer()).await?;
            let results = client.submit_each(tasks).await;
            origins.into_iter().zip(results).map(|(origin, result)| Outcome { origin, result }).collect()
        }
    };
    let failed = report::print(&outcomes, args.json);
    if failed > 0 {
        let again = if args.key_mode() == KeyMode::None {
            ""
        } else {
            " (running the same command again sends them, and duplicates none: each task has an idempotency key)"
        };
        return Err(Failure(EXIT_FAILED, format!("{failed} of {} task(s) were not submitted{again}", outcomes.len())));
    }
    Ok(())
}

/// Reads and validates every file before anything is sent; gives each task its idempotency key.
fn read_tasks(
    files: &[String],
    queue: Option<&str>,
    mode: KeyMode<'_>,
) -> Result<(Vec<Origin>, Vec<TaskSpec>), Failure> {
    let mut tasks = Vec::new();
    let mut origins = Vec::new();
    let mut keys = Keys::default();
    for f in files {
        let data = if f == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| Failure(EXIT_FAILED, format!("stdin: {e}")))?;
            buf
        } else {
            std::fs::read(f).map_err(|e| Failure(EXIT_FAILED, format!("{f}: {e}")))?
        };
        let name = if f == "-" { "stdin" } else { f.as_str() };
        let (docs, values): (Vec<Vec<u8>>, Vec<Value>) = match serde_json::from_slice::<Value>(&data) {
            Ok(Value::Array(items)) => {
                items.into_iter().map(|v| (serde_json::to_vec(&v).unwrap_or_default(), v)).unzip()
            }
            Ok(one) => (vec![data], vec![one]),
            // Not JSON: the parser below says why.
            Err(_) => (vec![data], vec![Value::Null]),
        };
        for (i, (doc, value)) in docs.iter().zip(&values).enumerate() {
            let mut spec = task_spec_from_json(doc).map_err(|e| {
                let at = if docs.len() > 1 { format!(" (task {})", i + 1) } else { String::new() };
                Failure(EXIT_INVALID, format!("{name}{at}: {e}; nothing was submitted"))
            })?;
            if let Some(q) = queue {
                spec.queue = q.to_string();
            }
            if mode == KeyMode::Derived && spec.idempotency_key.is_empty() {
                spec.idempotency_key = keys.derive(value);
            }
            origins.push(Origin { file: f.clone(), index: i, idempotency_key: String::new() });
            tasks.push(spec);
        }
    }
    if let KeyMode::Given(k) = mode {
        let n = tasks.len();
        tasks.iter_mut().enumerate().for_each(|(i, t)| t.idempotency_key = idempotency::given(k, i, n));
    }
    for (o, t) in origins.iter_mut().zip(&tasks) {
        o.idempotency_key = t.idempotency_key.clone();
    }
    Ok((origins, tasks))
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
    /// How the tasks get their idempotency keys.
    keys: KeyMode<'a>,
    /// `--priority`.
    priority: Option<i32>,
}

/// Submits one task per parameter set; one outcome per set, in order. With `--key` every task goes to the
/// member owning it; without, each goes to the member its idempotency key places it on (so a repeat reaches
/// the member that remembers the key, and a member that is down fails only its share), or to the first member
/// when it has none. Each member's part goes in requests of at most `max_batch`, the members' at once.
async fn submit_template(
    cluster: &Cluster,
    app: &str,
    pipeline: &str,
    sets: Vec<HashMap<String, String>>,
    opts: &TemplateOpts<'_>,
) -> Result<Vec<Outcome>, Failure> {
    let mut keys = Keys::default();
    let n = sets.len();
    let tasks: Vec<TemplateTask> = sets
        .into_iter()
        .enumerate()
        .map(|(i, params)| {
            let idempotency_key = match opts.keys {
                KeyMode::Given(k) => idempotency::given(k, i, n),
                KeyMode::None => String::new(),
                KeyMode::Derived => keys.derive(&serde_json::json!({"app": app, "pipeline": pipeline,
                    "key": opts.key, "priority": opts.priority, "params": params})),
            };
            TemplateTask { params, key: opts.key.to_string(), idempotency_key, priority: opts.priority, delay_ms: None }
        })
        .collect();
    // The member of each task, and the tasks of each member in input order.
    let ring = cluster.ring();
    let first = cluster.nodes().first().cloned().unwrap_or_default();
    let member_of = |t: &TemplateTask| {
        let place = if t.key.is_empty() { &t.idempotency_key } else { &t.key };
        match ring.owner(place.as_bytes()).filter(|_| !place.is_empty()) {
            Some(o) => ring.members()[o].clone(),
            None => first.clone(),
        }
    };
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let m = member_of(t);
        match groups.iter_mut().find(|(g, _)| *g == m) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((m, vec![i])),
        }
    }
    let max_batch = cluster.welcome().max_batch.max(1) as usize;
    let parts = groups.iter().flat_map(|(m, idx)| idx.chunks(max_batch).map(move |c| (m.as_str(), c)));
    let sends = parts.map(|(member, idx)| {
        let chunk: Vec<TemplateTask> = idx.iter().map(|&i| tasks[i].clone()).collect();
        async move {
            let got = match cluster.client(member).await {
                Ok(c) => c.submit_template(app, pipeline, chunk).await,
                Err(e) => Err(e),
            };
            (idx, got)
        }
    });
    let mut results: Vec<Option<Result<SubmitResult, pm_client::Error>>> = (0..n).map(|_| None).collect();
    for (idx, got) in futures::future::join_all(sends).await {
        for (j, &i) in idx.iter().enumerate() {
            results[i] = Some(match &got {
                Ok(r) => r
                    .get(j)
                    .cloned()
                    .ok_or_else(|| pm_client::Error::new(pm_client::ErrorKind::Protocol, "fewer results than tasks")),
                Err(e) => Err(e.clone()),
            });
        }
    }
    Ok(tasks
        .iter()
        .zip(results)
        .enumerate()
        .map(|(i, (t, result))| Outcome {
            origin: Origin { file: String::new(), index: i, idempotency_key: t.idempotency_key.clone() },
            result: result
                .unwrap_or_else(|| Err(pm_client::Error::new(pm_client::ErrorKind::Protocol, "task left unsent"))),
        })
        .collect())
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
