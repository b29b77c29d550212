//! The upgrade as the admin API shows it: where the cluster is
//! (`GET /admin/upgrade/status`) and what to do to reach a release
//! (`GET /admin/upgrade/plan`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::migrations::ClusterMigrationStatus;

/// `GET /admin/upgrade/status`: an extensible object (clients ignore what
/// they do not know; services add `sections`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpgradeStatus {
    /// The cluster.
    pub cluster_id: String,
    /// The cluster epoch of the view.
    pub epoch: u64,
    /// The store revision of the view.
    pub revision: i64,
    /// The node answering.
    pub node: NodeIdentity,
    /// Whether the answering node reaches the metadata store.
    pub store: StoreReachability,
    /// Whether members run more than one release.
    pub mixed_releases: bool,
    /// The releases members run, with how many run each.
    pub releases: Vec<ReleaseCount>,
    /// The flags by state, and what is ready or blocked.
    pub flags: FlagSummary,
    /// Service formats and node-local migrations, cluster-wide.
    pub migrations: MigrationsSection,
    /// The release floor, once finalized.
    #[serde(default)]
    pub floor: Option<crate::floor::ReleaseFloor>,
    /// Links between running members that negotiated a protocol version
    /// the release of one of their ends marks deprecated.
    #[serde(default)]
    pub deprecated_links: Vec<DeprecatedLink>,
    /// Sections the service added (by name).
    #[serde(default)]
    pub sections: BTreeMap<String, serde_json::Value>,
}

/// A link that negotiated a deprecated protocol version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprecatedLink {
    /// The node that reported the link.
    pub node: String,
    /// The peer.
    pub peer: String,
    /// The negotiated protocol version.
    pub protocol: u16,
    /// The members whose release marks it deprecated.
    pub deprecated_by: Vec<String>,
}

/// Which node answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Its id.
    pub node_id: String,
    /// Its release.
    pub release: String,
}

/// Whether the answering node reaches the metadata store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReachability {
    /// Whether its watch on the store is up.
    pub reachable: bool,
    /// The last error it saw, if any.
    pub last_error: Option<String>,
}

/// The members that run one release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCount {
    /// The release.
    pub release: String,
    /// The members that run it.
    pub nodes: Vec<String>,
    /// How many of them run.
    pub running: usize,
    /// How many of them are stopped.
    pub stopped: usize,
}

/// The flags by state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagSummary {
    /// Enabled flags.
    pub enabled: Vec<String>,
    /// Flags being enabled.
    pub enabling: Vec<String>,
    /// Flags being disabled.
    pub disabling: Vec<String>,
    /// Disabled flags.
    pub disabled: Vec<String>,
    /// Disabled, known, non-experimental flags every member supports.
    pub ready_to_enable: Vec<String>,
    /// Disabled flags some member lacks.
    pub blocked: Vec<BlockedFlag>,
}

/// A disabled flag and the members that lack it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedFlag {
    /// The flag.
    pub flag: String,
    /// The members that do not support it.
    pub lacking: Vec<String>,
}

/// The migrations part of the status: the cluster-wide picture, or why it
/// could not be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MigrationsSection {
    /// Read from the store.
    Status(ClusterMigrationStatus),
    /// The store could not be read.
    Unreadable {
        /// Why.
        error: String,
    },
}

/// One thing the operator does to reach a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// `upgrade_nodes`, `enable_flags` or `forget_or_start_nodes`.
    pub action: String,
    /// What to do, in words.
    pub description: String,
    /// The nodes concerned.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// The flags concerned.
    #[serde(default)]
    pub flags: Vec<String>,
    /// The release to run, for upgrades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The command to run, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// What the operator must do to bring every member to a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradePlan {
    /// The target release.
    pub to: String,
    /// The steps, in order (empty: nothing to do).
    pub steps: Vec<PlanStep>,
    /// The release floor, once finalized.
    #[serde(default)]
    pub floor: Option<crate::floor::ReleaseFloor>,
}
