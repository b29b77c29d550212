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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, watch};

use crate::handshake::{self, ConfigError, HandshakeConfig, HandshakeError, Negotiated, RejectCode};
use crate::tls::NodeTls;
use rollgate_wire::protocol::Protocol;
use rollgate_wire::version::{ProtocolVersion, TransportVersion};
use rollgate_wire::wire::{Limits, WireError};

mod frames;
mod handshake_io;
mod listener;

use frames::control_frame;
pub use frames::{
    DataFrame, FRAME_HEADER_LEN, decode_body, decode_data_frame, encode_data_frame, encode_header, frame_kind,
    parse_header,
};
use handshake_io::initiate_tls;
pub use handshake_io::{initiate, respond};
pub use listener::{Listener, ListenerStats, PeerFailure};

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

/// Any byte stream a connection runs on (TCP, or TLS over TCP).
trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Io for T {}

type Stream = Box<dyn Io>;

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
