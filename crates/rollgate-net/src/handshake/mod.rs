//! The version handshake, sans-IO: how two peers agree on a protocol version
//! and a transport version, authenticated with the cluster secret.
//!
//! # Messages
//!
//! ```text
//! initiator                                             responder
//!   Hello   { advertisement, nonce_i, auth }  ------>
//!                                              <------  Reply { advertisement, nonce_r, Accept | Reject, mac_r }
//!   Confirm { mac_i }  (or Abort { code })    ------>
//!   data frames ...                           <----->   (or a late Abort when mac_i is wrong)
//! ```
//!
//! An advertisement is the protocol range, the highest and the minimum
//! compatible transport version, the cluster id, the node id and the release.
//! The responder decides ([`decide`]): the highest common protocol version;
//! transport version = the lower of the two highest, mapped through
//! Elasticsearch's best-known-version rule when the responder does not know
//! that exact id, refused when below either side's minimum compatible; or a
//! rejection with a [`RejectCode`] and a message that tells an operator what
//! to upgrade.
//!
//! # Frame format (stable forever)
//!
//! ```text
//! magic "RGHS" (4) | format version 0x01 (1) | kind (1) | body length u16 BE (2) | body (<= 4096)
//! kind: 1 Hello, 2 Reply, 3 Confirm, 4 Abort
//! ```
//!
//! Bodies use the wire codec's primitives only (varints, length-prefixed
//! strings), never transport-version-gated fields, so this format does not
//! depend on transport versions. `tests/it/handshake_negotiation.rs` pins the bytes.
//!
//! # Authentication (invariant I7)
//!
//! With a cluster secret, `mac_r = HMAC-SHA256(secret, "rollgate-handshake-1 responder" | hello frame | reply body up to mac_r)`
//! and `mac_i = HMAC-SHA256(secret, "rollgate-handshake-1 initiator" | hello frame | reply frame)`
//! (each part prefixed with its u32 BE length). Both nonces are inside, so a
//! recorded exchange cannot be replayed, and both advertisements and the
//! decision are covered byte for byte, so a man in the middle who rewrites a
//! range (to force a lower version) makes the MAC check fail on both ends.
//! MACs are compared in constant time. Without a secret the node logs a
//! warning when it starts and the handshake is unauthenticated.
//!
//! # Over TLS: the channel binding
//!
//! On a TLS connection ([`Channel`]) both MACs also cover the session's
//! exporter value (`crate::tls`), as their first part: the handshake is bound
//! to the TLS session it runs in, so an attacker who relays it between two
//! TLS sessions of its own fails the MAC on both ends. A bound side and an
//! unbound side fail too (`AuthFailed`).
//!
//! # What a refusal discloses
//!
//! A node refuses a peer that advertises the node's own id ([`RejectCode::SameNode`]).
//! A Reply(Reject) to a peer the transport has not authenticated (no
//! verified client certificate) carries no cluster id, node id or release:
//! those fields are empty and the message names only the reason and what
//! this node speaks. The initiator explains the refusal from its own side.

use std::fmt;

use rollgate_release::ReleaseProof;
use rollgate_wire::version::{ProtocolRange, ProtocolVersion, TransportVersion, TransportVersionSet};
use rollgate_wire::wire::Limits;

/// The handshake frame magic.
pub const MAGIC: [u8; 4] = *b"RGHS";

/// The handshake format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes in a handshake frame header.
pub const HEADER_LEN: usize = 8;

/// Largest handshake frame body.
pub const MAX_BODY_BYTES: usize = 4096;

/// Bytes in a nonce.
pub const NONCE_LEN: usize = 32;

/// Bytes in a MAC.
pub const MAC_LEN: usize = 32;

/// Longest cluster id, node id or release string.
pub const MAX_ID_BYTES: usize = 128;

/// Longest rejection message.
pub const MAX_MESSAGE_BYTES: usize = 1024;

mod codec;
mod config;
mod explain;
mod secret;

