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
//! # Signed releases (an extension old peers never see)
//!
//! A node started with a signed release manifest or a trusted release key
//! ([`HandshakeConfig::release_proof`], [`HandshakeConfig::trusted_release_key`])
//! begins its nonce with [`EXT_MARK`] (old peers treat the nonce as random
//! bytes). A responder that sees the mark and signs too marks its own nonce
//! and adds its release proof (`present u8 | digest 32 | signature 64`)
//! between the outcome and `mac_r`; an initiator that sees a marked reply
//! appends its proof after `mac_i` in the Confirm, and `mac_i` then covers
//! it as a third part. A node with a trusted key refuses a peer that sends
//! no proof, or one that key did not sign ([`RejectCode::UnsignedRelease`]).
//! Without manifests and keys the frames are byte for byte the format above,
//! so old and new nodes keep talking.
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use rollgate_release::{Digest, ReleaseKey, ReleaseProof};
use rollgate_wire::version::{ProtocolRange, ProtocolVersion, TransportVersion, TransportVersionSet};
use rollgate_wire::wire::{Limits, Reader, WireError, Writer};

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

/// The cluster secret: both peers prove knowledge of it and MAC the
/// negotiation transcript with it. `Debug` never prints it.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({} bytes, redacted)", self.0.len())
    }
}

/// Why a cluster secret was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be read.
    #[error("cluster secret file {}: cannot read: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is over [`ClusterSecret::MAX_FILE_BYTES`].
    #[error("cluster secret file {}: {len} bytes, over the limit of {max} bytes; the file must hold only the secret", path.display(), max = ClusterSecret::MAX_FILE_BYTES)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// Others than the file's owner may read it.
    #[error("cluster secret file {}: {reason}", path.display())]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// The permissions found and the fix.
        reason: String,
    },
    /// The secret is shorter than [`ClusterSecret::MIN_BYTES`].
    #[error("cluster secret{}: {len} bytes after trimming whitespace, at least {min} are required (e.g. `head -c 32 /dev/urandom | base64 > secret`)", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default(), min = ClusterSecret::MIN_BYTES)]
    TooShort {
        /// The file, if read from one.
        path: Option<PathBuf>,
        /// The length found.
        len: usize,
    },
}

impl ClusterSecret {
    /// Shortest secret accepted, in bytes.
    pub const MIN_BYTES: usize = 16;
    /// Largest secret file accepted, in bytes.
    pub const MAX_FILE_BYTES: u64 = 4096;

