//! Pipeline templates: filling the OCR template with a producer's parameters (what the scheduler does for
//! each task of a `SubmitTemplate`), beside parsing the same task document from JSON (what a producer's
//! `pmctl submit` does for each task of a plain `Submit`).
//!
//! Run: `cargo bench -p pm-bench --bench template`.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pm_task::pipeline::task_spec_from_json;
use pm_task::template::{Compiled, PipelineDef};

const DEF: &str = r#"{"name": "ocr", "params": {"url": {}, "name": {}, "lang": {"default": "eng"}},
  "template": {"pipeline": [
    {"executorName": "wget", "commands": ["wget -q -O page.png {{url}}"]},
    {"executorName": "tesseract", "commands": ["tesseract page.png text --psm 7 -l {{lang}}"]},
    {"executorName": "mc", "commands": ["mc cp text.txt s3/bucket/{{name}}.txt"]}],
  "maxAttempts": 3}}"#;

fn bench(c: &mut Criterion) {
    let def = PipelineDef::parse(DEF.as_bytes()).expect("definition");
    let compiled = Compiled::new("myname", &def).expect("compiles");
    let values: BTreeMap<String, String> = [
        ("url".to_string(), "https://example.com/scans/2026/12/page-000123.png".to_string()),
        ("name".to_string(), "page-000123".to_string()),
    ]
    .into_iter()
    .collect();
    let filled = compiled.fill(&values, 65536).expect("fills");
    let mut g = c.benchmark_group("template");
    g.throughput(Throughput::Elements(1));
    g.bench_function("fill/ocr_3_params", |b| b.iter(|| compiled.fill(&values, 65536).expect("fill")));
    g.bench_function("parse_task_json/ocr", |b| b.iter(|| task_spec_from_json(&filled.payload).expect("parse")));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
