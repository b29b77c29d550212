//! Outbound connections to peers: one link per running member, each a task
//! that connects (handshake included), keeps the connection, and reconnects
//! with bounded exponential backoff. A link carries this node's requests
//! (replication, sync, digests) and receives the answers; the peer's own
//! requests arrive on its link to us (see `inbound`).
//!
//! Writes to one peer queue in a bounded per-link queue; a batcher sends
//! whatever is queued together: one `ReplicateBatch` (one commit on the
//! replica) when the connection's protocol has it (v2 on), else one
//! `Replicate` per write, pipelined.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollgate::handshake::{Negotiated, RejectCode};
use rollgate::net::{self, NetConfig, NetError};
use rollgate::version::ProtocolVersion;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};

use super::codec::{self, Incoming, Request, Response};
use crate::Msg;
use crate::replication::{v1 as repl1, v2 as repl2};

/// Settings of the links.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// Identity, versions, secret, timeouts of each connection.
    pub net: NetConfig,
    /// First reconnect delay (doubled per failure).
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Requests awaiting an answer per link.
    pub max_pending: usize,
    /// Writes queued per link before new writes skip it.
    pub write_queue_len: usize,
    /// Most writes in one `ReplicateBatch`.
    pub batch_max_entries: usize,
    /// Most value bytes in one `ReplicateBatch`.
    pub batch_max_bytes: usize,
    /// Replication requests awaiting an answer per link; while they are,
    /// new writes queue up and go out together in the next batch.
    pub max_inflight_batches: usize,
    /// How long a replica may take to acknowledge a write.
    pub replicate_timeout: Duration,
    /// Protocol versions the release marks deprecated: a link that
    /// negotiates one works, and says so in the log.
    pub deprecated_protocols: &'static [u16],
}

/// Why a request on a link failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// No link to that node (it is not a running member).
    #[error("no link to node {node}: it is not a running member")]
    NoLink {
        /// The node.
        node: String,
    },
    /// The link did not come up in time.
    #[error("node {node} is not reachable: {reason}")]
    Unreachable {
        /// The node.
        node: String,
        /// The last connection error.
        reason: String,
    },
    /// The node refused the handshake.
    #[error("node {node} refused the connection: {message}")]
    Refused {
        /// The node.
        node: String,
        /// The handshake's message (names what to upgrade).
        message: String,
    },
    /// The connection closed before the answer came.
    #[error("connection to node {node} closed before it answered")]
    Closed {
        /// The node.
        node: String,
    },
    /// No answer in time.
    #[error("node {node} did not answer within {after_ms} ms")]
    Timeout {
        /// The node.
        node: String,
        /// The timeout.
        after_ms: u64,
    },
    /// Too many requests awaiting answers.
    #[error("too many requests in flight to node {node} ({max})")]
    Busy {
        /// The node.
        node: String,
        /// The limit.
        max: usize,
    },
    /// The message does not exist in the connection's protocol.
    #[error(transparent)]
    NotInProtocol(#[from] codec::NotInProtocol),
    /// Sending failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The peer answered with the wrong message.
    #[error("node {node} answered a {expected} request with something else")]
    Unexpected {
        /// The node.
        node: String,
        /// What was asked.
        expected: &'static str,
    },
}

/// A write waiting to be sent to one peer.
struct QueuedWrite {
    entry: repl1::Entry,
    done: oneshot::Sender<Result<(), String>>,
}

/// One live connection to a peer.
pub struct Session {
    negotiated: Negotiated,
    sender: net::Sender<Msg>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    writes: mpsc::Sender<QueuedWrite>,
    max_pending: usize,
    /// Writes queued to this peer so far.
    queued: AtomicU64,
    /// Writes whose outcome is known (u64::MAX once the session ended).
    answered: watch::Sender<u64>,
    /// `ReplicateBatch` messages sent.
    batches: AtomicU64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("negotiated", &self.negotiated).finish()
    }
}

impl Session {
    /// What the handshake agreed on.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The protocol version of the connection.
    pub fn protocol(&self) -> ProtocolVersion {
        self.negotiated.protocol
    }

    fn node(&self) -> String {
        self.negotiated.peer_node_id.clone()
    }