pub use codec::{decode_frame, encode_frame, parse_header};
use codec::{decode_frame_parts, proof_bytes, reply_unsigned_body, truncate};

pub use config::{ConfigError, HandshakeConfig, Negotiated};
pub use explain::explain;
use explain::{explain_redacted, peer_short, redacted};
pub use secret::{ClusterSecret, SecretError};

/// The nonce prefix of a node that reads the signed-release extension.
pub const EXT_MARK: [u8; 8] = *b"RGHSrel1";

/// Whether a nonce carries [`EXT_MARK`].
pub fn marked(nonce: &[u8; NONCE_LEN]) -> bool {
    nonce[..EXT_MARK.len()] == EXT_MARK
}

fn mark(mut nonce: [u8; NONCE_LEN]) -> [u8; NONCE_LEN] {
    nonce[..EXT_MARK.len()].copy_from_slice(&EXT_MARK);
    nonce
}

const LABEL_RESPONDER: &[u8] = b"rollgate-handshake-1 responder";

const LABEL_INITIATOR: &[u8] = b"rollgate-handshake-1 initiator";

const LIMITS: Limits = Limits { max_frame_bytes: MAX_BODY_BYTES, max_collection_len: MAX_BODY_BYTES, max_depth: 4 };

/// Frame kinds.
pub mod kind {
    /// Initiator's advertisement.
    pub const HELLO: u8 = 1;
    /// Responder's advertisement and decision.
    pub const REPLY: u8 = 2;
    /// Initiator's proof.
    pub const CONFIRM: u8 = 3;
    /// Either side gives up, with a reason.
    pub const ABORT: u8 = 4;
}

/// Why a handshake was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectCode {
    /// The protocol ranges do not overlap.
    NoCommonProtocol,
    /// A transport version is below the other side's minimum compatible.
    TransportTooOld,
    /// The peers belong to different clusters.
    ClusterMismatch,
    /// The MAC did not verify, or only one side has a secret.
    AuthFailed,
    /// A frame did not parse or broke a rule.
    Malformed,
    /// The peer runs a release without a manifest signed by the trusted release key.
    UnsignedRelease,
    /// The peer advertises this node's own id (two nodes share an id, or
    /// an address leads back to this node).
    SameNode,
    /// A code this build does not know (sent by a newer peer).
    Other(u8),
}

impl RejectCode {
    /// The stable wire code.
    pub fn code(self) -> u8 {
        match self {
            RejectCode::NoCommonProtocol => 1,
            RejectCode::TransportTooOld => 2,
            RejectCode::ClusterMismatch => 3,
            RejectCode::AuthFailed => 4,
            RejectCode::Malformed => 5,
            RejectCode::UnsignedRelease => 6,
            RejectCode::SameNode => 7,
            RejectCode::Other(c) => c,
        }
    }

    /// A name for counters and logs: `no_common_protocol`, ... (`other_<code>`).
    pub fn name(self) -> String {
        match self {
            RejectCode::NoCommonProtocol => "no_common_protocol".into(),
            RejectCode::TransportTooOld => "transport_too_old".into(),
            RejectCode::ClusterMismatch => "cluster_mismatch".into(),
            RejectCode::AuthFailed => "auth_failed".into(),
            RejectCode::Malformed => "malformed".into(),
            RejectCode::UnsignedRelease => "unsigned_release".into(),
            RejectCode::SameNode => "same_node".into(),
            RejectCode::Other(c) => format!("other_{c}"),
        }
    }

