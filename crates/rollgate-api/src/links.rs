//! A node's peer links as the admin API shows them (`GET /admin/links`):
//! what the handshake agreed on with each peer, and how many handshakes it
//! accepted and rejected, by reason. The service publishes them (the
//! runtime does not open peer connections itself).

use serde::{Deserialize, Serialize};

/// One link from the answering node to a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The peer's node id.
    pub peer: String,
    /// The peer's data address.
    pub addr: String,
    /// `connecting`, `connected` or `refused`.
    pub state: String,
    /// The agreed protocol version, when connected.
    #[serde(default)]
    pub protocol: Option<u16>,
    /// The agreed transport version, when connected.
    #[serde(default)]
    pub transport: Option<u32>,
    /// The peer's release, when connected.
    #[serde(default)]
    pub peer_release: Option<String>,
    /// Whether the handshake was authenticated with the cluster secret.
    #[serde(default)]
    pub authenticated: Option<bool>,
    /// The digest of the peer's signed release manifest, when it sent one.
    #[serde(default)]
    pub peer_manifest: Option<String>,
    /// Whether the link runs mutual TLS (the peer's certificate verified),
    /// when connected.
    #[serde(default)]
    pub tls: Option<bool>,
    /// The last error or the refusal, when not connected.
    #[serde(default)]
    pub error: Option<String>,
}

/// How many handshakes ended one way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeCount {
    /// `accepted` or `rejected`.
    pub outcome: String,
    /// The reject code (`no_common_protocol`, ...); empty when accepted.
    pub code: String,
    /// How many since the node started.
    pub count: u64,
}

/// `GET /admin/links`: the answering node's links.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    /// The answering node.
    pub node_id: String,
    /// Whether the service publishes its links (false: the lists are empty
    /// because nobody reports them, not because there are none).
    pub published: bool,
    /// Its links, by peer.
    pub links: Vec<LinkStatus>,
    /// Its handshakes (inbound and outbound) by outcome and code.
    pub handshakes: Vec<HandshakeCount>,
}
