//! The gRPC executors' wire: the messages of the original executors' service `exec.ExecService`
//! (`proto/exec/exec.proto`), and how a failed command is said in them. The agent's client
//! ([`crate::executor::grpc`]) and `pm-agent exec --grpc-listen` ([`crate::exec_server::grpc`]) both use
//! this module and nothing else of each other.
//!
//! The service has no exit code: a failed command is `result: false` with an `errorMessage` in Go's wording,
//! as the original's `err.Error()`: `exit status N`, or `signal: NAME` for a signal. `failure_text` writes
//! it (the server) and `failure_outcome` reads it back (the client); a failure never reads as success.

use crate::command::Outcome;

/// Generated types, client and server of package `exec` (the client is generic over any transport).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("exec");
}

/// Go's names of the signals, as its `exit status` / `signal: NAME` errors spell them.
const GO_SIGNALS: [(i32, &str); 15] = [
    (1, "hangup"),
    (2, "interrupt"),
    (3, "quit"),
    (4, "illegal instruction"),
    (5, "trace/breakpoint trap"),
    (6, "aborted"),
    (7, "bus error"),
    (8, "floating point exception"),
    (9, "killed"),
    (10, "user defined signal 1"),
    (11, "segmentation fault"),
    (12, "user defined signal 2"),
    (13, "broken pipe"),
    (14, "alarm clock"),
    (15, "terminated"),
];

/// The outcome of a command the executor reported failed with `message`: `exit status N` is exit code N,
/// `signal: NAME` that signal, anything else exit code 1. Never success.
pub(crate) fn failure_outcome(message: &str) -> Outcome {
    if let Some(code) = exit_status(message).filter(|c| *c != 0) {
        return Outcome { exit_code: Some(code), ..Outcome::default() };
    }
    if let Some(signal) = signal_of(message) {
        return Outcome { signal: Some(signal), ..Outcome::default() };
    }
    Outcome { exit_code: Some(1), ..Outcome::default() }
}

fn exit_status(message: &str) -> Option<i32> {
    let (_, rest) = message.rsplit_once("exit status ")?;
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

fn signal_of(message: &str) -> Option<i32> {
    let (_, rest) = message.rsplit_once("signal: ")?;
    let name = rest.trim().trim_end_matches(" (core dumped)");
    if let Some(n) = name.strip_prefix("signal ") {
        return n.parse().ok();
    }
    GO_SIGNALS.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
}

/// How the server reports a failed command: Go's wording, as the original's `err.Error()` (`exit status
/// N`, `signal: killed`); `None` when it succeeded.
pub(crate) fn failure_text(outcome: &Outcome) -> Option<String> {
    if let Some(e) = &outcome.error {
        return Some(e.clone());
    }
    if outcome.timed_out || outcome.cancelled {
        return Some("signal: killed".into());
    }
    match (outcome.exit_code, outcome.signal) {
        (Some(0), _) => None,
        (Some(code), _) => Some(format!("exit status {code}")),
        (None, Some(sig)) => Some(match GO_SIGNALS.iter().find(|(s, _)| *s == sig) {
            Some((_, name)) => format!("signal: {name}"),
            None => format!("signal: signal {sig}"),
        }),
        (None, None) => Some("exit status -1".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use prost::Message;

    use super::*;

    #[test]
    fn the_messages_keep_the_original_field_numbers() {
        let r = pb::ExecResult { result: true, error_message: "e".into(), output: vec!["a".into(), String::new()] };
        assert_eq!(r.encode_to_vec(), [0x10, 1, 0x1a, 1, b'e', 0x22, 1, b'a', 0x22, 0]);
        assert_eq!(pb::ExecCommands { commands: vec!["x".into()] }.encode_to_vec(), [0x0a, 1, b'x']);
    }

    #[test]
    fn failures_map_to_exit_codes_and_signals_and_back() {
        let exit = |m: &str| failure_outcome(m).exit_code;
        let signal = |m: &str| failure_outcome(m).signal;
        assert_eq!(exit("exit status 3"), Some(3));
        assert_eq!(exit("step: exit status 127"), Some(127));
        // A failure never reads as success.
        assert_eq!(exit("exit status 0"), Some(1));
        assert_eq!(exit(r#"exec: "sh": executable file not found in $PATH"#), Some(1));
        assert_eq!(exit(""), Some(1));
        assert_eq!((exit("signal: killed"), signal("signal: killed")), (None, Some(9)));
        assert_eq!(signal("signal: segmentation fault (core dumped)"), Some(11));
        assert_eq!(signal("signal: signal 16"), Some(16));
        for code in [1, 2, 42, 255] {
            let text = failure_text(&Outcome { exit_code: Some(code), ..Outcome::default() }).unwrap();
            assert_eq!(text, format!("exit status {code}"));
            assert_eq!(exit(&text), Some(code));
        }
        for sig in [9, 15, 11, 16] {
            let text = failure_text(&Outcome { signal: Some(sig), ..Outcome::default() }).unwrap();
            assert_eq!(signal(&text), Some(sig), "{text}");
        }
        assert_eq!(failure_text(&Outcome { exit_code: Some(0), ..Outcome::default() }), None);
        assert_eq!(failure_text(&Outcome::error("cannot start `sh`")).as_deref(), Some("cannot start `sh`"));
    }
}
