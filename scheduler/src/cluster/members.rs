//! Membership from DNS: `--members dns:NAME` reads the member list from the SRV records NAME, which
//! Kubernetes publishes for a headless Service (`_PORTNAME._tcp.SERVICE.NAMESPACE.svc.DOMAIN`: one record
//! per pod, its stable name `POD.SERVICE.NAMESPACE.svc.DOMAIN` and port), so that a StatefulSet scaled up
//! needs no flag edited on every node.
//!
//! A member's position in the list is its ordinal, which task ids and lease ids carry, so the list must come
//! out the same on every node and only ever grow at its end, whatever DNS shows at a given moment (a pod
//! being recreated is missing from it for a while). Three rules make it so:
//! - **ordinal order**: names of the StatefulSet form `PREFIX-N.REST:PORT` are ordered by `N`, and a missing
//!   ordinal below the highest is filled in (it exists: the StatefulSet made it); other names are ordered by
//!   name, then port;
//! - **the node itself** is always in the list (`--advertise`), so a node knows at least its ordinal's
//!   predecessors; and with `--members-dns-min N` (the StatefulSet's replicas, which the chart passes) the
//!   first N, even before their pods have addresses in DNS (a new cluster's pods start at different times);
//!   then the ring is exactly the ordinals below N and those DNS lists beyond it, so scaling down (a smaller
//!   N) removes the last members as a shorter list of addresses would;
//! - **append-only**: every node remembers the list it used (`DATA/members`); without `--members-dns-min`, a
//!   member once known keeps its place, and new members follow it.
//!
//! The list is read when the node starts ([`resolve_at_start`]). A running node looks again every
//! `--members-dns-interval` ([`watch`]) and warns when DNS lists members it does not use yet (and counts them
//! in `pm_cluster_members_pending`): they join its ring when it restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The file in the data directory that keeps the member list a node used, one member per line.
pub const MEMBERS_FILE: &str = "members";

/// Errors reading the members from DNS or from the data directory.
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    /// The DNS lookup failed, or found no member.
    #[error("--members dns:{name}: {msg}")]
    Lookup {
        /// The SRV name.
        name: String,
        /// What failed.
        msg: String,
    },
    /// `DATA/members` cannot be read or written.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        msg: String,
    },
}

/// A resolver of the SRV records of one name.
pub struct DnsMembers {
    name: String,
    resolver: TokioResolver,
}

impl DnsMembers {
    /// Looks up `name`, through `server` (`IP:PORT`) or the system's resolvers (/etc/resolv.conf). Answers are
    /// not cached: each lookup asks again.
    pub fn new(name: &str, server: Option<SocketAddr>) -> Result<DnsMembers, MembersError> {
        let mut builder = match server {
            Some(addr) => {
                let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                let config = ResolverConfig::from_parts(None, vec![], servers);
                TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| MembersError::Lookup { name: name.into(), msg: format!("system resolver: {e}") })?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        Ok(DnsMembers { name: name.to_string(), resolver: builder.build() })
    }

    /// The members the SRV records name, as `TARGET:PORT` (no trailing dot), in no particular order.
    pub async fn lookup(&self) -> Result<Vec<String>, MembersError> {
        let fail = |msg: String| MembersError::Lookup { name: self.name.clone(), msg };
        let found = self.resolver.srv_lookup(self.name.as_str()).await.map_err(|e| fail(e.to_string()))?;
        let members: Vec<String> = found
            .iter()
            .map(|srv| {
                let target = srv.target().to_utf8();
                format!("{}:{}", target.trim_end_matches('.'), srv.port())
            })
            .collect();
        if members.is_empty() {
            return Err(fail("no SRV record".into()));
        }
        Ok(members)
    }
}

/// The highest ordinal filled in: a ring has at most 32,768 members (task ids keep the ordinal in 15 bits).
const MAX_ORDINAL: u32 = 32_767;

/// `PREFIX-N.REST:PORT` split into `(PREFIX, N, "REST:PORT")`, for names of a StatefulSet's pods.
fn ordinal_name(member: &str) -> Option<(&str, u32, &str)> {
    let (first, rest) = member.split_once('.')?;
    let (prefix, n) = first.rsplit_once('-')?;
    if prefix.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 5 {
        return None;
    }
    Some((prefix, n.parse().ok().filter(|n| *n <= MAX_ORDINAL)?, rest))
}

/// The members in ordinal order: when every name is `PREFIX-N.REST:PORT` with the same `PREFIX` and
/// `REST:PORT`, ordinals `0..=max` (the missing ones filled in); otherwise sorted by name, then port.
/// Duplicates are dropped.
pub fn order(members: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut all: Vec<String> = members.into_iter().collect();
    all.sort();
    all.dedup();
    let parsed: Option<Vec<(&str, u32, &str)>> = all.iter().map(|m| ordinal_name(m)).collect();
    if let Some(parsed) = parsed.filter(|p| !p.is_empty()) {
        let (prefix, _, rest) = parsed[0];
        if parsed.iter().all(|(p, _, r)| *p == prefix && *r == rest) {
            let max = parsed.iter().map(|(_, n, _)| *n).max().unwrap_or(0);
            return (0..=max).map(|n| format!("{prefix}-{n}.{rest}")).collect();
        }
    }
    let key = |m: &String| match m.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse::<u32>().unwrap_or(0)),
        None => (m.clone(), 0),
    };
    all.sort_by_key(key);
    all
}

