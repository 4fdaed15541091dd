//! The idempotency keys `pmctl submit` gives tasks, so that running the same command again (after a member
//! was down, a timeout, a Ctrl-C) never enqueues a task twice.
//!
//! By default each task gets `pmctl-<hash>-<n>`: `<hash>` is the 128-bit XXH3 of the task's canonical form
//! (its JSON with object keys sorted and no whitespace; for `--app`, the application, pipeline, key, priority
//! and parameters), in 32 hex digits, and `<n>` counts the identical tasks before it in the same command (0
//! for the first). So the same task gets the same key in every run, two identical tasks in one command get
//! two keys, and adding, removing or reordering other tasks changes no task's key. A key is remembered per
//! queue and node for `--idempotency-window` (24 h by default): within it a repeat is answered with the
//! first task's id (`duplicate of ID`), after it the task is enqueued again.
//!
//! A task file's own `idempotencyKey` is kept. `--idempotency-key K` overrides every key: one task gets `K`,
//! several get `K-0`, `K-1`, ... (in input order). `--no-idempotency-key` gives none (each run enqueues
//! every task again), except the keys the files name.

use std::collections::HashMap;

use serde_json::Value;

/// How the tasks of one `pmctl submit` get their idempotency keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode<'a> {
    /// Derived from each task's content (the default).
    Derived,
    /// `--idempotency-key`: this key, or this key with the task's index when there are several.
    Given(&'a str),
    /// `--no-idempotency-key`.
    None,
}

/// Hands out keys for the tasks of one command, in input order.
#[derive(Debug, Default)]
pub struct Keys {
    /// How many tasks of each canonical form were seen so far.
    seen: HashMap<u128, usize>,
}

impl Keys {
    /// The derived key of the next task whose canonical form is `canonical`.
    pub fn derive(&mut self, canonical: &Value) -> String {
        let mut text = String::new();
        write_canonical(canonical, &mut text);
        let hash = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
        let n = self.seen.entry(hash).or_insert(0);
        let key = format!("pmctl-{hash:032x}-{n}");
        *n += 1;
        key
    }
}

/// The key `--idempotency-key given` gives task `index` of `count`.
pub fn given(given: &str, index: usize, count: usize) -> String {
    if count == 1 {
        given.to_string()
    } else {
        format!("{given}-{index}")
    }
}

/// Writes `v` as compact JSON with every object's keys sorted, whatever map type serde_json was built with.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(k) {
                    write_canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_same_task_gets_the_same_key_and_its_repeats_get_the_next_ones() {
        let a: Value =
            serde_json::from_str(r#"{"queue":"q","pipeline":[{"executorName":"sh","commands":["true"]}]}"#).unwrap();
        let a_reordered: Value =
            serde_json::from_str(r#"{ "pipeline": [ {"commands":["true"], "executorName":"sh"} ], "queue": "q" }"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"queue":"q","pipeline":[{"executorName":"sh","commands":["false"]}]}"#).unwrap();
        let mut run1 = Keys::default();
        let k = [run1.derive(&a), run1.derive(&b), run1.derive(&a_reordered)];
        assert!(k[0].starts_with("pmctl-") && k[0].ends_with("-0") && k[0].len() == "pmctl-".len() + 32 + 2);
        assert_ne!(k[0], k[1]);
        assert!(k[2].ends_with("-1"), "the second identical task: {k:?}");
        assert_eq!(&k[2][..k[2].len() - 2], &k[0][..k[0].len() - 2], "the same hash");
        // Another run with a task added in front: the others keep their keys.
        let c: Value = serde_json::json!({"queue": "other"});
        let mut run2 = Keys::default();
        let k2 = [run2.derive(&c), run2.derive(&a), run2.derive(&b), run2.derive(&a)];
        assert_eq!(&k2[1..], &k[..]);
    }

    #[test]
    fn a_given_key_names_one_task_or_is_numbered() {
        assert_eq!(given("run-7", 0, 1), "run-7");
        assert_eq!((given("run-7", 0, 3), given("run-7", 2, 3)), ("run-7-0".into(), "run-7-2".into()));
    }
}
