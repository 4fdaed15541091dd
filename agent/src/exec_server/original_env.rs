//! The original executor's variables, executor side: the `COMMAND_EXECUTOR_*` environment the original
//! `command-executor` was configured by, which `pm-agent exec` honours as defaults of its flags, so a utility
//! container's environment works unchanged.

/// The executor's name (`--name`).
pub const NAME: &str = "COMMAND_EXECUTOR_NAME";
/// The gRPC address, e.g. `:50051` (`--grpc-listen`).
pub const GRPC_PORT: &str = "COMMAND_EXECUTOR_SERVER_GRPC_PORT";
/// A boolean: run commands with `bash` instead of `sh` (`--grpc-shell`).
pub const DEBUG: &str = "COMMAND_EXECUTOR_DEBUG";

/// Parses a boolean as the original executor's configuration did (Go's `strconv.ParseBool`; empty is false).
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_parse_as_go_does() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["", "0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_go_bool("yes"), None);
    }
}
