//! Command-line conventions shared by every binary of the project (`pm-scheduler`, `pm-agent`, `pm`,
//! `pmctl`, `pm-loadtest`): `--help` and `--version` exit 0, a bad flag exits 64 (EX_USAGE) with clap's
//! message, and every binary answers `completions SHELL` and `man [--dir DIR]` from its own clap definition
//! (see [`docs`]), so what a shell completes and what a man page says never drift from the flags.

pub mod docs;

use std::process::ExitCode;

use clap::{ArgMatches, Command, FromArgMatches};

/// Exit status for bad flags or configuration (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Parses the command line into `T`, or says how the process must exit (after printing what clap printed,
/// or the completions or man page asked for).
pub fn parse_or_exit<T: clap::Parser>() -> Result<T, ExitCode> {
    parse_command_or_exit(T::command())
}

/// As [`parse_or_exit`], for a binary that adjusts its [`Command`] first (its after-help, say).
pub fn parse_command_or_exit<T: FromArgMatches>(cmd: Command) -> Result<T, ExitCode> {
    let cmd = docs::with_doc_commands(cmd);
    let matches = cmd.clone().try_get_matches().map_err(clap_exit)?;
    if let Some(code) = docs::serve(cmd, &matches) {
        return Err(code);
    }
    from_matches(&matches)
}

/// `T` from parsed matches, or how to exit.
fn from_matches<T: FromArgMatches>(matches: &ArgMatches) -> Result<T, ExitCode> {
    T::from_arg_matches(matches).map_err(clap_exit)
}

/// Prints what clap has to say and returns the exit status for it: 0 for `--help`/`--version`, else 64.
fn clap_exit(e: clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}
