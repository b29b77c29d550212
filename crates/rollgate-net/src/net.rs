//! Connections locked to the negotiated protocol and transport versions:
//! typed send and receive over tokio TCP.
//!
//! ```text
//! let listener = Listener::<Msg>::bind("127.0.0.1:7000", config.clone()).await?;
//! let mut conn = listener.accept().await?;          // handshaken, typed
//! let peer = connect::<Msg>(addr, config).await?;    // the other side
//! peer.send(msg).await?;  conn.recv().await?;
//! let (tx, rx) = peer.split();                       // cloneable sender + receiver
//! ```
//!
//! # Data frames (after the handshake)
//!
//! ```text
//! kind (1) | protocol u16 BE (2) | transport u32 BE (4) | body length u32 BE (4) | body
//! kind: 0xD0 data (body = Protocol::encode_body), 0xC0 close (body = u8 error flag, reason string), 0xB0 ping (empty)
//! ```
//!
//! Every frame carries the protocol and transport version the connection
//! was locked to. Architecture invariant (I6): a frame claiming any other
//! version closes the connection with [`NetError::VersionMismatch`]
//! (`tests/it/net_connection.rs::i6_*`), and [`Sender::send`] refuses a
//! message of another protocol version ([`NetError::WrongProtocol`]). A body
//! longer than [`Limits::max_frame_bytes`] is refused from its header, before
//! anything is allocated. A first byte `R` is a late handshake frame: the
//! responder's Abort when the initiator's Confirm did not verify.
//!
//! # Flow control
//!
//! Each connection has a bounded send queue ([`NetConfig::send_queue_len`]).
//! [`Sender::send`] waits for room (backpressure); [`Sender::try_send`]
//! returns [`NetError::QueueFull`] instead. A writer task drains the queue,
//! batching writes, and sends a ping when nothing was sent for a third of the
//! idle timeout; [`Receiver::recv`] fails with [`NetError::IdleTimeout`] when
//! nothing (not even a ping) arrived within the idle timeout.
//!
//! # TLS
//!
//! With [`NetConfig::tls`], every connection is mutual TLS 1.3 (see
//! [`crate::tls`]): the version handshake runs inside it, bound to the
//! session by the exporter value, and each side checks that the other's
//! certificate names the node id it advertises. A listener with TLS answers
//! a plaintext handshake with an Abort frame saying that TLS is required.
//!
//! # Listener (invariant I12)
//!
//! Handshakes (TLS included) run in spawned tasks, each bounded by
//! [`NetConfig::handshake_timeout`]. Pending handshakes are bounded per
//! source address ([`NetConfig::max_pending_per_source`]) and in total
//! ([`NetConfig::max_pending_handshakes`]); a new connection evicts the
//! oldest pending one instead of being refused ([`crate::admission`]), so
//! silent sockets never keep a real peer out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::admission::Admission;
use crate::handshake::{
    self, Channel, ConfigError, HandshakeConfig, HandshakeError, Initiator, NONCE_LEN, Negotiated, RejectCode,
    Responder,
};
use crate::tls::{self, NodeTls};
use rollgate_wire::protocol::Protocol;
use rollgate_wire::version::{ProtocolVersion, TransportVersion};
use rollgate_wire::wire::{Limits, Reader, WireError, Writer};

/// Bytes in a data frame header.
pub const FRAME_HEADER_LEN: usize = 11;

/// Data frame kinds.
pub mod frame_kind {
    /// A message.
    pub const DATA: u8 = 0xD0;
    /// Graceful (or error) close, with a reason.
    pub const CLOSE: u8 = 0xC0;
    /// Keepalive.
    pub const PING: u8 = 0xB0;
    /// First byte of a late handshake frame (`RGHS`).
    pub const HANDSHAKE: u8 = b'R';
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Identity, versions, secret, limits.
    pub handshake: HandshakeConfig,
    /// Longest a handshake (connect included, for the initiator) may take.
    pub handshake_timeout: Duration,
    /// A connection with no frame received for this long fails; `None`
    /// disables it (and the keepalive pings).
    pub idle_timeout: Option<Duration>,
    /// Frames queued per connection before `send` waits (`try_send` fails).
    pub send_queue_len: usize,
    /// Handshakes a listener runs at once; a new connection beyond this
    /// evicts the oldest pending one.
    pub max_pending_handshakes: usize,
    /// Handshakes a listener runs at once from one source address; a new
    /// connection from it beyond this evicts its oldest pending one.
    pub max_pending_per_source: usize,
    /// Mutual TLS 1.3 on every connection (`None`: plain TCP, for loopback
    /// and tests).
    pub tls: Option<NodeTls>,
    /// Handshaken connections a listener holds before `accept` takes them.
    pub accept_queue_len: usize,
    /// Handshakes accepted and rejected (shared by every clone of the config).
    pub counters: HandshakeCounters,
}

/// How many handshakes (inbound and outbound) ended which way: accepted, or
/// rejected by [`RejectCode::name`] (`timeout` for one that did not finish
/// in time). Cheap to clone: clones count together.
#[derive(Clone, Debug, Default)]
pub struct HandshakeCounters(Arc<std::sync::Mutex<BTreeMap<(bool, String), u64>>>);

impl HandshakeCounters {
    fn count(&self, accepted: bool, code: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry((accepted, code)).or_default() += 1;
    }

    fn record<T>(&self, result: &Result<T, NetError>) {
        match result {
            Ok(_) => self.count(true, String::new()),
            Err(NetError::Handshake(e)) => self.count(false, e.code.name()),
            Err(NetError::HandshakeTimeout { .. }) => self.count(false, "timeout".into()),
            Err(_) => {}
        }
    }

