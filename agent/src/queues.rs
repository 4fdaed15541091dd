//! Which queues an agent serves: `--queue a,b,myapp/*` parsed into [`QueueSpec`].
//!
//! An entry without `*` names one queue. An entry with `*` is a pattern, where `*` stands for any run of
//! characters, `/` included: `myapp/*` matches every pipeline queue of the application `myapp`, and `*`
//! matches every queue. A pattern's queues are learned from the scheduler while the agent runs
//! ([`crate::credits`] asks every member for its queue counters), so queues created later (a new application)
//! are served too.

use pm_task::pipeline::{queue_or_default, validate_queue_name};

/// The queues of `--queue`: names and patterns, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    names: Vec<String>,
    patterns: Vec<String>,
}

impl QueueSpec {
    /// Parses a comma-separated list. Empty entries are skipped; an empty list is an error, as is a name the
    /// scheduler would refuse, or a pattern whose other characters could never be part of a queue name.
    pub fn parse(list: &str) -> Result<QueueSpec, String> {
        let mut spec = QueueSpec { names: Vec::new(), patterns: Vec::new() };
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry.contains('*') {
                validate_queue_name(&entry.replace('*', "")).map_err(|e| format!("--queue pattern {entry:?}: {e}"))?;
                if !spec.patterns.iter().any(|p| p == entry) {
                    spec.patterns.push(entry.to_string());
                }
            } else {
                validate_queue_name(entry).map_err(|e| format!("--queue: {e}"))?;
                let name = queue_or_default(entry).to_string();
                if !spec.names.contains(&name) {
                    spec.names.push(name);
                }
            }
        }
        if spec.names.is_empty() && spec.patterns.is_empty() {
            return Err("--queue names no queue".into());
        }
        Ok(spec)
    }

    /// The queues named outright (served from the start, whether or not the scheduler has seen them yet).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether the spec has patterns, whose queues must be learned from the scheduler.
    pub fn has_patterns(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// Whether the agent serves `queue`.
    pub fn matches(&self, queue: &str) -> bool {
        self.names.iter().any(|n| n == queue) || self.patterns.iter().any(|p| glob(p.as_bytes(), queue.as_bytes()))
    }
}

impl std::fmt::Display for QueueSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<&str> = self.names.iter().chain(&self.patterns).map(String::as_str).collect();
        f.write_str(&all.join(","))
    }
}

/// `*` matches any run of bytes (none too); every other byte matches itself. Iterative, with one backtrack
/// point: linear in practice, never exponential.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and the text position it is currently taken to end at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            // Let the `*` take one more byte and try again from there.
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns() {
        let spec = QueueSpec::parse("a, myapp/*,b,a,,*-hi").unwrap();
        assert_eq!(spec.names(), ["a", "b"]);
        assert!(spec.has_patterns());
        assert_eq!(spec.to_string(), "a,b,myapp/*,*-hi");
        assert!(spec.matches("a") && spec.matches("myapp/ocr") && spec.matches("myapp/") && spec.matches("say-hi"));
        assert!(!spec.matches("c") && !spec.matches("myapp") && !spec.matches("other/ocr") && !spec.matches("hi"));
    }

    #[test]
    fn star_matches_every_queue() {
        let spec = QueueSpec::parse("*").unwrap();
        assert!(spec.names().is_empty());
        for q in ["default", "myapp/ocr", "a/b/c", ""] {
            assert!(spec.matches(q), "{q}");
        }
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(QueueSpec::parse(" , ").is_err());
        assert!(QueueSpec::parse("a b").is_err());
        assert!(QueueSpec::parse("my app/*").is_err());
        assert_eq!(QueueSpec::parse("default").unwrap().names(), ["default"]);
    }

    #[test]
    fn glob_backtracks() {
        assert!(glob(b"a*b*c", b"aXbYbZc"));
        assert!(glob(b"*/ocr", b"x/y/ocr"));
        assert!(!glob(b"a*b*c", b"aXbYbZ"));
        assert!(glob(b"**", b""));
        assert!(!glob(b"a", b""));
    }
}
