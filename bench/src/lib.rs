//! Criterion micro-benchmarks for pipeline-manager: see `benches/` and `examples/`; nothing to import here.
