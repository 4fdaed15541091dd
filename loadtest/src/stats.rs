//! Recording: counters, HDR histograms and the per-interval series.
//!
//! Each producer and each consumer records into its own [`Recorder`] (a mutex nobody else takes on the hot
//! path), so threads never contend on one histogram; the ticker and the final report merge them. The ticker
//! closes an interval by taking every recorder's interval histogram, which bounds memory for any run length.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Histograms cover 1 µs .. 1 h with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Fixed, valid bounds: constructing cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

/// One thread's latency recordings (µs): the whole measurement window, and the current interval.
#[derive(Debug)]
pub struct Recorder {
    /// Completions inside the measurement window.
    pub window: Histogram<u64>,
    /// Completions since the ticker last closed an interval (window or not).
    pub interval: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder { window: histogram(), interval: histogram() }
    }
}

impl Recorder {
    /// Records one latency; `in_window` also counts it towards the totals.
    pub fn record(&mut self, us: u64, in_window: bool) {
        self.interval.saturating_record(us);
        if in_window {
            self.window.saturating_record(us);
        }
    }
}

/// A set of recorders, one per producer or consumer.
#[derive(Debug, Default)]
pub struct Recorders(Mutex<Vec<Arc<Mutex<Recorder>>>>);

impl Recorders {
    /// A new recorder, registered for merging.
    pub fn add(&self) -> Arc<Mutex<Recorder>> {
        let r = Arc::new(Mutex::new(Recorder::default()));
        lock(&self.0).push(r.clone());
        r
    }

    /// Merges every recorder's interval histogram and resets them.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut all = histogram();
        for r in lock(&self.0).iter() {
            let mut r = lock(r);
            let _ = all.add(&r.interval);
            r.interval.reset();
        }
        all
    }

    /// Merges every recorder's window histogram.
    pub fn window(&self) -> Histogram<u64> {
        let mut all = histogram();
        for r in lock(&self.0).iter() {
            let _ = all.add(&lock(r).window);
        }
        all
    }
}

/// Locks a mutex; a poisoned one (a panicked recorder) still holds valid counts.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counters over the whole run and (`*_win`) over the measurement window.
#[derive(Debug, Default)]
pub struct Counters {
    /// Tasks accepted by the server.
    pub submitted: AtomicU64,
    /// ... inside the window.
    pub submitted_win: AtomicU64,
    /// Tasks acknowledged successfully.
    pub acked: AtomicU64,
    /// ... inside the window.
    pub acked_win: AtomicU64,
    /// Tasks the server refused in an otherwise successful submit.
    pub rejected: AtomicU64,
    /// Failed submit calls.
    pub submit_errors: AtomicU64,
    /// Failed ack calls or refused acks.
    pub ack_errors: AtomicU64,
    /// Deliveries the backend marked as redeliveries.
    pub redelivered: AtomicU64,
}

impl Counters {
    /// The counters' values now.
    pub fn totals(&self) -> Totals {
        Totals {
            submitted: self.submitted.load(Relaxed),
            submitted_win: self.submitted_win.load(Relaxed),
            acked: self.acked.load(Relaxed),
            acked_win: self.acked_win.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            submit_errors: self.submit_errors.load(Relaxed),
            ack_errors: self.ack_errors.load(Relaxed),
            redelivered: self.redelivered.load(Relaxed),
        }
    }
}

/// A snapshot of [`Counters`] (same fields).
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[allow(missing_docs)]
pub struct Totals {
    pub submitted: u64,
    pub submitted_win: u64,
    pub acked: u64,
    pub acked_win: u64,
    pub rejected: u64,
    pub submit_errors: u64,
    pub ack_errors: u64,
    pub redelivered: u64,
}

/// The clock of a run: time zero and the measurement window, in ns since time zero.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Time zero; payloads carry ns since then.
    pub t0: Instant,
    /// Window start (end of warm-up).
    pub win_start: u64,
    /// Window end.
    pub win_end: u64,
}

impl Clock {
    /// ns since time zero.
    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Whether `ns` falls inside the measurement window.
    pub fn in_window(&self, ns: u64) -> bool {
        (self.win_start..self.win_end).contains(&ns)
    }
}

/// Latency quantiles in ms.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Number of samples.
    pub samples: u64,
}

impl Quantiles {
    /// Quantiles of a µs histogram, in ms.
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Quantiles {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
            samples: h.len(),
        }
    }
}

/// One closed interval of the series.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Interval end, s since time zero.
    pub t: f64,
    /// Tasks accepted per second in the interval.
    pub submitted_per_s: f64,
    /// Tasks acked per second in the interval.
    pub acked_per_s: f64,
    /// End-to-end latency of the tasks acked in the interval.
    pub latency_ms: Quantiles,
    /// The server's resident memory at the interval's end, bytes (with `--server-pid`): drift shows in a soak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorders_merge_and_intervals_reset() {
        let rs = Recorders::default();
        let (a, b) = (rs.add(), rs.add());
        lock(&a).record(1000, true);
        lock(&b).record(3000, false);
        let first = rs.take_interval();
        assert_eq!(first.len(), 2);
        assert_eq!(rs.take_interval().len(), 0, "taking an interval resets it");
        let win = rs.window();
        assert_eq!(win.len(), 1, "only in-window samples count towards the window");
        let q = Quantiles::of(&first);
        assert!((q.max - 3.0).abs() < 0.01, "{q:?}");
        assert_eq!(Quantiles::of(&histogram()), Quantiles::default());
    }

    #[test]
    fn the_window_is_half_open() {
        let c = Clock { t0: Instant::now(), win_start: 10, win_end: 20 };
        assert!(!c.in_window(9));
        assert!(c.in_window(10));
        assert!(c.in_window(19));
        assert!(!c.in_window(20));
    }
}
