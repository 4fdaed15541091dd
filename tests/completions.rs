//! Every binary answers `completions SHELL` and `man --dir DIR` from its own clap definition: the bash script
//! completes in a real bash, and there is one man page per subcommand.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

use pm_testkit::bin;

const BINARIES: [&str; 5] = ["pm-scheduler", "pm-agent", "pmctl", "pm", "pm-loadtest"];

/// What bash's completion function offers for the words typed so far (the last one being completed).
fn bash_complete(binary: &str, words: &[&str]) -> Vec<String> {
    let path = bin(binary);
    let function = format!("_{}", binary.replace('-', "__"));
    let script = format!(
        "source <('{path}' completions bash) || exit 3
         COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE=\"{line}\"; COMP_POINT=${{#COMP_LINE}}
         {function} {binary} '{cur}' '{prev}' || exit 4
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path = path.display(),
        words = words.join(" "),
        cword = words.len() - 1,
        line = words.join(" "),
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "{binary}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    assert_eq!(bash_complete("pmctl", &["pmctl", "qu"]), ["queue"]);
    assert_eq!(bash_complete("pmctl", &["pmctl", "queue", "p"]), ["pause", "purge"]);
    assert!(bash_complete("pmctl", &["pmctl", "--ser"]).contains(&"--server".to_string()));
    assert!(bash_complete("pm-agent", &["pm-agent", "run", "--que"]).contains(&"--queue".to_string()));
    assert!(bash_complete("pm-scheduler", &["pm-scheduler", "--fs"]).contains(&"--fsync".to_string()));
}

#[test]
fn every_binary_prints_completions_for_every_shell() {
    for binary in BINARIES {
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            let out = Command::new(bin(binary)).args(["completions", shell]).output().unwrap();
            assert!(out.status.success(), "{binary} {shell}: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.contains(binary) && text.contains("completions"), "{binary} {shell}:\n{text}");
        }
        let out = Command::new(bin(binary)).args(["completions", "tcsh"]).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{binary}: an unknown shell is a usage error");
    }
}

#[test]
fn every_binary_writes_a_man_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    for binary in BINARIES {
        let out = Command::new(bin(binary)).args(["man", "--dir"]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{binary}: {}", String::from_utf8_lossy(&out.stderr));
        let listed = String::from_utf8(out.stdout).unwrap();
        assert!(listed.lines().next().unwrap().ends_with(&format!("{binary}.1")), "{listed}");
        let top = std::fs::read_to_string(dir.path().join(format!("{binary}.1"))).unwrap();
        assert!(top.starts_with(".ie") || top.contains(".TH"), "{binary}.1 is not a man page:\n{top}");
    }
    for page in ["pmctl-submit.1", "pmctl-queue-pause.1", "pm-agent-run.1", "pm-dev.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".SH OPTIONS") || text.contains(".SH NAME"), "{page}:\n{text}");
    }
    let submit = std::fs::read_to_string(dir.path().join("pmctl-submit.1")).unwrap();
    assert!(submit.contains("idempotency") || submit.contains("task"), "{submit}");
    let out = Command::new(bin("pmctl")).arg("man").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH pmctl"), "pmctl man prints the top page");
}
