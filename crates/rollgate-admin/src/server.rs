//! Serving an axum router on a listener, over HTTP or HTTPS, with bounds
//! that hold under floods (invariant I12).
//!
//! - A connection must send a complete request head within
//!   [`ServeOptions::header_read_timeout`]; the same bound applies while a
//!   kept-alive connection waits for its next request, so an idle or slow
//!   connection is closed (hyper's header-read timer).
//! - A TLS handshake must finish within [`ServeOptions::tls_handshake_timeout`].
//! - Connections are bounded per source address and in total; at a bound, a
//!   new connection evicts the oldest one ([`rollgate_net::admission`]), so
//!   hundreds of idle sockets never keep a real client out.
//! - With TLS, a plain HTTP request is answered `400` naming the fix (use
//!   `https://` and the cluster CA) instead of a TLS alert it cannot read.
//!
//! Request bodies and handler time are bounded by the router's own layers
//! (the admin router bounds bodies; services add a request timeout).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rollgate_net::admission::Admission;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How a listener serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// HTTPS with this configuration (`None`: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Longest wait for a complete request head, and for the next request on
    /// a kept-alive connection.
    pub header_read_timeout: Duration,
    /// Longest TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Connections at once; a new one beyond this evicts the oldest.
    pub max_connections: usize,
    /// Connections at once from one source address; a new one beyond this
    /// evicts that source's oldest.
    pub max_connections_per_source: usize,
}

impl Default for ServeOptions {
    /// Plain HTTP, 5 s for a request head (and keep-alive idleness), 5 s
    /// for a TLS handshake, 1024 connections, 256 per source address.
    fn default() -> Self {
        ServeOptions {
            tls: None,
            header_read_timeout: Duration::from_secs(5),
            tls_handshake_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_connections_per_source: 256,
        }
    }
}

/// The answer to a plain HTTP request on an HTTPS listener.
fn https_required(addr: SocketAddr) -> Vec<u8> {
    let body = format!(
        "{{\"error\":{{\"code\":\"https_required\",\"message\":\"this listener speaks HTTPS only: use https://{addr} and \
         the cluster CA (rollgate --ca-file FILE)\"}}}}"
    );
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener` until `shutdown` resolves: then no new
/// connections are accepted, idle ones are closed and running requests
/// finish (bound the wait by dropping the future).
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let admission = Admission::new(options.max_connections_per_source, options.max_connections);
    let (closing, closed) = watch::channel(false);
    let options = Arc::new(options);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        // Out of file descriptors and the like: back off briefly.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let ticket = admission.admit(peer.ip());
                let (router, options, closed) = (router.clone(), options.clone(), closed.clone());
                connections.spawn(async move {
                    connection(stream, peer, local, router, &options, ticket, closed).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    router: Router,
    options: &ServeOptions,
    mut ticket: rollgate_net::admission::Ticket,
    closed: watch::Receiver<bool>,
) {
    let Some(tls) = &options.tls else {
        serve_http(stream, router, options, &mut ticket, closed).await;
        return;
    };
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        r = tokio::time::timeout(options.tls_handshake_timeout, stream.peek(&mut first)) => r,
        () = ticket.evicted() => return,
    };
    match peeked {
        Ok(Ok(1)) if first[0].is_ascii_alphabetic() => {
            let mut stream = stream;
            let _ = stream.write_all(&https_required(local)).await;
            let _ = stream.shutdown().await;
            tracing::debug!(%peer, "plain HTTP on the HTTPS listener: answered 400");
            return;
        }
        Ok(Ok(_)) => {}
        _ => return,
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
    let accepted = tokio::select! {
        r = tokio::time::timeout(options.tls_handshake_timeout, acceptor.accept(stream)) => r,
        () = ticket.evicted() => return,
    };
    match accepted {
        Ok(Ok(tls_stream)) => serve_http(tls_stream, router, options, &mut ticket, closed).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
    io: S,
    router: Router,
    options: &ServeOptions,
    ticket: &mut rollgate_net::admission::Ticket,
    mut closed: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(options.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
                return;
            }
            () = ticket.evicted() => return,
            changed = closed.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
