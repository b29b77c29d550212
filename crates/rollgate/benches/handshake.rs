//! Connection setup on loopback: `net::connect` (TCP connect + version
//! handshake, with and without a cluster secret) against the baseline of a
//! plain TCP connect plus one 64-byte request/response round trip, in the
//! same run. `cargo bench -p rollgate --bench handshake`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rollgate::handshake::{ClusterSecret, HandshakeConfig};
use rollgate::net::{self, Listener, NetConfig};
use rollgate::protocol::Protocol;
use rollgate_sample::{Msg, transport_versions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(node: &str, secret: bool) -> NetConfig {
    let mut h = HandshakeConfig::new(node, "1.2", "bench", Msg::SUPPORTED, transport_versions::SET);
    if secret {
        h.secret = Some(ClusterSecret::new("benchmark cluster secret 0123456789").unwrap());
    }
    let mut c = NetConfig::new(h);
    c.handshake_timeout = Duration::from_secs(5);
    c.max_pending_handshakes = 256;
    c
}

fn setup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // Baseline server: read a 64-byte request, answer 64 bytes.
    let plain = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { continue };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut req = [0u8; 64];
                    if s.read_exact(&mut req).await.is_ok() {
                        let _ = s.write_all(&req).await;
                    }
                });
            }
        });
        addr
    });

    let listener = |secret: bool| {
        rt.block_on(async move {
            let mut l = Listener::<Msg>::bind("127.0.0.1:0", config("server", secret)).await.unwrap();
            let addr = l.local_addr();
            tokio::spawn(async move {
                while let Ok(conn) = l.accept().await {
                    drop(conn);
                }
            });
            addr
        })
    };
    let open = listener(false);
    let authed = listener(true);

    let mut g = c.benchmark_group("connection_setup");
    g.bench_function("tcp_connect_plus_one_round_trip", |b| {
        b.to_async(&rt).iter(|| async move {
            let mut s = TcpStream::connect(plain).await.unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(&[7u8; 64]).await.unwrap();
            let mut resp = [0u8; 64];
            s.read_exact(&mut resp).await.unwrap();
            resp
        })
    });
    let cfg_open = config("client", false);
    g.bench_function("rollgate_handshake_no_secret", |b| {
        b.to_async(&rt).iter(|| {
            let cfg = cfg_open.clone();
            async move { net::connect::<Msg>(open, cfg).await.unwrap().negotiated().protocol }
        })
    });
    let cfg_authed = config("client", true);
    g.bench_function("rollgate_handshake_with_secret", |b| {
        b.to_async(&rt).iter(|| {
            let cfg = cfg_authed.clone();
            async move { net::connect::<Msg>(authed, cfg).await.unwrap().negotiated().protocol }
        })
    });
    g.finish();
}

criterion_group!(benches, setup);
criterion_main!(benches);
