//! The release floor (Ceph's `require-osd-release`, CockroachDB's finalized
//! cluster version): the oldest release a node may run in this cluster.
//! `POST /admin/upgrade/finalize` raises it once every member runs the
//! release or a later one and the release's stable flags are enabled; from
//! then on a node of an older release is refused at boot and at join, so the
//! cluster can rely on everything that release brought.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::flags::NodeRef;

/// The cluster's release floor, as stored and as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseFloor {
    /// No node below this release may boot or join.
    pub release: String,
    /// When it was raised (the finalizing node's wall clock, ms since the epoch).
    pub finalized_at_ms: u64,
    /// The node that raised it.
    pub by_node: String,
}

/// `POST /admin/upgrade/finalize`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalizeRequest {
    /// The release to finalize; none: the oldest release the members run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Check only; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer of a finalize that is (or, with `dry_run`, would be) accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizeReport {
    /// The release that is (or would become) the floor.
    pub release: String,
    /// The floor before.
    pub previous: Option<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether the floor changed (false for a dry run, or when it already was `release`).
    pub changed: bool,
}

/// Why a release cannot be finalized; each names the operator's fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinalizeBlocker {
    /// A release name that is not dotted numbers (`1.2`, `2.0.1`).
    BadRelease {
        /// The name.
        release: String,
    },
    /// The floor is already higher: it never goes down.
    BelowFloor {
        /// The asked release.
        release: String,
        /// The current floor.
        floor: String,
    },
    /// A member runs an older release (or one that cannot be compared).
    MemberBelow {
        /// The asked release.
        release: String,
        /// The member.
        member: NodeRef,
    },
    /// A stable flag of the release is not enabled.
    FlagNotEnabled {
        /// The asked release.
        release: String,
        /// The flag.
        flag: String,
    },
    /// The answering node's release is older than the asked one, so it
    /// cannot tell which flags that release made stable.
    ReleaseUnknownHere {
        /// The asked release.
        release: String,
        /// The answering node's release.
        node_release: String,
    },
    /// A blocker of a newer API version.
    #[serde(other)]
    Other,
}

impl fmt::Display for FinalizeBlocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinalizeBlocker::BadRelease { release } => write!(
                f,
                "release {release:?} is not dotted numbers such as 1.2 or 2.0.1, so it cannot be ordered; name a release of that form"
            ),
            FinalizeBlocker::BelowFloor { release, floor } => {
                write!(
                    f,
                    "the release floor is already {floor}, above {release}, and it never goes down; nothing to do"
                )
            }
            FinalizeBlocker::MemberBelow { release, member } => write!(
                f,
                "member {member} runs a release older than {release}: upgrade {} to {release} or later (or `rollgate nodes forget {}` if it is gone for good)",
                member.node_id, member.node_id
            ),
            FinalizeBlocker::FlagNotEnabled { release, flag } => write!(
                f,
                "flag `{flag}`, stable in release {release}, is not enabled: run `rollgate flags enable {flag}` (or `rollgate flags enable --all`)"
            ),
            FinalizeBlocker::ReleaseUnknownHere { release, node_release } => write!(
                f,
                "this node runs release {node_release}, older than {release}, and cannot tell which flags {release} made stable: ask a node of release {release} or later"
            ),
            FinalizeBlocker::Other => f.write_str("a blocker this client does not know (upgrade the client)"),
        }
    }
}

/// The message of a refused finalize: every blocker, each with its fix.
pub fn refusal_message(release: &str, blockers: &[FinalizeBlocker]) -> String {
    let parts: Vec<String> = blockers.iter().map(ToString::to_string).collect();
    format!("release {release} cannot be finalized as the cluster's floor: {}", parts.join("; "))
}
