//! rollgate-kv's light integration tests, built as one test binary: each
//! module is a former `tests/*.rs` file. One binary links the library once
//! instead of once per file, and its tests run side by side.
//!
//! The heavy ones stay binaries of their own, so that cargo runs each alone
//! rather than beside other tests on a small machine: `tests/demo.rs` (a
//! whole rolling upgrade under load, in one process), `tests/multi_process.rs`
//! and `tests/upgrade_flags.rs` (several `rollgate-kv serve` processes on a
//! real etcd).

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod cli;
mod cluster;
mod mixed_releases;
mod wire_golden;