    /// Sends the request `build(req_id)` and waits for its answer.
    pub async fn call(&self, build: impl FnOnce(u64) -> Request, timeout: Duration) -> Result<Response, LinkError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LinkError::Closed { node: self.node() });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= self.max_pending {
                return Err(LinkError::Busy { node: self.node(), max: self.max_pending });
            }
            pending.insert(id, tx);
        }
        let forget = || {
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        };
        let msg = match codec::request_to_wire(self.protocol(), build(id)) {
            Ok(m) => m,
            Err(e) => {
                forget();
                return Err(e.into());
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || LinkError::Timeout { node: self.node(), after_ms: timeout.as_millis() as u64 };
        match tokio::time::timeout_at(deadline, self.sender.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                forget();
                return Err(e.into());
            }
            Err(_) => {
                forget();
                return Err(timed_out());
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(LinkError::Closed { node: self.node() }),
            Err(_) => {
                forget();
                Err(timed_out())
            }
        }
    }

    /// Queues `entry` for this peer; the receiver tells whether the peer
    /// stored it. Fails at once when the queue is full or the link closed.
    pub fn replicate(&self, entry: repl1::Entry) -> Result<oneshot::Receiver<Result<(), String>>, LinkError> {
        let (done, rx) = oneshot::channel();
        match self.writes.try_send(QueuedWrite { entry, done }) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                Ok(rx)
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(LinkError::Busy { node: self.node(), max: self.writes.max_capacity() })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(LinkError::Closed { node: self.node() }),
        }
    }

    /// Waits (at most until `deadline`) until every write queued to this
    /// peer so far has been answered, or the connection ended.
    pub async fn flush(&self, deadline: tokio::time::Instant) -> bool {
        let target = self.queued.load(Ordering::Acquire);
        let mut rx = self.answered.subscribe();
        matches!(tokio::time::timeout_at(deadline, rx.wait_for(|a| *a >= target)).await, Ok(Ok(_)))
    }

    /// How many `ReplicateBatch` messages were sent on this connection.
    pub fn batches_sent(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// How many writes were queued to this peer on this connection.
    pub fn writes_queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    fn answer(&self, n: u64) {
        self.answered.send_modify(|a| *a = a.saturating_add(n));
    }

    /// Closes the connection gracefully.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.sender.close().await;
    }

    fn fail_pending(&self) {
        self.closed.store(true, Ordering::Release);
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.answered.send_replace(u64::MAX);
    }
}

/// A link's state.
#[derive(Clone, Debug)]
pub enum LinkState {
    /// Not connected (yet, or any more).
    Connecting {
        /// The last connection error.
        last_error: Option<String>,
    },
    /// Connected.
    Up(Arc<Session>),
    /// The peer (or this node) refused the handshake; retried slowly.
    Refused {
        /// The handshake's message.
        message: String,
    },
}

/// A peer as reported by `/health` and [`crate::node::NodeHandle::peers`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// The peer's node id.
    pub node_id: String,
    /// Its data address.
    pub addr: String,
    /// `connecting`, `connected` or `refused`.
    pub state: &'static str,
    /// The agreed protocol version, when connected.
    pub protocol: Option<u16>,
    /// The agreed transport version, when connected.
    pub transport: Option<u32>,
    /// The peer's release, when connected.
    pub release: Option<String>,
    /// Whether the handshake was authenticated with the cluster secret.
    pub authenticated: Option<bool>,
    /// The digest of the peer's signed release manifest, when it sent one.
    pub manifest: Option<String>,
    /// Whether the connection runs mutual TLS, the peer's certificate verified.
    pub tls: Option<bool>,
    /// Writes queued to the peer on the current connection.
    pub writes: Option<u64>,
    /// `ReplicateBatch` messages sent on the current connection.
    pub batches: Option<u64>,
    /// The last error or the refusal, when not connected.
    pub error: Option<String>,
}

struct Slot {
    addr: String,
    state: watch::Receiver<LinkState>,
    abort: AbortHandle,
}

/// The node's outbound links, by peer node id.
#[derive(Clone)]
pub struct Links {
    settings: Arc<LinkSettings>,
    slots: Arc<Mutex<BTreeMap<String, Slot>>>,
    changed: watch::Sender<u64>,
}

impl Links {
    /// No links yet.
    pub fn new(settings: LinkSettings) -> Self {
        Links { settings: Arc::new(settings), slots: Arc::default(), changed: watch::Sender::new(0) }
    }