    /// From the stable wire code.
    pub fn from_code(c: u8) -> Self {
        match c {
            1 => RejectCode::NoCommonProtocol,
            2 => RejectCode::TransportTooOld,
            3 => RejectCode::ClusterMismatch,
            4 => RejectCode::AuthFailed,
            5 => RejectCode::Malformed,
            6 => RejectCode::UnsignedRelease,
            7 => RejectCode::SameNode,
            c => RejectCode::Other(c),
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectCode::Other(c) => write!(f, "Other({c})"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A failed handshake: the reason code and an operator-facing message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("handshake failed [{code}]{}: {message}", if *.by_peer { " (refused by the peer)" } else { "" })]
pub struct HandshakeError {
    /// The reason.
    pub code: RejectCode,
    /// What happened and, where it applies, what to upgrade or fix.
    pub message: String,
    /// True when the peer refused (a Reject reply or an Abort frame).
    pub by_peer: bool,
    /// The peer's advertisement, when it was received.
    pub peer: Option<Box<Advertisement>>,
}

impl HandshakeError {
    fn new(code: RejectCode, message: impl Into<String>) -> Self {
        HandshakeError { code, message: message.into(), by_peer: false, peer: None }
    }

    fn malformed(what: impl fmt::Display) -> Self {
        HandshakeError::new(RejectCode::Malformed, format!("malformed handshake frame: {what}"))
    }

    fn with_peer(mut self, peer: &Advertisement) -> Self {
        self.peer = Some(Box::new(peer.clone()));
        self
    }
}

/// A handshake that failed: the error, and the frame to send the peer (if
/// any) before closing.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: HandshakeError,
    /// A Reply(Reject) or Abort frame telling the peer why.
    pub send: Option<Vec<u8>>,
}

impl Failure {
    fn local(error: HandshakeError) -> Self {
        let send = Some(encode_frame(&Frame::Abort(Abort { code: error.code, message: truncate(&error.message) })));
        Failure { error, send }
    }
    fn silent(error: HandshakeError) -> Self {
        Failure { error, send: None }
    }
}

/// What the transport under a handshake provides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channel {
    /// The TLS session's exporter value: with a cluster secret, both MACs
    /// cover it, so the handshake is bound to this TLS session.
    pub binding: Option<[u8; 32]>,
    /// Whether the transport authenticated the peer (a client certificate
    /// of the cluster CA): only then does a refusal name this node.
    pub peer_authenticated: bool,
}

impl Channel {
    /// The MAC parts: the binding (when there is one), then `rest`.
    fn parts<'a>(&'a self, rest: &[&'a [u8]]) -> Vec<&'a [u8]> {
        let mut parts = Vec::with_capacity(rest.len() + 1);
        if let Some(b) = &self.binding {
            parts.push(&b[..]);
        }
        parts.extend_from_slice(rest);
        parts
    }
}

/// One side's advertisement: what it speaks and who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    /// Protocol versions it speaks (from configuration, within the build's `SUPPORTED`).
    pub protocols: ProtocolRange,
    /// Its highest transport version.
    pub transport_current: TransportVersion,
    /// The lowest transport version it accepts.
    pub transport_minimum: TransportVersion,
    /// Cluster id.
    pub cluster_id: String,
    /// Node id.
    pub node_id: String,
    /// Release string (for humans).
    pub release: String,
}

/// Whether the sender authenticates the transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// No cluster secret.
    None,
    /// HMAC-SHA256 with the cluster secret.
    HmacSha256,
}

/// The initiator's first frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The initiator's advertisement.
    pub advert: Advertisement,
    /// Fresh random bytes.
    pub nonce: [u8; NONCE_LEN],
    /// Whether the initiator has a secret.
    pub auth: AuthMode,
}

/// The responder's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The versions both sides use from now on.
    Accept {
        /// The protocol version.
        protocol: ProtocolVersion,
        /// The transport version.
        transport: TransportVersion,
    },
    /// Refused.
    Reject {
        /// Why.
        code: RejectCode,
        /// What to do about it (the responder's view).
        message: String,
    },
}

/// The responder's frame: its advertisement and the decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The responder's advertisement.
    pub advert: Advertisement,
    /// Fresh random bytes.
    pub nonce: [u8; NONCE_LEN],
    /// Accept or reject.
    pub outcome: Outcome,
    /// The responder's release proof (on the wire only when `nonce` is
    /// [`marked`]).
    pub release: Option<ReleaseProof>,
    /// Empty, or the 32-byte MAC over the hello frame and this body up to here.
    pub mac: Vec<u8>,
}