    /// `(accepted, code, count)` for every outcome seen, accepted first.
    pub fn snapshot(&self) -> Vec<(bool, String, u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(bool, String, u64)> = map.iter().map(|((a, c), n)| (*a, c.clone(), *n)).collect();
        out.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
        out
    }
}

impl NetConfig {
    /// Defaults: 5 s handshake timeout, 60 s idle timeout, a send queue of
    /// 1024 frames, 128 pending handshakes (16 per source address), an
    /// accept queue of 64, no TLS.
    pub fn new(handshake: HandshakeConfig) -> Self {
        NetConfig {
            handshake,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(60)),
            send_queue_len: 1024,
            max_pending_handshakes: 128,
            max_pending_per_source: 16,
            accept_queue_len: 64,
            counters: HandshakeCounters::default(),
            tls: None,
        }
    }

    fn validate<P: Protocol>(&self) -> Result<(), NetError> {
        self.handshake.validate(P::SUPPORTED)?;
        if self.send_queue_len == 0
            || self.max_pending_handshakes == 0
            || self.max_pending_per_source == 0
            || self.accept_queue_len == 0
        {
            return Err(NetError::Config(ConfigError::BadId {
                what: "queue length (send_queue_len, max_pending_handshakes, max_pending_per_source, accept_queue_len)",
                value: "0".into(),
            }));
        }
        if let Some(tls) = &self.tls
            && tls.node_id() != self.handshake.node_id
        {
            return Err(NetError::Tls {
                peer: String::new(),
                message: format!(
                    "the TLS setup is for node {} but the handshake advertises node {}: use this node's own certificate",
                    tls.node_id(),
                    self.handshake.node_id
                ),
            });
        }
        Ok(())
    }
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A socket operation failed.
    #[error("{op} {}: {message}", peer.map(|p| p.to_string()).unwrap_or_default())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The peer address, when known.
        peer: Option<SocketAddr>,
        /// The OS error.
        message: String,
    },
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The handshake was refused or failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// TLS failed or is missing on one side; the message names the fix.
    #[error("{message}")]
    Tls {
        /// The peer address.
        peer: String,
        /// What failed and how to fix it.
        message: String,
    },
    /// The handshake did not finish in time.
    #[error("handshake with {peer} did not finish within {after_ms} ms (slow or silent peer)")]
    HandshakeTimeout {
        /// The peer address.
        peer: String,
        /// The timeout.
        after_ms: u64,
    },
    /// Nothing arrived within the idle timeout.
    #[error("connection to node {peer}: nothing received for {after_ms} ms (idle timeout)")]
    IdleTimeout {
        /// The peer node id.
        peer: String,
        /// The timeout.
        after_ms: u64,
    },
    /// A data frame header announced a body over the limit.
    #[error("frame of {len} bytes from node {peer} exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The peer node id.
        peer: String,
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A frame claimed other versions than the connection agreed on (I6).
    #[error(
        "node {peer} sent a frame of protocol v{got_protocol} transport {got_transport}, but the connection agreed on {protocol} transport {transport}: closing"
    )]
    VersionMismatch {
        /// The peer node id.
        peer: String,
        /// Agreed protocol.
        protocol: ProtocolVersion,
        /// Agreed transport.
        transport: TransportVersion,
        /// Claimed protocol.
        got_protocol: u16,
        /// Claimed transport.
        got_transport: u32,
    },
    /// `send` got a message of another protocol version than agreed (I6).
    #[error("refusing to send a protocol {message} message on a connection to node {peer} that agreed on {negotiated}")]
    WrongProtocol {
        /// The peer node id.
        peer: String,
        /// The message's version.
        message: ProtocolVersion,
        /// The agreed version.
        negotiated: ProtocolVersion,
    },
    /// A message did not encode or decode.
    #[error("message from/to node {peer}: {error}")]
    Wire {
        /// The peer node id.
        peer: String,
        /// What failed.
        error: WireError,
    },
    /// An unknown frame kind.
    #[error("node {peer} sent a frame of unknown kind {kind:#04x}: closing")]
    BadFrame {
        /// The peer node id.
        peer: String,
        /// The kind byte.
        kind: u8,
    },
    /// The send queue is full (`try_send`).
    #[error("send queue to node {peer} is full ({capacity} frames): the peer reads slower than we send")]
    QueueFull {
        /// The peer node id.
        peer: String,
        /// The queue capacity.
        capacity: usize,
    },
    /// The connection is closed.
    #[error("connection to node {peer} is closed{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed {
        /// The peer node id.
        peer: String,
        /// Why, when known.
        reason: Option<String>,
    },
    /// The listener stopped.
    #[error("the listener on {0} stopped")]
    ListenerStopped(SocketAddr),
}

impl NetError {
    /// The handshake reject code, when this is a handshake failure.
    pub fn reject_code(&self) -> Option<RejectCode> {
        match self {
            NetError::Handshake(e) => Some(e.code),
            _ => None,
        }
    }
}

fn io_err(op: &'static str, peer: Option<SocketAddr>) -> impl Fn(std::io::Error) -> NetError {
    move |e| NetError::Io { op, peer, message: e.to_string() }
}

static WARNED_NO_SECRET: AtomicBool = AtomicBool::new(false);

fn warn_without_secret(config: &HandshakeConfig, role: &str) {
    if config.secret.is_none() && !WARNED_NO_SECRET.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            node = %config.node_id,
            role,
            "no cluster secret configured: version handshakes are unauthenticated, so a man in the middle can \
             force peers onto a lower protocol version (configure a cluster secret file)"
        );
    }
}

