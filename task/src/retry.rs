//! A task's retry policy: the `retry` object of the task JSON (and of a pipeline template).
//!
//! ```json
//! {"retry": {"maxAttempts": 4,
//!            "backoff": {"initialMs": 500, "maxMs": 60000, "multiplier": 3},
//!            "nonRetryableExitCodes": [2, 127]},
//!  "pipeline": [...]}
//! ```
//!
//! - `maxAttempts`: deliveries before the task is dead-lettered, as the top-level `maxAttempts` (which stays
//!   accepted; giving both with different values is an error). Missing: the scheduler's `--max-attempts`.
//! - `backoff`: the delay before attempt `n + 1` after attempt `n` failed is `initialMs × multiplier^(n−1)`,
//!   at most `maxMs`. Each field is optional: missing ones take the agent's defaults (`--retry-backoff-ms`,
//!   300 000 ms, 2).
//! - `nonRetryableExitCodes`: a command failing with one of these exit codes fails the task at once (state
//!   `FAILED`, with its reason), whatever attempts are left: retrying cannot fix it (a usage error, a missing
//!   file, a DNS name that does not exist).
//!
//! The scheduler keeps the attempts; the agent reads the rest when a task fails ([`RetryPolicy::delay`],
//! [`RetryPolicy::gives_up_on`]) and nacks with that delay, or with "fail" for a non-retryable exit code.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest `initialMs` and `maxMs`: one day.
pub const MAX_BACKOFF_MS: u64 = 86_400_000;
/// Largest `multiplier`.
pub const MAX_MULTIPLIER: f64 = 100.0;
/// Most `nonRetryableExitCodes`.
pub const MAX_EXIT_CODES: usize = 256;

/// The `retry` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Deliveries before the task is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The delays between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Exit codes that fail the task at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_retryable_exit_codes: Vec<i32>,
}

/// `retry.backoff`; a missing field takes the agent's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    /// Delay after the first failed attempt, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_ms: Option<u64>,
    /// Longest delay, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
    /// Factor from one delay to the next (1: constant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
}

/// The agent's backoff when a task names none: `initial` doubling per attempt, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DefaultBackoff {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Factor per attempt.
    pub multiplier: f64,
}

impl RetryPolicy {
    /// Checks the ranges: `maxAttempts` ≥ 1, delays at most a day, `maxMs` ≥ `initialMs`, `multiplier` from 1 to
    /// 100, at most 256 exit codes.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == Some(0) {
            return Err("retry.maxAttempts must be at least 1".into());
        }
        if let Some(b) = &self.backoff {
            for (name, v) in [("initialMs", b.initial_ms), ("maxMs", b.max_ms)] {
                if v.is_some_and(|v| v > MAX_BACKOFF_MS) {
                    return Err(format!("retry.backoff.{name} must be at most {MAX_BACKOFF_MS} (one day)"));
                }
            }
            if let (Some(i), Some(m)) = (b.initial_ms, b.max_ms) {
                if m < i {
                    return Err(format!("retry.backoff.maxMs ({m}) is below initialMs ({i})"));
                }
            }
            if b.multiplier.is_some_and(|m| !(1.0..=MAX_MULTIPLIER).contains(&m)) {
                return Err(format!("retry.backoff.multiplier must be between 1 and {MAX_MULTIPLIER}"));
            }
        }
        if self.non_retryable_exit_codes.len() > MAX_EXIT_CODES {
            return Err(format!("retry.nonRetryableExitCodes: more than {MAX_EXIT_CODES} codes"));
        }
        Ok(())
    }

    /// The delay before the next attempt after attempt `attempt` (from 1) failed.
    pub fn delay(&self, attempt: u32, default: DefaultBackoff) -> Duration {
        let b = self.backoff.unwrap_or_default();
        let initial = b.initial_ms.map_or(default.initial, Duration::from_millis);
        let max = b.max_ms.map_or(default.max, Duration::from_millis);
        let multiplier = b.multiplier.unwrap_or(default.multiplier);
        let factor = multiplier.powi(attempt.saturating_sub(1).min(64) as i32);
        let ms = (initial.as_millis() as f64 * factor).min(max.as_millis() as f64);
        Duration::from_millis(ms as u64).min(max)
    }

    /// Whether a command that exited with `code` fails the task for good.
    pub fn gives_up_on(&self, code: i32) -> bool {
        self.non_retryable_exit_codes.contains(&code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: DefaultBackoff =
        DefaultBackoff { initial: Duration::from_secs(1), max: Duration::from_secs(300), multiplier: 2.0 };

    fn policy(json: &str) -> RetryPolicy {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn no_backoff_is_the_agents_doubling() {
        let p = RetryPolicy::default();
        let delays: Vec<u64> = (1..=4).map(|a| p.delay(a, AGENT).as_millis() as u64).collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000]);
        assert_eq!(p.delay(40, AGENT), Duration::from_secs(300), "capped");
    }

    #[test]
    fn a_backoff_sets_start_factor_and_cap() {
        let p = policy(r#"{"backoff":{"initialMs":100,"maxMs":1000,"multiplier":3}}"#);
        let delays: Vec<u64> = (1..=5).map(|a| p.delay(a, AGENT).as_millis() as u64).collect();
        assert_eq!(delays, [100, 300, 900, 1000, 1000]);
        // A constant delay; the missing fields are the agent's.
        assert_eq!(policy(r#"{"backoff":{"multiplier":1}}"#).delay(9, AGENT), Duration::from_secs(1));
        assert_eq!(policy(r#"{"backoff":{"initialMs":0}}"#).delay(3, AGENT), Duration::ZERO);
    }

    #[test]
    fn non_retryable_exit_codes() {
        let p = policy(r#"{"nonRetryableExitCodes":[2,127]}"#);
        assert!(p.gives_up_on(127) && p.gives_up_on(2) && !p.gives_up_on(1));
        assert!(!RetryPolicy::default().gives_up_on(1));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [
            r#"{"maxAttempts":0}"#,
            r#"{"backoff":{"initialMs":100,"maxMs":10}}"#,
            r#"{"backoff":{"multiplier":0.5}}"#,
            r#"{"backoff":{"multiplier":1000}}"#,
            r#"{"backoff":{"maxMs":100000000000}}"#,
        ] {
            assert!(policy(bad).validate().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<RetryPolicy>(r#"{"maxAttemps":3}"#).is_err(), "a misspelt field");
        assert!(policy(r#"{"maxAttempts":3,"backoff":{"initialMs":5}}"#).validate().is_ok());
    }
}
