//! The tokens the end-to-end tests give a scheduler: one per role, in token files, and the flags naming them.

use std::path::Path;

/// The producer token.
pub const PRODUCER: &str = "producer-secret-0001";
/// The agent token.
pub const AGENT: &str = "agent-secret-000001";
/// The admin token.
pub const ADMIN: &str = "admin-secret-000001";

/// Token files for producers, agents and admins in `dir`, and the flags naming them.
pub fn token_flags(dir: &Path) -> Vec<String> {
    [
        ("--producer-token-file", "producer", PRODUCER),
        ("--agent-token-file", "agent", AGENT),
        ("--admin-token-file", "admin", ADMIN),
    ]
    .iter()
    .flat_map(|(flag, name, token)| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{token}\n")).expect("write a token file");
        [flag.to_string(), p.display().to_string()]
    })
    .collect()
}
