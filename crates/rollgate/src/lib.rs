//! rollgate: run mixed releases in one cluster, upgrade node by node with no
//! downtime, and switch new behaviour on only once every node can handle it.
//!
//! This crate is the one dependency line a service writes; it re-exports the
//! layers below it, each behind a feature (see `Cargo.toml`): the codec
//! always (`rollgate-wire`: no async runtime), the handshake and connections
//! (`net`), the metadata store (`store`, `etcd`), the node runtime
//! (`runtime`) and the admin HTTP API (`admin`). `ARCHITECTURE.md` at the
//! repository root is the map; `docs/adopting.md` takes a service from
//! `cargo add rollgate` to a rolling upgrade, step by step on the example in
//! `examples/counter` (releases, protocol and transport versions, a feature
//! flag gating a new record format, the admin API, peers).
//!
//! | module | question it answers |
//! |---|---|
//! | [`version`] | which transport / protocol version ids exist (`M_NNN_S_PP`, ranges) |
//! | [`wire`] | how a message is encoded at a given transport version |
//! | [`protocol`] | which message set two peers speak (one module per protocol version) |
//! | [`handshake`] | how two peers agree on versions, authenticated |
//! | [`net`] | typed connections locked to the agreed versions, over TCP or mutual TLS |
//! | [`tls`] | certificates, keys and TLS configurations; the identity a node certificate proves |
//! | [`admission`] | pending connections bounded per source address and in total (listeners under floods) |
//! | [`store`] | where cluster metadata lives (mem, redb, etcd) |
//! | [`cluster`] | who the members are, the cluster epoch, liveness |
//! | [`flags`] | may nodes produce new-format data yet (feature flags) |
//! | [`features`] | do all current members support an operation (cluster features) |
//! | [`capabilities`] | does every member support this REST endpoint / parameter |
//! | [`admin`] | the admin HTTP API a service mounts |
//! | [`node`] | the node runtime tying store, membership, flags, features and capabilities together |
//! | [`format`](mod@format) | what layout stored data has (format versions) |
//! | [`migrate`] | stepwise, resumable, idempotent upgrades of stored data |
//! | [`record`] | extensible records that old code round-trips without loss |
//! | [`golden`] | golden wire samples for a service's tests: pin every version's encoding |
//! | [`util`] | small shared helpers: text cut to a bound, wall-clock milliseconds |
//! | [`api`] | the admin API's requests and answers (shared with the `rollgate` CLI) |
//! | [`release`] | signed release manifests and release keys |
//! | [`audit`] | the audit log in the metadata store |

#![warn(missing_docs)]

pub use rollgate_util as util;
pub use rollgate_wire::{golden, include_transport_versions, protocol, protocol_versions, version, wire};

#[cfg(feature = "net")]
pub use rollgate_net::{admission, handshake, net, tls};

#[cfg(any(feature = "net", feature = "runtime"))]
pub use rollgate_release as release;

#[cfg(feature = "store")]
pub use rollgate_store as store;

#[cfg(feature = "runtime")]
pub use rollgate_api as api;
#[cfg(feature = "runtime")]
pub use rollgate_runtime::{audit, capabilities, cluster, features, flags, format, migrate, node, record};

#[cfg(feature = "admin")]
pub use rollgate_admin as admin;
