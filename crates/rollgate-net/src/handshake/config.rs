//! A node's handshake configuration (identity, versions, secret, release
//! proof) and what a completed handshake agreed on.

use rollgate_release::{Digest, ReleaseKey, ReleaseProof};
use rollgate_wire::version::{ProtocolRange, ProtocolVersion, TransportVersion, TransportVersionSet};
use rollgate_wire::wire::Limits;

use super::{Advertisement, AuthMode, ClusterSecret, MAX_ID_BYTES};

/// What a node brings to a handshake.
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// This node's id.
    pub node_id: String,
    /// This node's release (for humans and messages only).
    pub release: String,
    /// The cluster this node belongs to.
    pub cluster_id: String,
    /// Protocol versions to speak: from configuration, within the
    /// protocol type's `SUPPORTED` (narrower when running as an older release).
    pub protocols: ProtocolRange,
    /// Transport versions: the crate's `transport_versions::SET`, possibly
    /// `.capped_at(..)` when running as an older release.
    pub transport: TransportVersionSet,
    /// The cluster secret; `None` runs unauthenticated (and warns).
    pub secret: Option<ClusterSecret>,
    /// Limits for data frames after the handshake.
    pub limits: Limits,
    /// This node's signed release manifest's digest and signature.
    pub release_proof: Option<ReleaseProof>,
    /// Accept only peers whose release this key signed.
    pub trusted_release_key: Option<ReleaseKey>,
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configured protocol range is not within what the build supports.
    #[error(
        "configured protocol range {configured} is not within {supported}, the range this build supports: use a range inside it"
    )]
    ProtocolRange {
        /// From configuration.
        configured: ProtocolRange,
        /// Compiled in.
        supported: ProtocolRange,
    },
    /// An id or release string that does not fit the handshake.
    #[error("{what} `{value}` is invalid: use 1 to {MAX_ID_BYTES} bytes without control characters")]
    BadId {
        /// Which one.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The minimum compatible transport version is above the current one.
    #[error("minimum compatible transport version {minimum} is above the current one {current}")]
    TransportSet {
        /// Minimum compatible.
        minimum: TransportVersion,
        /// Current.
        current: TransportVersion,
    },
}

impl HandshakeConfig {
    /// A configuration without a secret and with default limits.
    pub fn new(
        node_id: impl Into<String>,
        release: impl Into<String>,
        cluster_id: impl Into<String>,
        protocols: ProtocolRange,
        transport: TransportVersionSet,
    ) -> Self {
        HandshakeConfig {
            node_id: node_id.into(),
            release: release.into(),
            cluster_id: cluster_id.into(),
            protocols,
            transport,
            secret: None,
            limits: Limits::DEFAULT,
            release_proof: None,
            trusted_release_key: None,
        }
    }

    /// Sets the release proof this node sends and the key peers' releases
    /// must be signed by.
    pub fn with_release(mut self, proof: ReleaseProof, trusted: ReleaseKey) -> Self {
        self.release_proof = Some(proof);
        self.trusted_release_key = Some(trusted);
        self
    }

    /// Whether this node takes part in the signed-release extension.
    pub(super) fn signs(&self) -> bool {
        self.release_proof.is_some() || self.trusted_release_key.is_some()
    }

    /// Why a peer's proof is refused by the trusted key, if it is.
    pub(super) fn refuse_proof(&self, peer: &Advertisement, proof: Option<&ReleaseProof>) -> Option<String> {
        let key = self.trusted_release_key.as_ref()?;
        let them = format!("node {} (release {})", peer.node_id, peer.release);
        match proof {
            None => Some(format!(
                "{them} presented no signed release manifest, and node {} runs only releases signed by release key {}: start {} with a manifest signed by that key (`rollgate release sign`) and the release public key",
                self.node_id,
                key.id(),
                peer.node_id
            )),
            Some(p) if !key.verify_digest(&p.digest, &p.signature) => Some(format!(
                "{them} runs a release whose manifest ({}) is not signed by release key {}, the one node {} trusts: sign it with that key",
                p.digest.short(),
                key.id(),
                self.node_id
            )),
            Some(_) => None,
        }
    }

    /// The refusal of a peer without a signed manifest as told to a peer the
    /// transport has not authenticated: the trusted key, but no node id,
    /// cluster id or release (`None` without a trusted key).
    pub(super) fn unsigned_refusal_redacted(&self) -> Option<String> {
        let key = self.trusted_release_key.as_ref()?;
        Some(format!(
            "this node presented no signed release manifest, and the peer runs only releases signed by release key {}: start this node with a manifest signed by that key (`rollgate release sign`) and the release public key",
            key.id()
        ))
    }

    /// Sets the cluster secret.
    pub fn with_secret(mut self, secret: ClusterSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Checks the configuration against the protocol type's compiled range.
    pub fn validate(&self, supported: ProtocolRange) -> Result<(), ConfigError> {
        if !(supported.contains(self.protocols.min()) && supported.contains(self.protocols.max())) {
            return Err(ConfigError::ProtocolRange { configured: self.protocols, supported });
        }
        for (what, value) in [("node id", &self.node_id), ("cluster id", &self.cluster_id), ("release", &self.release)]
        {
            if value.is_empty() || value.len() > MAX_ID_BYTES || value.chars().any(char::is_control) {
                return Err(ConfigError::BadId { what, value: value.clone() });
            }
        }
        if self.transport.minimum_compatible > self.transport.current {
            return Err(ConfigError::TransportSet {
                minimum: self.transport.minimum_compatible,
                current: self.transport.current,
            });
        }
        Ok(())
    }

    /// This node's advertisement.
    pub fn advertisement(&self) -> Advertisement {
        Advertisement {
            protocols: self.protocols,
            transport_current: self.transport.current,
            transport_minimum: self.transport.minimum_compatible,
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id.clone(),
            release: self.release.clone(),
        }
    }

    pub(super) fn auth(&self) -> AuthMode {
        if self.secret.is_some() { AuthMode::HmacSha256 } else { AuthMode::None }
    }
}

/// What two peers agreed on; the connection is locked to it (invariant I6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The protocol version.
    pub protocol: ProtocolVersion,
    /// The transport version.
    pub transport: TransportVersion,
    /// The peer's node id.
    pub peer_node_id: String,
    /// The peer's release.
    pub peer_release: String,
    /// The peer's cluster id.
    pub peer_cluster_id: String,
    /// The peer's protocol range.
    pub peer_protocols: ProtocolRange,
    /// The peer's highest transport version.
    pub peer_transport: TransportVersion,
    /// Whether the transcript was authenticated with the cluster secret.
    pub authenticated: bool,
    /// The digest of the peer's signed release manifest, when it sent one.
    pub peer_release_manifest: Option<Digest>,
    /// Whether the connection runs over TLS and the peer's certificate
    /// (of the cluster CA, naming the node it advertises) was verified.
    pub tls: bool,
}

impl Negotiated {
    pub(super) fn new(
        protocol: ProtocolVersion,
        transport: TransportVersion,
        peer: &Advertisement,
        authenticated: bool,
        tls: bool,
    ) -> Self {
        Negotiated {
            peer_release_manifest: None,
            protocol,
            transport,
            peer_node_id: peer.node_id.clone(),
            peer_release: peer.release.clone(),
            peer_cluster_id: peer.cluster_id.clone(),
            peer_protocols: peer.protocols,
            peer_transport: peer.transport_current,
            authenticated,
            tls,
        }
    }
}
