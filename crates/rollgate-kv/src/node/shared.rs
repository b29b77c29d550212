//! What every part of a running node shares ([`Shared`]), where the node
//! is in serving ([`ServingState`]), and what its last pull from each peer
//! did ([`SyncStats`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rollgate::cluster::ClusterView;
use rollgate::migrate::LocalRunner;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::clock::ClockView;
use super::config::{Addresses, Tuning};
use crate::gates::KvFlags;
use crate::hlc::Hlc;
use crate::peer::link::Links;
use crate::plugins::Audit;
use crate::releases::Release;
use crate::storage::Storage;

/// How many recent inbound handshake refusals a node remembers for `/health`.
const MAX_RECENT_REFUSALS: usize = 16;
/// How many peers a node remembers as having connected to it. Beyond this,
/// ids that are no longer members are forgotten; a peer that is not a
/// member is not remembered while the set is full.
pub(crate) const MAX_INBOUND_SEEN: usize = 1024;

/// Where a node is in serving clients and peers: catching up after a start,
/// ready, stopping, stopped. (Not its membership state in the cluster,
/// which is rollgate's [`rollgate::cluster::NodeState`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServingState {
    /// Registered, pulling from peers; requests get 503.
    CatchingUp,
    /// Serving.
    Ready,
    /// Stopping gracefully; new requests get 503.
    Stopping,
    /// Stopped (or killed).
    Stopped,
}

impl ServingState {
    /// The state as the `code` of a 503 answer and in `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServingState::CatchingUp => "catching_up",
            ServingState::Ready => "ready",
            ServingState::Stopping => "stopping",
            ServingState::Stopped => "stopped",
        }
    }
}

/// The state every part of a running node shares.
pub(crate) struct Shared {
    pub(crate) node_id: String,
    pub(crate) release: &'static Release,
    pub(crate) tuning: Tuning,
    pub(crate) cluster_id: String,
    pub(crate) addresses: Addresses,
    pub(crate) storage: Storage,
    pub(crate) hlc: Hlc,
    /// This node's clock against the cluster's.
    pub(crate) clock: ClockView,
    /// Reads the peers' clocks.
    pub(super) clock_http: rollgate::admin::fanout::MemberClient,
    /// rollgate's node runtime: taken out when the node stops or is killed,
    /// so that nothing keeps it (its liveness lease) alive after that.
    pub(super) runtime: Mutex<Option<rollgate::node::Node>>,
    /// The runtime's cluster view (the last one stays readable after a stop).
    pub(super) views: watch::Receiver<Arc<ClusterView>>,
    /// The flags kv checks, on the hot path.
    pub(crate) flags: KvFlags,
    /// The audit plugin, when configured.
    pub(crate) audit: Option<Arc<Audit>>,
    /// The table migrations' runner, while the node runs.
    pub(super) runner: Mutex<Option<Arc<LocalRunner>>>,
    pub(crate) links: Links,
    pub(super) state: watch::Sender<ServingState>,
    /// Peers that connected to us since the start.
    pub(super) inbound_seen: Mutex<BTreeSet<String>>,
    pub(super) inbound_notify: Notify,
    /// Recent inbound handshake failures (for `/health`).
    pub(super) refusals: Mutex<VecDeque<String>>,
    /// Background pulls running (peer -> run again when done).
    pub(super) resyncs: Mutex<HashMap<String, bool>>,
    pub(super) background: Mutex<JoinSet<()>>,
    /// The last catch-up from each peer (a watch, so a caller can wait for the next).
    pub(super) sync_stats: watch::Sender<BTreeMap<String, SyncStats>>,
    /// Peers dialled at another address than the one they registered.
    pub(super) dial_overrides: BTreeMap<String, String>,
}

impl Shared {
    pub(crate) fn state(&self) -> ServingState {
        *self.state.borrow()
    }