// ---- handshake runtime ----

async fn read_handshake_frame<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, NetError> {
    let mut header = [0u8; handshake::HEADER_LEN];
    s.read_exact(&mut header).await.map_err(io_err("reading a handshake frame from", None))?;
    let (_, len) = handshake::parse_header(&header)?;
    let mut frame = vec![0u8; handshake::HEADER_LEN + len];
    frame[..handshake::HEADER_LEN].copy_from_slice(&header);
    s.read_exact(&mut frame[handshake::HEADER_LEN..]).await.map_err(io_err("reading a handshake frame from", None))?;
    Ok(frame)
}

async fn send_and_fail<S: AsyncWrite + Unpin>(s: &mut S, f: handshake::Failure) -> NetError {
    if let Some(bytes) = f.send {
        let _ = s.write_all(&bytes).await;
        let _ = s.flush().await;
    }
    NetError::Handshake(f.error)
}

fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::fill(&mut n);
    n
}

/// Runs the initiator side of the handshake on `s` (no timeout; see [`connect`]).
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    config: &HandshakeConfig,
) -> Result<Negotiated, NetError> {
    initiate_on(s, config, Channel::default(), |_| Ok(())).await
}

/// Runs the initiator side on `channel`; `check` sees the peer's node id
/// before this side confirms (the certificate check of a TLS connection).
async fn initiate_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    config: &HandshakeConfig,
    channel: Channel,
    check: impl FnOnce(&str) -> Result<(), HandshakeError>,
) -> Result<Negotiated, NetError> {
    let (initiator, hello) = Initiator::start_on(config, nonce(), channel);
    s.write_all(&hello).await.map_err(io_err("sending the handshake to", None))?;
    let reply = match read_handshake_frame(s).await {
        Ok(r) => r,
        Err(NetError::Handshake(e)) => {
            return Err(send_and_fail(s, handshake::Failure { send: Some(abort_frame(&e)), error: e }).await);
        }
        Err(e) => return Err(e),
    };
    match initiator.on_reply(&reply) {
        Ok((negotiated, confirm)) => {
            if let Err(e) = check(&negotiated.peer_node_id) {
                return Err(send_and_fail(s, handshake::Failure { send: Some(abort_frame(&e)), error: e }).await);
            }
            s.write_all(&confirm).await.map_err(io_err("sending the handshake confirmation to", None))?;
            Ok(negotiated)
        }
        Err(f) => Err(send_and_fail(s, f).await),
    }
}

fn abort_frame(e: &HandshakeError) -> Vec<u8> {
    handshake::encode_frame(&handshake::Frame::Abort(handshake::Abort { code: e.code, message: e.message.clone() }))
}

/// Runs the responder side of the handshake on `s` (no timeout; see [`Listener`]).
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    config: &HandshakeConfig,
) -> Result<Negotiated, NetError> {
    respond_on(s, config, Channel::default(), |_| Ok(())).await
}

/// Runs the responder side on `channel`; `check` sees the node id the
/// Hello advertises before anything is decided (the certificate check of a
/// TLS connection).
async fn respond_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    config: &HandshakeConfig,
    channel: Channel,
    check: impl FnOnce(&str) -> Result<(), HandshakeError>,
) -> Result<Negotiated, NetError> {
    let hello = match read_handshake_frame(s).await {
        Ok(h) => h,
        Err(NetError::Handshake(e)) => {
            return Err(send_and_fail(s, handshake::Failure { send: Some(abort_frame(&e)), error: e }).await);
        }
        Err(e) => return Err(e),
    };
    if let Ok(handshake::Frame::Hello(h)) = handshake::decode_frame(&hello)
        && let Err(e) = check(&h.advert.node_id)
    {
        return Err(send_and_fail(s, handshake::Failure { send: Some(abort_frame(&e)), error: e }).await);
    }
    let (responder, reply) = match Responder::on_hello_on(config, nonce(), &hello, channel) {
        Ok(x) => x,
        Err(f) => return Err(send_and_fail(s, f).await),
    };
    s.write_all(&reply).await.map_err(io_err("sending the handshake reply to", None))?;
    let confirm = match read_handshake_frame(s).await {
        Ok(c) => c,
        Err(NetError::Handshake(e)) => {
            return Err(send_and_fail(s, handshake::Failure { send: Some(abort_frame(&e)), error: e }).await);
        }
        Err(e) => return Err(e),
    };
    match responder.on_confirm(&confirm) {
        Ok(n) => Ok(n),
        Err(f) => Err(send_and_fail(s, f).await),
    }
}

// ---- TLS ----

/// Any byte stream a connection runs on (TCP, or TLS over TCP).
trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Io for T {}

type Stream = Box<dyn Io>;

/// The exporter value of a TLS session, which the version handshake is bound to.
fn exporter<D>(conn: &rustls::ConnectionCommon<D>, peer: SocketAddr) -> Result<[u8; 32], NetError> {
    conn.export_keying_material([0u8; tls::EXPORTER_LEN], tls::EXPORTER_LABEL, None).map_err(|e| NetError::Tls {
        peer: peer.to_string(),
        message: format!("TLS with {peer}: no exporter value: {e}"),
    })
}