/// The initiator's proof that it knows the secret (an empty MAC without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// Empty, or the 32-byte MAC over the hello and reply frames (and the
    /// release proof, when there is one).
    pub mac: Vec<u8>,
    /// The initiator's release proof (sent only to a marked reply).
    pub release: Option<ReleaseProof>,
}

/// Either side gives up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abort {
    /// Why.
    pub code: RejectCode,
    /// Details.
    pub message: String,
}

/// A handshake frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Kind 1.
    Hello(Hello),
    /// Kind 2.
    Reply(Reply),
    /// Kind 3.
    Confirm(Confirm),
    /// Kind 4.
    Abort(Abort),
}

/// The responder's decision on a peer's advertisement (pure; the table tests
/// drive this directly).
pub fn decide(local: &HandshakeConfig, peer: &Advertisement) -> Outcome {
    let me = local.advertisement();
    let reject = |code| Outcome::Reject { code, message: explain(code, &me, peer) };
    if peer.node_id == local.node_id {
        return reject(RejectCode::SameNode);
    }
    if peer.cluster_id != local.cluster_id {
        return reject(RejectCode::ClusterMismatch);
    }
    let Some(protocol) = local.protocols.highest_common(peer.protocols) else {
        return reject(RejectCode::NoCommonProtocol);
    };
    match negotiate_transport(&local.transport, peer) {
        Some(transport) => Outcome::Accept { protocol, transport },
        None => reject(RejectCode::TransportTooOld),
    }
}

/// Transport negotiation: the lower of the two highest ids; when that id is
/// not one we know, the best known id below it; refused below either side's
/// minimum compatible.
pub fn negotiate_transport(local: &TransportVersionSet, peer: &Advertisement) -> Option<TransportVersion> {
    if peer.transport_current < local.minimum_compatible || local.current < peer.transport_minimum {
        return None;
    }
    let t = local.best_known(peer.transport_current.min(local.current))?;
    (t >= local.minimum_compatible && t >= peer.transport_minimum).then_some(t)
}

/// The initiator, waiting for the reply.
#[derive(Debug)]
pub struct Initiator {
    config: HandshakeConfig,
    hello: Vec<u8>,
    channel: Channel,
}

impl Initiator {
    /// Starts a handshake on a plain connection: returns the state and the
    /// Hello frame to send. `nonce` must be fresh random bytes.
    pub fn start(config: &HandshakeConfig, nonce: [u8; NONCE_LEN]) -> (Initiator, Vec<u8>) {
        Self::start_on(config, nonce, Channel::default())
    }

    /// Starts a handshake on `channel` (a TLS session: the MACs cover its
    /// exporter value). A node that signs marks its nonce on either.
    pub fn start_on(config: &HandshakeConfig, nonce: [u8; NONCE_LEN], channel: Channel) -> (Initiator, Vec<u8>) {
        let nonce = if config.signs() { mark(nonce) } else { nonce };
        let hello = encode_frame(&Frame::Hello(Hello { advert: config.advertisement(), nonce, auth: config.auth() }));
        (Initiator { config: config.clone(), hello: hello.clone(), channel }, hello)
    }

