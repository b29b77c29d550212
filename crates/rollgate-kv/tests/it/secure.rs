//! A node's listeners against an attacker on the network: a frame injected
//! into a peer connection after a genuine handshake was relayed (an on-path
//! attacker), and hundreds of idle connections on the HTTP port. Nothing
//! injected is applied, and real clients and peers get through.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;
use rollgate::handshake::{ClusterSecret, HandshakeConfig};
use rollgate::net::{self, NetConfig};
use rollgate_kv::hlc::Version;
use rollgate_kv::peer::codec::{self, Request};
use rollgate_kv::releases::find;
use rollgate_kv::replication::v1 as repl1;
use rollgate_kv::{NodeHandle, node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SECRET: &str = "the cluster secret of this test";

/// How long a real client may take to get through a flood.
const GET_THROUGH: Duration = Duration::from_secs(3);

/// A node configured as securely as a node can be.
async fn secure_node(root: &std::path::Path) -> NodeHandle {
    logs();
    let store = redb_store(root).await;
    let mut c = config("1.2", &data(root, "n1"));
    c.cluster_secret = Some(ClusterSecret::new(SECRET).unwrap());
    let node = node::start(c, store).await.expect("start a node");
    assert!(node.wait_ready(READY).await);
    node
}

/// A genuine peer of `node`'s cluster, as securely configured as the node.
fn genuine_peer(node: &NodeHandle) -> NetConfig {
    let r = find("1.2").unwrap();
    let mut h = HandshakeConfig::new("genuine-peer", "1.2", node.cluster_id(), r.protocols, r.transport_set());
    h.secret = Some(ClusterSecret::new(SECRET).unwrap());
    NetConfig::new(h)
}

/// An on-path attacker between one client and `target`: relays every byte
/// both ways and, when told, writes its own bytes towards `target`.
async fn relay(target: SocketAddr, inject: oneshot::Receiver<Vec<u8>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        });
        let mut inject = Some(inject);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                read = client_read.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => if server_write.write_all(&buf[..n]).await.is_err() { break },
                },
                bytes = async { inject.as_mut().unwrap().await }, if inject.is_some() => {
                    inject = None;
                    if let Ok(bytes) = bytes && server_write.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    addr
}

fn injected_write(key: &str) -> repl1::Entry {
    repl1::Entry {
        key: key.into(),
        version: Version { wall_ms: 1, logical: 0, node: "attacker".into() },
        value: repl1::Value::Put(b"injected".to_vec()),
        expires_at_ms: 0,
        features: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_injected_after_a_relayed_handshake_closes_the_connection_and_is_not_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let node = secure_node(tmp.path()).await;
    let (inject, injected) = oneshot::channel();
    let via = relay(node.addresses().data, injected).await;

    // The genuine peer's handshake passes through the attacker untouched,
    // and so does a first request and its answer.
    let conn = net::connect::<rollgate_kv::Msg>(via, genuine_peer(&node)).await.expect("a relayed handshake");
    let negotiated = conn.negotiated().clone();
    let (tx, mut rx) = conn.split();
    let genuine = Request::Replicate(repl1::Replicate { req_id: 1, entry: injected_write("genuine") });
    tx.send(codec::request_to_wire(negotiated.protocol, genuine).unwrap()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(answer.is_some(), "the genuine request is answered");

    // Then the attacker writes a replication request of its own.
    let request = Request::Replicate(repl1::Replicate { req_id: 7, entry: injected_write("injected") });
    let msg = codec::request_to_wire(negotiated.protocol, request).unwrap();
    let frame = net::encode_data_frame(&msg, &negotiated, &rollgate::wire::Limits::DEFAULT).unwrap();
    inject.send(frame).unwrap();

    let end = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("the connection ends");
    assert!(matches!(end, Ok(None) | Err(_)), "the node answered the injected request: {end:?}");
    assert_eq!(node.local_record("injected").await.unwrap(), None, "the injected write was applied");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_http_connections_do_not_lock_out_a_client() {
    let tmp = tempfile::tempdir().unwrap();
    let node = secure_node(tmp.path()).await;
    let admin = node.addresses().admin;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(admin).await.unwrap());
    }
    let started = Instant::now();
    let put = tokio::time::timeout(GET_THROUGH, single(&admin.to_string()).put("k", "v", None)).await;
    assert!(put.is_ok(), "300 idle connections: the client did not get through within {GET_THROUGH:?}");
    put.unwrap().unwrap();
    println!("300 idle connections: the client got through in {:?}", started.elapsed());
    node.stop().await.unwrap();
}