/// The check that a peer's certificate names the node it advertises.
fn identity_check(
    cert: Option<CertificateDer<'static>>,
    peer: SocketAddr,
) -> impl FnOnce(&str) -> Result<(), HandshakeError> {
    move |node_id: &str| {
        let named = cert.as_ref().is_some_and(|c| tls::certificate_names(c, &tls::node_identity(node_id)));
        if named {
            return Ok(());
        }
        Err(HandshakeError {
            code: RejectCode::AuthFailed,
            message: format!(
                "the peer at {peer} advertises node {node_id} but its certificate does not name that node ({}): \
                 give every node its own certificate (`rollgate certs node {node_id}`)",
                tls::node_identity(node_id)
            ),
            by_peer: false,
            peer: None,
        })
    }
}

/// An operator-facing message for a TLS failure with `peer`, naming the fix.
fn tls_failure(e: &std::io::Error, peer: SocketAddr) -> NetError {
    use rustls::AlertDescription as A;
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let message = match inner {
        Some(err @ rustls::Error::InvalidCertificate(_)) => {
            format!(
                "TLS with {peer}: this node refuses the peer's certificate: {}",
                tls::explain_certificate_error(err)
            )
        }
        Some(rustls::Error::NoCertificatesPresented) => format!(
            "TLS with {peer}: the peer presented no certificate; every node needs a node certificate of the cluster CA ({})",
            tls::HOW_TO_MAKE
        ),
        Some(rustls::Error::AlertReceived(alert)) => match alert {
            A::CertificateExpired => format!(
                "TLS with {peer}: the peer refused this node's certificate: it has expired; issue a new one ({})",
                tls::HOW_TO_MAKE
            ),
            A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::DecryptError => format!(
                "TLS with {peer}: the peer refused this node's certificate: it is not signed by the peer's cluster CA; \
                 give every node a certificate from the same CA (--tls-ca)"
            ),
            A::CertificateRequired => {
                format!("TLS with {peer}: the peer requires a certificate of the cluster CA ({})", tls::HOW_TO_MAKE)
            }
            other => format!("TLS with {peer}: the peer ended the TLS handshake ({other:?})"),
        },
        Some(rustls::Error::InvalidMessage(_)) => format!(
            "TLS with {peer}: the peer does not speak TLS on this port: configure TLS on it too \
             (--tls-cert, --tls-key, --tls-ca), or on neither"
        ),
        Some(other) => format!("TLS with {peer}: {other}"),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => format!(
            "TLS with {peer}: the peer closed the connection during the TLS handshake (it does not speak TLS, or \
             refused this node's certificate: check that both have certificates of the same cluster CA)"
        ),
        None => format!("TLS with {peer}: {e}"),
    };
    NetError::Tls { peer: peer.to_string(), message }
}

/// The initiator's side of a TLS connection: TLS, then the bound handshake.
async fn initiate_tls(
    tcp: TcpStream,
    target: SocketAddr,
    config: &NetConfig,
    tls: &NodeTls,
) -> Result<(Stream, Negotiated), NetError> {
    let connector = tokio_rustls::TlsConnector::from(tls.peer_client());
    let name = ServerName::IpAddress(target.ip().into());
    let mut s = connector.connect(name, tcp).await.map_err(|e| tls_failure(&e, target))?;
    let binding = exporter(s.get_ref().1, target)?;
    let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
    let channel = Channel { binding: Some(binding), peer_authenticated: true };
    let negotiated = initiate_on(&mut s, &config.handshake, channel, identity_check(cert, target)).await?;
    Ok((Box::new(s), negotiated))
}

/// The responder's side of a TLS connection: a plaintext handshake is told
/// that TLS is required; else TLS, then the bound handshake.
async fn respond_tls(
    tcp: TcpStream,
    peer: SocketAddr,
    config: &NetConfig,
    tls: &NodeTls,
) -> Result<(Stream, Negotiated), NetError> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await.map_err(io_err("reading from", Some(peer)))? == 1 && first[0] == handshake::MAGIC[0] {
        let message = "this node requires TLS on peer links: configure the connecting node with a node certificate, \
                       its key and the cluster CA (rollgate-kv serve --tls-cert, --tls-key, --tls-ca)";
        let mut tcp = tcp;
        let _ = tcp
            .write_all(&abort_frame(&HandshakeError {
                code: RejectCode::AuthFailed,
                message: message.into(),
                by_peer: false,
                peer: None,
            }))
            .await;
        let _ = tcp.shutdown().await;
        return Err(NetError::Tls {
            peer: peer.to_string(),
            message: format!("{peer} started a plaintext handshake; {message}"),
        });
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.peer_server());
    let mut s = acceptor.accept(tcp).await.map_err(|e| tls_failure(&e, peer))?;
    let binding = exporter(s.get_ref().1, peer)?;
    let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
    let channel = Channel { binding: Some(binding), peer_authenticated: true };
    let negotiated = respond_on(&mut s, &config.handshake, channel, identity_check(cert, peer)).await?;
    Ok((Box::new(s), negotiated))
}

// ---- data frames (sans-IO) ----

/// A decoded data-phase frame.
#[derive(Debug)]
pub enum DataFrame<P> {
    /// A message.
    Message(P),
    /// Keepalive.
    Ping,
    /// The peer closes; `error` when it closes because of a failure.
    Close {
        /// Whether the close is an error.
        error: bool,
        /// The peer's reason.
        reason: String,
    },
}

/// Encodes a data frame header.
pub fn encode_header(
    kind: u8,
    protocol: ProtocolVersion,
    transport: TransportVersion,
    len: u32,
) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0] = kind;
    h[1..3].copy_from_slice(&protocol.0.to_be_bytes());
    h[3..7].copy_from_slice(&transport.id().to_be_bytes());
    h[7..11].copy_from_slice(&len.to_be_bytes());
    h
}

