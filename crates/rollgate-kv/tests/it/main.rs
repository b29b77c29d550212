//! rollgate-kv's light integration tests, built as one test binary: each
//! module is a former `tests/*.rs` file. One binary links the library once
//! instead of once per file, and its tests run side by side.
//!
//! The heavy ones stay binaries of their own, so that cargo runs each alone
//! rather than beside other tests on a small machine: `tests/demo.rs` (a
//! whole rolling upgrade under load, in one process) and `tests/procs/`
//! (`rollgate-kv` processes: several `serve` on a real etcd, and the
//! command line).

// Scenario tests read top to bottom, so a long one stays in one piece.
#![allow(clippy::too_many_lines)]

mod cdp;
#[path = "../shared/clients.rs"]
mod clients;
mod support;

mod bad_input;
mod catch_up;
mod clock_skew;
mod cluster;
mod dashboard_browser;
mod mixed_releases;
mod quorum_peer;
mod reads;
mod routes;
mod secure;
mod secure_cluster;
mod signed_releases;
mod wire_golden;
