//! The operator-facing explanations of a refusal: from this node's side
//! (naming what to upgrade), and the redacted one a peer that has not
//! authenticated gets (naming nothing of this node).

use super::{Advertisement, RejectCode};

/// How a message names `peer`: its node id and release, or "the peer" when
/// its reply did not say (a refusal to an unauthenticated initiator).
fn peer_name(peer: &Advertisement) -> String {
    if peer.node_id.is_empty() {
        "the peer".to_string()
    } else {
        format!("node {} (release {})", peer.node_id, peer.release)
    }
}

pub(super) fn peer_short(peer: &Advertisement) -> String {
    if peer.node_id.is_empty() { "the peer".to_string() } else { format!("node {}", peer.node_id) }
}

/// The operator-facing explanation of a refusal, from `local`'s point of
/// view ("this node") about `peer`.
pub fn explain(code: RejectCode, local: &Advertisement, peer: &Advertisement) -> String {
    let them = peer_name(peer);
    let us = format!("this node {} (release {})", local.node_id, local.release);
    match code {
        RejectCode::NoCommonProtocol => {
            let fix = if peer.protocols.max() < local.protocols.min() {
                format!("upgrade {} to a release that speaks {} or later", peer_short(peer), local.protocols.min())
            } else {
                format!("upgrade this node to a release that speaks {} or later", peer.protocols.min())
            };
            format!("{them} speaks protocol {}, {us} speaks {}: {fix}", peer.protocols, local.protocols)
        }
        RejectCode::TransportTooOld => {
            let fix = if peer.transport_current < local.transport_minimum {
                format!(
                    "upgrade {} to a release with transport version {} or later",
                    peer_short(peer),
                    local.transport_minimum
                )
            } else if local.transport_current < peer.transport_minimum {
                format!("upgrade this node to a release with transport version {} or later", peer.transport_minimum)
            } else {
                "no transport version known to both is compatible: upgrade the older node".to_string()
            };
            format!(
                "{them} speaks transport versions {}..={}, {us} speaks {}..={}: {fix}",
                peer.transport_minimum, peer.transport_current, local.transport_minimum, local.transport_current
            )
        }
        RejectCode::ClusterMismatch if peer.cluster_id.is_empty() => format!(
            "{them} belongs to another cluster than {us} (cluster `{}`): connect only nodes of one cluster (check the cluster id and the address)",
            local.cluster_id
        ),
        RejectCode::ClusterMismatch => format!(
            "{them} belongs to cluster `{}`, {us} to cluster `{}`: connect only nodes of one cluster (check the cluster id and the address)",
            peer.cluster_id, local.cluster_id
        ),
        RejectCode::AuthFailed => format!(
            "authentication with {them} failed: the nodes do not share the cluster secret, only one has one, or the negotiation was altered in transit; give both the same cluster secret file"
        ),
        RejectCode::UnsignedRelease => format!(
            "{them} and {us} disagree on signed releases: one runs only releases signed by a release key the other's release is not signed by; give both manifests signed by the cluster's release key"
        ),
        RejectCode::SameNode => format!(
            "{them} advertises this node's own id {}: two nodes share one node id (a copied data dir?) or the address leads back to this node; give every node its own --node-id and data dir",
            local.node_id
        ),
        RejectCode::Malformed | RejectCode::Other(_) => format!("{them} sent an invalid handshake"),
    }
}

/// What a refusal tells a peer that the transport has not authenticated:
/// the reason and what this node speaks, nothing that names it.
pub(super) fn explain_redacted(code: RejectCode, local: &Advertisement) -> String {
    match code {
        RejectCode::NoCommonProtocol => format!("no common protocol version: the peer speaks {}", local.protocols),
        RejectCode::TransportTooOld => format!(
            "no compatible transport version: the peer speaks transport versions {}..={}",
            local.transport_minimum, local.transport_current
        ),
        RejectCode::ClusterMismatch => "the peer belongs to another cluster".to_string(),
        RejectCode::AuthFailed => "authentication failed: give both nodes the same cluster secret file".to_string(),
        RejectCode::SameNode => "the peer has the node id this node advertises: give every node its own".to_string(),
        RejectCode::UnsignedRelease => {
            "the peer runs only signed releases: give this node a manifest signed by the cluster's release key"
                .to_string()
        }
        RejectCode::Malformed | RejectCode::Other(_) => "the handshake was refused".to_string(),
    }
}

/// An advertisement that names nothing: the protocol and transport
/// versions of `a` only.
pub(super) fn redacted(a: &Advertisement) -> Advertisement {
    Advertisement { cluster_id: String::new(), node_id: String::new(), release: String::new(), ..a.clone() }
}