/// Checks a data frame header against the agreed versions and the limits;
/// returns the kind and the body length.
pub fn parse_header(
    header: &[u8; FRAME_HEADER_LEN],
    negotiated: &Negotiated,
    limits: &Limits,
) -> Result<(u8, usize), NetError> {
    let kind = header[0];
    if !matches!(kind, frame_kind::DATA | frame_kind::CLOSE | frame_kind::PING) {
        return Err(NetError::BadFrame { peer: negotiated.peer_node_id.clone(), kind });
    }
    let got_protocol = u16::from_be_bytes([header[1], header[2]]);
    let got_transport = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    if got_protocol != negotiated.protocol.0 || got_transport != negotiated.transport.id() {
        return Err(NetError::VersionMismatch {
            peer: negotiated.peer_node_id.clone(),
            protocol: negotiated.protocol,
            transport: negotiated.transport,
            got_protocol,
            got_transport,
        });
    }
    let len = u32::from_be_bytes([header[7], header[8], header[9], header[10]]) as u64;
    if len > limits.max_frame_bytes as u64 {
        return Err(NetError::FrameTooLarge {
            peer: negotiated.peer_node_id.clone(),
            len,
            max: limits.max_frame_bytes,
        });
    }
    Ok((kind, len as usize))
}

/// Decodes a frame body of `kind` (after [`parse_header`]).
pub fn decode_body<P: Protocol>(
    kind: u8,
    body: &[u8],
    negotiated: &Negotiated,
    limits: &Limits,
) -> Result<DataFrame<P>, NetError> {
    let wire = |error| NetError::Wire { peer: negotiated.peer_node_id.clone(), error };
    let mut r = Reader::new(body, negotiated.transport, *limits);
    let f = match kind {
        frame_kind::DATA => DataFrame::Message(P::decode_body(negotiated.protocol, &mut r).map_err(wire)?),
        frame_kind::PING => DataFrame::Ping,
        _ => {
            let error = r.read::<bool>().map_err(wire)?;
            let reason: String = r.read().map_err(wire)?;
            DataFrame::Close { error, reason: reason.chars().take(1024).collect() }
        }
    };
    r.finish().map_err(wire)?;
    Ok(f)
}

/// Decodes one complete data frame (header and body): what [`Receiver::recv`]
/// does per frame, for fuzzing and property tests.
pub fn decode_data_frame<P: Protocol>(
    bytes: &[u8],
    negotiated: &Negotiated,
    limits: &Limits,
) -> Result<DataFrame<P>, NetError> {
    let Some(header) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(NetError::Closed {
            peer: negotiated.peer_node_id.clone(),
            reason: Some("truncated header".into()),
        });
    };
    let (kind, len) = parse_header(header, negotiated, limits)?;
    let body = &bytes[FRAME_HEADER_LEN..];
    if body.len() != len {
        return Err(NetError::Closed { peer: negotiated.peer_node_id.clone(), reason: Some("truncated body".into()) });
    }
    decode_body(kind, body, negotiated, limits)
}

/// Encodes `msg` as a complete data frame for `negotiated`, refusing a
/// message of another protocol version.
pub fn encode_data_frame<P: Protocol>(msg: &P, negotiated: &Negotiated, limits: &Limits) -> Result<Vec<u8>, NetError> {
    if msg.version() != negotiated.protocol {
        return Err(NetError::WrongProtocol {
            peer: negotiated.peer_node_id.clone(),
            message: msg.version(),
            negotiated: negotiated.protocol,
        });
    }
    // The header counts towards the writer's total; the limit applies to the body.
    let frame_limits = Limits { max_frame_bytes: limits.max_frame_bytes.saturating_add(FRAME_HEADER_LEN), ..*limits };
    let mut w = Writer::with_capacity(negotiated.transport, frame_limits, 64);
    w.put_raw(&[0u8; FRAME_HEADER_LEN]);
    msg.encode_body(&mut w);
    let body_len = w.len() - FRAME_HEADER_LEN;
    let mut bytes = w.into_bytes().map_err(|error| NetError::Wire { peer: negotiated.peer_node_id.clone(), error })?;
    let header = encode_header(frame_kind::DATA, negotiated.protocol, negotiated.transport, body_len as u32);
    bytes[..FRAME_HEADER_LEN].copy_from_slice(&header);
    Ok(bytes)
}

fn control_frame(kind: u8, negotiated: &Negotiated, error: bool, reason: &str) -> Vec<u8> {
    let mut w = Writer::new(negotiated.transport, Limits::DEFAULT);
    if kind == frame_kind::CLOSE {
        w.write(&error).write(reason);
    }
    let mut out = encode_header(kind, negotiated.protocol, negotiated.transport, w.len() as u32).to_vec();
    out.extend_from_slice(w.as_bytes());
    out
}

// ---- connections ----

enum Outgoing {
    Frame(Vec<u8>),
    Close { error: bool, reason: String },
}

struct Shared {
    negotiated: Negotiated,
    limits: Limits,
    capacity: usize,
    peer_addr: SocketAddr,
    /// Set (with a reason) when the connection must stop: the writer sends a
    /// close frame and shuts the socket down.
    stop: watch::Sender<Option<(bool, String)>>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A handshaken connection locked to its negotiated versions.
pub struct Connection<P> {
    sender: Sender<P>,
    receiver: Receiver<P>,
}

impl<P> std::fmt::Debug for Connection<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("negotiated", &self.sender.shared.negotiated).finish()
    }
}

