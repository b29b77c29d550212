//! A node's listeners against an attacker on the network: a frame injected
//! into a peer connection after a genuine handshake was relayed (an on-path
//! attacker), and hundreds of idle connections on the HTTP port. Nothing
//! injected is applied, and real clients and peers get through. And the
//! secure defaults: TLS on both listeners, a plain HTTP client told to use
//! HTTPS, a client of another CA refused, and no plaintext outside loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::path::Path;
use std::sync::Arc;

use crate::support::*;
use rollgate::handshake::{ClusterSecret, HandshakeConfig};
use rollgate::net::{self, NetConfig};
use rollgate::tls::{NodeTls, TlsFiles};
use rollgate_certs::{Ca, Validity};
use rollgate_kv::hlc::Version;
use rollgate_kv::peer::codec::{self, Request};
use rollgate_kv::releases::find;
use rollgate_kv::replication::v1 as repl1;
use rollgate_kv::{ClientOptions, KvClient};
use rollgate_kv::{NodeConfig, NodeHandle, node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SECRET: &str = "the cluster secret of this test";

/// How long a real client may take to get through a flood.
const GET_THROUGH: Duration = Duration::from_secs(3);

/// Writes node `id`'s certificate of `ca` and the CA under `root/tls`.
pub(super) fn node_files(root: &Path, ca: &Ca, id: &str) -> TlsFiles {
    let dir = root.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let issued = ca.node(id, &["127.0.0.1".into()], Validity::days(1)).unwrap();
    let files =
        TlsFiles { cert: dir.join(format!("{id}.pem")), key: dir.join(format!("{id}.key")), ca: dir.join("ca.pem") };
    rollgate_certs::write_public(&files.cert, &issued.cert_pem).unwrap();
    rollgate_certs::write_private(&files.key, &issued.key_pem).unwrap();
    if !files.ca.exists() {
        rollgate_certs::write_public(&files.ca, ca.cert_pem()).unwrap();
    }
    files
}

/// A node configured as securely as a node can be: TLS with a certificate
/// of `ca`, and a cluster secret.
async fn secure_node(root: &Path, ca: &Ca) -> NodeHandle {
    logs();
    let store = redb_store(root).await;
    let mut c = config("1.2", &data(root, "n1"));
    c.node_id = Some("n1".into());
    c.cluster_secret = Some(ClusterSecret::new(SECRET).unwrap());
    c.tls = Some(node_files(root, ca, "n1"));
    let node = node::start(c, store).await.expect("start a node");
    assert!(node.wait_ready(READY).await);
    node
}

/// A genuine peer of `node`'s cluster, as securely configured as the node.
fn genuine_peer(node: &NodeHandle, ca: &Ca) -> NetConfig {
    let r = find("1.2").unwrap();
    let mut h = HandshakeConfig::new("genuine-peer", "1.2", node.cluster_id(), r.protocols, r.transport_set());
    h.secret = Some(ClusterSecret::new(SECRET).unwrap());
    let issued = ca.node("genuine-peer", &[], Validity::days(1)).unwrap();
    let tls = NodeTls::from_pem(
        "genuine-peer",
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        ca.cert_pem().as_bytes(),
        Path::new("genuine-peer"),
    )
    .unwrap();
    let mut c = NetConfig::new(h);
    c.tls = Some(tls);
    c
}

/// A client of `addr` over HTTPS with `ca`, without retries.
fn https_client(addr: &str, ca: &Ca) -> KvClient {
    let tls = rollgate::tls::https_client(Path::new("ca.pem"), ca.cert_pem().as_bytes(), None).unwrap();
    KvClient::new(&[addr], ClientOptions { rounds: 1, tls: Some(Arc::new(tls)), ..quick() }).unwrap()
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
    let ca = Ca::new("test", Validity::days(1)).unwrap();
    let node = secure_node(tmp.path(), &ca).await;
    // Nodes serve links from running members only: the genuine peer is one.
    let live = hand_made_member(&node, "genuine-peer").await;
    let (inject, injected) = oneshot::channel();
    let via = relay(node.addresses().data, injected).await;

    // The genuine peer's handshake passes through the attacker untouched,
    // and so does a first request and its answer.
    let conn = net::connect::<rollgate_kv::Msg>(via, genuine_peer(&node, &ca)).await.expect("a relayed handshake");
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
    remove_hand_made_member(&node, "genuine-peer", live).await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_http_connections_do_not_lock_out_a_client() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("test", Validity::days(1)).unwrap();
    let node = secure_node(tmp.path(), &ca).await;
    let admin = node.addresses().admin;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(admin).await.unwrap());
    }
    let started = Instant::now();
    let put = tokio::time::timeout(GET_THROUGH, https_client(&admin.to_string(), &ca).put("k", "v", None)).await;
    assert!(put.is_ok(), "300 idle connections: the client did not get through within {GET_THROUGH:?}");
    put.unwrap().unwrap();
    println!("300 idle connections: the client got through in {:?}", started.elapsed());
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_speaks_https_only_and_refuses_clients_of_another_ca_naming_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("test", Validity::days(1)).unwrap();
    let node = secure_node(tmp.path(), &ca).await;
    let admin = node.addresses().admin.to_string();
    https_client(&admin, &ca).put("k", "v", None).await.unwrap();

    // A plain HTTP client is told to use HTTPS with the CA.
    let e = single(&admin).get("k").await.unwrap_err().to_string();
    println!("plain HTTP: {e}");
    assert!(e.contains("https_required") && e.contains(&format!("https://{admin}")) && e.contains("--ca-file"), "{e}");

    // A client that trusts another CA refuses the node, saying why.
    let other = Ca::new("other", Validity::days(1)).unwrap();
    let e = https_client(&admin, &other).get("k").await.unwrap_err().to_string();
    println!("another CA: {e}");
    assert!(e.contains("not signed by the CA of --ca-file"), "{e}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_a_node_listens_only_on_loopback_unless_told_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    // 192.0.2.1 (TEST-NET-1) is never bound: the node refuses before it binds.
    for (listen, admin) in [("192.0.2.1:0", "127.0.0.1:0"), ("127.0.0.1:0", "192.0.2.1:0")] {
        let mut c = NodeConfig::new(find("1.2").unwrap(), data(tmp.path(), "n1"), listen, admin);
        c.tuning = tuning();
        let e = node::start(c, store.clone()).await.expect_err("refused without TLS").to_string();
        println!("{e}");
        assert!(e.contains("192.0.2.1") && e.contains("--tls-cert") && e.contains("--insecure"), "{e}");
    }
}

