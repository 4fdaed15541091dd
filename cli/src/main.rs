//! `pmctl`: the pipeline-manager command line.
//!
//! Exit codes: 0 success, 1 the server or the connection failed (or a task was not submitted or not
//! cancelled, or is unknown, or `kubectl` failed), 64 bad usage, 65 a task file or application spec is invalid
//! (then nothing was submitted or applied). `pmctl wait` also exits 2 (a task failed or was dead-lettered),
//! 3 (cancelled) or 4 (not finished within `--timeout`). Errors are one line on stderr.

mod cmd;

use cmd::{apps as catalog, deploy::spec as app, status};

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pm_client::{Client, Cluster, ClusterOptions, ConnectOptions};
use pm_protocol::pb::TaskSpec;
use pm_protocol::pipeline::task_spec_from_json;
use pm_protocol::ErrorCode;

/// pipeline-manager command line.
#[derive(Debug, Parser)]
#[command(name = "pmctl", version, about)]
struct Cli {
    /// Scheduler address; for a cluster, one or more member addresses, comma-separated (the first that answers
    /// tells the others).
    #[arg(long, global = true, env = "PM_SERVER", default_value = "127.0.0.1:7070")]
    server: String,
    /// Bearer token for the scheduler.
    #[arg(long, global = true, env = "PM_TOKEN", default_value = "", hide_env_values = true)]
    token: String,
    #[command(flatten)]
    tls: pm_client::tls::TlsArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Submit task files (JSON: one task, or an array of tasks; `-` reads stdin), or tasks of a stored pipeline
    /// by their parameters (`--app A --pipeline P --param NAME=VALUE...`). Prints one task id per line.
    ///
    /// Every file is validated first: if any is invalid, nothing is submitted.
    Submit {
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
    },
    /// Queue depth, leases in flight, dead letters, and tasks waiting for a missing executor, per queue.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and redrive dead-lettered tasks.
    #[command(name = "dead-letter", subcommand)]
    DeadLetter(DeadCmd),
    /// Cancel tasks: they never run (again), and a running one is stopped on its agent. Prints `ID cancelled`
    /// or `ID not found` per id (not found: unknown, or already done, dead-lettered or cancelled); exits 1 if
    /// any id was not cancelled.
    Cancel {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// What became of tasks: state, attempts, times, and the result the agent reported (per command exit code,
    /// duration, output tails). Exits 1 if an id is not found.
    Status {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<u64>,
        /// Print one JSON object per task.
        #[arg(long)]
        json: bool,
    },
    /// Wait until tasks finish; print each outcome. Exit code: 0 all succeeded, else that of the first task (in
    /// argument order) that did not: 2 failed or dead-lettered, 3 cancelled, 4 not finished in time, 1 not
    /// found.
    Wait {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<u64>,
        /// Give up after this long (e.g. `30s`, `5m`; default: wait for ever).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Print one JSON object per task.
        #[arg(long)]
        json: bool,
    },
    /// Why a task is not running now: no agent with credit or with its executors, delayed, held after a
    /// restart, ... (or how it ended).
    Why {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// The flow (tree of chained tasks: `onSuccess` / `onFailure`) a task belongs to, from its root, with each
    /// task's state. Exits 0 once every task of the tree has succeeded, 1 otherwise.
    Flow {
        /// Any task of the flow.
        id: u64,
        /// Print one JSON object per task (with its depth).
        #[arg(long)]
        json: bool,
    },
    /// Cluster membership and health.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The app deployer: Kubernetes manifests for a pipeline application (agent, executors, shared volume,
    /// KEDA autoscaling) from an application spec (the values format of charts/pipeline-app).
    #[command(subcommand)]
    App(AppCmd),
}

#[derive(Debug, Subcommand)]
enum AppCmd {
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
    Render {
        /// The application spec, e.g. examples/ocr/app.yaml.
        file: String,
    },
    /// Render the spec and pipe the manifests to `kubectl apply -f -` (needs a cluster in kubectl's context).
    Apply {
        /// The application spec.
        file: String,
        /// The kubectl to run.
        #[arg(long, env = "PM_KUBECTL", default_value = "kubectl")]
        kubectl: String,
        /// More arguments for `kubectl apply` (after `--`), e.g. `-- --context prod --dry-run=server`.
        #[arg(last = true)]
        kubectl_args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
    /// Every member's ring epoch, connections and queue totals. Exits 1 if a member is unreachable or the
    /// members disagree on the ring (a membership change still rolling out).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DeadCmd {
    /// List dead letters, oldest first.
    List {
        /// Only this queue.
        #[arg(long, default_value = "")]
        queue: String,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON (with payloads).
        #[arg(long)]
        json: bool,
    },
    /// Make dead letters ready again (all of the queue, or the given task ids).
    Redrive {
        /// Only this queue.
        #[arg(long, default_value = "")]
        queue: String,
        /// Task ids (none = all).
        ids: Vec<u64>,
    },
}

/// A failure with its exit code.
#[derive(Debug)]
struct Failure(u8, String);

fn main() -> ExitCode {
    let cli: Cli = match pm_protocol::cli::parse_or_exit() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pmctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("pmctl: {msg}");
            ExitCode::from(code)
        }
    }
}

/// A failed application request: 65 when the server refused the definition, else 1.
fn app_failure(e: pm_client::Error) -> Failure {
    let code = if e.code() == Some(ErrorCode::InvalidTask) { 65 } else { 1 };
    Failure(code, e.to_string())
}

/// The token and TLS settings of the command line applied to `opts`.
fn options(cli: &Cli, opts: ConnectOptions) -> Result<ConnectOptions, Failure> {
    let opts = opts.client_id("pmctl").token(cli.token.clone()).reconnect(false);
    match cli.tls.config().map_err(|e| Failure(64, e.to_string()))? {
        Some(tls) => Ok(opts.tls(tls)),
        None => Ok(opts),
    }
}

async fn connect(cli: &Cli, opts: ConnectOptions) -> Result<Client, Failure> {
    let opts = options(cli, opts)?;
    Client::connect(&cli.server, opts).await.map_err(|e| Failure(1, e.to_string()))
}

/// Connects to the first of the `--server` addresses that answers, routing by key when it is a cluster.
async fn connect_cluster(cli: &Cli, opts: ConnectOptions) -> Result<Cluster, Failure> {
    let opts = options(cli, opts)?;
    let seeds: Vec<String> = cli.server.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    Cluster::connect(&seeds, opts, ClusterOptions::default()).await.map_err(|e| Failure(1, e.to_string()))
}

/// Reads and validates an application spec, and renders its manifests as YAML.
fn render_app(file: &str) -> Result<String, Failure> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| Failure(1, format!("stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure(1, format!("{file}: {e}")))?
    };
    let spec = app::AppSpec::from_yaml(&text).map_err(|e| Failure(65, format!("{file}: {e}")))?;
    app::to_yaml(&spec.render()).map_err(|e| Failure(1, format!("{file}: {e}")))
}

/// Pipes the manifests to `kubectl apply -f - ARGS...`; kubectl's own output passes through.
fn kubectl_apply(kubectl: &str, args: &[String], manifests: &str) -> Result<(), Failure> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(kubectl)
        .args(["apply", "-f", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Failure(1, format!("cannot run {kubectl}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(manifests.as_bytes()).map_err(|e| Failure(1, format!("{kubectl}: {e}")))?;
    }
    let status = child.wait().map_err(|e| Failure(1, format!("{kubectl}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(1, format!("{kubectl} apply failed ({status})")))
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.cmd {
        Cmd::App(AppCmd::Render { file }) => print!("{}", render_app(file)?),
        Cmd::App(AppCmd::Apply { file, kubectl, kubectl_args }) => {
            kubectl_apply(kubectl, kubectl_args, &render_app(file)?)?
        }
        Cmd::Submit { app: Some(app), pipeline, params, params_file, key, idempotency_key, priority, .. } => {
            let sets = catalog::param_sets(params, params_file.as_deref())?;
            let cluster = connect_cluster(&cli, ConnectOptions::producer()).await?;
            let opts = catalog::SubmitOpts { key, idempotency_key, priority: *priority };
            catalog::submit(&cluster, app, pipeline.as_deref().unwrap_or_default(), sets, &opts).await?;
        }
        Cmd::App(AppCmd::Create { file, replace }) => {
            let doc = catalog::read_document(file)?;
            let client = connect(&cli, ConnectOptions::admin()).await?;
            let bytes = serde_json::to_vec(&doc).map_err(|e| Failure(1, e.to_string()))?;
            let app = client.put_app(bytes, *replace).await.map_err(app_failure)?;
            print!("{}", catalog::human(&app));
        }
        Cmd::App(AppCmd::PutPipeline { app, file, replace }) => {
            let doc = catalog::read_document(file)?;
            let client = connect(&cli, ConnectOptions::admin()).await?;
            let bytes = serde_json::to_vec(&doc).map_err(|e| Failure(1, e.to_string()))?;
            let app = client.put_pipeline(app, bytes, *replace).await.map_err(app_failure)?;
            print!("{}", catalog::human(&app));
        }
        Cmd::App(AppCmd::List { json }) => {
            let client = connect(&cli, ConnectOptions::producer()).await?;
            for app in client.list_apps().await.map_err(app_failure)? {
                if *json {
                    println!("{}", catalog::to_json(&app));
                } else {
                    print!("{}", catalog::human(&app));
                }
            }
        }
        Cmd::App(AppCmd::Show { name, json }) => {
            let client = connect(&cli, ConnectOptions::producer()).await?;
            let app = client.get_app(name).await.map_err(app_failure)?;
            if *json {
                println!("{}", catalog::to_json(&app));
            } else {
                print!("{}", catalog::human(&app));
            }
        }
        Cmd::App(AppCmd::Delete { name, pipeline }) => {
            let client = connect(&cli, ConnectOptions::admin()).await?;
            match pipeline {
                Some(p) => {
                    client.delete_pipeline(name, p).await.map_err(app_failure)?;
                    println!("{name}/{p} deleted");
                }
                None => {
                    client.delete_app(name).await.map_err(app_failure)?;
                    println!("{name} deleted");
                }
            }
        }
        Cmd::Submit { files, queue, .. } => {
            let tasks = read_tasks(files, queue.as_deref())?;
            let client = connect_cluster(&cli, ConnectOptions::producer()).await?;
            let max_batch = client.welcome().max_batch.max(1) as usize;
            let mut failed = 0;
            for chunk in tasks.chunks(max_batch) {
                for r in client.submit_each(chunk.to_vec()).await {
                    let r = r.map_err(|e| Failure(1, e.to_string()))?;
                    match ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal) {
                        ErrorCode::Ok => println!("{}", r.task_id),
                        code => {
                            failed += 1;
                            eprintln!("pmctl: task refused ({}): {}", code.as_str_name(), r.message);
                        }
                    }
                }
            }
            if failed > 0 {
                return Err(Failure(1, format!("{failed} task(s) were not submitted")));
            }
        }
        Cmd::Stats { json } => {
            let client = connect(&cli, ConnectOptions::admin()).await?;
            let s = client.stats().await.map_err(|e| Failure(1, e.to_string()))?;
            if *json {
                let queues: Vec<_> = s
                    .queues
                    .iter()
                    .map(|q| {
                        serde_json::json!({"queue": q.queue, "ready": q.ready, "delayed": q.delayed,
                            "leased": q.leased, "dead": q.dead, "credits": q.credits, "agents": q.agents,
                            "waitingExecutor": q.waiting_executor})
                    })
                    .collect();
                let v = serde_json::json!({"node": s.node_id, "connections": s.connections,
                    "storeDiskBytes": s.store_disk_bytes, "storeFiles": s.store_segments, "queues": queues});
                println!("{v}");
            } else {
                println!("node {}  connections {}  store {} bytes", s.node_id, s.connections, s.store_disk_bytes);
                println!(
                    "{:<32} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
                    "QUEUE", "READY", "DELAYED", "LEASED", "DEAD", "AGENTS", "NO-EXEC"
                );
                for q in &s.queues {
                    println!(
                        "{:<32} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
                        q.queue, q.ready, q.delayed, q.leased, q.dead, q.agents, q.waiting_executor
                    );
                }
                if s.queues.iter().any(|q| q.waiting_executor > 0) {
                    println!(
                        "NO-EXEC: ready tasks no connected agent can run (an executor is missing): `pmctl why ID`"
                    );
                }
            }
        }
        Cmd::DeadLetter(DeadCmd::List { queue, limit, json }) => {
            let client = connect(&cli, ConnectOptions::admin()).await?;
            let list = client.dead_letters(queue, *limit).await.map_err(|e| Failure(1, e.to_string()))?;
            for d in list {
                if *json {
                    let payload = String::from_utf8(d.payload.to_vec()).map(serde_json::Value::String).unwrap_or_else(
                        |e| {
                            use base64::Engine;
                            serde_json::json!({"base64": base64::engine::general_purpose::STANDARD.encode(e.as_bytes())})
                        },
                    );
                    let v = serde_json::json!({"taskId": d.task_id, "queue": d.queue, "attempts": d.attempts,
                        "reason": d.reason, "payload": payload});
                    println!("{v}");
                } else {
                    println!("{}\t{}\t{}\t{}", d.task_id, d.queue, d.attempts, d.reason);
                }
            }
        }
        Cmd::DeadLetter(DeadCmd::Redrive { queue, ids }) => {
            let client = connect(&cli, ConnectOptions::admin()).await?;
            let n = client.redrive(queue, ids.clone()).await.map_err(|e| Failure(1, e.to_string()))?;
            println!("{n}");
        }
        Cmd::Cancel { ids } => {
            let client = connect_cluster(&cli, ConnectOptions::producer()).await?;
            let max_batch = client.welcome().max_batch.max(1) as usize;
            let mut failed = 0;
            for chunk in ids.chunks(max_batch) {
                let codes = client.cancel_each(chunk.to_vec()).await;
                for (id, code) in chunk.iter().zip(codes) {
                    match code {
                        Ok(ErrorCode::Ok) => println!("{id} cancelled"),
                        Ok(ErrorCode::NotFound) => {
                            failed += 1;
                            println!("{id} not found");
                        }
                        Ok(code) => {
                            failed += 1;
                            println!("{id} not cancelled ({})", code.as_str_name());
                        }
                        Err(e) => {
                            failed += 1;
                            println!("{id} not cancelled ({e})");
                        }
                    }
                }
            }
            if failed > 0 {
                return Err(Failure(1, format!("{failed} task(s) were not cancelled")));
            }
        }
        Cmd::Status { ids, json } => {
            let cluster = connect_cluster(&cli, ConnectOptions::producer()).await?;
            let mut missing = 0;
            for r in status::status(&cluster, ids).await {
                let s = r.map_err(|e| Failure(1, e.to_string()))?;
                missing += usize::from(status::exit_code(&s) == 1);
                if *json {
                    println!("{}", status::to_json(&s));
                } else {
                    print!("{}", status::human(&s));
                }
            }
            if missing > 0 {
                return Err(Failure(1, format!("{missing} task(s) not found")));
            }
        }
        Cmd::Why { ids } => {
            let cluster = connect_cluster(&cli, ConnectOptions::producer()).await?;
            for r in status::status(&cluster, ids).await {
                println!("{}", status::why(&r.map_err(|e| Failure(1, e.to_string()))?));
            }
        }
        Cmd::Wait { ids, timeout, json } => {
            let cluster = connect_cluster(&cli, ConnectOptions::producer()).await?;
            // Watches survive a scheduler restart: reconnect and watch again.
            let opts = options(&cli, ConnectOptions::producer())?.reconnect(true);
            let got = status::wait(&cluster, opts, ids, *timeout).await.map_err(|e| Failure(1, e.to_string()))?;
            let (mut code, mut unsuccessful) = (0, 0);
            for (id, s) in ids.iter().zip(got) {
                let this = match &s {
                    Some(s) if *json => {
                        println!("{}", status::to_json(s));
                        status::exit_code(s)
                    }
                    Some(s) => {
                        print!("{}", status::human(s));
                        status::exit_code(s)
                    }
                    None => {
                        println!("{id} not finished within the timeout");
                        status::TIMED_OUT
                    }
                };
                if code == 0 {
                    code = this;
                }
                unsuccessful += usize::from(this != 0);
            }
            if code != 0 {
                return Err(Failure(code, format!("{unsuccessful} of {} task(s) did not succeed", ids.len())));
            }
        }
        Cmd::Flow { id, json } => {
            let cluster = connect_cluster(&cli, ConnectOptions::producer()).await?;
            let tree = status::flow(&cluster, *id).await.map_err(|e| Failure(1, e.to_string()))?;
            let mut done = 0;
            for (depth, s) in &tree {
                done += usize::from(status::exit_code(s) == 0);
                if *json {
                    let mut v = status::to_json(s);
                    v["depth"] = serde_json::json!(depth);
                    println!("{v}");
                } else {
                    println!("{}", status::flow_line(*depth, s));
                }
            }
            if done < tree.len() {
                return Err(Failure(
                    1,
                    format!("{} of {} task(s) of the flow have not succeeded", tree.len() - done, tree.len()),
                ));
            }
        }
        Cmd::Cluster(ClusterCmd::Status { json }) => return cluster_status(&cli, *json).await,
    }
    Ok(())
}

/// `pmctl cluster status`.
async fn cluster_status(cli: &Cli, json: bool) -> Result<(), Failure> {
    let cluster = connect_cluster(cli, ConnectOptions::admin()).await?;
    let ring = cluster.ring();
    let mut healthy = true;
    let mut rows = Vec::new();
    for (ordinal, (node, stats)) in cluster.stats().await.into_iter().enumerate() {
        let row = match stats {
            Ok(s) => {
                let sum = |f: fn(&pm_protocol::pb::QueueStats) -> u64| s.queues.iter().map(f).sum::<u64>();
                let same_ring = s.ring_epoch == ring.epoch();
                healthy &= same_ring;
                serde_json::json!({"ordinal": ordinal, "member": node, "up": true, "node": s.node_id,
                    "ringEpoch": format!("{:#x}", s.ring_epoch), "sameRing": same_ring,
                    "connections": s.connections, "ready": sum(|q| q.ready), "delayed": sum(|q| q.delayed),
                    "leased": sum(|q| q.leased), "dead": sum(|q| q.dead), "agents": sum(|q| q.agents),
                    "storeDiskBytes": s.store_disk_bytes})
            }
            Err(e) => {
                healthy = false;
                serde_json::json!({"ordinal": ordinal, "member": node, "up": false, "error": e.to_string()})
            }
        };
        rows.push(row);
    }
    if json {
        let v = serde_json::json!({"ringEpoch": format!("{:#x}", ring.epoch()), "members": ring.members(),
            "healthy": healthy, "nodes": rows});
        println!("{v}");
    } else {
        println!("ring epoch {:#x}  members {}", ring.epoch(), ring.len().max(1));
        println!(
            "{:>3} {:<28} {:<5} {:>18} {:>6} {:>10} {:>10} {:>10} {:>8}",
            "#", "MEMBER", "UP", "EPOCH", "CONNS", "READY", "LEASED", "DEAD", "AGENTS"
        );
        for r in &rows {
            let s = |k: &str| r.get(k).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
            let up = if r["up"] == true { "up" } else { "DOWN" };
            let epoch = if r["sameRing"] == false { format!("{} !", s("ringEpoch")) } else { s("ringEpoch") };
            println!(
                "{:>3} {:<28} {:<5} {:>18} {:>6} {:>10} {:>10} {:>10} {:>8}",
                s("ordinal"),
                s("member"),
                up,
                epoch,
                s("connections"),
                s("ready"),
                s("leased"),
                s("dead"),
                s("agents")
            );
            if let Some(e) = r.get("error") {
                println!("    {}", e.as_str().unwrap_or_default());
            }
        }
    }
    if healthy {
        Ok(())
    } else {
        Err(Failure(1, "the cluster is not healthy: a member is down or holds another ring".into()))
    }
}

/// Reads and validates every file before anything is sent.
fn read_tasks(files: &[String], queue: Option<&str>) -> Result<Vec<TaskSpec>, Failure> {
    let mut tasks = Vec::new();
    for f in files {
        let data = if f == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| Failure(1, format!("stdin: {e}")))?;
            buf
        } else {
            std::fs::read(f).map_err(|e| Failure(1, format!("{f}: {e}")))?
        };
        let name = if f == "-" { "stdin" } else { f.as_str() };
        let docs: Vec<Vec<u8>> = match serde_json::from_slice::<serde_json::Value>(&data) {
            Ok(serde_json::Value::Array(items)) => {
                items.iter().map(|v| serde_json::to_vec(v).unwrap_or_default()).collect()
            }
            _ => vec![data],
        };
        for (i, doc) in docs.iter().enumerate() {
            let mut spec = task_spec_from_json(doc).map_err(|e| {
                let at = if docs.len() > 1 { format!(" (task {})", i + 1) } else { String::new() };
                Failure(65, format!("{name}{at}: {e}; nothing was submitted"))
            })?;
            if let Some(q) = queue {
                spec.queue = q.to_string();
            }
            tasks.push(spec);
        }
    }
    Ok(tasks)
}
