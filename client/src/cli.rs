//! Command-line conventions shared by every binary of the project (`pm-scheduler`, `pm-agent`, `pm`,
//! `pmctl`): `--help` and `--version` exit 0, a bad flag exits 64 (EX_USAGE) with clap's message.

use std::process::ExitCode;

/// Exit status for bad flags or configuration (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Parses the command line into `T`, or says how the process must exit (after printing what clap printed).
pub fn parse_or_exit<T: clap::Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}
