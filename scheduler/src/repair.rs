//! `pm-scheduler repair`: start again on purpose after the node refused to start on a damaged log.
//!
//! The node never skips damaged durable records by itself: it refuses to start and names the file and
//! offset. This command is the deliberate way past that (docs/operations.md, "A start refused for
//! corruption"): it takes the data directory's lock (the node must be stopped), says what is damaged and
//! what a repair sets aside, asks (unless `--yes`), then keeps every record before the damage and moves the
//! rest into `DATA/wal-repair-<unix time>/` (see [`crate::store::wal::repair`]). Exit codes: 0 repaired or
//! nothing to repair, 1 failed or not confirmed, 64 bad usage (or no terminal to ask on, without `--yes`).

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::store::wal::repair::{self, Damage};

/// Exit code of bad usage.
const EXIT_USAGE: u8 = pm_client::cli::EXIT_USAGE;

/// Repair a write-ahead log that refuses to start: keep every record before the damage, set the rest aside.
///
/// Stop the node and back up its data directory first. The damaged segment is copied, then cut at the
/// damage; later segments are moved; both into DATA/wal-repair-<unix time>/. Tasks submitted in the records
/// set aside are lost; tasks acked, finished or cancelled there run again. See docs/operations.md.
#[derive(Debug, Parser)]
#[command(name = "pm-scheduler repair", version)]
pub struct RepairArgs {
    /// The node's data directory (its log is DATA/wal).
    #[arg(long, env = "PM_DATA", default_value = "./pm-data")]
    pub data: PathBuf,
    /// Repair without asking for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// Parses `pm-scheduler repair ARGS...` (the arguments after `repair`) and runs it.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match RepairArgs::try_parse_from(std::iter::once(OsString::from("pm-scheduler repair")).chain(args)) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("pm-scheduler repair: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(args: &RepairArgs) -> Result<(), (u8, String)> {
    let failed = |e: &dyn std::fmt::Display| (1, e.to_string());
    if !args.data.is_dir() {
        return Err((EXIT_USAGE, format!("--data {}: no such directory", args.data.display())));
    }
    let _lock = crate::node::lock_dir(&args.data).map_err(|e| failed(&e))?;
    let wal = args.data.join("wal");
    if !wal.is_dir() {
        return Err((
            1,
            format!("{} holds no write-ahead log (the sled store cannot be repaired here)", wal.display()),
        ));
    }
    let Some(damage) = repair::inspect(&wal).map_err(|e| failed(&e))? else {
        println!("the log in {} opens: nothing to repair", wal.display());
        return Ok(());
    };
    let backup = args
        .data
        .join(format!("wal-repair-{}", SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())));
    print!("{}", describe(&damage, &backup));
    if damage.oldest_header {
        return Err((1, repair::RepairError::NothingToKeep(damage.path).to_string()));
    }
    if !args.yes {
        confirm()?;
    }
    repair::repair(&wal, &damage, &backup).map_err(|e| failed(&e))?;
    println!("repaired: the node starts with the records before offset {} of {}", damage.offset, damage.path.display());
    println!("set aside in {}", backup.display());
    Ok(())
}

/// What is damaged, what a repair sets aside and what that loses.
fn describe(d: &Damage, backup: &std::path::Path) -> String {
    let mut s =
        format!("the log does not open: corrupt record in {} at offset {}: {}\n", d.path.display(), d.offset, d.detail);
    s.push_str("a repair keeps every record before that point and sets aside, into ");
    s.push_str(&format!("{}:\n", backup.display()));
    if d.offset < crate::store::wal::repair::HEADER_BYTES {
        s.push_str(&format!("  - {} whole (its header is damaged)\n", d.path.display()));
    } else {
        s.push_str(&format!(
            "  - {} from offset {} ({} bytes of records; the file is copied first)\n",
            d.path.display(),
            d.offset,
            d.tail_bytes
        ));
    }
    for p in &d.later {
        s.push_str(&format!("  - {} whole (it follows the damage)\n", p.display()));
    }
    s.push_str(
        "lost: the tasks submitted in those records (their producers were told they were stored); the acks, \
         outcomes and cancellations recorded there are forgotten, so those tasks run again\n",
    );
    s
}

/// Asks on the terminal; anything but `y`/`yes` refuses. Without a terminal, refuses (use --yes).
fn confirm() -> Result<(), (u8, String)> {
    if !std::io::stdin().is_terminal() {
        return Err((EXIT_USAGE, "not confirmed: stdin is not a terminal (give --yes); nothing changed".into()));
    }
    print!("repair? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| (1, e.to_string()))?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err((1, "not confirmed: nothing changed".into())),
    }
}
