//! `pm dev --nodes N`: a cluster of N members on this machine, each a `pm dev` process of its own (a scheduler
//! node and its embedded agent) started by this one, the launcher.
//!
//! Member `i` listens on the `--listen` port plus `10 × i` (its direct-run API and HTTP endpoint likewise:
//! 7070, 7071, 7072 for the first, 7080, 7081, 7082 for the second, ...; a port of 0 picks free ones), keeps
//! its data in `DATA/node-i` and runs tasks in `WORK/node-i`. Each member's agent is given a client id whose
//! home (rendezvous hashing, as for any agent of a cluster) is that member, so the agents spread one per
//! member. The launcher prints each member's addresses, then `members A,B,C` (for `pmctl --server`).
//!
//! Lifetimes: SIGTERM or SIGINT is passed on to every member (each drains as `pm dev` does); the launcher
//! exits once they all have. Each member reads its stdin, a pipe from the launcher that nothing writes: when
//! the launcher dies, even by `kill -9`, the pipe closes and the member stops at once (its commands with it).

use std::ffi::OsString;
use std::process::{ExitCode, Stdio};

use pm_task::ring::Ring;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// Port distance between two members' addresses.
const PORT_STEP: u16 = 10;

/// What the launcher needs of the command line: the base addresses and directories.
pub struct Plan {
    /// Members.
    pub nodes: u16,
    /// `--listen`, `--api-listen`, `--http-listen` of the first member.
    pub listen: String,
    pub api_listen: String,
    pub http_listen: String,
    /// `--data` and `--work-dir`, each member in a subdirectory.
    pub data: std::path::PathBuf,
    pub work_dir: std::path::PathBuf,
}

/// `addr` with its port moved by `step × i`; port 0 stays 0, `off` stays `off`.
fn shifted(addr: &str, i: u16) -> Result<String, String> {
    if addr.trim() == "off" {
        return Ok("off".into());
    }
    let a: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e} (give an IP address and port)"))?;
    if a.port() == 0 {
        return Ok(a.to_string());
    }
    let port = a.port().checked_add(PORT_STEP * i).ok_or_else(|| format!("{addr}: no room for {i} more ports"))?;
    Ok(std::net::SocketAddr::new(a.ip(), port).to_string())
}

/// The members' protocol addresses: `--listen` shifted, or free ports on its IP when its port is 0.
fn member_addrs(plan: &Plan) -> Result<Vec<String>, String> {
    (0..plan.nodes)
        .map(|i| {
            let addr = shifted(&plan.listen, i)?;
            if addr.ends_with(":0") {
                // A port free a moment ago; the member binds it right after.
                let l = std::net::TcpListener::bind(&addr).map_err(|e| format!("--listen {addr}: {e}"))?;
                return l.local_addr().map(|a| a.to_string()).map_err(|e| e.to_string());
            }
            Ok(addr)
        })
        .collect()
}

/// A client id whose home in `ring` is member `i`.
fn client_id_homed_at(ring: &Ring, i: usize) -> String {
    (0u32..)
        .map(|k| format!("pm-dev-node-{i}-{k}"))
        .find(|id| ring.preference(id.as_bytes()).first() == Some(&i))
        .unwrap_or_else(|| format!("pm-dev-node-{i}"))
}

/// Runs the cluster until every member has exited. `args` are this process's arguments after `dev`, passed on
/// to each member with its own addresses, directories and client id appended (the last occurrence of a flag
/// wins).
pub fn launch(plan: Plan, args: Vec<OsString>) -> ExitCode {
    let members = match member_addrs(&plan) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("pm dev --nodes: {e}");
            return ExitCode::from(pm_client::cli::EXIT_USAGE);
        }
    };
    let ring = match Ring::new(members.iter().cloned()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pm dev --nodes: {e}");
            return ExitCode::from(pm_client::cli::EXIT_USAGE);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pm dev: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(plan, args, members, ring))
}

