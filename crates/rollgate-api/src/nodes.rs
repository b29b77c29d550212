//! Members as the admin API shows them.

use serde::{Deserialize, Serialize};

/// What a node says about itself (declared state), or what the cluster
/// concludes about it (effective state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Up and serving.
    Running,
    /// Not serving: left cleanly, or crashed (its liveness lease expired).
    Stopped,
}

/// One member as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node id.
    pub node_id: String,
    /// Its release.
    pub release: String,
    /// Running or stopped (effective: running only when it declared so and
    /// its liveness lease is alive).
    pub state: NodeState,
    /// What it declared.
    pub declared: NodeState,
    /// Its data address.
    pub data_addr: String,
    /// Its admin address.
    pub admin_addr: String,
    /// Its protocol range (`v1..=v2`).
    pub protocol: String,
    /// Its transport version.
    pub transport: u32,
    /// The flags it supports.
    pub supported_flags: Vec<String>,
    /// The cluster features it publishes.
    pub cluster_features: Vec<String>,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// Its last heartbeat, when running.
    pub heartbeat_ms: Option<u64>,
    /// Its wall clock minus the cluster's (the median of the running
    /// members' clocks), in milliseconds, as the answering node read them
    /// (from the `Date` headers of their admin listeners: about a second of
    /// precision); `None` for a member that is not running or did not answer.
    /// A clock far off (minutes, hours, days) is one to fix: a service may
    /// refuse writes through it (rollgate-kv beyond its drift bound, 1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// Whether it is the node answering.
    pub this_node: bool,
    /// The digest of its signed release manifest (`sha256:...`), when it
    /// was started with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_manifest: Option<String>,
}

/// `GET /admin/nodes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeList {
    /// The cluster.
    pub cluster_id: String,
    /// The cluster epoch of the view the list was taken from.
    pub epoch: u64,
    /// Every member, running and stopped.
    pub nodes: Vec<NodeStatus>,
}

/// `DELETE /admin/nodes/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    /// The node forgotten.
    pub forgotten: String,
    /// The cluster epoch of the change.
    pub epoch: u64,
}
