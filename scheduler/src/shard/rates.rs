//! A queue's throughput for operators: tasks submitted and finished per second over the last ten seconds.
//!
//! Two counters grow with every task (one add each, on the hot path); once a second the shard's tick records
//! them in a ring of the last [`WINDOW`] snapshots, and a rate is the difference between the newest and the
//! oldest snapshot over the time between them. No clock is read per task.

use std::collections::VecDeque;

/// Snapshots kept: ten seconds of once-a-second ticks.
pub const WINDOW: usize = 10;

/// Counters and their recent snapshots. See the module doc.
#[derive(Debug, Default)]
pub struct Rates {
    /// Tasks submitted since the start.
    pub submitted: u64,
    /// Tasks finished since the start: acked, failed, cancelled, purged or dead-lettered.
    pub completed: u64,
    /// (submitted, completed) at each of the last ticks, oldest first.
    history: VecDeque<(u64, u64)>,
}

impl Rates {
    /// Records the counters (once a second).
    pub fn tick(&mut self) {
        if self.history.len() > WINDOW {
            self.history.pop_front();
        }
        self.history.push_back((self.submitted, self.completed));
    }

    /// (submitted, completed) per second over the ticks recorded (at most the last [`WINDOW`] seconds);
    /// zero before two ticks.
    pub fn per_sec(&self) -> (f64, f64) {
        let (Some(old), Some(new)) = (self.history.front(), self.history.back()) else { return (0.0, 0.0) };
        let secs = (self.history.len() - 1) as f64;
        if secs == 0.0 {
            return (0.0, 0.0);
        }
        ((new.0 - old.0) as f64 / secs, (new.1 - old.1) as f64 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_growth_over_the_last_ten_ticks() {
        let mut r = Rates::default();
        assert_eq!(r.per_sec(), (0.0, 0.0));
        r.tick();
        assert_eq!(r.per_sec(), (0.0, 0.0), "one tick: no interval yet");
        for _ in 0..30 {
            r.submitted += 100;
            r.completed += 50;
            r.tick();
        }
        assert_eq!(r.per_sec(), (100.0, 50.0));
        // One second of a burst and no completions: nine seconds of the old pace and this one.
        r.submitted += 1000;
        r.tick();
        assert_eq!(r.per_sec(), (190.0, 45.0));
        // Ten quiet seconds later the burst has aged out.
        for _ in 0..WINDOW {
            r.tick();
        }
        assert_eq!(r.per_sec(), (0.0, 0.0));
    }
}
