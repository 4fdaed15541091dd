//! `--max-leases-per-conn`: what one agent connection holds on the node, credits not yet used plus leases
//! not yet ended, across all its queues (and so across shards, and stolen tasks included).
//!
//! A credit turns into a lease when a task is pushed, so the sum only moves when a credit is granted (up, at
//! most to the cap), withdrawn (`Credit{set}`, down), or a lease ends (ack, nack, expiry, cancel: down). A
//! `Credit` past the cap is clamped: the credits beyond it are dropped and the clamp is counted in
//! `pm_refused_total{reason="lease_cap"}`. `Credit` has no reply in the protocol, so nothing is sent back;
//! an agent that keeps its credits and leases within the cap (pm-agent grants its concurrency, the load
//! tester its prefetch) is never clamped. Leases an agent takes back with `Reclaim` after a reconnect are
//! counted but never refused (the agent runs those tasks already).
//!
//! Peer nodes (work stealing) have no cap: their credits are their own agents', each bounded here.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::metrics as m;

/// One agent connection's credits plus unended leases, shared by the shards and the stealer.
#[derive(Debug)]
pub struct Holdings {
    held: AtomicU32,
    cap: u32,
}

impl Holdings {
    /// An empty account bounded by `cap`.
    pub fn new(cap: u32) -> Arc<Holdings> {
        Arc::new(Holdings { held: AtomicU32::new(0), cap })
    }

    /// Takes up to `n` more credits, as many as the cap leaves room for; returns how many. A clamp is counted
    /// in `pm_refused_total{reason="lease_cap"}`.
    pub fn reserve(&self, n: u32) -> u32 {
        let mut granted = 0;
        let _ = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            granted = n.min(self.cap.saturating_sub(held));
            Some(held + granted)
        });
        if granted < n {
            metrics::counter!(m::REFUSED, "reason" => "lease_cap").increment(1);
            tracing::debug!(asked = n, granted, cap = self.cap, "credits clamped (--max-leases-per-conn)");
        }
        granted
    }

    /// Counts `n` leases taken without credits (`Reclaim`), even past the cap.
    pub fn add(&self, n: u32) {
        let _ = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| Some(held.saturating_add(n)));
    }

    /// Gives back `n` (a credit withdrawn or a lease ended).
    pub fn release(&self, n: u32) {
        if n == 0 {
            return;
        }
        let _ = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| Some(held.saturating_sub(n)));
    }

    /// Credits plus leases held now.
    pub fn held(&self) -> u32 {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_are_clamped_at_the_cap_and_come_back_with_releases() {
        let h = Holdings::new(10);
        assert_eq!(h.reserve(4), 4);
        assert_eq!(h.reserve(u32::MAX), 6);
        assert_eq!(h.reserve(1), 0);
        h.release(3);
        assert_eq!(h.held(), 7);
        assert_eq!(h.reserve(5), 3);
        h.add(2);
        assert_eq!(h.held(), 12, "reclaimed leases count past the cap");
        assert_eq!(h.reserve(1), 0);
        h.release(100);
        assert_eq!(h.held(), 0);
    }
}
