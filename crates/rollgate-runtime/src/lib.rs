//! rollgate's node runtime: what a node of a mixed-release cluster keeps in
//! the metadata store and decides from it. Use it through the `rollgate`
//! facade (`rollgate::node`, `rollgate::flags`, ...).
//!
//! | module | question it answers |
//! |---|---|
//! | [`cluster`] | who the members are, the cluster epoch, liveness |
//! | [`flags`] | may nodes produce new-format data yet (feature flags) |
//! | [`features`] | do all current members support an operation (cluster features) |
//! | [`capabilities`] | does every member support this REST endpoint / parameter |
//! | [`node`] | the node runtime tying store, membership, flags, features and capabilities together |
//! | [`format`] | what layout stored data has (format versions) |
//! | [`migrate`] | stepwise, resumable, idempotent upgrades of stored data |
//! | [`record`] | extensible records that old code round-trips without loss |
//! | [`audit`] | who changed the cluster: the audit log in the metadata store |
//!
//! Architecture invariant: the runtime speaks no HTTP. The admin API and the
//! `_capabilities` fan-out live in `rollgate-admin`, above it.

#![warn(missing_docs)]

pub mod audit;
pub mod capabilities;
pub mod cluster;
pub mod features;
pub mod flags;
pub mod format;
pub mod migrate;
pub mod node;
pub mod record;
