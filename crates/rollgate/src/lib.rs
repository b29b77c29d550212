//! rollgate: run mixed releases in one cluster, upgrade node by node with no
//! downtime, and switch new behaviour on only once every node can handle it.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate.
//!
//! | module | question it answers |
//! |---|---|
//! | [`version`] | which transport / protocol version ids exist (`M_NNN_S_PP`, ranges) |
//! | [`wire`] | how a message is encoded at a given transport version |
//! | [`protocol`] | which message set two peers speak (one module per protocol version) |
//! | [`handshake`] | how two peers agree on versions, authenticated |
//! | [`net`] | typed connections locked to the agreed versions |
//! | [`store`] | where cluster metadata lives (mem, redb, etcd) |
//! | [`cluster`] | who the members are, the cluster epoch, liveness |
//! | [`flags`] | may nodes produce new-format data yet (feature flags) |
//! | [`features`] | do all current members support an operation (cluster features) |
//! | [`capabilities`] | does every member support this REST endpoint / parameter |
//! | [`admin`] | the admin HTTP API a service mounts |
//! | [`node`] | the node runtime tying store, membership, flags, features and capabilities together |
//! | [`format`] | what layout stored data has (format versions) |
//! | [`migrate`] | stepwise, resumable, idempotent upgrades of stored data |
//! | [`record`] | extensible records that old code round-trips without loss |
//! | [`golden`] | golden wire samples for a service's tests: pin every version's encoding |

pub mod admin;
pub mod capabilities;
pub mod cluster;
pub mod features;
pub mod flags;
pub mod format;
pub mod migrate;
pub mod node;
pub mod record;

/// Small shared helpers: text cut to a bound, wall-clock milliseconds.
pub use rollgate_util as util;

pub use rollgate_net::{handshake, net};
pub use rollgate_store as store;
pub use rollgate_wire::{golden, include_transport_versions, protocol, protocol_versions, version, wire};