    /// Makes the links match `desired` (node id -> data address): starts
    /// missing ones (in `tasks`), restarts those whose address changed,
    /// stops the rest.
    pub fn reconcile(&self, desired: &BTreeMap<String, String>, tasks: &mut JoinSet<()>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        slots.retain(|node, slot| {
            let keep = desired.get(node) == Some(&slot.addr);
            if !keep {
                slot.abort.abort();
                if let LinkState::Up(session) = &*slot.state.borrow() {
                    session.fail_pending();
                }
                tracing::debug!(peer = %node, "link stopped");
                changed = true;
            }
            keep
        });
        for (node, addr) in desired {
            if slots.contains_key(node) {
                continue;
            }
            let (tx, rx) = watch::channel(LinkState::Connecting { last_error: None });
            let abort = tasks.spawn(run_link(node.clone(), addr.clone(), self.settings.clone(), tx));
            slots.insert(node.clone(), Slot { addr: addr.clone(), state: rx, abort });
            changed = true;
        }
        drop(slots);
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The connected peers.
    pub fn up(&self) -> Vec<Arc<Session>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .filter_map(|s| match &*s.state.borrow() {
                LinkState::Up(session) => Some(session.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether the link to `node` is up now.
    pub fn is_up(&self, node: &str) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(node).is_some_and(|s| matches!(&*s.state.borrow(), LinkState::Up(_)))
    }

    /// Waits (at most `timeout`) until the link to `node` is up, and returns it.
    pub async fn wait_up(&self, node: &str, timeout: Duration) -> Result<Arc<Session>, LinkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.subscribe();
        loop {
            let state = self.slots.lock().unwrap_or_else(|p| p.into_inner()).get(node).map(|s| s.state.clone());
            match state {
                Some(mut rx) => {
                    let waited = tokio::time::timeout_at(
                        deadline,
                        rx.wait_for(|s| matches!(s, LinkState::Up(_) | LinkState::Refused { .. })),
                    )
                    .await
                    .map(|r| r.map(|s| s.clone()));
                    let outcome = match waited {
                        Ok(Ok(LinkState::Up(session))) => Some(Ok(session)),
                        Ok(Ok(LinkState::Refused { message })) => {
                            Some(Err(LinkError::Refused { node: node.to_string(), message }))
                        }
                        // The link was stopped (its member left or moved): look again.
                        Ok(Ok(LinkState::Connecting { .. })) | Ok(Err(_)) => None,
                        Err(_) => {
                            let reason = match &*rx.borrow() {
                                LinkState::Connecting { last_error: Some(e) } => e.clone(),
                                _ => format!("no connection within {} ms", timeout.as_millis()),
                            };
                            Some(Err(LinkError::Unreachable { node: node.to_string(), reason }))
                        }
                    };
                    if let Some(result) = outcome {
                        return result;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LinkError::NoLink { node: node.to_string() });
                    }
                }
                None => {
                    if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                        return Err(LinkError::NoLink { node: node.to_string() });
                    }
                }
            }
        }
    }

    /// Every link's status.
    pub fn status(&self) -> Vec<PeerStatus> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .map(|(node, slot)| {
                let mut st = PeerStatus {
                    node_id: node.clone(),
                    addr: slot.addr.clone(),
                    state: "connecting",
                    protocol: None,
                    transport: None,
                    release: None,
                    authenticated: None,
                    manifest: None,
                    tls: None,
                    writes: None,
                    batches: None,
                    error: None,
                };
                match &*slot.state.borrow() {
                    LinkState::Connecting { last_error } => st.error = last_error.clone(),
                    LinkState::Up(s) => {
                        let n = s.negotiated();
                        st.state = "connected";
                        st.protocol = Some(n.protocol.0);
                        st.transport = Some(n.transport.id());
                        st.release = Some(n.peer_release.clone());
                        st.authenticated = Some(n.authenticated);
                        st.manifest = n.peer_release_manifest.map(|d| d.to_text());
                        st.tls = Some(n.tls);
                        st.writes = Some(s.writes_queued());
                        st.batches = Some(s.batches_sent());
                    }
                    LinkState::Refused { message } => {
                        st.state = "refused";
                        st.error = Some(message.clone());
                    }
                }
                st
            })
            .collect()
    }

    /// Waits (at most `timeout`) until every write queued to a peer so far
    /// has been answered; `false` on timeout.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut all = true;
        for s in self.up() {
            all &= s.flush(deadline).await;
        }
        all
    }

    /// The status of the link to `node`, once it is connected or refused (at most `timeout`).
    pub async fn wait_status(&self, node: &str, timeout: Duration) -> Result<PeerStatus, LinkError> {
        match self.wait_up(node, timeout).await {
            Ok(_) | Err(LinkError::Refused { .. }) => {}
            Err(e) => return Err(e),
        }
        self.status()
            .into_iter()
            .find(|s| s.node_id == node)
            .ok_or_else(|| LinkError::NoLink { node: node.to_string() })
    }

    /// Closes every connection gracefully and stops the links.
    pub async fn close_all(&self) {
        let slots: Vec<(AbortHandle, watch::Receiver<LinkState>)> = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *slots).into_values().map(|s| (s.abort, s.state)).collect()
        };
        for (abort, state) in slots {
            abort.abort();
            let session = match &*state.borrow() {
                LinkState::Up(s) => Some(s.clone()),
                _ => None,
            };
            if let Some(s) = session {
                s.close().await;
            }
        }
    }
}