    /// Handles the responder's frame: the agreed versions and the Confirm
    /// frame to send, or the failure (and an Abort frame to send).
    pub fn on_reply(self, bytes: &[u8]) -> Result<(Negotiated, Vec<u8>), Failure> {
        let (f, signed) = decode_frame_parts(bytes).map_err(Failure::local)?;
        let reply = match f {
            Frame::Reply(r) => r,
            Frame::Abort(a) => {
                return Err(Failure::silent(HandshakeError {
                    code: a.code,
                    message: a.message,
                    by_peer: true,
                    peer: None,
                }));
            }
            _ => return Err(Failure::local(HandshakeError::malformed("expected a Reply frame"))),
        };
        let me = self.config.advertisement();
        let peer = &reply.advert;
        let auth_failed = || {
            Failure::local(
                HandshakeError::new(RejectCode::AuthFailed, explain(RejectCode::AuthFailed, &me, peer)).with_peer(peer),
            )
        };
        let authenticated = match &self.config.secret {
            Some(secret) => {
                let body = &bytes[HEADER_LEN..HEADER_LEN + signed];
                let parts = self.channel.parts(&[&self.hello, body]);
                if reply.mac.is_empty() || !secret.verify(LABEL_RESPONDER, &parts, &reply.mac) {
                    return Err(auth_failed());
                }
                true
            }
            None => false,
        };
        match reply.outcome {
            Outcome::Reject { code, message } => Err(Failure::silent(self.rejected(code, message, peer))),
            Outcome::Accept { protocol, transport } => {
                self.check_accept(protocol, transport, peer)?;
                if let Some(message) = self.config.refuse_proof(peer, reply.release.as_ref()) {
                    let e = HandshakeError::new(RejectCode::UnsignedRelease, message).with_peer(peer);
                    return Err(Failure::local(e));
                }
                // A marked reply reads our proof after the MAC, which then covers it.
                let proof = if marked(&reply.nonce) { self.config.release_proof } else { None };
                let mac = match (&self.config.secret, &proof) {
                    (Some(secret), Some(p)) => {
                        secret.sign(LABEL_INITIATOR, &self.channel.parts(&[&self.hello, bytes, &proof_bytes(p)]))
                    }
                    (Some(secret), None) => secret.sign(LABEL_INITIATOR, &self.channel.parts(&[&self.hello, bytes])),
                    (None, _) => Vec::new(),
                };
                let confirm = encode_frame(&Frame::Confirm(Confirm { mac, release: proof }));
                let mut negotiated =
                    Negotiated::new(protocol, transport, peer, authenticated, self.channel.peer_authenticated);
                negotiated.peer_release_manifest = reply.release.map(|p| p.digest);
                Ok((negotiated, confirm))
            }
        }
    }

    /// The error for a Reject reply, explained from this node's side.
    fn rejected(&self, code: RejectCode, message: String, peer: &Advertisement) -> HandshakeError {
        let me = self.config.advertisement();
        let message = match code {
            RejectCode::NoCommonProtocol | RejectCode::TransportTooOld | RejectCode::ClusterMismatch => {
                explain(code, &me, peer)
            }
            RejectCode::AuthFailed if self.config.secret.is_none() => format!(
                "{} requires the cluster secret and this node has none: configure the cluster secret file ({message})",
                peer_short(peer)
            ),
            _ => message,
        };
        let mut e = HandshakeError::new(code, message).with_peer(peer);
        e.by_peer = true;
        e
    }

    /// An Accept must be what both advertisements imply; anything else is
    /// a downgrade, a broken peer, or a peer posing as this node.
    fn check_accept(
        &self,
        protocol: ProtocolVersion,
        transport: TransportVersion,
        peer: &Advertisement,
    ) -> Result<(), Failure> {
        let me = self.config.advertisement();
        if peer.node_id == self.config.node_id {
            let code = RejectCode::SameNode;
            return Err(Failure::local(HandshakeError::new(code, explain(code, &me, peer)).with_peer(peer)));
        }
        if self.config.protocols.highest_common(peer.protocols) != Some(protocol) {
            return Err(Failure::local(
                HandshakeError::malformed(format_args!(
                    "node {} chose protocol {protocol}, but the highest common version of {} and {} is not that: refusing a downgrade",
                    peer.node_id, self.config.protocols, peer.protocols
                ))
                .with_peer(peer),
            ));
        }
        let local = &self.config.transport;
        if transport > local.current
            || transport > peer.transport_current
            || transport < local.minimum_compatible
            || transport < peer.transport_minimum
        {
            return Err(Failure::local(
                HandshakeError::malformed(format_args!(
                    "node {} chose transport version {transport}, outside what both sides speak",
                    peer.node_id
                ))
                .with_peer(peer),
            ));
        }
        if peer.cluster_id != self.config.cluster_id {
            let code = RejectCode::ClusterMismatch;
            return Err(Failure::local(HandshakeError::new(code, explain(code, &me, peer)).with_peer(peer)));
        }
        Ok(())
    }
}

