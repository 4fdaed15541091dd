//! `pm-scheduler` binary: parse and validate config (exit 64 on error), start the node, serve until
//! SIGTERM/SIGINT, then drain within the grace period.

use std::process::ExitCode;

use pm_scheduler::config::Config;
use pm_scheduler::process;

/// mimalloc instead of glibc malloc: the end-to-end benchmark spent ~10% of the node's CPU in malloc/free
/// (see docs/notes/hot-path.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cfg: Config = match pm_client::cli::parse_or_exit() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match process::prepare(&cfg, "pm-scheduler") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(process::run_node(cfg, process::shutdown_signal(), |_| {})) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pm-scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}
