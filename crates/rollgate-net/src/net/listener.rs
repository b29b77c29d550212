//! The listener: accepts TCP connections, runs each handshake (TLS
//! included) in its own task bounded by the handshake timeout, bounds the
//! pending ones per source address and in total with the oldest evicted
//! (invariant I12), and hands out handshaken, typed connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::handshake_io::{respond, respond_tls};
use super::{Connection, NetConfig, NetError, Stream, io_err, warn_without_secret, with_peer};
use crate::admission::Admission;
use rollgate_wire::protocol::Protocol;

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
