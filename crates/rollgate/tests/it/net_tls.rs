//! Peer links over mutual TLS (invariant I9): connections between nodes with
//! certificates of one cluster CA, and each way it must fail: a certificate
//! of another CA, an expired one, a certificate of another node than the
//! one advertised, a plaintext peer against a TLS listener (and the other
//! way round). Each refusal names the fix. And the attacker in the middle:
//! one that relays the TLS bytes cannot inject or alter a frame, and one
//! with a certificate of its own that relays the version handshake between
//! two TLS sessions fails the MAC bound to each session.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rollgate::handshake::{ClusterSecret, HandshakeConfig};
use rollgate::net::{self, Listener, NetConfig, NetError};
use rollgate::protocol::Protocol;
use rollgate::tls::NodeTls;
use rollgate_certs::{Ca, Validity};
use rollgate_sample::network::v1::{self as network, Ping};
use rollgate_sample::protocol::v2;
use rollgate_sample::{Msg, transport_versions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "a shared cluster secret, long enough";

fn tls_for(ca: &Ca, cert_node: &str, node: &str, validity: Validity) -> NodeTls {
    let _ = node;
    let issued = ca.node(cert_node, &["127.0.0.1".into()], validity).unwrap();
    let tls = NodeTls::from_pem(
        cert_node,
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
        Path::new("test"),
    );
    match tls {
        Ok(t) => t,
        Err(e) => panic!("{node}: {e}"),
    }
}

fn config(node: &str, tls: Option<NodeTls>) -> NetConfig {
    let mut h = HandshakeConfig::new(node, "1.2", "sample-cluster", Msg::SUPPORTED, transport_versions::SET);
    h.secret = Some(ClusterSecret::new(SECRET).unwrap());
    let mut c = NetConfig::new(h);
    c.handshake_timeout = Duration::from_secs(5);
    c.tls = tls;
    c
}

fn ping(seq: u64) -> Msg {
    v2::Msg::Network(network::Msg::Ping(Ping { seq, payload: vec![1, 2, 3] })).into()
}

/// A listener of `config`; its handshake failures come back on the channel.
async fn listen(config: NetConfig) -> (SocketAddr, tokio::sync::mpsc::Receiver<Result<String, String>>) {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config).await.unwrap();
    let addr = listener.local_addr();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok(next) = listener.next().await {
            let sent = match next {
                Ok(mut conn) => {
                    let node = conn.negotiated().peer_node_id.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(m)) = conn.recv().await {
                            let _ = conn.send(m).await;
                        }
                    });
                    tx.send(Ok(node)).await
                }
                Err(f) => tx.send(Err(f.error.to_string())).await,
            };
            if sent.is_err() {
                break;
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_certificates_of_one_ca_talk_over_mutual_tls() {
    let ca = Ca::new("test", Validity::days(1)).unwrap();
    let (addr, mut accepted) =
        listen(config("server", Some(tls_for(&ca, "server", "server", Validity::days(1))))).await;
    let mut conn =
        net::connect::<Msg>(addr, config("client", Some(tls_for(&ca, "client", "client", Validity::days(1)))))
            .await
            .unwrap();
    let n = conn.negotiated().clone();
    assert!(n.tls && n.authenticated, "{n:?}");
    assert_eq!(accepted.recv().await.unwrap().unwrap(), "client");
    conn.send(ping(7)).await.unwrap();
    assert!(conn.recv().await.unwrap().is_some());
}

/// Connects `client` to a listener of `server` and returns both sides' errors.
async fn refused(server: NetConfig, client: NetConfig) -> (String, String) {
    let (addr, mut failures) = listen(server).await;
    let client_error = match net::connect::<Msg>(addr, client).await {
        Ok(c) => {
            // The listener may refuse after the client sent its confirmation.
            let (_tx, mut rx) = c.split();
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Err(e)) => e.to_string(),
                other => panic!("the connection was accepted: {other:?}"),
            }
        }
        Err(e) => e.to_string(),
    };
    let server_error = tokio::time::timeout(Duration::from_secs(10), failures.recv())
        .await
        .expect("the listener reports the failure")
        .unwrap()
        .expect_err("the listener refused");
    (client_error, server_error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_ca_is_refused_naming_the_fix() {
    let ca = Ca::new("cluster", Validity::days(1)).unwrap();
    let other = Ca::new("other", Validity::days(1)).unwrap();
    let (client, server) = refused(
        config("server", Some(tls_for(&ca, "server", "server", Validity::days(1)))),
        config("client", Some(tls_for(&other, "client", "client", Validity::days(1)))),
    )
    .await;
    println!("client: {client}\nserver: {server}");
    // Each side refuses the other's certificate; both messages name the CA.
    for side in [&client, &server] {
        assert!(side.contains("same CA") && side.contains("not signed by"), "{side}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_naming_the_fix() {
    let ca = Ca::new("cluster", Validity::days(1)).unwrap();
    // A node refuses to start with an expired certificate of its own.
    let issued = ca.node("client", &[], Validity::expired()).unwrap();
    let e = NodeTls::from_pem(
        "client",
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
        Path::new("client.pem"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("expired") && e.to_string().contains("rollgate certs"), "{e}");

    // A peer that presents an expired certificate is refused.
    let (addr, mut failures) =
        listen(config("server", Some(tls_for(&ca, "server", "server", Validity::days(1))))).await;
    let certs = rollgate::tls::certs_from_pem("cert", Path::new("x"), issued.cert_pem.as_bytes()).unwrap();
    let key = rollgate::tls::key_from_pem("key", Path::new("x"), issued.key_pem.as_bytes()).unwrap();
    let expired = rollgate::tls::https_client(Path::new("ca"), ca.cert_pem().as_bytes(), Some((certs, key))).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    if let Ok(mut s) = tokio_rustls::TlsConnector::from(std::sync::Arc::new(expired)).connect(name, tcp).await {
        let _ = s.read(&mut [0u8; 1]).await; // TLS 1.3: the refusal comes after the client's flight
    }
    let server = failures.recv().await.unwrap().unwrap_err();
    println!("server: {server}");
    assert!(server.contains("has expired") && server.contains("issue a new one"), "{server}");
}

/// Mutual TLS with `tls`'s client configuration, then the version
/// handshake advertising `advertised` (below `net::connect`'s own checks).
async fn handshake_as(addr: SocketAddr, tls: &NodeTls, advertised: &HandshakeConfig) -> Result<(), NetError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls.peer_client());
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut s = connector.connect(name, tcp).await.unwrap();
    net::initiate(&mut s, advertised).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_node_than_advertised_is_refused_naming_the_fix() {
    let ca = Ca::new("cluster", Validity::days(1)).unwrap();
    // A node's configuration cannot pair its certificate with another id.
    let mismatched = config("n3", Some(tls_for(&ca, "n2", "n2", Validity::days(1))));
    let e = net::connect::<Msg>("127.0.0.1:1", mismatched.clone()).await.unwrap_err();
    assert!(e.to_string().contains("use this node's own certificate"), "{e}");

    // A hand-made peer with the certificate of n2 that advertises n3.
    let (addr, mut failures) =
        listen(config("server", Some(tls_for(&ca, "server", "server", Validity::days(1))))).await;
    let impostor = config("n3", None).handshake;
    let client = handshake_as(addr, &tls_for(&ca, "n2", "n2", Validity::days(1)), &impostor).await.unwrap_err();
    let server = failures.recv().await.unwrap().unwrap_err();
    println!("client: {client}\nserver: {server}");
    assert!(server.contains("does not name that node") && server.contains("rollgate certs node n3"), "{server}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_against_tls_either_way_is_refused_naming_the_fix() {
    let ca = Ca::new("cluster", Validity::days(1)).unwrap();
    let (client, server) =
        refused(config("server", Some(tls_for(&ca, "server", "server", Validity::days(1)))), config("client", None))
            .await;
    println!("plaintext client: {client}\nTLS server: {server}");
    assert!(client.contains("requires TLS") && client.contains("--tls-cert"), "{client}");
    assert!(server.contains("plaintext handshake"), "{server}");

    let (client, server) =
        refused(config("server", None), config("client", Some(tls_for(&ca, "client", "client", Validity::days(1)))))
            .await;
    println!("TLS client: {client}\nplaintext server: {server}");
    assert!(client.contains("does not speak TLS") && client.contains("--tls-cert"), "{client}");
    assert!(server.contains("speaks TLS and this node does not"), "{server}");
}

/// An on-path attacker that relays every byte and flips one bit of the
/// first chunk the client sends after `armed` is set.
async fn altering_relay(target: SocketAddr, armed: tokio::sync::oneshot::Receiver<()>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        });
        let mut armed = Some(armed);
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Some(rx) = armed.as_mut()
                && rx.try_recv().is_ok()
            {
                armed = None;
                buf[n - 1] ^= 0x01;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_altered_in_transit_closes_the_connection_and_is_not_delivered() {
    let ca = Ca::new("cluster", Validity::days(1)).unwrap();
    let mut listener = Listener::<Msg>::bind(
        "127.0.0.1:0",
        config("server", Some(tls_for(&ca, "server", "server", Validity::days(1)))),
    )
    .await
    .unwrap();
    let (arm, armed) = tokio::sync::oneshot::channel();
    let via = altering_relay(listener.local_addr(), armed).await;
    // The altered bytes may be the end of the handshake (then the listener
    // refuses the connection) or the data frame (then the connection closes).
    let server = tokio::spawn(async move {
        let mut conn = match listener.next().await.unwrap() {
            Ok(conn) => conn,
            Err(f) => return (Vec::new(), Err(f.error.to_string())),
        };
        let mut delivered = Vec::new();
        let end = loop {
            match conn.recv().await {
                Ok(Some(m)) => delivered.push(m),
                other => break other.map(|_| ()).map_err(|e| e.to_string()),
            }
        };
        (delivered, end)
    });
    let conn = net::connect::<Msg>(via, config("client", Some(tls_for(&ca, "client", "client", Validity::days(1)))))
        .await
        .expect("the relayed handshake");
    arm.send(()).unwrap();
    conn.send(ping(1)).await.unwrap();
    let (delivered, end) = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
    assert!(delivered.is_empty(), "an altered frame was delivered: {delivered:?}");
    println!("the server's side ended with: {end:?}");
    assert!(end.is_err(), "the connection closes with an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_relayed_between_two_tls_sessions_fails_on_both_ends() {
    let ca = Ca::new("cluster", Validity::days(1)).unwrap();
    let (target, mut failures) =
        listen(config("server", Some(tls_for(&ca, "server", "server", Validity::days(1))))).await;
    // The attacker holds certificates of the cluster CA naming both nodes,
    // but not the cluster secret: it ends each TLS session itself and relays
    // the version handshake between them.
    let as_server = tls_for(&ca, "server", "server", Validity::days(1));
    let as_client = tls_for(&ca, "client", "client", Validity::days(1));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let via = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut from_client) = tokio_rustls::TlsAcceptor::from(as_server.peer_server()).accept(tcp).await else {
            return;
        };
        let tcp = TcpStream::connect(target).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
        let Ok(mut to_server) = tokio_rustls::TlsConnector::from(as_client.peer_client()).connect(name, tcp).await
        else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut from_client, &mut to_server).await;
    });
    let client =
        net::connect::<Msg>(via, config("client", Some(tls_for(&ca, "client", "client", Validity::days(1))))).await;
    let client = client.expect_err("the client refuses the spliced handshake").to_string();
    let server = failures.recv().await.unwrap().expect_err("the server refuses it");
    println!("client: {client}\nserver: {server}");
    assert!(client.contains("AuthFailed") && client.contains("altered in transit"), "{client}");
    assert!(server.contains("AuthFailed"), "{server}");
}
