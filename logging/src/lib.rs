//! The log setup of every pipeline-manager binary (`pm-scheduler`, `pm-agent`, `pm`, `pm-loadtest`): one line per
//! event on stderr, as text or as JSON ([`LogFormat`], the `--log-format` flag), filtered by `RUST_LOG`.
//!
//! Text has ANSI colours only when stderr is a terminal: a log redirected to a file or collected from a
//! container holds plain text. JSON is one object per line (`timestamp`, `level`, `fields`, `target`), for log
//! collectors.

use std::io::IsTerminal;

use tracing_subscriber::prelude::*;

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `--log-format` for a binary's command line.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct LogArgs {
    /// Log format on stderr: `text`, or `json` (one object per line). The level comes from RUST_LOG.
    #[arg(long, env = "PM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Installs the process's logger: `format` on stderr, events filtered by `RUST_LOG`, else `default_level` (a
/// level, or `target=level,...`). Does nothing if a logger is already installed.
pub fn init(format: LogFormat, default_level: &str) {
    let ansi = std::io::stderr().is_terminal();
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).log_internal_errors(false)
    });
    // `log_internal_errors(false)`: a failed log write (stderr on a full disk) must not panic via eprintln!.
    let json = (format == LogFormat::Json)
        .then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).log_internal_errors(false));
    let _ = tracing_subscriber::registry().with(filter(default_level)).with(text).with(json).try_init();
}

#[cfg(feature = "env-filter")]
fn filter(default_level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
}

#[cfg(not(feature = "env-filter"))]
fn filter(default_level: &str) -> tracing_subscriber::filter::Targets {
    let parse = |s: &str| s.parse::<tracing_subscriber::filter::Targets>().ok();
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| parse(&s))
        .or_else(|| parse(default_level))
        .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO))
}
