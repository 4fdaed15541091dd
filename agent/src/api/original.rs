//! The original agent's HTTP API, so that its clients work unchanged: `POST /api/v1/Pipeline`.
//!
//! Its clients send `{"commands": [{"executorName", "commandLines"}]}` (our parser takes that dialect, and
//! ours) and read `{"result", "message", "output"}` back. The original's routing ignored case, so the path
//! matches in any case (`/api/v1/Pipeline`, `/api/v1/pipeline`, ...). Its answers, kept here:
//!
//! - `400` with the text `Need to pass at least one command` when the body names no step;
//! - `200` with `{"result": true, "message": null, "output": {"1:wget": [stdout of each command line], ...}}`
//!   (key `"<step from 1>:<executorName>"`) when every step succeeded;
//! - `200` with `{"result": false, "message": "Executor NAME failed to execute the command: WHY", "output":
//!   null}` when a step failed: the run stops at the first failed step, and its output is not returned.
//!
//! What differs: each command's output is its last `--tail-bytes` (4 KiB), and the run has our limits (its
//! directory, timeouts, `--api-max-runs`). `POST /v1/run` keeps our own result shape.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::runner::TaskResult;

/// The original's route, lower case.
const PATH: &str = "/api/v1/pipeline";

/// The original's answer to an empty pipeline.
pub(super) const NO_COMMANDS: &str = "Need to pass at least one command";

/// True when `path` is the original's route in any case, with or without a trailing `/`.
pub(super) fn is_original_path(path: &str) -> bool {
    path.strip_suffix('/').unwrap_or(path).eq_ignore_ascii_case(PATH)
}

/// True when the body is a JSON object with at least one step (`commands`, or our `pipeline`). Anything else
/// is the original's `400`; what is there is then checked by the task parser.
pub(super) fn has_steps(body: &[u8]) -> bool {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else { return false };
    ["commands", "pipeline"].iter().any(|k| doc.get(*k).and_then(Value::as_array).is_some_and(|a| !a.is_empty()))
}

/// The original's `PipelineExecutionResult`.
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct Answer {
    /// True only if every step succeeded.
    result: bool,
    /// On failure: which executor failed, and why.
    message: Option<String>,
    /// On success: the stdout of each command line, per `"<step>:<executorName>"`.
    output: Option<BTreeMap<String, Vec<String>>>,
}

impl Answer {
    /// The original's answer for what the run did.
    pub(super) fn of(r: &TaskResult) -> Answer {
        if !r.ok {
            let why = r.error.clone().unwrap_or_else(|| "the run failed".into());
            let message = match r.steps.last() {
                Some(step) => format!("Executor {} failed to execute the command: {why}", step.executor),
                None => why,
            };
            return Answer { result: false, message: Some(message), output: None };
        }
        let output = r
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = format!("{}:{}", i + 1 + r.resumed_steps, s.executor);
                (key, s.commands.iter().map(|c| c.stdout_tail.clone()).collect())
            })
            .collect();
        Answer { result: true, message: None, output: Some(output) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{CommandResult, StepResult};

    fn cmd(out: &str, exit: i32) -> CommandResult {
        CommandResult {
            run: "x".into(),
            exit_code: Some(exit),
            signal: None,
            timed_out: false,
            duration_ms: 1,
            stdout_tail: out.into(),
            stderr_tail: String::new(),
            error: None,
        }
    }

    #[test]
    fn the_path_matches_in_any_case_and_nothing_else_does() {
        for p in ["/api/v1/Pipeline", "/api/v1/pipeline", "/API/V1/PIPELINE", "/api/v1/Pipeline/"] {
            assert!(is_original_path(p), "{p}");
        }
        for p in ["/api/v1/pipelines", "/v1/run", "/api/v1/Pipeline//", "/api/v2/Pipeline"] {
            assert!(!is_original_path(p), "{p}");
        }
    }

    #[test]
    fn an_empty_pipeline_is_the_originals_400() {
        assert!(has_steps(br#"{"commands":[{"executorName":"sh","commandLines":["true"]}]}"#));
        assert!(has_steps(br#"{"pipeline":[{"executorName":"sh","commands":["true"]}]}"#));
        for body in [&br#"{"commands":[]}"#[..], b"{}", b"[]", b"not json", br#"{"commands":{}}"#] {
            assert!(!has_steps(body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn answers_have_the_originals_shape() {
        let ok = TaskResult {
            ok: true,
            error: None,
            resumed_steps: 0,
            steps: vec![
                StepResult { executor: "wget".into(), commands: vec![cmd("a\n", 0), cmd("b\n", 0)] },
                StepResult { executor: "cat".into(), commands: vec![cmd("c\n", 0)] },
            ],
        };
        let v = serde_json::to_value(Answer::of(&ok)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"result": true, "message": null, "output": {"1:wget": ["a\n", "b\n"], "2:cat": ["c\n"]}})
        );
        let failed = TaskResult {
            ok: false,
            error: Some("step 2 (cat): `x` exited with 1".into()),
            resumed_steps: 0,
            steps: vec![
                StepResult { executor: "wget".into(), commands: vec![cmd("a\n", 0)] },
                StepResult { executor: "cat".into(), commands: vec![cmd("", 1)] },
            ],
        };
        let v = serde_json::to_value(Answer::of(&failed)).unwrap();
        assert_eq!(v["result"], false);
        assert_eq!(v["message"], "Executor cat failed to execute the command: step 2 (cat): `x` exited with 1");
        assert_eq!(v["output"], Value::Null, "the original returns no output on failure");
    }
}
