//! The task JSON: a pipeline of steps, each naming an executor and the shell commands to run there.
//!
//! Both dialects of the original project are accepted, unchanged:
//!
//! ```json
//! {"pipeline": [{"executorName": "wget", "commands": ["wget -O /mnt/pipe/a.png http://..."]}]}
//! {"commands": [{"executorName": "wget", "commandLines": ["wget -O /mnt/pipe/a.png http://..."]}]}
//! ```
//!
//! Optional additions (all camelCase, see docs/task-format.md): per step `timeoutSeconds`, `env`, `workDir`,
//! `continueOnError`; per command either a string or `{"run": "...", "timeoutSeconds": n}`; per task `queue`,
//! `key`, `priority`, `delaySeconds`, `maxAttempts`, `retry` ([`crate::retry`]), `leaseSeconds`, `idempotencyKey`,
//! `timeoutSeconds`, `resume`;
//! and for chaining `onSuccess` / `onFailure` (task documents submitted by the scheduler when this one
//! succeeds or fails, to any queue, nested into trees), `flowId` (groups a tree), and `parent` (set by the
//! scheduler on a follow-up: the finished task's id, key, queue and state).
//! Unknown fields are refused, so a misspelt option is an error instead of being silently ignored.
//!
//! [`parse_task`] runs where a task is read (CLI, HTTP, agent) and the original bytes travel as the payload.
//! The scheduler reads a payload only for what it routes on: the executors it needs ([`required_executors`])
//! and its follow-ups ([`follow_ups`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use pm_protocol::limits::{DEFAULT_QUEUE, MAX_KEY_BYTES, MAX_QUEUE_NAME_BYTES};
use pm_protocol::pb::TaskSpec;

use crate::retry::RetryPolicy;

/// Why a task document was refused.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("invalid task JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Neither `pipeline` nor `commands` is present.
    #[error("invalid task: expected a \"pipeline\" array of steps (or the \"commands\" dialect)")]
    NoPipeline,
    /// Both dialects in one document.
    #[error("invalid task: use either \"pipeline\" or \"commands\", not both")]
    BothDialects,
    /// A field has a value outside its range.
    #[error("invalid task: {0}")]
    Invalid(String),
}

/// How a follow-up knows the task it follows (the scheduler fills it in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parent {
    /// The finished task.
    pub task_id: u64,
    /// Its key (may be empty).
    #[serde(default)]
    pub key: String,
    /// Its queue.
    #[serde(default)]
    pub queue: String,
    /// How it ended: `succeeded` or `failed` (`dead` counts as failed).
    #[serde(default)]
    pub state: String,
}

/// Most follow-ups in one `onSuccess` or `onFailure` list.
pub const MAX_FOLLOW_UPS: usize = 64;
/// Deepest nesting of follow-ups in one document.
pub const MAX_FLOW_DEPTH: usize = 16;

/// One command: a shell line, optionally with its own timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// A plain shell line, run with `sh -c`.
    Line(String),
    /// A shell line with options.
    Detailed {
        /// The shell line.
        run: String,
        /// Kill the command (and its process group) after this long.
        #[serde(default, rename = "timeoutSeconds", skip_serializing_if = "Option::is_none")]
        timeout_seconds: Option<f64>,
    },
}

impl Command {
    /// The shell line.
    pub fn line(&self) -> &str {
        match self {
            Command::Line(s) => s,
            Command::Detailed { run, .. } => run,
        }
    }
}

