//! Arbitrary bytes as a task document (what `pmctl submit` and the agent read): the parser accepts or
//! refuses with an error, never panics, and what it accepts has at least one step.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(task) = pm_task::pipeline::parse_task(data) {
        assert!(!task.steps.is_empty(), "an accepted task has steps");
    }
});