/// The sending half: cheap to clone, so several tasks can pipeline requests.
pub struct Sender<P> {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    _p: std::marker::PhantomData<fn(P)>,
}

impl<P> Clone for Sender<P> {
    fn clone(&self) -> Self {
        Sender { tx: self.tx.clone(), shared: self.shared.clone(), _p: std::marker::PhantomData }
    }
}

/// The receiving half. `recv` is not cancel-safe: call it from one task (do
/// not race it in `select!` against other branches that may win mid-frame).
pub struct Receiver<P> {
    reader: BufReader<ReadHalf<Stream>>,
    buf: Vec<u8>,
    shared: Arc<Shared>,
    idle: Option<Duration>,
    done: bool,
    _p: std::marker::PhantomData<fn() -> P>,
}

impl<P: Protocol> Connection<P> {
    fn start(stream: Stream, peer_addr: SocketAddr, negotiated: Negotiated, config: &NetConfig) -> Self {
        let (read, write) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(config.send_queue_len);
        let (stop, stop_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            negotiated,
            limits: config.handshake.limits,
            capacity: config.send_queue_len,
            peer_addr,
            stop,
            writer: tokio::sync::Mutex::new(None),
        });
        let ping_every = config.idle_timeout.map(|d| (d / 3).max(Duration::from_millis(1)));
        let handle = tokio::spawn(writer_task(write, rx, stop_rx, shared.clone(), ping_every));
        if let Ok(mut w) = shared.writer.try_lock() {
            *w = Some(handle);
        }
        Connection {
            sender: Sender { tx, shared: shared.clone(), _p: std::marker::PhantomData },
            receiver: Receiver {
                reader: BufReader::with_capacity(16 * 1024, read),
                buf: Vec::new(),
                shared,
                idle: config.idle_timeout,
                done: false,
                _p: std::marker::PhantomData,
            },
        }
    }

    /// What the handshake agreed on (protocol, transport, peer identity).
    pub fn negotiated(&self) -> &Negotiated {
        &self.sender.shared.negotiated
    }

    /// The peer's socket address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.sender.shared.peer_addr
    }

    /// Sends a message, waiting while the send queue is full (backpressure).
    pub async fn send(&self, msg: P) -> Result<(), NetError> {
        self.sender.send(msg).await
    }

    /// Sends without waiting: [`NetError::QueueFull`] when the queue is full.
    pub fn try_send(&self, msg: P) -> Result<(), NetError> {
        self.sender.try_send(msg)
    }

    /// The next message; `Ok(None)` when the peer closed gracefully.
    pub async fn recv(&mut self) -> Result<Option<P>, NetError> {
        self.receiver.recv().await
    }

    /// Splits into a cloneable sender and a receiver.
    pub fn split(self) -> (Sender<P>, Receiver<P>) {
        (self.sender, self.receiver)
    }

    /// Closes gracefully: queued frames are sent, then a close frame, then
    /// the socket is shut down.
    pub async fn close(self) -> Result<(), NetError> {
        self.sender.close().await
    }
}

impl<P: Protocol> Sender<P> {
    /// What the handshake agreed on.
    pub fn negotiated(&self) -> &Negotiated {
        &self.shared.negotiated
    }

    fn closed(&self) -> NetError {
        let reason = self.shared.stop.borrow().as_ref().map(|(_, r)| r.clone());
        NetError::Closed { peer: self.shared.negotiated.peer_node_id.clone(), reason }
    }

    /// Encodes and queues `msg`, waiting while the queue is full. Refuses a
    /// message of another protocol version than agreed (I6).
    pub async fn send(&self, msg: P) -> Result<(), NetError> {
        let frame = encode_data_frame(&msg, &self.shared.negotiated, &self.shared.limits)?;
        self.tx.send(Outgoing::Frame(frame)).await.map_err(|_| self.closed())
    }

    /// Like [`send`](Self::send) but fails with [`NetError::QueueFull`]
    /// instead of waiting.
    pub fn try_send(&self, msg: P) -> Result<(), NetError> {
        let frame = encode_data_frame(&msg, &self.shared.negotiated, &self.shared.limits)?;
        self.tx.try_send(Outgoing::Frame(frame)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NetError::QueueFull {
                peer: self.shared.negotiated.peer_node_id.clone(),
                capacity: self.shared.capacity,
            },
            mpsc::error::TrySendError::Closed(_) => self.closed(),
        })
    }

    /// Closes the connection gracefully (for every clone): frames queued
    /// before are sent, then a close frame; waits until the socket is shut down.
    pub async fn close(&self) -> Result<(), NetError> {
        let _ = self.tx.send(Outgoing::Close { error: false, reason: "closed by the application".into() }).await;
        let handle = self.shared.writer.lock().await.take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        Ok(())
    }
}

impl<P: Protocol> Receiver<P> {
    /// What the handshake agreed on.
    pub fn negotiated(&self) -> &Negotiated {
        &self.shared.negotiated
    }

