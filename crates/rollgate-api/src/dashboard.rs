//! What the dashboard (`GET /ui/`) shows, as one JSON object: the page
//! embeds it and `GET /ui/events` sends it again on every change.

use serde::{Deserialize, Serialize};

use crate::audit::AuditEntry;
use crate::flags::FlagStatus;
use crate::links::LinkStatus;
use crate::nodes::NodeStatus;
use crate::upgrade::{MigrationsSection, NodeIdentity, StoreReachability};

/// A member's links, as it answered `GET /admin/links`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberLinks {
    /// The member.
    pub node_id: String,
    /// Its links (empty when it did not answer or publishes none).
    pub links: Vec<LinkStatus>,
    /// Why they are missing, when they are.
    #[serde(default)]
    pub error: Option<String>,
}

/// A flag with what blocks enabling it, each blocker with its fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardFlag {
    /// The flag.
    #[serde(flatten)]
    pub status: FlagStatus,
    /// Why enabling it now would be refused, each naming the fix (empty:
    /// nothing blocks; for enabled flags always empty).
    pub blockers: Vec<String>,
}

/// The dashboard's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DashboardState {
    /// The cluster.
    pub cluster_id: String,
    /// Its epoch.
    pub epoch: u64,
    /// The node serving the page.
    pub node: NodeIdentity,
    /// Whether it reaches the metadata store.
    pub store: StoreReachability,
    /// The members.
    pub nodes: Vec<NodeStatus>,
    /// Each running member's links.
    pub links: Vec<MemberLinks>,
    /// The flags.
    pub flags: Vec<DashboardFlag>,
    /// Service formats and table migrations.
    pub migrations: MigrationsSection,
    /// Releases the plan can target (from the service's release table).
    pub releases: Vec<String>,
    /// The newest audit entries, newest first.
    pub audit: Vec<AuditEntry>,
    /// The release floor, once finalized (`rollgate upgrade finalize`).
    #[serde(default)]
    pub release_floor: Option<crate::floor::ReleaseFloor>,
    /// When this state was taken (ms since the Unix epoch).
    pub generated_ms: u64,
}