/// One step: commands run in order inside one executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Executor (container) that runs this step (`executor` is accepted too, as in the original templates).
    #[serde(alias = "executor")]
    pub executor_name: String,
    /// Shell lines (`commands` in the `pipeline` dialect, `commandLines` in the other).
    #[serde(alias = "commandLines")]
    pub commands: Vec<Command>,
    /// Step timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the task directory unless absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
    /// Run the remaining commands and steps even if a command of this step fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTask {
    pipeline: Option<Vec<Step>>,
    commands: Option<Vec<Step>>,
    queue: Option<String>,
    key: Option<String>,
    priority: Option<i32>,
    delay_seconds: Option<f64>,
    max_attempts: Option<u32>,
    retry: Option<RetryPolicy>,
    lease_seconds: Option<f64>,
    idempotency_key: Option<String>,
    timeout_seconds: Option<f64>,
    #[serde(default)]
    resume: bool,
    on_success: Option<Vec<serde_json::Value>>,
    on_failure: Option<Vec<serde_json::Value>>,
    flow_id: Option<String>,
    parent: Option<Parent>,
}

/// A parsed task document.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Whole-task timeout.
    pub timeout_seconds: Option<f64>,
    /// A retry skips the steps an earlier attempt completed (they are safe to skip): `resume: true`.
    pub resume: bool,
    /// How failed attempts are retried (`retry`; empty: the defaults).
    pub retry: RetryPolicy,
    /// Scheduling options, ready to send; `payload` is left empty.
    pub spec: TaskSpec,
    /// Follow-ups to submit when it succeeds.
    pub on_success: Vec<serde_json::Value>,
    /// Follow-ups to submit when it fails for good (failed, or dead-lettered).
    pub on_failure: Vec<serde_json::Value>,
    /// The flow (tree of chained tasks) it belongs to, if named.
    pub flow_id: Option<String>,
    /// The task it follows, for a follow-up.
    pub parent: Option<Parent>,
}

/// Parses and validates one task document (either dialect), its follow-ups included.
pub fn parse_task(json: &[u8]) -> Result<Task, PipelineError> {
    parse_at(serde_json::from_slice(json)?, 0)
}

fn parse_at(raw: RawTask, depth: usize) -> Result<Task, PipelineError> {
    let (on_success, on_failure) = (raw.on_success.unwrap_or_default(), raw.on_failure.unwrap_or_default());
    for (name, list) in [("onSuccess", &on_success), ("onFailure", &on_failure)] {
        if list.is_empty() {
            continue;
        }
        if depth + 1 >= MAX_FLOW_DEPTH {
            return Err(PipelineError::Invalid(format!("follow-ups nested deeper than {MAX_FLOW_DEPTH} levels")));
        }
        if list.len() > MAX_FOLLOW_UPS {
            return Err(PipelineError::Invalid(format!("{name}: more than {MAX_FOLLOW_UPS} follow-ups")));
        }
        for (i, doc) in list.iter().enumerate() {
            let child = RawTask::deserialize(doc)
                .map_err(|e| PipelineError::Invalid(format!("{name}[{i}]: {e}")))
                .and_then(|raw| parse_at(raw, depth + 1));
            if let Err(e) = child {
                let why = e.to_string();
                let why = why.strip_prefix("invalid task: ").unwrap_or(&why);
                return Err(PipelineError::Invalid(format!("{name}[{i}]: {why}")));
            }
        }
    }
    let steps = match (raw.pipeline, raw.commands) {
        (Some(p), None) | (None, Some(p)) => p,
        (Some(_), Some(_)) => return Err(PipelineError::BothDialects),
        (None, None) => return Err(PipelineError::NoPipeline),
    };
    if steps.is_empty() {
        return Err(PipelineError::Invalid("the pipeline has no steps".into()));
    }
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        if step.executor_name.trim().is_empty() {
            return Err(PipelineError::Invalid(format!("step {n}: executorName is empty")));
        }
        if step.commands.is_empty() {
            return Err(PipelineError::Invalid(format!("step {n} ({}): no commands", step.executor_name)));
        }
        check_seconds(step.timeout_seconds, &format!("step {n}: timeoutSeconds"))?;
        for c in &step.commands {
            if let Command::Detailed { timeout_seconds, .. } = c {
                check_seconds(*timeout_seconds, &format!("step {n}: command timeoutSeconds"))?;
            }
        }
    }
    check_seconds(raw.timeout_seconds, "timeoutSeconds")?;
    let retry = raw.retry.unwrap_or_default();
    retry.validate().map_err(PipelineError::Invalid)?;
    let max_attempts = match (raw.max_attempts, retry.max_attempts) {
        (Some(a), Some(b)) if a != b => {
            return Err(PipelineError::Invalid(format!("maxAttempts ({a}) and retry.maxAttempts ({b}) differ")));
        }
        (a, b) => a.or(b).unwrap_or(0),
    };
    check_seconds(raw.delay_seconds, "delaySeconds")?;
    check_seconds(raw.lease_seconds, "leaseSeconds")?;
    let queue = raw.queue.unwrap_or_default();
    validate_queue_name(&queue).map_err(PipelineError::Invalid)?;
    let key = raw.key.unwrap_or_default();
    let idempotency_key = raw.idempotency_key.unwrap_or_default();
    if key.len() > MAX_KEY_BYTES || idempotency_key.len() > MAX_KEY_BYTES {
        return Err(PipelineError::Invalid(format!("key and idempotencyKey are limited to {MAX_KEY_BYTES} bytes")));
    }
    let spec = TaskSpec {
        payload: Default::default(),
        queue,
        key,
        priority: raw.priority.unwrap_or(0),
        delay_ms: secs_to_ms(raw.delay_seconds),
        max_attempts,
        lease_ms: secs_to_ms(raw.lease_seconds).min(u64::from(u32::MAX)) as u32,
        idempotency_key,
        executors: executor_names(&steps),
    };
    let (flow_id, parent) = (raw.flow_id, raw.parent);
    if flow_id.as_ref().is_some_and(|f| f.len() > MAX_KEY_BYTES) {
        return Err(PipelineError::Invalid(format!("flowId is limited to {MAX_KEY_BYTES} bytes")));
    }
    Ok(Task {
        steps,
        timeout_seconds: raw.timeout_seconds,
        resume: raw.resume,
        retry,
        spec,
        on_success,
        on_failure,
        flow_id,
        parent,
    })
}