    /// The next message; `Ok(None)` once the peer closed gracefully. Any
    /// error (a frame of another version, a bad frame, the idle timeout)
    /// closes the connection.
    pub async fn recv(&mut self) -> Result<Option<P>, NetError> {
        if self.done {
            return Ok(None);
        }
        match self.recv_inner().await {
            Ok(Some(m)) => Ok(Some(m)),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                tracing::debug!(peer = %self.shared.negotiated.peer_node_id, error = %e, "closing connection");
                let _ = self.shared.stop.send(Some((true, e.to_string())));
                Err(e)
            }
        }
    }

    async fn read_exact(&mut self, n: usize, first: bool) -> Result<(), NetError> {
        let peer = self.shared.negotiated.peer_node_id.clone();
        self.buf.clear();
        self.buf.resize(n, 0);
        let fut = self.reader.read_exact(&mut self.buf);
        let res = match self.idle {
            Some(d) => match tokio::time::timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => return Err(NetError::IdleTimeout { peer, after_ms: d.as_millis() as u64 }),
            },
            None => fut.await,
        };
        res.map(|_| ()).map_err(|e| {
            let reason = if first && e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the peer closed the socket without a close frame".to_string()
            } else {
                e.to_string()
            };
            NetError::Closed { peer, reason: Some(reason) }
        })
    }

    async fn recv_inner(&mut self) -> Result<Option<P>, NetError> {
        loop {
            self.read_exact(1, true).await?;
            if self.buf[0] == frame_kind::HANDSHAKE {
                return Err(self.late_handshake().await);
            }
            let first = self.buf[0];
            self.read_exact(FRAME_HEADER_LEN - 1, false).await?;
            let mut header = [0u8; FRAME_HEADER_LEN];
            header[0] = first;
            header[1..].copy_from_slice(&self.buf);
            let (kind, len) = parse_header(&header, &self.shared.negotiated, &self.shared.limits)?;
            self.read_exact(len, false).await?;
            match decode_body::<P>(kind, &self.buf, &self.shared.negotiated, &self.shared.limits)? {
                DataFrame::Message(m) => return Ok(Some(m)),
                DataFrame::Ping => continue,
                DataFrame::Close { error: false, .. } => return Ok(None),
                DataFrame::Close { error: true, reason } => {
                    return Err(NetError::Closed {
                        peer: self.shared.negotiated.peer_node_id.clone(),
                        reason: Some(format!("the peer closed the connection: {reason}")),
                    });
                }
            }
        }
    }

    /// The responder refused our Confirm after we started sending.
    async fn late_handshake(&mut self) -> NetError {
        let mut header = [0u8; handshake::HEADER_LEN];
        header[0] = frame_kind::HANDSHAKE;
        if let Err(e) = self.read_exact(handshake::HEADER_LEN - 1, false).await {
            return e;
        }
        header[1..].copy_from_slice(&self.buf);
        let len = match handshake::parse_header(&header) {
            Ok((_, len)) => len,
            Err(e) => return NetError::Handshake(e),
        };
        if let Err(e) = self.read_exact(len, false).await {
            return e;
        }
        let mut frame = header.to_vec();
        frame.extend_from_slice(&self.buf);
        match handshake::decode_frame(&frame) {
            Ok(handshake::Frame::Abort(a)) => {
                NetError::Handshake(HandshakeError { code: a.code, message: a.message, by_peer: true, peer: None })
            }
            Ok(_) => {
                NetError::BadFrame { peer: self.shared.negotiated.peer_node_id.clone(), kind: frame_kind::HANDSHAKE }
            }
            Err(e) => NetError::Handshake(e),
        }
    }
}

async fn writer_task(
    write: WriteHalf<Stream>,
    mut rx: mpsc::Receiver<Outgoing>,
    mut stop: watch::Receiver<Option<(bool, String)>>,
    shared: Arc<Shared>,
    ping_every: Option<Duration>,
) {
    let mut out = BufWriter::with_capacity(16 * 1024, write);
    let mut ping = ping_every.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut sent_since_tick = false;
    let n = &shared.negotiated;
    let close = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                let reason = stop.borrow().clone();
                break reason.unwrap_or((true, "stopped".into()));
            }
            msg = rx.recv() => match msg {
                Some(Outgoing::Frame(bytes)) => {
                    if out.write_all(&bytes).await.is_err() {
                        return;
                    }
                    // Batch: drain what is already queued before flushing.
                    let mut closing = None;
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Outgoing::Frame(b) => {
                                if out.write_all(&b).await.is_err() {
                                    return;
                                }
                            }
                            Outgoing::Close { error, reason } => {
                                closing = Some((error, reason));
                                break;
                            }
                        }
                    }
                    if out.flush().await.is_err() {
                        return;
                    }
                    sent_since_tick = true;
                    if let Some(c) = closing {
                        break c;
                    }
                }
                Some(Outgoing::Close { error, reason }) => break (error, reason),
                None => break (false, "every sender was dropped".into()),
            },
            _ = async { ping.as_mut().expect("guarded").tick().await }, if ping.is_some() => {
                if !sent_since_tick {
                    let f = control_frame(frame_kind::PING, n, false, "");
                    if out.write_all(&f).await.is_err() || out.flush().await.is_err() {
                        return;
                    }
                }
                sent_since_tick = false;
            }
        }
    };
    let f = control_frame(frame_kind::CLOSE, n, close.0, &close.1);
    let _ = out.write_all(&f).await;
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}