async fn run(plan: Plan, args: Vec<OsString>, members: Vec<String>, ring: Ring) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pm dev: cannot find this program to start the members: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut children: Vec<Child> = Vec::new();
    // The members' stdin pipes, held (never written) until the launcher exits: `Child::wait` would close them.
    let mut lifelines = Vec::new();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    for (i, addr) in members.iter().enumerate() {
        let n = i as u16;
        let (api, http) = match (shifted(&plan.api_listen, n), shifted(&plan.http_listen, n)) {
            (Ok(a), Ok(h)) => (a, h),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("pm dev --nodes: {e}");
                return ExitCode::from(pm_client::cli::EXIT_USAGE);
            }
        };
        let mut cmd = Command::new(&exe);
        cmd.arg("dev")
            .args(&args)
            .args(["--nodes", "1", "--listen", addr, "--api-listen", &api, "--http-listen", &http])
            .arg("--members")
            .arg(members.join(","))
            .arg("--data")
            .arg(plan.data.join(format!("node-{i}")))
            .arg("--work-dir")
            .arg(plan.work_dir.join(format!("node-{i}")))
            .args(["--client-id", &client_id_homed_at(&ring, i), "--exit-with-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("pm dev: cannot start member {i}: {e}");
                return ExitCode::FAILURE;
            }
        };
        lifelines.push(child.stdin.take());
        if let Some(out) = child.stdout.take() {
            let tx = lines_tx.clone();
            tokio::spawn(async move {
                let mut out = tokio::io::BufReader::new(out).lines();
                while let Ok(Some(line)) = out.next_line().await {
                    let _ = tx.send((i, line));
                }
            });
        }
        children.push(child);
    }
    drop(lines_tx);
    // Each member's lines, prefixed; once every member has said where it listens, the members line.
    let expected = members.len() * (1 + usize::from(plan.http_listen.trim() != "off"));
    let mut seen = 0;
    let printer = async {
        while let Some((i, line)) = lines.recv().await {
            println!("node {i}: {line}");
            if line.starts_with("listening on ") || line.starts_with("http listening on ") {
                seen += 1;
                if seen == expected {
                    println!("members {}", members.join(","));
                }
            }
        }
        std::future::pending::<()>().await
    };
    tokio::pin!(printer);
    let mut signals = 0;
    let mut failed = false;
    let mut left = children.len();
    let mut waits: tokio::task::JoinSet<(usize, bool)> = tokio::task::JoinSet::new();
    let pids: Vec<Option<u32>> = children.iter().map(Child::id).collect();
    for (i, mut child) in children.into_iter().enumerate() {
        waits.spawn(async move { (i, child.wait().await.is_ok_and(|s| s.success())) });
    }
    while left > 0 {
        tokio::select! {
            () = &mut printer => {}
            () = pm_scheduler::process::shutdown_signal() => {
                signals += 1;
                for pid in pids.iter().flatten() {
                    terminate(*pid);
                }
                if signals == 1 {
                    tracing::info!("stopping the members (a second signal stops them at once)");
                }
            }
            Some(done) = waits.join_next() => {
                left -= 1;
                if let Ok((i, ok)) = done {
                    if !ok {
                        failed = true;
                        tracing::warn!(member = i, "a member exited with an error");
                    }
                }
            }
        }
    }
    drop(lifelines);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// SIGTERM to a member.
fn terminate(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_addresses_are_ten_ports_apart() {
        assert_eq!(shifted("127.0.0.1:7070", 2).unwrap(), "127.0.0.1:7090");
        assert_eq!(shifted("127.0.0.1:0", 2).unwrap(), "127.0.0.1:0");
        assert_eq!(shifted("off", 1).unwrap(), "off");
        assert!(shifted("127.0.0.1:65530", 1).is_err());
        assert!(shifted("localhost:7070", 1).is_err());
    }

    #[test]
    fn each_members_agent_is_homed_at_that_member() {
        let ring = Ring::new(["127.0.0.1:7070", "127.0.0.1:7080", "127.0.0.1:7090"]).unwrap();
        for i in 0..3 {
            let id = client_id_homed_at(&ring, i);
            assert_eq!(ring.preference(id.as_bytes())[0], i, "{id}");
        }
    }
}