/// True when a payload may name follow-ups or a flow (a cheap byte search, so the scheduler parses only those).
///
/// Never a false negative: a key may also be spelt with JSON escapes (`"on\u0053uccess"` is `onSuccess` to
/// a parser), so a payload holding an escaped ASCII letter anywhere counts as "may chain" too and is parsed.
/// Serializers escape only quotes, backslashes, control and (some) non-ASCII or HTML characters, never
/// letters, so ordinary payloads stay on the byte search.
pub fn may_chain(payload: &[u8]) -> bool {
    has_follow_ups(payload)
        || (is_object(payload) && (contains(payload, b"\"flowId\"") || contains(payload, b"\"parent\"")))
}

/// True when a payload may name follow-ups (`onSuccess` / `onFailure`), literally or with escaped letters
/// (see [`may_chain`]).
pub fn has_follow_ups(payload: &[u8]) -> bool {
    is_object(payload)
        && (contains(payload, b"\"onSuccess\"") || contains(payload, b"\"onFailure\"") || escapes_a_letter(payload))
}

/// True when the payload holds a `\u00XX` escape of an ASCII letter (`A`-`Z`, `a`-`z`): the only way to spell
/// a key such as `onSuccess` without its bytes appearing (JSON has no other escape for a letter). An escaped
/// backslash followed by `u00..` also counts: a false positive costs one parse, never a missed key.
fn escapes_a_letter(payload: &[u8]) -> bool {
    memchr::memmem::find_iter(payload, b"\\u00").any(|at| {
        let hex = payload.get(at + 4..at + 6).and_then(|h| std::str::from_utf8(h).ok());
        hex.and_then(|h| u8::from_str_radix(h, 16).ok()).is_some_and(|c| c.is_ascii_alphabetic())
    })
}

