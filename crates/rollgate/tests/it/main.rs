//! rollgate's integration tests, built as one test binary: each module is a
//! former `tests/*.rs` file. One binary links the library once instead of
//! once per file, which keeps the test build small and quick. (The decoder
//! garbage test, `tests/net_garbage.rs`, stays apart: it caps the global
//! allocator of its process.)

// Scenario tests read top to bottom, so a long one stays in one piece.
#![allow(clippy::too_many_lines)]

mod flags_support;
mod migrate_support;

mod admin_api;
mod admin_floods;
mod capabilities_fanout;
mod cluster_epoch_race;
mod cluster_membership;
mod cluster_store_outage;
mod deprecated_protocols;
mod features_join;
mod flags_boot;
mod flags_crash;
mod flags_enable;
mod flags_holes;
mod flags_planner;
mod flags_race;
mod flags_registry;
mod flags_removed;
mod format_bad_input;
mod handshake_negotiation;
mod hygiene;
mod migrate_bad_input;
mod migrate_crash;
mod migrate_local;
mod migrate_reverse;
mod migrate_service;
mod net_connection;
mod net_floods;
mod net_tls;
mod node_services;
mod operator_view;
mod record_roundtrip;
mod release_floor;
mod release_signing;
mod store_bad_input;
mod store_conformance;
mod wire_codec;

/// The name libtest gives the test `name` of the module `module` (pass
/// `module_path!()`), for a test that re-runs itself in a child process with
/// `--exact`: the module path without the crate name.
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}
