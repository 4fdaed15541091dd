//! The agent's watcher: one small `sh` process per agent that kills the process groups of its running
//! commands when the agent dies, however it dies (`kill -9` included), with no `unsafe` and no crate.
//!
//! The agent cannot clean up after a `SIGKILL`, and `PR_SET_PDEATHSIG` needs a `pre_exec` hook (`unsafe`). So a
//! process outside the agent does it: [`SCRIPT`] reads lines from a pipe whose only writer is the agent,
//! `+PGID` when a command's group starts and `-PGID` once it was killed, and keeps the set of live groups.
//! The kernel closes the pipe when the agent dies; the watcher then reads end-of-file and kills every group
//! still in its set. It sits in a process group of its own, so a terminal's Ctrl-C does not reach it.
//!
//! One process for the whole agent, not one per command: a command costs two short writes here and no fork.
//! The window between a command's `fork` and its `+PGID` line is closed by a gate in the command's own shell
//! ([`GATE`]): the command waits for a line on its stdin, which the agent writes only once the group is
//! registered. If the agent dies in between, the command reads end-of-file and exits before running anything.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// The watcher: a set of live groups as a space-separated string (` 12 345 `), `+N` adds, `-N` removes; at
/// end-of-file, `kill -9 -N` for each group left.
pub const SCRIPT: &str = r#"gs=' '
while IFS= read -r l; do
  case $l in
    +*) gs="$gs${l#+} " ;;
    -*) g=${l#-}; case $gs in *" $g "*) gs="${gs%% $g *} ${gs#* $g }" ;; esac ;;
  esac
done
for g in $gs; do kill -9 -"$g"; done"#;

/// Put before each command line (`SHELL -c "GATE LINE"`): waits for the agent's go on stdin (a line it writes
/// once the group is registered with the watcher), then gives the command `/dev/null` as its stdin. At
/// end-of-file instead of the go (the agent died first) the shell exits at once. POSIX, so `sh`, `dash`,
/// `bash`, `ash` and `zsh` all take it; on one line with the command, so a syntax error names line 1 as before.
pub const GATE: &str = "read -r _ || exit 125; exec </dev/null; ";

/// The line the agent writes to a command's stdin to let it run.
pub const GO: &[u8] = b"\n";

/// One watcher process and the groups it was told of. The agent has one, [`global`]; tests make their own.
pub struct Watcher {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The running watcher and the write end of its pipe; `None` before the first command or after it died.
    process: Option<(Child, ChildStdin)>,
    /// The live groups, told again to a new watcher if the old one died.
    groups: BTreeSet<u32>,
    /// Set once a watcher could not be started, so that it is said once and not per command.
    warned: bool,
}

static GLOBAL: Watcher = Watcher::new();

/// The agent's own watcher, started by its first command.
pub fn global() -> &'static Watcher {
    &GLOBAL
}

impl Watcher {
    /// A watcher not started yet: it starts with the first group it is told of.
    pub const fn new() -> Self {
        Self { inner: Mutex::new(Inner { process: None, groups: BTreeSet::new(), warned: false }) }
    }

    /// Tells the watcher of a new process group; the returned guard kills the group and tells the watcher it is
    /// gone when dropped. If no watcher can run (no `sh`), the command still runs, unwatched, with a warning.
    pub fn watch(&self, pgid: u32) -> Watched<'_> {
        self.tell(Some(pgid), None);
        Watched { watcher: self, pgid }
    }

    /// Adds `add` and removes `remove` from the set, and writes the lines; starts (or restarts) the watcher when
    /// it is not running, and tells a new one every live group.
    fn tell(&self, add: Option<u32>, remove: Option<u32>) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut line = String::new();
        if let Some(g) = add {
            inner.groups.insert(g);
            line.push_str(&format!("+{g}\n"));
        }
        if let Some(g) = remove {
            inner.groups.remove(&g);
            line.push_str(&format!("-{g}\n"));
        }
        let sent = match inner.process.as_mut() {
            Some((_, pipe)) => pipe.write_all(line.as_bytes()).is_ok(),
            None => false,
        };
        if sent || (inner.groups.is_empty() && inner.process.is_none()) {
            return;
        }
        // Not running, or dead (the write failed): reap the old one and start another with the whole set.
        if let Some((mut child, _)) = inner.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        match spawn() {
            Ok((child, mut pipe)) => {
                let all: String = inner.groups.iter().map(|g| format!("+{g}\n")).collect();
                if pipe.write_all(all.as_bytes()).is_ok() {
                    inner.process = Some((child, pipe));
                }
            }
            Err(e) if !inner.warned => {
                inner.warned = true;
                tracing::warn!(error = %e, "cannot start the watcher (`sh`): commands left running will outlive a killed agent");
            }
            Err(_) => {}
        }
    }

    /// Whether a watcher process is running (for tests).
    #[cfg(test)]
    fn running(&self) -> bool {
        self.inner.lock().is_ok_and(|i| i.process.is_some())
    }

    /// Closes the watcher's pipe as the agent's death would (for tests): it kills the groups left.
    #[cfg(test)]
    fn close(&self) -> Option<Child> {
        self.inner.lock().ok()?.process.take().map(|(child, _pipe)| child)
    }
}