    /// A secret from bytes (surrounding ASCII whitespace is trimmed).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, SecretError> {
        Self::build(bytes.as_ref(), None)
    }

    fn build(bytes: &[u8], path: Option<&Path>) -> Result<Self, SecretError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < Self::MIN_BYTES {
            return Err(SecretError::TooShort { path: path.map(Path::to_path_buf), len: trimmed.len() });
        }
        Ok(ClusterSecret(Arc::from(trimmed)))
    }

    /// Reads a secret from a file: at most [`MAX_FILE_BYTES`](Self::MAX_FILE_BYTES),
    /// at least [`MIN_BYTES`](Self::MIN_BYTES) after trimming whitespace,
    /// readable by its owner only (as ssh requires of a private key).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SecretError> {
        use std::io::Read;
        let path = path.as_ref();
        let io = |e: std::io::Error| SecretError::Io { path: path.to_path_buf(), message: e.to_string() };
        if std::fs::metadata(path).is_ok() {
            crate::tls::private_file_check(path)
                .map_err(|reason| SecretError::TooOpen { path: path.to_path_buf(), reason })?;
        }
        let file = std::fs::File::open(path).map_err(io)?;
        let mut buf = Vec::new();
        // Read one byte past the limit, so a file that grows while we read is still caught.
        file.take(Self::MAX_FILE_BYTES + 1).read_to_end(&mut buf).map_err(io)?;
        if buf.len() as u64 > Self::MAX_FILE_BYTES {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(buf.len() as u64);
            return Err(SecretError::TooLarge { path: path.to_path_buf(), len });
        }
        Self::build(&buf, Some(path))
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(label);
        for p in parts {
            mac.update(&(p.len() as u32).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    fn sign(&self, label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        self.mac(label, parts).finalize().into_bytes().to_vec()
    }

    /// Constant-time verification.
    fn verify(&self, label: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        self.mac(label, parts).verify_slice(tag).is_ok()
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

fn truncate(s: &str) -> String {
    rollgate_util::cut(s, MAX_MESSAGE_BYTES).to_string()
}

fn put_advert(w: &mut Writer, a: &Advertisement) {
    w.write(&a.protocols.min()).write(&a.protocols.max());
    w.write(&a.transport_current).write(&a.transport_minimum);
    w.write(a.cluster_id.as_str()).write(a.node_id.as_str()).write(a.release.as_str());
}

fn get_text(r: &mut Reader<'_>, what: &str, max: usize) -> Result<String, HandshakeError> {
    let s: String = r.read().map_err(|e| HandshakeError::malformed(format_args!("{what}: {e}")))?;
    if s.len() > max {
        return Err(HandshakeError::malformed(format_args!("{what} is {} bytes, over {max}", s.len())));
    }
    if s.chars().any(char::is_control) {
        return Err(HandshakeError::malformed(format_args!("{what} contains control characters")));
    }
    Ok(s)
}

fn wire(what: &'static str) -> impl Fn(WireError) -> HandshakeError {
    move |e| HandshakeError::malformed(format_args!("{what}: {e}"))
}

fn get_advert(r: &mut Reader<'_>) -> Result<Advertisement, HandshakeError> {
    let min: ProtocolVersion = r.read().map_err(wire("protocol range"))?;
    let max: ProtocolVersion = r.read().map_err(wire("protocol range"))?;
    let protocols = ProtocolRange::new(min.0, max.0).map_err(HandshakeError::malformed)?;
    let transport_current = r.read().map_err(wire("transport version"))?;
    let transport_minimum = r.read().map_err(wire("minimum compatible transport version"))?;
    let cluster_id = get_text(r, "cluster id", MAX_ID_BYTES)?;
    let node_id = get_text(r, "node id", MAX_ID_BYTES)?;
    let release = get_text(r, "release", MAX_ID_BYTES)?;
    Ok(Advertisement { protocols, transport_current, transport_minimum, cluster_id, node_id, release })
}

fn get_nonce(r: &mut Reader<'_>) -> Result<[u8; NONCE_LEN], HandshakeError> {
    r.read().map_err(wire("nonce"))
}

fn get_mac(r: &mut Reader<'_>) -> Result<Vec<u8>, HandshakeError> {
    let mac = r.get_bytes().map_err(wire("mac"))?;
    if !mac.is_empty() && mac.len() != MAC_LEN {
        return Err(HandshakeError::malformed(format_args!("mac of {} bytes (expected 0 or {MAC_LEN})", mac.len())));
    }
    Ok(mac.to_vec())
}

fn put_proof(w: &mut Writer, proof: Option<&ReleaseProof>) {
    match proof {
        None => {
            w.put_u8(0);
        }
        Some(p) => {
            w.put_u8(1);
            w.write(&p.digest.0).write(&p.signature);
        }
    }
}

fn get_proof(r: &mut Reader<'_>) -> Result<Option<ReleaseProof>, HandshakeError> {
    match r.get_u8().map_err(wire("release proof"))? {
        0 => Ok(None),
        1 => {
            let digest: [u8; 32] = r.read().map_err(wire("release digest"))?;
            let signature: [u8; 64] = r.read().map_err(wire("release signature"))?;
            Ok(Some(ReleaseProof { digest: Digest(digest), signature }))
        }
        t => Err(HandshakeError::malformed(format_args!("unknown release proof tag {t}"))),
    }
}

/// The bytes of a proof as the Confirm carries them (the third MAC part).
fn proof_bytes(proof: &ReleaseProof) -> Vec<u8> {
    let mut w = body_writer();
    put_proof(&mut w, Some(proof));
    w.as_bytes().to_vec()
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn body_writer() -> Writer {
    Writer::with_capacity(TransportVersion::ZERO, LIMITS, 256)
}

/// The reply body without its trailing MAC field.
fn reply_unsigned_body(reply: &Reply) -> Writer {
    let mut w = body_writer();
    put_advert(&mut w, &reply.advert);
    w.write(&reply.nonce);
    match &reply.outcome {
        Outcome::Accept { protocol, transport } => {
            w.put_u8(0);
            w.write(protocol).write(transport);
        }
        Outcome::Reject { code, message } => {
            w.put_u8(1);
            w.put_u8(code.code());
            w.write(truncate(message).as_str());
        }
    }
    if marked(&reply.nonce) {
        put_proof(&mut w, reply.release.as_ref());
    }
    w
}

/// Encodes a frame (header and body).
pub fn encode_frame(f: &Frame) -> Vec<u8> {
    let mut w = body_writer();
    let k = match f {
        Frame::Hello(h) => {
            put_advert(&mut w, &h.advert);
            w.write(&h.nonce);
            w.put_u8(match h.auth {
                AuthMode::None => 0,
                AuthMode::HmacSha256 => 1,
            });
            kind::HELLO
        }
        Frame::Reply(r) => {
            w = reply_unsigned_body(r);
            w.write(r.mac.as_slice());
            kind::REPLY
        }
        Frame::Confirm(c) => {
            w.write(c.mac.as_slice());
            if let Some(p) = &c.release {
                put_proof(&mut w, Some(p));
            }
            kind::CONFIRM
        }
        Frame::Abort(a) => {
            w.put_u8(a.code.code());
            w.write(truncate(&a.message).as_str());
            kind::ABORT
        }
    };
    frame(k, w.as_bytes())
}

/// Validates a frame header and returns the frame's kind and body length.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(u8, usize), HandshakeError> {
    if header[0] == 0x16 {
        return Err(HandshakeError::malformed(
            "the peer speaks TLS and this node does not: configure TLS on this node too (a node certificate, its \
             key and the cluster CA), or on neither",
        ));
    }
    if header[..4] != MAGIC {
        return Err(HandshakeError::malformed(format_args!(
            "bad magic {:02x?} (expected \"RGHS\"): the peer is not a rollgate node, or speaks another protocol",
            &header[..4]
        )));
    }
    if header[4] != FORMAT_VERSION {
        return Err(HandshakeError::malformed(format_args!(
            "handshake format version {} (this build speaks {FORMAT_VERSION})",
            header[4]
        )));
    }
    let k = header[5];
    if !(kind::HELLO..=kind::ABORT).contains(&k) {
        return Err(HandshakeError::malformed(format_args!("unknown frame kind {k}")));
    }
    let len = u16::from_be_bytes([header[6], header[7]]) as usize;
    if len > MAX_BODY_BYTES {
        return Err(HandshakeError::malformed(format_args!("body of {len} bytes, over {MAX_BODY_BYTES}")));
    }
    Ok((k, len))
}

/// Decodes one complete frame. Also returns, for a Reply, the length of its
/// body before the MAC field (the signed part).
fn decode_frame_parts(bytes: &[u8]) -> Result<(Frame, usize), HandshakeError> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(HandshakeError::malformed(format_args!("{} bytes, shorter than a header", bytes.len())));
    };
    let (k, len) = parse_header(header)?;
    let body = &bytes[HEADER_LEN..];
    if body.len() != len {
        return Err(HandshakeError::malformed(format_args!("header says {len} body bytes, found {}", body.len())));
    }
    let mut r = Reader::new(body, TransportVersion::ZERO, LIMITS);
    let mut signed = 0;
    let f = match k {
        kind::HELLO => {
            let advert = get_advert(&mut r)?;
            let nonce = get_nonce(&mut r)?;
            let auth = match r.get_u8().map_err(wire("auth mode"))? {
                0 => AuthMode::None,
                1 => AuthMode::HmacSha256,
                m => return Err(HandshakeError::malformed(format_args!("unknown auth mode {m}"))),
            };
            Frame::Hello(Hello { advert, nonce, auth })
        }
        kind::REPLY => {
            let advert = get_advert(&mut r)?;
            let nonce = get_nonce(&mut r)?;
            let outcome = match r.get_u8().map_err(wire("outcome"))? {
                0 => Outcome::Accept {
                    protocol: r.read().map_err(wire("protocol version"))?,
                    transport: r.read().map_err(wire("transport version"))?,
                },
                1 => Outcome::Reject {
                    code: RejectCode::from_code(r.get_u8().map_err(wire("reject code"))?),
                    message: get_text_lossy(&mut r)?,
                },
                o => return Err(HandshakeError::malformed(format_args!("unknown outcome {o}"))),
            };
            let release = if marked(&nonce) { get_proof(&mut r)? } else { None };
            signed = r.position();
            let mac = get_mac(&mut r)?;
            Frame::Reply(Reply { advert, nonce, outcome, release, mac })
        }
        kind::CONFIRM => {
            let mac = get_mac(&mut r)?;
            let release = if r.remaining() > 0 { get_proof(&mut r)? } else { None };
            Frame::Confirm(Confirm { mac, release })
        }
        _ => Frame::Abort(Abort {
            code: RejectCode::from_code(r.get_u8().map_err(wire("abort code"))?),
            message: get_text_lossy(&mut r)?,
        }),
    };
    r.finish().map_err(wire("frame body"))?;
    Ok((f, signed))
}

/// A peer-supplied message: bounded, control characters replaced.
fn get_text_lossy(r: &mut Reader<'_>) -> Result<String, HandshakeError> {
    let s: String = r.read().map_err(wire("message"))?;
    if s.len() > MAX_MESSAGE_BYTES {
        return Err(HandshakeError::malformed(format_args!("message of {} bytes, over {MAX_MESSAGE_BYTES}", s.len())));
    }
    Ok(s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
}

/// Decodes one complete frame (header and body).
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, HandshakeError> {
    decode_frame_parts(bytes).map(|(f, _)| f)
}

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
    fn signs(&self) -> bool {
        self.release_proof.is_some() || self.trusted_release_key.is_some()
    }

    /// Why a peer's proof is refused by the trusted key, if it is.
    fn refuse_proof(&self, peer: &Advertisement, proof: Option<&ReleaseProof>) -> Option<String> {
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

    fn auth(&self) -> AuthMode {
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
    fn new(
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

/// How a message names `peer`: its node id and release, or "the peer" when
/// its reply did not say (a refusal to an unauthenticated initiator).
fn peer_name(peer: &Advertisement) -> String {
    if peer.node_id.is_empty() {
        "the peer".to_string()
    } else {
        format!("node {} (release {})", peer.node_id, peer.release)
    }
}

fn peer_short(peer: &Advertisement) -> String {
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
fn explain_redacted(code: RejectCode, local: &Advertisement) -> String {
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
            "the peer runs only signed releases: give this node a manifest signed by the cluster's release key".to_string()
        }
        RejectCode::Malformed | RejectCode::Other(_) => "the handshake was refused".to_string(),
    }
}

/// An advertisement that names nothing: the protocol and transport
/// versions of `a` only.
fn redacted(a: &Advertisement) -> Advertisement {
    Advertisement { cluster_id: String::new(), node_id: String::new(), release: String::new(), ..a.clone() }
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
        let nonce = if config.signs() { mark(nonce) } else { nonce };
        Self::start_on(config, nonce, Channel::default())
    }

    /// Starts a handshake on `channel` (a TLS session: the MACs cover its
    /// exporter value).
    pub fn start_on(config: &HandshakeConfig, nonce: [u8; NONCE_LEN], channel: Channel) -> (Initiator, Vec<u8>) {
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
                outcome: Outcome::Reject { code: *code, message: explain_redacted(*code, &me) },
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
