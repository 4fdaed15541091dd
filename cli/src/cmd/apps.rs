//! `pmctl app create|put-pipeline|list|show|delete` (applications and pipeline templates stored by the
//! scheduler) and `pmctl submit --app A --pipeline P` (tasks given by their parameters).

use std::collections::HashMap;
use std::io::Read;

use pm_client::Cluster;
use pm_protocol::pb::{AppInfo, TemplateTask};
use pm_protocol::template::params_of;
use serde_json::Value;

use crate::Failure;

/// Reads a file (`-`: stdin) as one JSON value; YAML is accepted too (anything not starting with `{` or `[`).
pub fn read_document(file: &str) -> Result<Value, Failure> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| Failure(1, format!("stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure(1, format!("{file}: {e}")))?
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| Failure(65, format!("{file}: {e}")))
    } else {
        serde_saphyr::from_str(&text).map_err(|e| Failure(65, format!("{file}: {e}")))
    }
}

/// The parameter sets of `pmctl submit --app`: the `--param` pairs as one set, or each line (JSON object) or
/// array element of `--params-file`.
pub fn param_sets(params: &[String], file: Option<&str>) -> Result<Vec<HashMap<String, String>>, Failure> {
    let mut sets = Vec::new();
    if let Some(file) = file {
        let text = if file == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| Failure(1, format!("stdin: {e}")))?;
            s
        } else {
            std::fs::read_to_string(file).map_err(|e| Failure(1, format!("{file}: {e}")))?
        };
        let objects: Vec<Value> = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => items,
            Ok(one @ Value::Object(_)) => vec![one],
            _ => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| serde_json::from_str(l).map_err(|e| Failure(65, format!("{file}:{}: {e}", i + 1))))
                .collect::<Result<_, _>>()?,
        };
        for (i, obj) in objects.iter().enumerate() {
            sets.push(params_of(obj).map_err(|e| Failure(65, format!("{file} (set {}): {e}", i + 1)))?);
        }
        if sets.is_empty() {
            return Err(Failure(65, format!("{file}: no parameter sets; nothing was submitted")));
        }
    }
    if !params.is_empty() || file.is_none() {
        let mut one = HashMap::new();
        for p in params {
            let Some((k, v)) = p.split_once('=') else {
                return Err(Failure(64, format!("--param {p:?}: expected NAME=VALUE")));
            };
            one.insert(k.trim().to_string(), v.to_string());
        }
        sets.push(one);
    }
    Ok(sets)
}

/// Options given with every task of a template submit.
pub struct SubmitOpts<'a> {
    /// `--key`.
    pub key: &'a str,
    /// `--idempotency-key`.
    pub idempotency_key: &'a str,
    /// `--priority`.
    pub priority: Option<i32>,
}

/// Submits one task per parameter set, to the member owning `--key` (any member without one); prints one id
/// per line. Fails (1) if any was refused.
pub async fn submit(
    cluster: &Cluster,
    app: &str,
    pipeline: &str,
    sets: Vec<HashMap<String, String>>,
    opts: &SubmitOpts<'_>,
) -> Result<(), Failure> {
    if sets.len() > 1 && !opts.idempotency_key.is_empty() {
        return Err(Failure(64, "--idempotency-key names one task: give one parameter set".into()));
    }
    let ring = cluster.ring();
    let node = match ring.owner(opts.key.as_bytes()).filter(|_| !opts.key.is_empty()) {
        Some(o) => ring.members()[o].clone(),
        None => cluster.nodes().first().cloned().unwrap_or_default(),
    };
    let client = cluster.client(&node).await.map_err(|e| Failure(1, e.to_string()))?;
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
        let results =
            client.submit_template(app, pipeline, chunk.to_vec()).await.map_err(|e| Failure(1, e.to_string()))?;
        for r in results {
            match pm_protocol::ErrorCode::try_from(r.code).unwrap_or(pm_protocol::ErrorCode::Internal) {
                pm_protocol::ErrorCode::Ok => println!("{}", r.task_id),
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
    Ok(())
}

/// One line per pipeline: `APP/PIPELINE  queue Q  params a, b (required: a)`.
pub fn human(app: &AppInfo) -> String {
    let mut out = format!("{}  version {}  {} pipeline(s)\n", app.name, app.version, app.pipelines.len());
    for p in &app.pipelines {
        let params = if p.params.is_empty() { "none".to_string() } else { p.params.join(", ") };
        let required =
            if p.required.is_empty() { String::new() } else { format!(" (required: {})", p.required.join(", ")) };
        out.push_str(&format!("  {}/{}  queue {}  params {params}{required}\n", app.name, p.name, p.queue));
    }
    out
}

pub use pm_client::json::app_json as to_json;

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
