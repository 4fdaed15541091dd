//! `completions SHELL` and `man [--dir DIR]`: shell completions and man pages generated from a binary's own
//! clap definition (`clap_complete`, `clap_mangen`), added to every binary's command tree by
//! [`super::parse_or_exit`].
//!
//! ```sh
//! pmctl completions bash > /etc/bash_completion.d/pmctl     # or zsh, fish, elvish, powershell
//! pmctl man --dir /usr/local/share/man/man1                 # pmctl.1, pmctl-submit.1, ...
//! pmctl man | man -l -                                      # read the top page now
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{value_parser, Arg, ArgMatches, Command};
use clap_complete::Shell;

/// The subcommand that prints completions.
pub const COMPLETIONS: &str = "completions";
/// The subcommand that writes man pages.
pub const MAN: &str = "man";

/// `cmd` with the `completions` and `man` subcommands added (next to its own, if any).
pub fn with_doc_commands(cmd: Command) -> Command {
    let name = cmd.get_name().to_string();
    cmd.subcommand(
        Command::new(COMPLETIONS)
            .about(format!("Print shell completions for {name} (bash, zsh, fish, elvish, powershell)"))
            .long_about(format!(
                "Print shell completions for {name} on stdout. For example:\n  {name} completions bash > \
                 /etc/bash_completion.d/{name}\n  {name} completions zsh > \"${{fpath[1]}}/_{name}\"\n  {name} \
                 completions fish > ~/.config/fish/completions/{name}.fish"
            ))
            .arg(Arg::new("shell").required(true).value_parser(value_parser!(Shell))),
    )
    .subcommand(
        Command::new(MAN)
            .about(format!("Write man pages for {name} and each of its subcommands"))
            .long_about(format!(
                "With --dir, write {name}.1 and one page per subcommand ({name}-SUBCOMMAND.1) into DIR and print \
                 their paths; without, print the top page on stdout (`{name} man | man -l -`)."
            ))
            .arg(Arg::new("dir").long("dir").value_name("DIR").value_parser(value_parser!(PathBuf))),
    )
}

/// Serves `completions` or `man` if `matches` asked for one (returning how to exit), else `None`.
pub fn serve(cmd: Command, matches: &ArgMatches) -> Option<ExitCode> {
    let name = cmd.get_name().to_string();
    let result = match matches.subcommand() {
        Some((COMPLETIONS, m)) => {
            let shell = *m.get_one::<Shell>("shell")?;
            completions(cmd, shell, &mut std::io::stdout().lock())
        }
        Some((MAN, m)) => match m.get_one::<PathBuf>("dir") {
            Some(dir) => man_pages(cmd, dir).map(|paths| {
                for p in paths {
                    println!("{}", p.display());
                }
            }),
            None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock()),
        },
        _ => return None,
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Writes `shell`'s completion script for `cmd` to `out`.
pub fn completions(mut cmd: Command, shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    // Written to a buffer first: clap_complete panics on a failed write, an error is ours to report.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name.clone(), &mut buf);
    if shell == Shell::Bash && name.contains('-') {
        buf = fix_bash_hyphenated_name(&buf, &name);
    }
    out.write_all(&buf)?;
    out.flush()
}

/// clap_complete's bash script names its per-command cases inconsistently when the binary's name has a
/// hyphen: the walk over the words yields `pm__agent__subcmd__run` while the case that completes `run` is
/// labelled `pm__subcmd__agent__subcmd__run`, so nothing after `pm-agent run` would complete. The labels
/// are made to agree with the walk.
fn fix_bash_hyphenated_name(script: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let wrong = name.replace('-', "__subcmd__");
    let right = name.replace('-', "__");
    text.replace(&wrong, &right).into_bytes()
}

/// Writes the man pages of `cmd` and of every visible subcommand into `dir` (created if missing); returns
/// their paths, the top page first.
pub fn man_pages(cmd: Command, dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut paths = Vec::new();
    write_pages(cmd, dir, &mut paths)?;
    Ok(paths)
}

fn write_pages(cmd: Command, dir: &std::path::Path, paths: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let subs: Vec<Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    paths.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
    for sub in subs {
        write_pages(sub, dir, paths)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Command {
        with_doc_commands(
            Command::new("demo")
                .about("A demo")
                .subcommand(Command::new("submit").about("Submit").arg(Arg::new("file").long("file")))
                .subcommand(Command::new("queue").subcommand(Command::new("pause").about("Pause a queue"))),
        )
    }

    #[test]
    fn completions_name_every_subcommand() {
        let mut out = Vec::new();
        completions(demo(), Shell::Bash, &mut out).expect("written");
        let text = String::from_utf8(out).expect("utf-8");
        for word in ["submit", "queue", "pause", "completions", "--file"] {
            assert!(text.contains(word), "{word} missing from:\n{text}");
        }
    }

    #[test]
    fn man_pages_one_per_subcommand_nested() {
        let dir = std::env::temp_dir().join(format!("pm-man-test-{}", std::process::id()));
        let paths = man_pages(demo(), &dir).expect("written");
        let names: Vec<String> =
            paths.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        for want in ["demo.1", "demo-submit.1", "demo-queue.1", "demo-queue-pause.1", "demo-man.1"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let page = std::fs::read_to_string(dir.join("demo-queue-pause.1")).expect("page");
        assert!(page.contains("Pause a queue"), "{page}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn serve_answers_only_its_own_subcommands() {
        let m = demo().try_get_matches_from(["demo", "submit"]).expect("parsed");
        assert!(serve(demo(), &m).is_none());
    }
}
