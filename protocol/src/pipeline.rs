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
//! `key`, `priority`, `delaySeconds`, `maxAttempts`, `leaseSeconds`, `idempotencyKey`, `timeoutSeconds`, `resume`.
//! Unknown fields are refused, so a misspelt option is an error instead of being silently ignored.
//!
//! The scheduler never parses the payload: [`parse_task`] runs where a task is read (CLI, HTTP, agent) and the
//! original bytes travel as the payload.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::{DEFAULT_QUEUE, MAX_KEY_BYTES, MAX_QUEUE_NAME_BYTES};
use crate::pb::TaskSpec;

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
    /// Executor (container) that runs this step.
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
    lease_seconds: Option<f64>,
    idempotency_key: Option<String>,
    timeout_seconds: Option<f64>,
    #[serde(default)]
    resume: bool,
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
    /// Scheduling options, ready to send; `payload` is left empty.
    pub spec: TaskSpec,
}

/// Parses and validates one task document (either dialect).
pub fn parse_task(json: &[u8]) -> Result<Task, PipelineError> {
    let raw: RawTask = serde_json::from_slice(json)?;
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
        max_attempts: raw.max_attempts.unwrap_or(0),
        lease_ms: secs_to_ms(raw.lease_seconds).min(u64::from(u32::MAX)) as u32,
        idempotency_key,
        executors: executor_names(&steps),
    };
    Ok(Task { steps, timeout_seconds: raw.timeout_seconds, resume: raw.resume, spec })
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
