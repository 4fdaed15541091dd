//! Pipeline templates: an arbitrary command (or a whole arbitrary definition) is compiled or refused with an
//! error, never a panic; one that compiles fills in with arbitrary values (refused only for a NUL byte) and
//! always gives a task document the parser accepts, whose commands hold no marker of the compiler.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pm_task::pipeline::parse_task;
use pm_task::template::{Compiled, PipelineDef};

#[derive(Arbitrary, Debug)]
enum Input {
    /// One command of a one-step pipeline, and a value for each of its placeholders.
    Command { command: String, value: String },
    /// A whole definition as JSON bytes, and a value.
    Definition { json: Vec<u8>, value: String },
}

fn check(compiled: &Compiled, value: &str) {
    let values: BTreeMap<String, String> = compiled.param_names().into_iter().map(|n| (n, value.to_string())).collect();
    match compiled.fill(&values, usize::MAX) {
        Ok(spec) => {
            let task = parse_task(&spec.payload).expect("a filled template is a valid task");
            for step in &task.steps {
                for c in &step.commands {
                    let leaked = c.line().contains('\u{E000}') && !value.contains('\u{E000}');
                    assert!(!leaked, "a marker leaked into {:?}", c.line());
                }
            }
        }
        Err(e) => assert!(value.contains('\0'), "refused {value:?}: {e}"),
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Command { command, value } => {
            let doc = serde_json::json!({"name": "p", "template": {"pipeline": [{"executorName": "sh", "commands": [command]}]}});
            if let Ok(def) = serde_json::from_value::<PipelineDef>(doc) {
                if let Ok(c) = Compiled::new("app", &def) {
                    check(&c, &value);
                }
            }
        }
        Input::Definition { json, value } => {
            if let Ok(def) = PipelineDef::parse(&json) {
                if let Ok(c) = Compiled::new("app", &def) {
                    check(&c, &value);
                }
            }
        }
    }
});
