//! `pm-scheduler` binary: parse and validate config (exit 64 on error), start the node, serve until
//! SIGTERM/SIGINT, then drain within the grace period.

use std::process::ExitCode;

use pm_scheduler::config::Config;
use pm_scheduler::node::NodeError;
use pm_scheduler::process;
use pm_scheduler::store::StoreError;

/// mimalloc instead of glibc malloc: the end-to-end benchmark spent ~10% of the node's CPU in malloc/free
/// (see docs/notes/hot-path.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "repair") {
        return pm_scheduler::repair::main(args);
    }
    let cfg = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match process::prepare(&cfg, "pm-scheduler") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let data = cfg.data.clone();
    match rt.block_on(process::run_node(cfg, process::shutdown_signal(), |_| {})) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pm-scheduler: {e:#}");
            let corrupt = e.chain().any(|c| {
                matches!(c.downcast_ref(), Some(StoreError::Corrupt { .. }))
                    || matches!(c.downcast_ref(), Some(NodeError::Store(StoreError::Corrupt { .. })))
            });
            if corrupt {
                eprintln!(
                    "pm-scheduler: to start again keeping every record before the damage: stop, back up {}, then \
                     `pm-scheduler repair --data {}` (docs/operations.md)",
                    data.display(),
                    data.display()
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// The flags, or how to exit (as `pm_client::cli::parse_or_exit`), with `--help` naming `repair`.
fn parse() -> Result<Config, ExitCode> {
    use clap::CommandFactory;
    let cmd = Config::command().after_help(
        "A node refuses to start on a log whose synced records are damaged (it names the file and offset). To \
         start again on purpose, keeping every record before the damage: `pm-scheduler repair --data DIR` (see \
         `pm-scheduler repair --help` and docs/operations.md).",
    );
    pm_client::cli::parse_command_or_exit(cmd)
}
