//! The cost of a TLS peer link's setup on loopback: `net::connect` with
//! mutual TLS (TCP connect, the TLS 1.3 handshake with client
//! certificates, and the version handshake with a cluster secret bound to
//! the session), against the baseline of a plain rustls connect with the
//! same certificates and configuration plus one 64-byte round trip, in the
//! same run. `cargo bench -p rollgate --bench tls_connect`.

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rollgate::handshake::{ClusterSecret, HandshakeConfig};
use rollgate::net::{self, Listener, NetConfig};
use rollgate::protocol::Protocol;
use rollgate::tls::NodeTls;
use rollgate_certs::{Ca, Validity};
use rollgate_sample::{Msg, transport_versions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn node_tls(ca: &Ca, node: &str) -> NodeTls {
    let issued = ca.node(node, &["127.0.0.1".into()], Validity::days(1)).unwrap();
    NodeTls::from_pem(
        node,
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
        Path::new(node),
    )
    .unwrap()
}

fn config(node: &str, tls: NodeTls) -> NetConfig {
    let mut h = HandshakeConfig::new(node, "1.2", "bench", Msg::SUPPORTED, transport_versions::SET);
    h.secret = Some(ClusterSecret::new("benchmark cluster secret 0123456789").unwrap());
    let mut c = NetConfig::new(h);
    c.handshake_timeout = Duration::from_secs(5);
    c.tls = Some(tls);
    c
}

fn setup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ca = Ca::new("bench", Validity::days(1)).unwrap();
    let (server, client) = (node_tls(&ca, "server"), node_tls(&ca, "client"));

    // Baseline server: the peer links' rustls configuration; read a 64-byte
    // request, answer 64 bytes.
    let plain = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server.peer_server());
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { continue };
                let _ = s.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else { return };
                    let mut req = [0u8; 64];
                    if s.read_exact(&mut req).await.is_ok() {
                        let _ = s.write_all(&req).await;
                        let _ = s.flush().await;
                    }
                });
            }
        });
        addr
    });

    let peer = rt.block_on(async {
        let mut l = Listener::<Msg>::bind("127.0.0.1:0", config("server", server.clone())).await.unwrap();
        let addr = l.local_addr();
        tokio::spawn(async move {
            while let Ok(conn) = l.accept().await {
                drop(conn);
            }
        });
        addr
    });

    let mut g = c.benchmark_group("tls_connection_setup");
    let connector = tokio_rustls::TlsConnector::from(client.peer_client());
    g.bench_function("rustls_connect_plus_one_round_trip", |b| {
        b.to_async(&rt).iter(|| {
            let connector = connector.clone();
            async move {
                let s = TcpStream::connect(plain).await.unwrap();
                s.set_nodelay(true).unwrap();
                let name = rustls::pki_types::ServerName::IpAddress(plain.ip().into());
                let mut s = connector.connect(name, s).await.unwrap();
                s.write_all(&[7u8; 64]).await.unwrap();
                s.flush().await.unwrap();
                let mut resp = [0u8; 64];
                s.read_exact(&mut resp).await.unwrap();
                resp
            }
        })
    });
    let cfg = config("client", client.clone());
    g.bench_function("rollgate_tls_peer_connect", |b| {
        b.to_async(&rt).iter(|| {
            let cfg = cfg.clone();
            async move { net::connect::<Msg>(peer, cfg).await.unwrap().negotiated().protocol }
        })
    });
    g.finish();
}

criterion_group!(benches, setup);
criterion_main!(benches);