fn is_object(payload: &[u8]) -> bool {
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// The follow-ups of a finished task, ready to submit: `onSuccess` if it `succeeded`, else `onFailure`. Each
/// gets `parent` (who it follows) and the parent's `flowId` (the root's task id when the root named none);
/// their own `idempotencyKey` is dropped (the scheduler submits each follow-up exactly once). The `Parent`
/// names how the parent ended.
pub fn follow_ups(payload: &[u8], parent: &Parent) -> Result<(String, Vec<TaskSpec>), PipelineError> {
    let task = parse_task(payload)?;
    let flow = task.flow_id.clone().unwrap_or_else(|| parent.task_id.to_string());
    let list = if parent.state == "succeeded" { &task.on_success } else { &task.on_failure };
    let mut specs = Vec::with_capacity(list.len());
    for doc in list {
        let mut doc = doc.clone();
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("parent".into(), serde_json::to_value(parent)?);
            obj.insert("flowId".into(), serde_json::Value::String(flow.clone()));
            obj.remove("idempotencyKey");
        }
        specs.push(task_spec_from_json(&serde_json::to_vec(&doc)?)?);
    }
    Ok((flow, specs))
}

/// The executors `steps` name, sorted, each once.
pub fn executor_names(steps: &[Step]) -> Vec<String> {
    let mut names: Vec<String> = steps.iter().map(|s| s.executor_name.trim().to_string()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The executors a task needs: `spec.executors` if given, else those its payload names when it is pipeline
/// JSON (empty when it is not).
pub fn required_executors(spec: &TaskSpec) -> Vec<String> {
    if !spec.executors.is_empty() {
        return spec.executors.clone();
    }
    if spec.payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Vec::new();
    }
    parse_task(&spec.payload).map(|t| executor_names(&t.steps)).unwrap_or_default()
}

/// Parses a task document and returns the spec to submit, with the original bytes as payload.
pub fn task_spec_from_json(json: &[u8]) -> Result<TaskSpec, PipelineError> {
    let mut task = parse_task(json)?;
    task.spec.payload = bytes::Bytes::copy_from_slice(json);
    Ok(task.spec)
}

/// Checks a queue name: empty (= default) or 1..=128 bytes of `[A-Za-z0-9._/-]`.
pub fn validate_queue_name(queue: &str) -> Result<(), String> {
    if queue.len() > MAX_QUEUE_NAME_BYTES {
        return Err(format!("queue name longer than {MAX_QUEUE_NAME_BYTES} bytes"));
    }
    if let Some(c) = queue.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))) {
        return Err(format!("queue name {queue:?} contains {c:?}; allowed: letters, digits, . _ - /"));
    }
    Ok(())
}

/// The queue a spec goes to (`default` when empty).
pub fn queue_or_default(queue: &str) -> &str {
    if queue.is_empty() {
        DEFAULT_QUEUE
    } else {
        queue
    }
}

fn check_seconds(v: Option<f64>, what: &str) -> Result<(), PipelineError> {
    match v {
        Some(s) if !s.is_finite() || !(0.0..=365.0 * 86400.0).contains(&s) => {
            Err(PipelineError::Invalid(format!("{what} must be between 0 and one year, got {s}")))
        }
        _ => Ok(()),
    }
}

