//! The peer listener under floods (invariant I12): sockets that connect and
//! never finish a handshake, from one source address or from many, never
//! keep a real peer out for more than a moment.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rollgate::handshake::{ClusterSecret, HandshakeConfig};
use rollgate::net::{self, Listener, NetConfig};
use rollgate::protocol::Protocol;
use rollgate_sample::{Msg, transport_versions};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "a shared cluster secret, long enough";

/// How long a real peer may take to get through a flood.
const GET_THROUGH: Duration = Duration::from_secs(3);

fn config(node: &str) -> NetConfig {
    let mut h = HandshakeConfig::new(node, "1.2", "sample-cluster", Msg::SUPPORTED, transport_versions::SET);
    h.secret = Some(ClusterSecret::new(SECRET).unwrap());
    let mut c = NetConfig::new(h);
    // Long enough that the flood is still pending when the real peer comes.
    c.handshake_timeout = Duration::from_secs(30);
    c
}

/// `n` sockets from `source` that connect and never send a byte.
async fn silent(addr: SocketAddr, source: IpAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        out.push(socket.connect(addr).await.unwrap());
    }
    out
}

/// A real peer connects and completes the handshake within [`GET_THROUGH`].
async fn real_peer_gets_through(addr: SocketAddr, what: &str) {
    let started = Instant::now();
    let conn = tokio::time::timeout(GET_THROUGH, net::connect::<Msg>(addr, config("real-peer")))
        .await
        .unwrap_or_else(|_| panic!("{what}: the real peer did not get through within {GET_THROUGH:?}"))
        .unwrap_or_else(|e| panic!("{what}: the real peer was refused: {e}"));
    println!("{what}: the real peer got through in {:?}", started.elapsed());
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_one_source_do_not_lock_out_a_real_peer() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server")).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let _flood = silent(addr, IpAddr::V4(Ipv4Addr::LOCALHOST), 300).await;
    real_peer_gets_through(addr, "300 silent sockets from 127.0.0.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_many_sources_do_not_lock_out_a_real_peer() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server")).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let mut flood = Vec::new();
    for i in 2..12u8 {
        flood.extend(silent(addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)), 30).await);
    }
    real_peer_gets_through(addr, "300 silent sockets from 10 loopback addresses").await;
}