/// A genuine peer connects and completes the handshake within [`GET_THROUGH`].
async fn a_real_peer_gets_through(node: &NodeHandle, ca: &Ca, what: &str) {
    let started = Instant::now();
    let conn = tokio::time::timeout(
        GET_THROUGH,
        net::connect::<rollgate_kv::Msg>(node.addresses().data, genuine_peer(node, ca)),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: the real peer did not get through within {GET_THROUGH:?}"))
    .unwrap_or_else(|e| panic!("{what}: the real peer was refused: {e}"));
    println!("{what}: the real peer got through in {:?}", started.elapsed());
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_on_the_peer_port_do_not_lock_out_a_real_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("test", Validity::days(1)).unwrap();
    let node = secure_node(tmp.path(), &ca).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(node.addresses().data).await.unwrap());
    }
    a_real_peer_gets_through(&node, &ca, "300 silent sockets on the peer port").await;
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_flood_requests_and_never_read_answers_do_not_lock_out_clients_or_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("test", Validity::days(1)).unwrap();
    let node = secure_node(tmp.path(), &ca).await;
    let value = vec![7u8; 16 * 1024];
    let mut floods = Vec::new();
    for c in 0..100 {
        let conn = net::connect::<rollgate_kv::Msg>(node.addresses().data, genuine_peer(&node, &ca)).await.unwrap();
        let p = conn.negotiated().protocol;
        // Each sends its requests and never reads an answer.
        for i in 0..10u64 {
            let mut e = injected_write(&format!("flood-{c}-{i}"));
            e.value = repl1::Value::Put(value.clone());
            let req = Request::Replicate(repl1::Replicate { req_id: i, entry: e });
            conn.send(codec::request_to_wire(p, req).unwrap()).await.unwrap();
        }
        floods.push(conn);
    }
    let started = Instant::now();
    let client = https_client(&node.addresses().admin.to_string(), &ca);
    let put = tokio::time::timeout(GET_THROUGH, client.put("k", "v", None)).await;
    assert!(put.expect("the client got through in time").is_ok());
    println!("100 flooding peers: the client got through in {:?}", started.elapsed());
    a_real_peer_gets_through(&node, &ca, "100 flooding peers").await;
    node.stop().await.unwrap();
}

/// rollgate's own HTTPS listener presenting `issued`, valid or not.
async fn https_listener_with(issued: &rollgate_certs::Issued) -> SocketAddr {
    let certs = rollgate::tls::certs_from_pem("cert", Path::new("cert.pem"), issued.cert_pem.as_bytes()).unwrap();
    let key = rollgate::tls::key_from_pem("key", Path::new("key.pem"), issued.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(rollgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = rollgate::admin::ServeOptions { tls: Some(Arc::new(config)), ..Default::default() };
    tokio::spawn(rollgate::admin::serve_with(listener, axum::Router::new(), options, std::future::pending()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_clients_refuse_an_expired_certificate_or_one_for_another_host_naming_the_fix() {
    let ca = Ca::new("test", Validity::days(1)).unwrap();
    let expired = https_listener_with(&ca.node("n1", &["127.0.0.1".into()], Validity::expired()).unwrap()).await;
    let e = https_client(&expired.to_string(), &ca).get("k").await.unwrap_err().to_string();
    println!("expired: {e}");
    assert!(e.contains("has expired") && e.contains("rollgate certs node"), "{e}");

    let elsewhere = https_listener_with(&ca.node("n1", &["127.0.0.2".into()], Validity::days(1)).unwrap()).await;
    let e = https_client(&elsewhere.to_string(), &ca).get("k").await.unwrap_err().to_string();
    println!("another host: {e}");
    assert!(e.contains("does not name the host") && e.contains("--host"), "{e}");
}