impl Default for Watcher {
    fn default() -> Self {
        Self::new()
    }
}

/// A registered process group: dropping it kills the group, then tells the watcher it is gone (in that order:
/// the group id cannot be reused by another process while it is still listed).
pub struct Watched<'w> {
    watcher: &'w Watcher,
    pgid: u32,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        kill_group(self.pgid);
        self.watcher.tell(None, Some(self.pgid));
    }
}

/// SIGKILLs the process group `pgid`; ESRCH (already gone) is the common case and fine.
pub fn kill_group(pgid: u32) {
    let Some(pid) = i32::try_from(pgid).ok().and_then(rustix::process::Pid::from_raw) else { return };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

/// Starts `sh -c SCRIPT` as the leader of a new process group, reading the pipe returned.
fn spawn() -> std::io::Result<(Child, ChildStdin)> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT, "pm-watcher"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let pipe = child.stdin.take().ok_or_else(|| std::io::Error::other("the watcher has no stdin"))?;
    Ok((child, pipe))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::time::Duration;

    use super::*;

    fn sleeper() -> Child {
        Command::new("sleep").arg("60").process_group(0).spawn().unwrap()
    }

    fn gone_within(child: &mut Child, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// When the writer's end closes (the agent died), every group still listed is killed, and a group that was
    /// told gone is left alone.
    #[test]
    fn a_closed_pipe_kills_the_listed_groups_only() {
        let w = Watcher::new();
        let (mut listed, mut released) = (sleeper(), sleeper());
        let keep = w.watch(listed.id());
        // Told gone without the guard's kill: as if the group ended and its id could be anybody's now.
        w.tell(Some(released.id()), None);
        w.tell(None, Some(released.id()));
        assert!(w.running());
        std::mem::forget(keep);
        let mut watcher = w.close().unwrap();
        assert!(watcher.wait().unwrap().success());
        assert!(gone_within(&mut listed, Duration::from_secs(5)), "the listed group outlived the agent");
        assert_eq!(listed.wait().unwrap().signal(), Some(9));
        assert!(!gone_within(&mut released, Duration::from_millis(300)), "a group told gone was killed");
        released.kill().unwrap();
        released.wait().unwrap();
    }

    /// The guard kills its group when dropped.
    #[test]
    fn dropping_the_guard_kills_the_group() {
        let w = Watcher::new();
        let mut child = sleeper();
        drop(w.watch(child.id()));
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }

    /// A watcher that died is replaced by the next command, and told every group still live.
    #[test]
    fn a_dead_watcher_is_replaced_with_the_whole_set() {
        let w = Watcher::new();
        let mut first = sleeper();
        let keep_first = w.watch(first.id());
        let mut old = w.close().unwrap();
        old.kill().unwrap();
        old.wait().unwrap();
        // The next command finds no watcher and starts one, which must know of the first group as well.
        let mut second = sleeper();
        let keep_second = w.watch(second.id());
        assert!(w.running());
        std::mem::forget((keep_first, keep_second));
        let mut watcher = w.close().unwrap();
        watcher.wait().unwrap();
        assert!(gone_within(&mut first, Duration::from_secs(5)), "the group told to the dead watcher survived");
        assert!(gone_within(&mut second, Duration::from_secs(5)));
    }

    /// A command whose gate gets end-of-file instead of the go runs nothing.
    #[test]
    fn a_gated_command_runs_nothing_without_the_go() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let line = format!("{GATE}touch {}", marker.display());
        let mut child = Command::new("sh").args(["-c", &line]).stdin(Stdio::piped()).spawn().unwrap();
        drop(child.stdin.take());
        assert_eq!(child.wait().unwrap().code(), Some(125));
        assert!(!marker.exists(), "the command ran without the go");
    }
}