/// Whether a handshake failure is a refusal that retrying will not fix
/// until one side is upgraded or reconfigured.
fn is_refusal(e: &NetError) -> bool {
    matches!(
        e.reject_code(),
        Some(
            RejectCode::NoCommonProtocol
                | RejectCode::TransportTooOld
                | RejectCode::ClusterMismatch
                | RejectCode::AuthFailed
        )
    )
}

async fn run_link(node: String, addr: String, settings: Arc<LinkSettings>, state: watch::Sender<LinkState>) {
    let mut backoff = settings.backoff_min;
    loop {
        match net::connect::<Msg>(addr.as_str(), settings.net.clone()).await {
            Ok(conn) if conn.negotiated().peer_node_id != node => {
                let other = conn.negotiated().peer_node_id.clone();
                let _ = conn.close().await;
                let reason = format!("address {addr} is now node {other}, not {node}");
                tracing::debug!(peer = %node, %reason, "not connecting");
                state.send_replace(LinkState::Connecting { last_error: Some(reason) });
            }
            Ok(conn) => {
                backoff = settings.backoff_min;
                let n = conn.negotiated().clone();
                tracing::info!(
                    peer = %node, release = %n.peer_release, protocol = %n.protocol, transport = %n.transport,
                    authenticated = n.authenticated, "connected to peer"
                );
                if settings.deprecated_protocols.contains(&n.protocol.0) {
                    tracing::warn!(
                        peer = %node, release = %n.peer_release, protocol = %n.protocol,
                        "this link speaks a protocol version this release marks deprecated; upgrade the peer \
                         before a release retires it (see `rollgate upgrade status`)"
                    );
                }
                let reason = run_session(conn, &settings, &state).await;
                tracing::info!(peer = %node, %reason, "connection to peer lost");
                state.send_replace(LinkState::Connecting { last_error: Some(reason) });
            }
            Err(e) if is_refusal(&e) => {
                let message = e.to_string();
                let changed = !matches!(&*state.borrow(), LinkState::Refused { message: m } if *m == message);
                if changed {
                    tracing::error!(peer = %node, %addr, error = %message, "peer refused: not replicating to it");
                }
                state.send_replace(LinkState::Refused { message });
                backoff = settings.backoff_max;
            }
            Err(e) => {
                tracing::debug!(peer = %node, %addr, error = %e, "cannot connect to peer");
                state.send_replace(LinkState::Connecting { last_error: Some(e.to_string()) });
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(settings.backoff_max);
    }
}

/// Runs one connection until it ends; returns why it ended.
async fn run_session(conn: net::Connection<Msg>, settings: &LinkSettings, state: &watch::Sender<LinkState>) -> String {
    let negotiated = conn.negotiated().clone();
    let (sender, mut receiver) = conn.split();
    let (writes, queue) = mpsc::channel(settings.write_queue_len.max(1));
    let session = Arc::new(Session {
        negotiated,
        sender,
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        closed: AtomicBool::new(false),
        writes,
        max_pending: settings.max_pending.max(1),
        queued: AtomicU64::new(0),
        answered: watch::Sender::new(0),
        batches: AtomicU64::new(0),
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(batcher(session.clone(), queue, settings.clone()));
    state.send_replace(LinkState::Up(session.clone()));
    let reason = loop {
        match receiver.recv().await {
            Ok(Some(msg)) => match codec::from_wire(msg) {
                Incoming::Response(resp) => {
                    let waiter = session.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&resp.req_id());
                    match waiter {
                        Some(tx) => {
                            let _ = tx.send(resp);
                        }
                        None => tracing::debug!(req_id = resp.req_id(), "answer to a request that gave up"),
                    }
                }
                Incoming::Request(_) => {
                    break "the peer sent a request on our connection: protocol violation, closing".to_string();
                }
            },
            Ok(None) => break "the peer closed the connection".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    session.fail_pending();
    tasks.abort_all();
    session.sender.close().await.ok();
    reason
}

/// Sends queued writes: together as one `ReplicateBatch` where the protocol
/// has it, else one `Replicate` each; at most `max_inflight_batches`
/// requests in flight, so writes arriving meanwhile are batched (group commit).
/// Without batches (v1) each request carries one write, so as many writes
/// may be in flight as that many batches would carry
/// ([`inflight_limit`]): a replica group-commits whatever arrives meanwhile,
/// and a node whose writes wait for this one peer alone (another member
/// down) does not queue them behind a few round trips.
async fn batcher(session: Arc<Session>, mut queue: mpsc::Receiver<QueuedWrite>, settings: LinkSettings) {
    let mut inflight = JoinSet::new();
    let batches = codec::has_batches(session.protocol());
    let max_inflight = inflight_limit(&settings, batches);
    loop {
        while inflight.try_join_next().is_some() {}
        while inflight.len() >= max_inflight {
            let _ = inflight.join_next().await;
        }
        let Some(first) = queue.recv().await else { break };
        let mut bytes = entry_bytes(&first.entry);
        let mut batch = vec![first];
        while batches && batch.len() < settings.batch_max_entries && bytes < settings.batch_max_bytes {
            match queue.try_recv() {
                Ok(w) => {
                    bytes += entry_bytes(&w.entry);
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        let timeout = settings.replicate_timeout;
        if batch.len() > 1 {
            inflight.spawn(send_batch(session.clone(), batch, timeout));
        } else {
            for w in batch {
                inflight.spawn(send_one(session.clone(), w, timeout));
            }
        }
    }
}

/// Requests in flight per link: `max_inflight_batches`, or with one write
/// per request, the writes that many full batches would carry (within
/// `max_pending`).
fn inflight_limit(settings: &LinkSettings, batches: bool) -> usize {
    let batches_of = settings.max_inflight_batches.max(1);
    if batches { batches_of } else { (batches_of * settings.batch_max_entries.max(1)).min(settings.max_pending.max(1)) }
}

fn entry_bytes(e: &repl1::Entry) -> usize {
    e.key.len()
        + match &e.value {
            repl1::Value::Put(v) => v.len(),
            repl1::Value::Tombstone => 0,
        }
}

fn ack_result(session: &Session, resp: Result<Response, LinkError>) -> Result<(), String> {
    match resp {
        Ok(Response::Ack(a)) => match a.error {
            None => Ok(()),
            Some(e) => Err(format!("node {} did not store the write: {e}", session.node())),
        },
        Ok(_) => Err(LinkError::Unexpected { node: session.node(), expected: "Replicate" }.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn send_one(session: Arc<Session>, w: QueuedWrite, timeout: Duration) {
    let entry = w.entry;
    let resp = session.call(|req_id| Request::Replicate(repl1::Replicate { req_id, entry }), timeout).await;
    let _ = w.done.send(ack_result(&session, resp));
    session.answer(1);
}

async fn send_batch(session: Arc<Session>, batch: Vec<QueuedWrite>, timeout: Duration) {
    let (entries, done): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| (w.entry, w.done)).unzip();
    session.batches.fetch_add(1, Ordering::Relaxed);
    let resp = session.call(|req_id| Request::ReplicateBatch(repl2::ReplicateBatch { req_id, entries }), timeout).await;
    let result = ack_result(&session, resp);
    let n = done.len() as u64;
    for d in done {
        let _ = d.send(result.clone());
    }
    session.answer(n);
}