/// Connects to `addr`, runs the handshake (both bounded by
/// [`NetConfig::handshake_timeout`]) and returns the typed connection.
pub async fn connect<P: Protocol>(addr: impl ToSocketAddrs, config: NetConfig) -> Result<Connection<P>, NetError> {
    config.validate::<P>()?;
    warn_without_secret(&config.handshake, "initiator");
    let timeout = config.handshake_timeout;
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(io_err("resolving the address to connect to", None))?
        .next()
        .ok_or_else(|| NetError::Io {
            op: "resolving",
            peer: None,
            message: "the address resolved to nothing".into(),
        })?;
    let work = async {
        let mut stream = TcpStream::connect(target).await.map_err(io_err("connecting to", Some(target)))?;
        let _ = stream.set_nodelay(true);
        match &config.tls {
            Some(tls) => initiate_tls(stream, target, &config, tls).await,
            None => {
                let negotiated =
                    initiate(&mut stream, &config.handshake).await.map_err(|e| with_peer(e, Some(target)))?;
                Ok::<_, NetError>((Box::new(stream) as Stream, negotiated))
            }
        }
    };
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(NetError::HandshakeTimeout { peer: target.to_string(), after_ms: timeout.as_millis() as u64 }),
    };
    config.counters.record(&result);
    let (stream, negotiated) = result?;
    tracing::debug!(peer = %negotiated.peer_node_id, protocol = %negotiated.protocol, transport = %negotiated.transport, "connected");
    Ok(Connection::start(stream, target, negotiated, &config))
}

fn with_peer(e: NetError, peer: Option<SocketAddr>) -> NetError {
    match e {
        NetError::Io { op, peer: None, message } => NetError::Io { op, peer, message },
        other => other,
    }
}

/// A handshake that failed on a listener.
#[derive(Debug)]
pub struct PeerFailure {
    /// The peer address.
    pub peer: SocketAddr,
    /// What failed.
    pub error: NetError,
}

/// Counters of a listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Handshakes that completed.
    pub accepted: AtomicU64,
    /// Handshakes that failed or timed out.
    pub failed: AtomicU64,
    /// Pending handshakes evicted by newer connections (the per-source or
    /// the total bound was reached).
    pub evicted: AtomicU64,
}

/// Accepts TCP connections and hands out handshaken, typed connections.
pub struct Listener<P> {
    rx: mpsc::Receiver<Result<Connection<P>, PeerFailure>>,
    local_addr: SocketAddr,
    stats: Arc<ListenerStats>,
    task: tokio::task::JoinHandle<()>,
}

impl<P> Drop for Listener<P> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<P: Protocol> Listener<P> {
    /// Binds `addr` and starts accepting. Checks the configuration (the
    /// protocol range must be within `P::SUPPORTED`) and warns when no
    /// cluster secret is configured.
    pub async fn bind(addr: impl ToSocketAddrs, config: NetConfig) -> Result<Self, NetError> {
        config.validate::<P>()?;
        warn_without_secret(&config.handshake, "listener");
        let listener = TcpListener::bind(addr).await.map_err(io_err("binding", None))?;
        let local_addr = listener.local_addr().map_err(io_err("reading the local address of", None))?;
        let (tx, rx) = mpsc::channel(config.accept_queue_len);
        let stats = Arc::new(ListenerStats::default());
        let task = tokio::spawn(accept_loop(listener, config, tx, stats.clone()));
        Ok(Listener { rx, local_addr, stats, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters.
    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// The next handshaken connection. Failed handshakes are logged, counted
    /// and skipped.
    pub async fn accept(&mut self) -> Result<Connection<P>, NetError> {
        loop {
            match self.next().await? {
                Ok(c) => return Ok(c),
                Err(f) => tracing::info!(peer = %f.peer, error = %f.error, "handshake failed"),
            }
        }
    }

    /// The next handshake outcome, failures included (a failure is dropped
    /// when the queue is full, but always counted in [`stats`](Self::stats)).
    pub async fn next(&mut self) -> Result<Result<Connection<P>, PeerFailure>, NetError> {
        self.rx.recv().await.ok_or(NetError::ListenerStopped(self.local_addr))
    }
}

async fn accept_loop<P: Protocol>(
    listener: TcpListener,
    config: NetConfig,
    tx: mpsc::Sender<Result<Connection<P>, PeerFailure>>,
    stats: Arc<ListenerStats>,
) {
    let admission = Admission::new(config.max_pending_per_source, config.max_pending_handshakes);
    let config = Arc::new(config);
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        // Out of file descriptors and the like: back off briefly.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let mut ticket = admission.admit(peer.ip());
                let config = config.clone();
                let tx = tx.clone();
                let stats = stats.clone();
                tasks.spawn(async move {
                    let result = tokio::select! {
                        r = handshake_inbound(stream, peer, &config) => r,
                        () = ticket.evicted() => {
                            stats.evicted.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "pending handshake evicted by newer connections");
                            return;
                        }
                    };
                    drop(ticket);
                    match result {
                        Ok(conn) => {
                            stats.accepted.fetch_add(1, Ordering::Relaxed);
                            let _ = tx.send(Ok(conn)).await;
                        }
                        Err(error) => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, %error, "inbound handshake failed");
                            let _ = tx.try_send(Err(PeerFailure { peer, error }));
                        }
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn handshake_inbound<P: Protocol>(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: &NetConfig,
) -> Result<Connection<P>, NetError> {
    let _ = stream.set_nodelay(true);
    let timeout = config.handshake_timeout;
    let work = async {
        match &config.tls {
            Some(tls) => respond_tls(stream, peer, config, tls).await,
            None => {
                let negotiated = respond(&mut stream, &config.handshake).await?;
                Ok((Box::new(stream) as Stream, negotiated))
            }
        }
    };
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(with_peer(e, Some(peer))),
        Err(_) => Err(NetError::HandshakeTimeout { peer: peer.to_string(), after_ms: timeout.as_millis() as u64 }),
    };
    config.counters.record(&result);
    let (stream, negotiated) = result?;
    tracing::debug!(%peer, node = %negotiated.peer_node_id, protocol = %negotiated.protocol, transport = %negotiated.transport, tls = negotiated.tls, "accepted");
    Ok(Connection::start(stream, peer, negotiated, config))
}
