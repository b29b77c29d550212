//! A rollgate-kv node: its data dir, its membership, its peer links, the
//! replication and catch-up logic and its HTTP API, embeddable in any tokio
//! program ([`start()`]) and run by `rollgate-kv serve`.
//!
//! # Life of a node
//!
//! 1. Open the data dir (`DIR/kv.redb`, locked) and the node id
//!    (`DIR/node_id`, created on first start).
//!    The `records` unit's format stamp is checked read-only first: a unit
//!    this release does not read is refused with nothing written.
//! 2. Check `--join` with a handshake, bind the data and HTTP listeners, and
//!    start rollgate's node runtime ([`rollgate::node::Node`]) with the
//!    release's flags, cluster features, routes, release table, addresses,
//!    protocol and transport ranges: its boot checks (an enabled flag this
//!    release does not know refuses the start, naming it), the
//!    epoch-fenced join (flags and the cluster-feature ratchet; required
//!    flags enabled or refused), the liveness lease and the flag worker. The
//!    peers are the runtime's view of the members. Then the node's table
//!    migrations follow its flag bits ([`crate::migrations`]), and its
//!    plugins wait for their flags ([`crate::plugins`]).
//! 3. Catch up: wait (bounded) until every running peer has connected to us,
//!    then pull from each (digest ranges with peers speaking protocol v3,
//!    full sync otherwise) while already storing what peers replicate.
//!    Until then the HTTP API answers 503 `catching_up`.
//! 4. Serve: writes are stored locally and replicated to every connected
//!    member, and acknowledged once a majority of the registered members
//!    (running or stopped) stored them durably; reads are local, session
//!    (waiting for the version the client has seen) or linearizable
//!    (confirmed by a majority), see `read`.
//! 5. On a graceful stop: refuse new requests, finish running ones, leave
//!    the membership through the runtime (declared stopped), close the
//!    links, stop the migrations, release the data dir.
//!
//! The HTTP listener (`--admin`, loopback unless an address says otherwise)
//! serves the client API and rollgate's admin API (`/admin/...`,
//! `/_capabilities`), whose mutations need the bearer token of
//! `--admin-token-file`.
//!
//! Whenever a peer connects to a ready node, the node pulls from that peer
//! in the background (anti-entropy), so writes a node missed while its link
//! was down reach it without a restart.
//!
//! # Parts
//!
//! | file | holds |
//! |---|---|
//! | `config` | [`NodeConfig`], [`Tuning`], [`Addresses`] |
//! | `error` | [`NodeError`] |
//! | `shared` | what every part of a running node shares; its [`ServingState`] |
//! | [`clock`], `clock_task` | this node's clock against the cluster's (TTL time, the drift bound, skew) and the task reading the peers' clocks |
//! | `write`, `read`, `catchup`, `serve` | the write path, the read path (local, session and linearizable reads), pulls from peers (step 3), inbound peer requests |
//! | `api` | [`Api`], the client API: what the routes of [`crate::http`] call |
//! | `startup` | [`start()`]: steps 1 and 2; it binds the HTTP listener and serves [`crate::http::app`] on it |
//! | `handle` | [`NodeHandle`]: a running node, its stop and kill (step 5) |
//!
//! Imports point one way: [`crate::http`] uses the client API (`api`,
//! `write`, `shared`), and of the node only `startup` uses [`crate::http`],
//! so the HTTP layer stands between the node's core and its start-up.

mod api;
mod catchup;
pub mod clock;
mod clock_task;
mod config;
mod error;
mod handle;
mod read;
mod serve;
mod shared;
mod startup;
mod write;

pub use api::{Api, Health, ReadLevel, StorageStatus};
pub use catchup::CatchUpError;
pub use clock::ClockStatus;
pub use config::{Addresses, NodeConfig, Tuning};
pub use error::NodeError;
pub use handle::NodeHandle;
pub use read::{MAX_SCAN_LIMIT, MAX_SCANNED, ReadAnswer};
pub use shared::{ServingState, SyncStats};
pub use startup::{NODE_ID_FILE, start};
pub use write::{WriteError, WriteOutcome};

/// One real node for the unit tests of the node's parts: a single-member
/// cluster on an in-memory metadata store, real listeners on loopback, a
/// real data dir; ready (it has no peer to catch up from) when returned.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    use super::shared::Shared;
    use super::{NodeConfig, NodeHandle};
    use crate::releases;

    /// Starts node `n1` of release 1.2 on `data` and waits until it serves.
    pub(crate) async fn single_node(data: &std::path::Path) -> NodeHandle {
        let store = rollgate::store::open("mem:", rollgate::store::StoreOptions::default())
            .await
            .expect("an in-memory metadata store");
        let mut config =
            NodeConfig::new(releases::find("1.2").expect("release 1.2"), data, "127.0.0.1:0", "127.0.0.1:0");
        config.node_id = Some("n1".into());
        let node = super::start(config, store).await.expect("start a node");
        assert!(node.wait_ready(Duration::from_secs(30)).await, "the node did not become ready");
        node
    }

    /// The node's shared state (its storage, clock, links).
    pub(crate) fn shared(node: &NodeHandle) -> &Arc<Shared> {
        &node.shared
    }
}