fn secs_to_ms(v: Option<f64>) -> u64 {
    v.map(|s| (s * 1000.0).round() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = r#"{"pipeline":[{"executorName":"wget","commands":["wget -O /mnt/pipe/page.png http://example/page.png"]},
 {"executorName":"tesseract","commands":["for f in $(ls -v *.*); do tesseract $f ${f%.*}; done"]},
 {"executorName":"mc","commands":["mc cp --recursive /mnt/pipe/ s3/bucket/x","rm -r /mnt/pipe/*"]}]}"#;

    #[test]
    fn original_task_json_parses_unchanged() {
        let t = parse_task(ORIGINAL.as_bytes()).unwrap();
        assert_eq!(t.steps.len(), 3);
        assert_eq!(t.steps[2].executor_name, "mc");
        assert_eq!(t.steps[2].commands[1].line(), "rm -r /mnt/pipe/*");
        assert_eq!(t.spec.queue, "");
        let spec = task_spec_from_json(ORIGINAL.as_bytes()).unwrap();
        assert_eq!(&spec.payload[..], ORIGINAL.as_bytes());
        assert_eq!(spec.executors, vec!["mc", "tesseract", "wget"], "the executors it needs, for routing");
    }

    #[test]
    fn follow_ups_carry_their_parent_and_flow() {
        let doc = br#"{"pipeline":[{"executorName":"a","commands":["true"]}],"key":"k",
            "onSuccess":[{"pipeline":[{"executorName":"b","commands":["true"]}],"queue":"q2","idempotencyKey":"x",
                          "onSuccess":[{"pipeline":[{"executorName":"c","commands":["true"]}]}]},
                         {"commands":[{"executorName":"d","commandLines":["true"]}]}],
            "onFailure":[{"pipeline":[{"executorName":"e","commands":["true"]}]}]}"#;
        assert!(may_chain(doc) && !may_chain(br#"{"pipeline":[]}"#) && !may_chain(b"onSuccess"));
        let parent = Parent { task_id: 7, key: "k".into(), queue: "default".into(), state: "succeeded".into() };
        let (flow, specs) = follow_ups(doc, &parent).unwrap();
        assert_eq!((flow.as_str(), specs.len()), ("7", 2));
        assert_eq!((specs[0].queue.as_str(), specs[0].idempotency_key.as_str()), ("q2", ""));
        let child = parse_task(&specs[0].payload).unwrap();
        assert_eq!((child.parent.as_ref(), child.flow_id.as_deref()), (Some(&parent), Some("7")));
        // The grandchild is carried along, and inherits the flow when its turn comes.
        let p2 = Parent { task_id: 9, state: "succeeded".into(), ..parent.clone() };
        let (flow2, grand) = follow_ups(&specs[0].payload, &p2).unwrap();
        assert_eq!((flow2.as_str(), grand[0].executors.clone()), ("7", vec!["c".to_string()]));
        let failed = Parent { state: "failed".into(), ..parent };
        assert_eq!(follow_ups(doc, &failed).unwrap().1[0].executors, vec!["e"]);
    }

    #[test]
    fn keys_spelt_with_escaped_letters_are_found() {
        for doc in [
            &br#"{"pipeline":[],"on\u0053uccess":[]}"#[..],
            br#"{"pipeline":[],"\u006fnFailure":[]}"#,
            br#"{"pipeline":[],"\u006FnFailure":[]}"#,
            br#"{"pipeline":[],"flow\u0049d":"x"}"#,
        ] {
            assert!(may_chain(doc), "{}", String::from_utf8_lossy(doc));
        }
        assert!(has_follow_ups(br#"{"on\u0053uccess":[]}"#));
        // Escapes of anything but a letter (quotes, controls, HTML characters, non-ASCII) keep the fast path.
        for doc in [
            &br#"{"pipeline":[{"executorName":"sh","commands":["echo \u0022 \u003c \u00e9 \u0000 \n"]}]}"#[..],
            br#"{"pipeline":[],"x":"\u00"}"#,
            br#"{"pipeline":[],"x":"\u00zz"}"#,
        ] {
            assert!(!may_chain(doc), "{}", String::from_utf8_lossy(doc));
        }
        // And what the search found is what the parser reads: an escaped key is a follow-up like any other.
        let bad = br#"{"pipeline":[{"executorName":"a","commands":["true"]}],"on\u0053uccess":[{"pipeline":[]}]}"#;
        let e = parse_task(bad).unwrap_err().to_string();
        assert!(e.contains("onSuccess[0]") && e.contains("no steps"), "{e}");
        let good = br#"{"pipeline":[{"executorName":"a","commands":["true"]}],
            "on\u0053uccess":[{"pipeline":[{"executorName":"b","commands":["true"]}]}]}"#;
        let parent = Parent { task_id: 3, key: String::new(), queue: "q".into(), state: "succeeded".into() };
        assert_eq!(follow_ups(good, &parent).unwrap().1[0].executors, vec!["b"]);
    }

    #[test]
    fn bad_follow_ups_are_refused_at_submit() {
        let bad = br#"{"pipeline":[{"executorName":"a","commands":["true"]}],"onSuccess":[{"pipeline":[]}]}"#;
        let e = parse_task(bad).unwrap_err().to_string();
        assert!(e.contains("onSuccess[0]") && e.contains("no steps"), "{e}");
        let typo = br#"{"pipeline":[{"executorName":"a","commands":["true"]}],"onFailure":[{"pipelin":[]}]}"#;
        assert!(parse_task(typo).unwrap_err().to_string().contains("onFailure[0]"));
        let mut deep = r#"{"pipeline":[{"executorName":"a","commands":["true"]}]}"#.to_string();
        for _ in 0..MAX_FLOW_DEPTH {
            deep = format!(r#"{{"pipeline":[{{"executorName":"a","commands":["true"]}}],"onSuccess":[{deep}]}}"#);
        }
        assert!(parse_task(deep.as_bytes()).unwrap_err().to_string().contains("nested deeper"));
    }

    #[test]
    fn required_executors_come_from_the_spec_or_the_payload() {
        let mut spec = TaskSpec { payload: ORIGINAL.as_bytes().to_vec().into(), ..Default::default() };
        assert_eq!(required_executors(&spec), vec!["mc", "tesseract", "wget"]);
        spec.executors = vec!["x".into()];
        assert_eq!(required_executors(&spec), vec!["x"]);
        let raw = TaskSpec { payload: b"\x00 not json".to_vec().into(), ..Default::default() };
        assert!(required_executors(&raw).is_empty());
        let bad = TaskSpec { payload: b" {\"nope\":1}".to_vec().into(), ..Default::default() };
        assert!(required_executors(&bad).is_empty());
    }

    #[test]
    fn commands_dialect_parses() {
        let t = parse_task(br#"{"commands":[{"executorName":"echo","commandLines":["echo hi"]}]}"#).unwrap();
        assert_eq!(t.steps[0].commands[0].line(), "echo hi");
    }

    #[test]
    fn options_are_read() {
        let t = parse_task(
            br#"{"pipeline":[{"executorName":"sh","commands":[{"run":"sleep 1","timeoutSeconds":2}],
                "continueOnError":true,"env":{"A":"b"}}],
                "queue":"ocr","key":"k1","priority":5,"delaySeconds":1.5,"maxAttempts":3,
                "leaseSeconds":30,"idempotencyKey":"abc"}"#,
        )
        .unwrap();
        assert_eq!(t.spec.queue, "ocr");
        assert_eq!(t.spec.delay_ms, 1500);
        assert_eq!(t.spec.lease_ms, 30_000);
        assert_eq!(t.spec.max_attempts, 3);
        assert_eq!(t.spec.idempotency_key, "abc");
        assert!(t.steps[0].continue_on_error);
    }

    #[test]
    fn bad_documents_get_clear_errors() {
        for (doc, needle) in [
            (&b"not json"[..], "invalid task JSON"),
            (b"{}", "\"pipeline\""),
            (b"{\"pipeline\":[]}", "no steps"),
            (b"{\"pipeline\":[{\"executorName\":\"\",\"commands\":[\"x\"]}]}", "executorName"),
            (b"{\"pipeline\":[{\"executorName\":\"a\",\"commands\":[]}]}", "no commands"),
            (b"{\"pipeline\":[{\"executorName\":\"a\",\"commands\":[\"x\"]}],\"delaySecond\":1}", "unknown field"),
            (b"{\"pipeline\":[{\"executorName\":\"a\",\"commands\":[\"x\"]}],\"queue\":\"a b\"}", "queue name"),
        ] {
            let err = parse_task(doc).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }
}
