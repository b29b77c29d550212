//! Serving (I11, fail closed), the hot-path bits and inbound peers.

use std::fmt;

use serde::Serialize;

use super::{Bounds, Me, Mono};
use crate::cluster::ClusterView;
use crate::flags::registry::FlagRegistry;
use rollgate_store::Revision;

/// What this node confirmed, when (its own clock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Confirmations {
    /// The send time of the last keep-alive of its lease the store answered.
    pub lease_at: Option<Mono>,
    /// The send time of the last probe that found its view current.
    pub view_at: Option<Mono>,
    /// The node is stopping.
    pub stopping: bool,
}

/// Why a node does not serve.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FenceReason {
    /// It is stopping.
    Stopping,
    /// Its view does not name it a member of this incarnation (forgotten,
    /// or replaced by a newer start of the same id): it must restart.
    NotAMember,
    /// Its view shows it stopped (its lease expired, or it left).
    LeaseLost,
    /// The cluster has flags its release does not know.
    UnknownFlags {
        /// The flags.
        flags: Vec<String>,
    },
    /// It could not confirm its lease in time.
    LeaseUnconfirmed,
    /// It could not confirm its view current in time.
    ViewUnconfirmed,
}

impl fmt::Display for FenceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceReason::Stopping => f.write_str("the node is stopping"),
            FenceReason::NotAMember => {
                f.write_str("the cluster view does not name this node a member (forgotten?): restart it to join again")
            }
            FenceReason::LeaseLost => f.write_str("the cluster sees this node stopped (its liveness lease expired)"),
            FenceReason::UnknownFlags { flags } => {
                write!(f, "the cluster has flags this release does not know: {}", flags.join(", "))
            }
            FenceReason::LeaseUnconfirmed => {
                f.write_str("the liveness lease could not be confirmed in time (metadata store unreachable?)")
            }
            FenceReason::ViewUnconfirmed => {
                f.write_str("the cluster view could not be confirmed current in time (metadata store unreachable?)")
            }
        }
    }
}

/// Whether a node serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Serving {
    /// It serves until `until` (its clock), unless confirmed again.
    Serve {
        /// The deadline.
        until: Mono,
    },
    /// It does not serve, and runs no protocol step.
    Fenced(FenceReason),
}

/// The serving rule (I11): a node serves only while its view names it a
/// running member of its incarnation, its release knows every present flag,
/// and it confirmed its lease within `ttl·(1−ρ)` and its view within
/// `view_lease·(1−ρ)` of `now`. A member the store may already count as
/// stopped, or whose view may miss a disable, does not serve (b, g).
pub fn serving(
    view: &ClusterView,
    registry: &FlagRegistry,
    me: &Me<'_>,
    c: &Confirmations,
    now: Mono,
    bounds: &Bounds,
) -> Serving {
    if c.stopping {
        return Serving::Fenced(FenceReason::Stopping);
    }
    let Some(member) = view.member(me.id).filter(|m| m.record.incarnation == me.incarnation) else {
        return Serving::Fenced(FenceReason::NotAMember);
    };
    if !member.is_running() {
        return Serving::Fenced(FenceReason::LeaseLost);
    }
    let unknown: Vec<String> = view
        .flags
        .iter()
        .filter(|(name, r)| r.is_present() && !registry.supports(name))
        .map(|(name, _)| name.clone())
        .collect();
    if !unknown.is_empty() {
        return Serving::Fenced(FenceReason::UnknownFlags { flags: unknown });
    }
    let lease_until = c.lease_at.map(|t| t.plus(bounds.shrink(bounds.ttl_ms, me.rules)));
    let view_until = c.view_at.map(|t| t.plus(bounds.shrink(bounds.view_lease_ms, me.rules)));
    match (lease_until, view_until) {
        (Some(l), _) if now >= l => Serving::Fenced(FenceReason::LeaseUnconfirmed),
        (None, _) => Serving::Fenced(FenceReason::LeaseUnconfirmed),
        (_, Some(v)) if now >= v => Serving::Fenced(FenceReason::ViewUnconfirmed),
        (_, None) => Serving::Fenced(FenceReason::ViewUnconfirmed),
        (Some(l), Some(v)) => Serving::Serve { until: l.min(v) },
    }
}

/// The hot-path bits of `view`, unless a view at least as new was applied
/// already (`None`: keep the bits): one bit per registry flag whose record
/// says **enabled** (I1), in [`crate::flags::FlagId`] order.
pub fn apply_view(bits_revision: Option<Revision>, view: &ClusterView, registry: &FlagRegistry) -> Option<Vec<bool>> {
    if bits_revision.is_some_and(|r| view.revision <= r) {
        return None;
    }
    Some(registry.iter().map(|(_, d)| view.is_enabled(d.name())).collect())
}

/// Why an inbound peer link is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerRefusal {
    /// The peer.
    pub peer: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for PeerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} refused: {}", self.peer, self.reason)
    }
}

/// Whether a link from `peer` may be served (g): the peer must be a running
/// member in this node's view.
pub fn peer_admitted(view: &ClusterView, peer: &str) -> Result<(), PeerRefusal> {
    match view.member(peer) {
        Some(m) if m.is_running() => Ok(()),
        Some(_) => Err(PeerRefusal { peer: peer.to_string(), reason: "it is not running in the cluster view".into() }),
        None => Err(PeerRefusal {
            peer: peer.to_string(),
            reason: "it is not a member of the cluster (forgotten, or never joined)".into(),
        }),
    }
}