/// The responder, waiting for the initiator's Confirm.
#[derive(Debug)]
pub struct Responder {
    /// The node's configuration (for the release check of the Confirm).
    config: HandshakeConfig,
    secret: Option<ClusterSecret>,
    hello: Vec<u8>,
    reply: Vec<u8>,
    negotiated: Negotiated,
    local: Advertisement,
    peer: Advertisement,
    channel: Channel,
}

impl Responder {
    /// Handles a Hello frame on a plain connection: the state waiting for
    /// Confirm and the Reply frame to send, or the failure (with a
    /// Reply(Reject) frame to send).
    pub fn on_hello(
        config: &HandshakeConfig,
        nonce: [u8; NONCE_LEN],
        bytes: &[u8],
    ) -> Result<(Responder, Vec<u8>), Failure> {
        Self::on_hello_on(config, nonce, bytes, Channel::default())
    }

    /// Handles a Hello frame on `channel` (a TLS session: the MACs cover
    /// its exporter value; a refusal names this node only to a peer the
    /// channel authenticated).
    pub fn on_hello_on(
        config: &HandshakeConfig,
        nonce: [u8; NONCE_LEN],
        bytes: &[u8],
        channel: Channel,
    ) -> Result<(Responder, Vec<u8>), Failure> {
        let hello = match decode_frame(bytes) {
            Ok(Frame::Hello(h)) => h,
            Ok(_) => return Err(Failure::local(HandshakeError::malformed("expected a Hello frame"))),
            Err(e) => return Err(Failure::local(e)),
        };
        let me = config.advertisement();
        let peer_marked = marked(&hello.nonce);
        let peer = hello.advert;
        let mut outcome = decide(config, &peer);
        if outcome_is_accept(&outcome)
            && !peer_marked
            && let Some(message) = config.refuse_proof(&peer, None)
        {
            outcome = Outcome::Reject { code: RejectCode::UnsignedRelease, message };
        }
        if outcome_is_accept(&outcome) {
            outcome = check_auth_modes(config, &me, &peer, hello.auth).unwrap_or(outcome);
        }
        // The extension only towards a peer that marked its nonce (it reads it).
        let ext = peer_marked && config.signs();
        let nonce = if ext { mark(nonce) } else { nonce };
        let release = if ext { config.release_proof } else { None };
        // A refusal to a peer the transport did not authenticate names no
        // cluster, node or release (nor the release's proof).
        let mut reply = match &outcome {
            Outcome::Reject { code, .. } if !channel.peer_authenticated => Reply {
                advert: redacted(&me),
                nonce,
                outcome: Outcome::Reject {
                    code: *code,
                    message: match code {
                        RejectCode::UnsignedRelease => config.unsigned_refusal_redacted(),
                        _ => None,
                    }
                    .unwrap_or_else(|| explain_redacted(*code, &me)),
                },
                release: None,
                mac: Vec::new(),
            },
            _ => Reply { advert: me.clone(), nonce, outcome: outcome.clone(), release, mac: Vec::new() },
        };
        if let Some(secret) = &config.secret {
            let unsigned = reply_unsigned_body(&reply);
            reply.mac = secret.sign(LABEL_RESPONDER, &channel.parts(&[bytes, unsigned.as_bytes()]));
        }
        let reply_frame = encode_frame(&Frame::Reply(reply));
        match outcome {
            Outcome::Accept { protocol, transport } => {
                let negotiated =
                    Negotiated::new(protocol, transport, &peer, config.secret.is_some(), channel.peer_authenticated);
                Ok((
                    Responder {
                        config: config.clone(),
                        secret: config.secret.clone(),
                        hello: bytes.to_vec(),
                        reply: reply_frame.clone(),
                        negotiated,
                        local: me,
                        peer,
                        channel,
                    },
                    reply_frame,
                ))
            }
            Outcome::Reject { code, message } => {
                let message = match code {
                    RejectCode::AuthFailed | RejectCode::UnsignedRelease => message,
                    _ => explain(code, &me, &peer),
                };
                Err(Failure { error: HandshakeError::new(code, message).with_peer(&peer), send: Some(reply_frame) })
            }
        }
    }

