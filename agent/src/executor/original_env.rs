//! The original agent's variables, agent side: `PIPELINE_AGENT__EXECUTORS__<i>__NAME` and `__TARGET` name
//! the original deployment's gRPC executors, and `pm-agent run` takes them when `--executors` is not given
//! (see [`super::Executors::from_args_or_env`]), so an agent's environment works unchanged.

use std::collections::BTreeMap;
use std::ffi::OsString;

use super::grpc::{host_port, unix_path, GrpcAddr, GrpcExecutorError};

/// Prefix of the original agent's executor variables: `PIPELINE_AGENT__EXECUTORS__<i>__NAME` and
/// `PIPELINE_AGENT__EXECUTORS__<i>__TARGET`.
pub const ORIGINAL_ENV_PREFIX: &str = "PIPELINE_AGENT__EXECUTORS__";

/// Parses a `PIPELINE_AGENT__EXECUTORS__<i>__TARGET` as the original agent took it: `HOST:PORT` or
/// `http://HOST:PORT` (also `grpc://`, `dns:///HOST:PORT`, and a unix socket as `unix:///path.sock` or
/// `grpc+unix:///path.sock`).
pub fn parse_original_target(target: &str) -> Result<GrpcAddr, GrpcExecutorError> {
    let t = target.trim();
    if t.starts_with("https://") {
        return Err(GrpcExecutorError::Tls(t.to_string()));
    }
    let bad = || GrpcExecutorError::BadTarget(t.to_string());
    if let Some(path) = t.strip_prefix("grpc+unix://").or_else(|| t.strip_prefix("unix://")) {
        return unix_path(path).ok_or_else(bad);
    }
    let rest = ["http://", "grpc://", "dns:///"].iter().find_map(|p| t.strip_prefix(p)).unwrap_or(t);
    host_port(rest).ok_or_else(bad)
}