/// For `--members-dns-min N` and this node's StatefulSet name `PREFIX-K.REST:PORT`: `PREFIX-(N-1).REST:PORT`,
/// the last of the first N members, which [`order`] fills in below. `None` for 0 or another kind of name.
pub fn last_of_first(me: &str, n: u32) -> Option<String> {
    let (prefix, _, rest) = ordinal_name(me)?;
    (n > 0).then(|| format!("{prefix}-{}.{rest}", n.min(MAX_ORDINAL + 1) - 1))
}

/// `known` with the members of `found` it lacks appended, in `found`'s order: a member never moves.
pub fn merge(known: &[String], found: &[String]) -> Vec<String> {
    let mut out = known.to_vec();
    for m in found {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

fn members_path(data: &Path) -> PathBuf {
    data.join(MEMBERS_FILE)
}

/// The member list this node used last (`DATA/members`), empty if it never used one.
pub fn load(data: &Path) -> Result<Vec<String>, MembersError> {
    let path = members_path(data);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(MembersError::File { path: path.display().to_string(), msg: e.to_string() }),
    }
}

/// Keeps `members` as the list this node uses (written whole or not at all). Call with the data directory
/// locked.
pub fn save(data: &Path, members: &[String]) -> Result<(), MembersError> {
    if load(data)? == members {
        return Ok(());
    }
    let path = members_path(data);
    let text: String = members.iter().map(|m| format!("{m}\n")).collect();
    crate::durable_file::write_durably(&path, data, text.as_bytes())
        .map_err(|e| MembersError::File { path: path.display().to_string(), msg: e.to_string() })
}

/// The member list of a node started with `--members dns:NAME`: what DNS lists (asked again every second
/// while the lookup fails or does not list this node, for up to `--members-dns-wait`) and this node's own
/// `--advertise` (and the first `--members-dns-min`), in ordinal order, appended to the list the node used
/// before. An error when DNS never answered and nothing else names a member: a node alone would take every
/// key.
pub async fn resolve_at_start(cfg: &Config, name: &str) -> Result<Vec<String>, MembersError> {
    let me = cfg.advertise();
    let known = load(&cfg.data)?;
    let dns = DnsMembers::new(name, cfg.members_dns_server)?;
    let deadline = tokio::time::Instant::now() + cfg.members_dns_wait;
    let least = last_of_first(&me, cfg.members_dns_min);
    let found = loop {
        let attempt = dns.lookup().await;
        // With --members-dns-min the first members are known: any answer will do.
        let done = match &attempt {
            Ok(found) => found.contains(&me) || least.is_some(),
            Err(_) => false,
        };
        if done || tokio::time::Instant::now() >= deadline {
            break attempt;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let found = match found {
        Ok(found) => found,
        Err(e) if known.is_empty() && least.is_none() => return Err(e),
        Err(e) => {
            tracing::warn!("{e}; starting with the members given or used before");
            Vec::new()
        }
    };
    let members = if least.is_some() {
        // The StatefulSet's size is given: the ring is its ordinals, and those DNS lists beyond it (scaled
        // up without the flag changing); members past both left (scaled down).
        let fresh = order(found.into_iter().chain([me]).chain(least));
        let gone: Vec<&String> = known.iter().filter(|m| !fresh.contains(m)).collect();
        if !gone.is_empty() {
            tracing::warn!(gone = ?gone, "members beyond --members-dns-min and DNS left the ring");
        }
        fresh
    } else {
        merge(&known, &order(found.into_iter().chain(known.iter().cloned()).chain([me])))
    };
    tracing::info!(members = %members.join(","), "cluster members read from DNS");
    Ok(members)
}

/// Looks the members up every `interval` until `stop`, and warns when DNS lists members that `current` (the
/// ring this node uses) lacks: they join this node's ring when it restarts. Their count is the gauge
/// `pm_cluster_members_pending`.
pub async fn watch(dns: DnsMembers, current: Vec<String>, interval: Duration, stop: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let mut warned = current.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        let Ok(found) = dns.lookup().await else { continue };
        let wanted = merge(&current, &order(found.into_iter().chain(current.iter().cloned())));
        metrics::gauge!(crate::metrics::MEMBERS_PENDING).set((wanted.len() - current.len()) as f64);
        if wanted.len() > warned.len() {
            let new = &wanted[current.len()..];
            tracing::warn!(
                new = %new.join(","),
                "DNS lists members this node does not use yet: restart it to add them to its ring"
            );
            warned = wanted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn statefulset_names_come_in_ordinal_order_with_gaps_filled() {
        let found = s(&["pm-10.h.ns.svc:7070", "pm-2.h.ns.svc:7070", "pm-0.h.ns.svc:7070"]);
        let ordered = order(found);
        assert_eq!(ordered.len(), 11);
        assert_eq!(ordered[0], "pm-0.h.ns.svc:7070");
        assert_eq!(ordered[1], "pm-1.h.ns.svc:7070", "a missing ordinal is filled in");
        assert_eq!(ordered[10], "pm-10.h.ns.svc:7070", "10 after 2: by number, not by text");
    }

    #[test]
    fn the_first_members_are_known_before_dns_lists_them() {
        let me = "pm-1.h.ns.svc:7070";
        let least = last_of_first(me, 3);
        assert_eq!(least.as_deref(), Some("pm-2.h.ns.svc:7070"));
        assert_eq!(order([me.to_string()].into_iter().chain(least)).len(), 3);
        assert_eq!(last_of_first(me, 0), None);
        assert_eq!(last_of_first("127.0.0.1:7070", 3), None);
    }

    #[test]
    fn other_names_sort_by_name_then_port() {
        let found = s(&["b:1", "a:70", "a:8", "a:8"]);
        assert_eq!(order(found), s(&["a:8", "a:70", "b:1"]));
        // Two StatefulSets, or a mix: no filling in.
        let mixed = s(&["pm-1.h:7070", "other-0.h:7070"]);
        assert_eq!(order(mixed), s(&["other-0.h:7070", "pm-1.h:7070"]));
        assert_eq!(order(s(&["pm-x.h:1", "-3.h:1"])), s(&["-3.h:1", "pm-x.h:1"]));
    }

    #[test]
    fn a_known_member_keeps_its_place_and_new_ones_follow() {
        let known = s(&["c:1", "a:1"]);
        assert_eq!(merge(&known, &s(&["a:1", "b:1", "c:1"])), s(&["c:1", "a:1", "b:1"]));
        // A member missing from DNS (a pod being recreated) stays.
        assert_eq!(merge(&known, &s(&["a:1"])), known);
    }

    #[test]
    fn the_list_is_remembered_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let members = s(&["pm-0.h:7070", "pm-1.h:7070"]);
        save(dir.path(), &members).unwrap();
        assert_eq!(load(dir.path()).unwrap(), members);
    }
}
