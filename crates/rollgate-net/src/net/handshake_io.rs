//! The handshake over a byte stream: the version handshake on plain TCP,
//! and on TLS (the TLS 1.3 handshake first, then the version handshake bound
//! to the session and the peer's certificate checked against the node id it
//! advertises). Every failure names the fix.

use std::net::SocketAddr;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{NetConfig, NetError, Stream, io_err};
use crate::handshake::{
    self, Channel, HandshakeConfig, HandshakeError, Initiator, NONCE_LEN, Negotiated, RejectCode, Responder,
};
use crate::tls::{self, NodeTls};

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
pub(super) async fn initiate_tls(
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
pub(super) async fn respond_tls(
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
