//! A node whose writes depend on one peer alone (with a member down, the
//! other running peer is the whole quorum), against a hand-made peer on a
//! real socket that speaks the peer protocol and answers when the test
//! says: how many writes the node keeps in flight to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;
use rollgate::handshake::HandshakeConfig;
use rollgate::net::{self, NetConfig};
use rollgate_kv::peer::codec::{self, Incoming, Request, Response};
use rollgate_kv::releases::find;
use rollgate_kv::replication::v1 as repl1;
use rollgate_kv::{Msg, NodeHandle};

/// Registers `peer` as a running member whose data address is `data`. Its
/// HTTP address is the node's own, so that reading its clock (before the
/// node coordinates a write with it) reads this machine's clock.
async fn member_at(node: &NodeHandle, peer: &str, data: SocketAddr) -> rollgate::cluster::Liveness {
    let runtime = node.runtime().expect("the node runs");
    let record = rollgate::cluster::NodeRecord {
        node_id: peer.into(),
        data_addr: data.to_string(),
        admin_addr: node.addresses().admin.to_string(),
        release: "1.0".into(),
        ..runtime.record().clone()
    };
    runtime.cluster().join(record, |_| Ok::<(), String>(())).await.expect("the hand-made peer joins");
    runtime.cluster().start_liveness(peer, 30).await.expect("its liveness")
}

/// A peer of release `release` listening on loopback.
async fn listener(node: &NodeHandle, id: &str, release: &str) -> net::Listener<Msg> {
    let r = find(release).unwrap();
    let h = HandshakeConfig::new(id, release, node.cluster_id(), r.protocols, r.transport_set());
    net::Listener::bind("127.0.0.1:0", NetConfig::new(h)).await.expect("the hand-made peer listens")
}

/// With one peer as the whole quorum over protocol v1 (a 1.0 peer: one
/// write per request, no batches), every client write waits for that
/// peer's answer. The node must keep many such requests in flight, as it
/// does writes in a batch: a limit of a few requests (suited to batches of
/// up to hundreds of writes) makes every write queue behind the few before
/// it. The hand-made peer answers a first write at once (the node's clock
/// check of a new peer passes by then), then nothing until it holds `HELD`
/// requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_as_the_whole_quorum_over_v1_gets_many_writes_in_flight() {
    const HELD: usize = 16;
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let mut config = config("1.0", &data(tmp.path(), "n1"));
    config.tuning.clock_check_interval = Duration::from_millis(50);
    let node = rollgate_kv::node::start(config, store.clone()).await.unwrap();
    assert!(node.wait_ready(READY).await);
    let mut peer = listener(&node, "v1-peer", "1.0").await;
    let live = member_at(&node, "v1-peer", peer.local_addr()).await;
    let most = Arc::new(AtomicUsize::new(0));
    let held = most.clone();
    // The peer keeps its connection until the test has its answers: closing
    // it with requests unread could reset it and lose the acks just sent.
    let (done, until_done) = tokio::sync::oneshot::channel::<()>();
    let peer_task = tokio::spawn(async move {
        let conn = peer.accept().await.expect("the node connects");
        let protocol = conn.negotiated().protocol;
        let (tx, mut rx) = conn.split();
        let mut waiting = Vec::new();
        let mut first = true;
        while waiting.len() < HELD {
            let Ok(Some(msg)) = rx.recv().await else { return waiting.len() };
            if let Incoming::Request(Request::Replicate(r)) = codec::from_wire(msg) {
                waiting.push(r.req_id);
                held.fetch_max(waiting.len(), Ordering::SeqCst);
            }
            if std::mem::take(&mut first) {
                for req_id in waiting.drain(..) {
                    let ack = Response::Ack(repl1::Ack { req_id, error: None });
                    tx.send(codec::response_to_wire(protocol, ack).unwrap()).await.unwrap();
                }
            }
        }
        for req_id in waiting.drain(..) {
            let ack = Response::Ack(repl1::Ack { req_id, error: None });
            tx.send(codec::response_to_wire(protocol, ack).unwrap()).await.unwrap();
        }
        let _ = until_done.await;
        drop((tx, rx));
        HELD
    });
    let st = node.wait_peer("v1-peer", READY).await.unwrap();
    assert_eq!((st.state, st.protocol), ("connected", Some(1)), "{st:?}");

    // The first write waits (retrying its 503) until the node has read the new peer's clock.
    let patient = rollgate_kv::KvClient::new(
        &[node.addresses().admin.to_string()],
        rollgate_kv::ClientOptions { rounds: 100, round_backoff: Duration::from_millis(20), ..quick() },
    )
    .unwrap();
    patient.put("first", "v", None).await.expect("the first write, answered at once");
    // One attempt each: a retry would be another request to the peer.
    let c = rollgate_kv::KvClient::new(
        &[node.addresses().admin.to_string()],
        rollgate_kv::ClientOptions { rounds: 1, ..quick() },
    )
    .unwrap();
    let puts = (0..HELD).map(|i| {
        let c = &c;
        async move { c.put(&format!("k{i}"), "v", None).await }
    });
    let results = futures::future::join_all(puts).await;
    let _ = done.send(());
    let failed: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().map(ToString::to_string)).collect();
    assert!(
        failed.is_empty(),
        "{} of {HELD} concurrent writes failed: the node sent the peer at most {} at once; first error: {}",
        failed.len(),
        most.load(Ordering::SeqCst),
        failed[0]
    );
    assert_eq!(peer_task.await.unwrap(), HELD);
    for (i, r) in results.iter().enumerate() {
        let o = r.as_ref().unwrap();
        assert_eq!((o.acks, o.quorum), (2, 2), "write {i}: {o:?}");
    }
    live.stop().await.unwrap();
    node.runtime().unwrap().forget("v1-peer").await.unwrap();
    node.stop().await.unwrap();
}