    pub(super) fn set_state(&self, to: ServingState) {
        self.state.send_if_modified(|s| {
            // Never back from stopping or stopped.
            let allowed = !matches!(*s, ServingState::Stopping | ServingState::Stopped) || to == ServingState::Stopped;
            let changed = allowed && *s != to;
            if changed {
                tracing::info!(node = %self.node_id, from = s.as_str(), to = to.as_str(), "node state");
                *s = to;
            }
            changed
        });
    }

    pub(crate) fn view(&self) -> Arc<ClusterView> {
        self.views.borrow().clone()
    }

    /// rollgate's node runtime, while the node runs.
    pub(crate) fn runtime(&self) -> Option<rollgate::node::Node> {
        self.runtime.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether every member publishes the cluster feature.
    pub(crate) fn cluster_has_feature(&self, feature: &str) -> bool {
        rollgate::features::cluster_has_feature(&self.view(), feature)
    }

    pub(super) fn note_inbound(&self, peer: &str) {
        let view = self.view();
        let is_member = |id: &str| view.members.contains_key(id);
        let mut seen = self.inbound_seen.lock().unwrap_or_else(|p| p.into_inner());
        let new = remember(&mut seen, peer, is_member, MAX_INBOUND_SEEN);
        drop(seen);
        if new {
            self.inbound_notify.notify_waiters();
        }
    }

    pub(super) fn has_inbound(&self, peer: &str) -> bool {
        self.inbound_seen.lock().unwrap_or_else(|p| p.into_inner()).contains(peer)
    }

    pub(super) fn note_refusal(&self, message: String) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == MAX_RECENT_REFUSALS {
            r.pop_front();
        }
        r.push_back(message);
    }

    pub(crate) fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    pub(crate) fn spawn_background(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut bg = self.background.lock().unwrap_or_else(|p| p.into_inner());
        while bg.try_join_next().is_some() {}
        bg.spawn(f);
    }
}

/// Adds `peer` to `seen`, keeping it within `max`: when full, the ids that
/// are not members are forgotten, and a peer that is not a member is not
/// added to a set that is still full (members always are: their number is
/// the cluster's size). True when `peer` was added.
pub(crate) fn remember(seen: &mut BTreeSet<String>, peer: &str, is_member: impl Fn(&str) -> bool, max: usize) -> bool {
    if seen.contains(peer) {
        return false;
    }
    if seen.len() >= max {
        seen.retain(|id| is_member(id));
    }
    if seen.len() >= max && !is_member(peer) {
        tracing::warn!(%peer, max, "too many peers seen: not remembering one that is not a member");
        return false;
    }
    seen.insert(peer.to_string())
}

/// What a pull from one peer did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncStats {
    /// The peer.
    pub peer: String,
    /// The protocol version of the connection.
    pub protocol: u16,
    /// Pulls from this peer since the node started, this one included.
    pub pulls: u64,
    /// Whether digest ranges were compared (protocol v3).
    pub digests: bool,
    /// Ranges compared.
    pub ranges: usize,
    /// Ranges that matched and were not copied.
    pub ranges_skipped: usize,
    /// Sync requests made (one per chunk).
    pub sync_requests: u64,
    /// Entries received.
    pub entries_received: u64,
    /// Entries that were newer than ours and were stored.
    pub entries_stored: u64,
    /// Entries refused for a version beyond the drift bound (the peer's
    /// clock was ahead when it wrote them); they stay out until real time
    /// reaches them.
    pub entries_refused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_seen_stay_bounded_and_members_are_always_remembered() {
        let members = ["m1", "m2"];
        let is_member = |id: &str| members.contains(&id);
        let mut seen = BTreeSet::new();
        for i in 0..10_000 {
            remember(&mut seen, &format!("stranger-{i}"), is_member, 8);
            assert!(seen.len() <= 8, "{}", seen.len());
        }
        assert!(remember(&mut seen, "m1", is_member, 8), "a member gets in when the set is full of strangers");
        assert!(seen.contains("m1") && seen.len() <= 8);
        assert!(!remember(&mut seen, "m1", is_member, 8), "already there");
    }
}