    /// What was agreed (effective once the Confirm verifies).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Handles the initiator's Confirm (or Abort) frame.
    pub fn on_confirm(self, bytes: &[u8]) -> Result<Negotiated, Failure> {
        let f = decode_frame(bytes).map_err(|e| Failure::local(e.with_peer(&self.peer)))?;
        let confirm = match f {
            Frame::Confirm(c) => c,
            Frame::Abort(a) => {
                let message = match a.code {
                    RejectCode::AuthFailed => {
                        format!("{} (the peer reported: {})", explain(a.code, &self.local, &self.peer), a.message)
                    }
                    _ => a.message,
                };
                let mut e = HandshakeError::new(a.code, message).with_peer(&self.peer);
                e.by_peer = true;
                return Err(Failure::silent(e));
            }
            _ => {
                return Err(Failure::local(
                    HandshakeError::malformed("expected a Confirm frame").with_peer(&self.peer),
                ));
            }
        };
        if let Some(secret) = &self.secret {
            let verified = match &confirm.release {
                Some(p) => {
                    let proof = proof_bytes(p);
                    let parts = self.channel.parts(&[&self.hello, &self.reply, &proof]);
                    secret.verify(LABEL_INITIATOR, &parts, &confirm.mac)
                }
                None => secret.verify(LABEL_INITIATOR, &self.channel.parts(&[&self.hello, &self.reply]), &confirm.mac),
            };
            if confirm.mac.is_empty() || !verified {
                let code = RejectCode::AuthFailed;
                return Err(Failure::local(
                    HandshakeError::new(code, explain(code, &self.local, &self.peer)).with_peer(&self.peer),
                ));
            }
        }
        if let Some(message) = self.config.refuse_proof(&self.peer, confirm.release.as_ref()) {
            let e = HandshakeError::new(RejectCode::UnsignedRelease, message).with_peer(&self.peer);
            return Err(Failure::local(e));
        }
        let mut negotiated = self.negotiated;
        negotiated.peer_release_manifest = confirm.release.map(|p| p.digest);
        Ok(negotiated)
    }
}

/// A refusal when only one side has a cluster secret.
fn check_auth_modes(
    config: &HandshakeConfig,
    me: &Advertisement,
    peer: &Advertisement,
    auth: AuthMode,
) -> Option<Outcome> {
    let message = match (&config.secret, auth) {
        (Some(_), AuthMode::None) => format!(
            "node {} requires the cluster secret and node {} did not offer one: configure the same cluster secret file on both",
            me.node_id, peer.node_id
        ),
        (None, AuthMode::HmacSha256) => format!(
            "node {} has a cluster secret and node {} has none: configure the same cluster secret file on both",
            peer.node_id, me.node_id
        ),
        _ => return None,
    };
    Some(Outcome::Reject { code: RejectCode::AuthFailed, message })
}

fn outcome_is_accept(o: &Outcome) -> bool {
    matches!(o, Outcome::Accept { .. })
}

/// Feeds arbitrary bytes to the responder as a Hello and, when that
/// succeeds, the same bytes as a Confirm; and to an initiator as a Reply.
/// Never panics; used by the fuzz target and the property tests.
pub fn fuzz_entry(config: &HandshakeConfig, bytes: &[u8]) {
    let _ = decode_frame(bytes);
    if let Ok((responder, _)) = Responder::on_hello(config, [7; NONCE_LEN], bytes) {
        let _ = responder.on_confirm(bytes);
    }
    let (initiator, _) = Initiator::start(config, [9; NONCE_LEN]);
    let _ = initiator.on_reply(bytes);
}
