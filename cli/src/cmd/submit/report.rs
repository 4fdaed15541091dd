//! What `pmctl submit` prints: one line per input task, in input order, whatever happened to the others.
//!
//! A line is the task's id (`ID`, or `ID  duplicate of ID` when its idempotency key matched a task submitted
//! before), or `error: ...`: `refused (CODE): ...` (the server refused it; resending will not help),
//! `not submitted: ...` (its member could not be reached: it was not enqueued), or `maybe submitted: ...`
//! (the connection broke or timed out after it was sent). With `--json` the same results are one JSON list.

use pm_client::{Error, ErrorKind};
use pm_protocol::pb::SubmitResult;
use pm_protocol::ErrorCode;
use serde_json::{json, Value};

/// Where an input task came from, for `--json`.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Its file (`-` for stdin), or empty for `--app`.
    pub file: String,
    /// Its index in the file (or among the parameter sets), from 0.
    pub index: usize,
    /// The idempotency key it was sent with (empty: none).
    pub idempotency_key: String,
}

/// One input task and what became of it.
#[derive(Debug)]
pub struct Outcome {
    /// Where it came from.
    pub origin: Origin,
    /// The server's answer, or why there is none.
    pub result: Result<SubmitResult, Error>,
}

impl Outcome {
    /// True when the task is on its queue (new, or the duplicate of one that is).
    pub fn accepted(&self) -> bool {
        matches!(&self.result, Ok(r) if r.code == ErrorCode::Ok as i32)
    }

    /// The line for people.
    pub fn line(&self) -> String {
        match &self.result {
            Ok(r) if r.code == ErrorCode::Ok as i32 && r.duplicate => {
                format!("{}  duplicate of {}", r.task_id, r.task_id)
            }
            Ok(r) if r.code == ErrorCode::Ok as i32 => r.task_id.to_string(),
            Ok(r) => format!("error: refused ({}): {}", code_name(r.code), r.message),
            Err(e) if maybe_sent(e) => format!("error: maybe submitted: {e}"),
            Err(e) => format!("error: not submitted: {e}"),
        }
    }

    /// The JSON object for scripts: `taskId` and `duplicate`, or `error`, `code` (the server's, or the
    /// client's error kind) and `maybeSubmitted`; always `index`, `idempotencyKey`, and `file` for files.
    pub fn json(&self) -> Value {
        let mut v = json!({"index": self.origin.index, "idempotencyKey": self.origin.idempotency_key});
        if !self.origin.file.is_empty() {
            v["file"] = json!(self.origin.file);
        }
        match &self.result {
            Ok(r) if r.code == ErrorCode::Ok as i32 => {
                v["taskId"] = json!(r.task_id);
                v["duplicate"] = json!(r.duplicate);
            }
            Ok(r) => {
                v["error"] = json!(r.message);
                v["code"] = json!(code_name(r.code));
                v["maybeSubmitted"] = json!(false);
            }
            Err(e) => {
                v["error"] = json!(e.to_string());
                v["code"] = json!(e.code().map_or_else(|| format!("{:?}", e.kind()), |c| c.as_str_name().to_string()));
                v["maybeSubmitted"] = json!(maybe_sent(e));
            }
        }
        v
    }
}

/// True when the request carrying the task may have been applied (the connection broke or timed out after it
/// was sent).
fn maybe_sent(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Disconnected | ErrorKind::Timeout)
}

fn code_name(code: i32) -> &'static str {
    ErrorCode::try_from(code).unwrap_or(ErrorCode::Internal).as_str_name()
}

/// Prints the outcomes (lines, or one JSON list); returns how many tasks are not on their queue.
pub fn print(outcomes: &[Outcome], json: bool) -> usize {
    if json {
        println!("{}", Value::Array(outcomes.iter().map(Outcome::json).collect()));
    } else {
        for o in outcomes {
            println!("{}", o.line());
        }
    }
    outcomes.iter().filter(|o| !o.accepted()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: Result<SubmitResult, Error>) -> Outcome {
        Outcome { origin: Origin { file: "t.json".into(), index: 2, idempotency_key: "k".into() }, result }
    }

    #[test]
    fn each_outcome_has_its_line_and_object() {
        let ok = outcome(Ok(SubmitResult { task_id: 7, ..Default::default() }));
        assert_eq!((ok.line(), ok.accepted()), ("7".to_string(), true));
        assert_eq!(
            ok.json(),
            json!({"index": 2, "file": "t.json", "idempotencyKey": "k", "taskId": 7, "duplicate": false})
        );
        let dup = outcome(Ok(SubmitResult { task_id: 7, duplicate: true, ..Default::default() }));
        assert_eq!(dup.line(), "7  duplicate of 7");
        let refused = outcome(Ok(SubmitResult {
            code: ErrorCode::InvalidTask as i32,
            message: "bad queue".into(),
            ..Default::default()
        }));
        assert_eq!(refused.line(), "error: refused (INVALID_TASK): bad queue");
        assert!(!refused.accepted());
        let down = outcome(Err(Error::new(ErrorKind::Connect, "cannot connect to b")));
        assert_eq!(down.line(), "error: not submitted: Connect: cannot connect to b");
        assert_eq!(
            (down.json()["code"].clone(), down.json()["maybeSubmitted"].clone()),
            (json!("Connect"), json!(false))
        );
        let broke = outcome(Err(Error::new(ErrorKind::Disconnected, "connection lost")));
        assert!(broke.line().starts_with("error: maybe submitted: "), "{}", broke.line());
        assert_eq!(broke.json()["maybeSubmitted"], true);
    }
}
