//! A three-node cluster in one process on a real redb metadata store, real
//! TCP on loopback and real data dirs: replication, majority acknowledgement
//! with nodes down, catch-up after a restart, client failover.

mod common;

use std::time::Duration;

use common::*;
use rollgate_kv::ClientError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_tolerate_one_down_refuse_two_down_and_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let n1 = start(&store, "1.2", &data(tmp.path(), "n1")).await;
    let n2 = start(&store, "1.2", &data(tmp.path(), "n2")).await;
    let n3 = start(&store, "1.2", &data(tmp.path(), "n3")).await;
    let (id2, id3) = (n2.node_id().to_string(), n3.node_id().to_string());
    for n in [&n1, &n2, &n3] {
        for peer in [&n1, &n2, &n3].iter().filter(|p| p.node_id() != n.node_id()) {
            let st = n.wait_peer(peer.node_id(), READY).await.unwrap();
            assert_eq!((st.state, st.protocol), ("connected", Some(3)), "{st:?}");
        }
    }

    // Writes through n1 are acknowledged by a majority and reach every node.
    let c1 = single(&n1.addresses().admin.to_string());
    for i in 0..20 {
        let o = c1.put(&format!("key-{i:02}"), format!("value-{i}"), None).await.unwrap();
        assert_eq!((o.members, o.quorum), (3, 2));
        assert!(o.acks >= 2, "{o:?}");
    }
    c1.delete("key-00").await.unwrap();
    assert!(n1.flush_replication(Duration::from_secs(5)).await);
    for n in [&n2, &n3] {
        let c = single(&n.addresses().admin.to_string());
        assert_eq!(c.get("key-07").await.unwrap().as_deref(), Some(&b"value-7"[..]), "on {}", n.node_id());
        assert_eq!(c.get("key-00").await.unwrap(), None, "the delete replicated to {}", n.node_id());
    }

    // One node down (stopped, still a member): 2 of 3 acknowledge.
    let n3_dir = data(tmp.path(), "n3");
    n3.stop().await.unwrap();
    let o = c1.put("while-n3-down", "x", None).await.unwrap();
    assert_eq!((o.acks, o.members, o.quorum), (2, 3, 2));

    // Two down: a clear 503, and nothing stored.
    let n2_dir = data(tmp.path(), "n2");
    n2.stop().await.unwrap();
    let e = c1.put("while-two-down", "y", None).await.unwrap_err();
    let ClientError::Unavailable { errors, .. } = &e else { panic!("{e}") };
    let last = errors.last().unwrap();
    assert!(last.contains("503 no_quorum") && last.contains("0 of 3 members") && last.contains("2 are needed"), "{e}");
    assert!(last.contains(&id2) && last.contains(&id3), "names the unreachable members: {e}");
    assert_eq!(n1.local_record("while-two-down").await.unwrap(), None, "refused before anything was stored");

    // n2 comes back on its data dir; n3 comes back and catches up before it serves.
    let n2 = start(&store, "1.2", &n2_dir).await;
    assert_eq!(n2.node_id(), id2, "the node id is kept in the data dir");
    let n3 = start(&store, "1.2", &n3_dir).await;
    assert_eq!(n3.node_id(), id3);
    let c3 = single(&n3.addresses().admin.to_string());
    assert_eq!(c3.get("while-n3-down").await.unwrap().as_deref(), Some(&b"x"[..]), "caught up before serving");
    assert_eq!(c3.get("key-19").await.unwrap().as_deref(), Some(&b"value-19"[..]));
    let stats = n3.sync_stats();
    assert!(stats.values().all(|s| s.digests), "protocol v3 peers compare digests: {stats:?}");
    assert!(stats.values().any(|s| s.entries_stored >= 1), "the missed write was copied: {stats:?}");

    // Client failover: n1 is killed; a client listing it first still succeeds.
    let n1_admin = n1.addresses().admin.to_string();
    n1.kill().await;
    let failover = rollgate_kv::KvClient::new(
        &[n1_admin, n2.addresses().admin.to_string(), n3.addresses().admin.to_string()],
        quick(),
    )
    .unwrap();
    let o = failover.put("after-kill", "z", None).await.unwrap();
    assert_eq!((o.acks, o.members), (2, 3));
    assert_eq!(failover.get("after-kill").await.unwrap().as_deref(), Some(&b"z"[..]));
    assert_eq!(failover.get("key-03").await.unwrap().as_deref(), Some(&b"value-3"[..]));
    n2.stop().await.unwrap();
    n3.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_on_its_data_dir_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let n1 = start(&store, "1.1", &data(tmp.path(), "n1")).await;
    let n2 = start(&store, "1.1", &data(tmp.path(), "n2")).await;
    let n3 = start(&store, "1.1", &data(tmp.path(), "n3")).await;
    let c = client(&[&n1, &n2]);
    c.put("before", "1", None).await.unwrap();
    assert!(n1.flush_replication(Duration::from_secs(5)).await);
    let id3 = n3.node_id().to_string();
    n3.kill().await;
    for i in 0..30 {
        c.put(&format!("during-{i}"), "2", None).await.unwrap();
    }
    c.delete("before").await.unwrap();
    let n3 = start(&store, "1.1", &data(tmp.path(), "n3")).await;
    assert_eq!(n3.node_id(), id3);
    let c3 = single(&n3.addresses().admin.to_string());
    assert_eq!(c3.get("before").await.unwrap(), None, "the delete made while it was down reached it");
    for i in 0..30 {
        assert_eq!(c3.get(&format!("during-{i}")).await.unwrap().as_deref(), Some(&b"2"[..]));
    }
    let stats = n3.sync_stats();
    assert!(stats.values().all(|s| !s.digests && s.protocol == 2), "1.1 peers sync in full over v2: {stats:?}");
    for n in [n1, n2, n3] {
        n.stop().await.unwrap();
    }
}
