//! # ringmq-benches
//!
//! Criterion micro-benchmarks (`cargo bench -p ringmq-benches`) and, later, the end-to-end benchmark
//! scripts. The library part holds fixtures shared by several benchmarks so that every benchmark
//! measures the same realistic inputs.

pub mod fixtures;