/// The executors the original agent's variables name, in index order: every
/// `PIPELINE_AGENT__EXECUTORS__<i>__NAME` with its `PIPELINE_AGENT__EXECUTORS__<i>__TARGET` (see
/// [`parse_original_target`]). Keys are matched without regard to case, as the original agent's configuration
/// did; other keys are ignored. Empty when there are none.
pub fn original_executors(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, GrpcAddr)>, GrpcExecutorError> {
    let mut slots: BTreeMap<u32, (Option<String>, Option<String>)> = BTreeMap::new();
    for (key, value) in vars {
        let Some(key) = key.to_str() else { continue };
        let upper = key.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(ORIGINAL_ENV_PREFIX) else { continue };
        let Some((index, field)) = rest.split_once("__") else { continue };
        let bad = |why: &str| GrpcExecutorError::BadEnv { var: key.to_string(), why: why.to_string() };
        if field != "NAME" && field != "TARGET" {
            continue;
        }
        let index: u32 = index.parse().map_err(|_| bad("the index after EXECUTORS__ must be a number"))?;
        let value = value.into_string().map_err(|_| bad("not valid UTF-8"))?;
        let slot = slots.entry(index).or_default();
        if field == "NAME" {
            slot.0 = Some(value);
        } else {
            slot.1 = Some(value);
        }
    }
    let mut out: Vec<(String, GrpcAddr)> = Vec::with_capacity(slots.len());
    for (index, (name, target)) in slots {
        let var = |field: &str| format!("{ORIGINAL_ENV_PREFIX}{index}__{field}");
        let missing = |field: &str, other: &str| GrpcExecutorError::BadEnv {
            var: var(field),
            why: format!("missing or empty, but {} is set", var(other)),
        };
        let name =
            name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).ok_or_else(|| missing("NAME", "TARGET"))?;
        let target = target.filter(|t| !t.trim().is_empty()).ok_or_else(|| missing("TARGET", "NAME"))?;
        if name.contains([',', '=']) || name.chars().any(char::is_whitespace) {
            return Err(GrpcExecutorError::BadEnv {
                var: var("NAME"),
                why: format!("`{name}` is not an executor name (no spaces, `,` or `=`)"),
            });
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(GrpcExecutorError::BadEnv {
                var: var("NAME"),
                why: format!("executor `{name}` is named twice"),
            });
        }
        let addr = parse_original_target(&target)
            .map_err(|e| GrpcExecutorError::BadEnv { var: var("TARGET"), why: e.to_string() })?;
        out.push((name, addr));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tcp(host: &str, port: u16) -> GrpcAddr {
        GrpcAddr::Tcp { host: host.into(), port }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
    }

    #[test]
    fn original_targets_take_the_forms_the_original_agent_took() {
        assert_eq!(parse_original_target("127.0.0.1:50051").unwrap(), tcp("127.0.0.1", 50051));
        assert_eq!(parse_original_target("http://127.0.0.1:50052").unwrap(), tcp("127.0.0.1", 50052));
        assert_eq!(parse_original_target("dns:///localhost:50053").unwrap(), tcp("localhost", 50053));
        assert_eq!(parse_original_target("grpc://h:1").unwrap(), tcp("h", 1));
        assert_eq!(parse_original_target("unix:///x/y.sock").unwrap(), GrpcAddr::Unix("/x/y.sock".into()));
        assert!(matches!(parse_original_target("https://h:1"), Err(GrpcExecutorError::Tls(_))));
        assert!(matches!(parse_original_target("h"), Err(GrpcExecutorError::BadTarget(_))));
    }

    #[test]
    fn the_original_agents_variables_name_grpc_executors_in_index_order() {
        let vars = env(&[
            ("PATH", "/bin"),
            ("PIPELINE_AGENT__NAME", "OcrAgent"),
            ("PIPELINE_AGENT__EXECUTORS__10__TARGET", "127.0.0.1:50053"),
            ("PIPELINE_AGENT__EXECUTORS__10__NAME", "mc"),
            ("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget"),
            ("PIPELINE_AGENT__EXECUTORS__0__TARGET", "127.0.0.1:50051"),
            ("pipeline_agent__executors__2__name", "tesseract"),
            ("Pipeline_Agent__Executors__2__Target", "http://127.0.0.1:50052"),
            ("PIPELINE_AGENT__EXECUTORS__2__TIMEOUT", "ignored"),
        ]);
        let got = original_executors(vars).unwrap();
        assert_eq!(
            got,
            vec![
                ("wget".to_string(), tcp("127.0.0.1", 50051)),
                ("tesseract".to_string(), tcp("127.0.0.1", 50052)),
                ("mc".to_string(), tcp("127.0.0.1", 50053)),
            ]
        );
        assert!(original_executors(env(&[("HOME", "/root")])).unwrap().is_empty());
    }

    #[test]
    fn bad_original_variables_are_refused_with_the_variable_named() {
        let why = |pairs: &[(&str, &str)]| original_executors(env(pairs)).unwrap_err().to_string();
        let w = why(&[("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget")]);
        assert!(w.starts_with("PIPELINE_AGENT__EXECUTORS__0__TARGET: missing"), "{w}");
        let w = why(&[("PIPELINE_AGENT__EXECUTORS__3__TARGET", "127.0.0.1:1")]);
        assert!(w.starts_with("PIPELINE_AGENT__EXECUTORS__3__NAME: missing"), "{w}");
        let w = why(&[("PIPELINE_AGENT__EXECUTORS__x__NAME", "wget")]);
        assert!(w.contains("must be a number"), "{w}");
        let w =
            why(&[("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget"), ("PIPELINE_AGENT__EXECUTORS__0__TARGET", "nowhere")]);
        assert!(w.starts_with("PIPELINE_AGENT__EXECUTORS__0__TARGET: `nowhere`"), "{w}");
        let w = why(&[
            ("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget"),
            ("PIPELINE_AGENT__EXECUTORS__0__TARGET", "h:1"),
            ("PIPELINE_AGENT__EXECUTORS__1__NAME", "wget"),
            ("PIPELINE_AGENT__EXECUTORS__1__TARGET", "h:2"),
        ]);
        assert!(w.contains("named twice"), "{w}");
        let w = why(&[("PIPELINE_AGENT__EXECUTORS__0__NAME", "a,b"), ("PIPELINE_AGENT__EXECUTORS__0__TARGET", "h:1")]);
        assert!(w.contains("not an executor name"), "{w}");
    }
}
