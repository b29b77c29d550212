//! Mixed releases in one cluster (in process, real redb metadata store,
//! real TCP): what each pair of releases negotiates, that a field added in
//! a later transport version is not sent to an older peer, that protocol v2
//! batches and v3 digests are used when negotiated, and that 2.0 and 1.0
//! refuse each other at the handshake while 2.0 and 1.2 interoperate.

mod common;

use std::time::Duration;

use common::*;
use rollgate_kv::ClientError;
use rollgate_kv::releases::find;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_zero_and_one_two_speak_v1_and_the_ttl_field_is_not_sent_to_one_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let old = start(&store, "1.0", &data(tmp.path(), "old")).await;
    let new = start(&store, "1.2", &data(tmp.path(), "new")).await;
    let v10 = find("1.0").unwrap().transport.id();
    for (a, b) in [(&old, &new), (&new, &old)] {
        let st = a.wait_peer(b.node_id(), READY).await.unwrap();
        assert_eq!((st.state, st.protocol, st.transport), ("connected", Some(1), Some(v10)), "{st:?}");
    }

    // A TTL write on 1.2 reaches 1.0 without its expiry: the field is gated by
    // the connection's transport version (1.0's), so it is not on the wire.
    let c = single(&new.addresses().admin.to_string());
    c.put("ttl-key", "v", Some(3600)).await.unwrap();
    assert!(new.flush_replication(Duration::from_secs(5)).await);
    let on_new = new.local_record("ttl-key").await.unwrap().unwrap();
    let on_old = old.local_record("ttl-key").await.unwrap().unwrap();
    assert!(on_new.expires_at_ms > 0, "{on_new:?}");
    assert_eq!(on_old.expires_at_ms, 0, "1.0 never saw the expiry: {on_old:?}");
    assert_eq!((on_old.value.as_deref(), &on_old.version), (Some(&b"v"[..]), &on_new.version));

    // 1.0 itself refuses TTL writes (the write-policy seam).
    let e = single(&old.addresses().admin.to_string()).put("k", "v", Some(5)).await.unwrap_err();
    let ClientError::Refused { status: 400, code, message, .. } = &e else { panic!("{e}") };
    assert_eq!(code, "ttl_not_supported");
    assert!(message.contains("release 1.0") && message.contains("1.1 or later"), "{message}");

    // Protocol v1 has no ReplicateBatch: concurrent writes go one by one.
    let api = new.api();
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..100 {
        let api = api.clone();
        writes.spawn(async move { api.put(format!("w{i:03}"), b"x".to_vec(), None).await });
    }
    while let Some(r) = writes.join_next().await {
        r.unwrap().unwrap();
    }
    let st = new.wait_peer(old.node_id(), READY).await.unwrap();
    assert_eq!(st.batches, Some(0), "{st:?}");
    assert!(st.writes.unwrap() >= 101, "{st:?}");

    // A third node at 1.2 talks v3 with 1.2, and v1 with 1.0.
    let third = start(&store, "1.2", &data(tmp.path(), "third")).await;
    let v12 = find("1.2").unwrap().transport.id();
    let st = third.wait_peer(new.node_id(), READY).await.unwrap();
    assert_eq!((st.protocol, st.transport), (Some(3), Some(v12)), "{st:?}");
    let st = third.wait_peer(old.node_id(), READY).await.unwrap();
    assert_eq!((st.protocol, st.transport), (Some(1), Some(v10)), "{st:?}");
    let stats = third.sync_stats();
    assert!(stats[new.node_id()].digests && !stats[old.node_id()].digests, "{stats:?}");
    assert_eq!(
        third.local_record("ttl-key").await.unwrap().unwrap().expires_at_ms,
        on_new.expires_at_ms,
        "catch-up over v3 carries the expiry (and a copy with it wins over the one 1.0 holds without it)"
    );
    c.put("ttl-after", "v", Some(60)).await.unwrap();
    assert!(new.flush_replication(Duration::from_secs(5)).await);
    assert!(third.local_record("ttl-after").await.unwrap().unwrap().expires_at_ms > 0, "replicated over v3");
    assert_eq!(old.local_record("ttl-after").await.unwrap().unwrap().expires_at_ms, 0, "replicated over v1");

    // Protocol v3 batches concurrent writes (one ReplicateBatch, one commit on the replica).
    let api = third.api();
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..200 {
        let api = api.clone();
        writes.spawn(async move { api.put(format!("b{i:03}"), b"y".to_vec(), None).await });
    }
    while let Some(r) = writes.join_next().await {
        r.unwrap().unwrap();
    }
    let st = third.wait_peer(new.node_id(), READY).await.unwrap();
    assert!(st.batches.unwrap() >= 1, "{st:?}");
    let st = third.wait_peer(old.node_id(), READY).await.unwrap();
    assert_eq!(st.batches, Some(0), "{st:?}");

    // The digest verification helper: the two 1.2 nodes hold the same data.
    assert!(third.flush_replication(Duration::from_secs(5)).await);
    assert!(new.flush_replication(Duration::from_secs(5)).await);
    let cmp = third.compare_with(new.node_id()).await.unwrap();
    assert!(cmp.ranges >= 1 && cmp.differing.is_empty(), "{cmp:?}");
    let e = third.compare_with(old.node_id()).await.unwrap_err();
    assert!(e.to_string().contains("digest ranges need v3"), "{e}");
    for n in [old, new, third] {
        n.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_zero_and_one_zero_refuse_each_other_at_the_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let old = start(&store, "1.0", &data(tmp.path(), "old")).await;

    // --join through a 1.0 node: refused before registering, naming what to upgrade.
    let mut cfg = config("2.0", &data(tmp.path(), "joiner"));
    cfg.join = Some(old.addresses().data.to_string());
    let e = rollgate_kv::Node::start(cfg, store.clone()).await.unwrap_err();
    let msg = e.to_string();
    assert!(e.is_operator_error(), "{msg}");
    assert!(msg.contains("release 1.0") && msg.contains("protocol v1"), "{msg}");
    assert!(msg.contains("v2..=v3") && msg.contains("upgrade node") && msg.contains("v2 or later"), "{msg}");
    assert_eq!(store.list("rollgate/members/").await.unwrap().kvs.len(), 1, "the refused node did not register");

    // Without --join it registers, but neither side will talk to the other.
    let new = start(&store, "2.0", &data(tmp.path(), "new")).await;
    let st = new.wait_peer(old.node_id(), READY).await.unwrap();
    assert_eq!(st.state, "refused", "{st:?}");
    let m = st.error.unwrap();
    assert!(m.contains(&format!("node {} (release 1.0) speaks protocol v1", old.node_id())), "{m}");
    assert!(m.contains("v2..=v3") && m.contains(&format!("upgrade node {}", old.node_id())), "{m}");
    let st = old.wait_peer(new.node_id(), READY).await.unwrap();
    assert_eq!(st.state, "refused", "{st:?}");
    let m = st.error.unwrap();
    assert!(m.contains("release 2.0") && m.contains("v2..=v3") && m.contains("upgrade this node"), "{m}");
    // Both sides' listeners log the refused inbound handshakes too.
    let health = new.api().health();
    assert!(health.refused_inbound.iter().any(|r| r.contains("NoCommonProtocol")), "{health:?}");

    // With no majority reachable, writes on either are refused with a clear 503.
    let e = single(&new.addresses().admin.to_string()).put("k", "v", None).await.unwrap_err();
    assert!(e.to_string().contains("no_quorum") && e.to_string().contains(old.node_id()), "{e}");
    old.stop().await.unwrap();
    new.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_zero_and_one_two_interoperate() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let a = start(&store, "1.2", &data(tmp.path(), "a")).await;
    let b = start(&store, "2.0", &data(tmp.path(), "b")).await;
    let c = start(&store, "2.0", &data(tmp.path(), "c")).await;
    let v12 = find("1.2").unwrap().transport.id();
    let v20 = find("2.0").unwrap().transport.id();
    let st = b.wait_peer(a.node_id(), READY).await.unwrap();
    assert_eq!((st.state, st.protocol, st.transport), ("connected", Some(3), Some(v12)), "{st:?}");
    let st = b.wait_peer(c.node_id(), READY).await.unwrap();
    assert_eq!((st.protocol, st.transport), (Some(3), Some(v20)), "2.0 with 2.0: {st:?}");

    let ca = single(&a.addresses().admin.to_string());
    let cb = single(&b.addresses().admin.to_string());
    ca.put("from-1.2", "a", Some(60)).await.unwrap();
    cb.put("from-2.0", "b", None).await.unwrap();
    assert!(a.flush_replication(Duration::from_secs(5)).await && b.flush_replication(Duration::from_secs(5)).await);
    assert_eq!(cb.get("from-1.2").await.unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(ca.get("from-2.0").await.unwrap().as_deref(), Some(&b"b"[..]));
    assert!(b.local_record("from-1.2").await.unwrap().unwrap().expires_at_ms > 0, "1.2 sends the expiry to 2.0");

    // A 2.0 node restarted catches up over v3 from both (sync chunks bounded
    // by bytes with 2.0, by entries with 1.2).
    let c_dir = data(tmp.path(), "c");
    c.stop().await.unwrap();
    for i in 0..40 {
        ca.put(&format!("later-{i}"), vec![b'z'; 1000], None).await.unwrap();
    }
    let c = start(&store, "2.0", &c_dir).await;
    let stats = c.sync_stats();
    assert!(stats.values().all(|s| s.digests && s.protocol == 3), "{stats:?}");
    assert_eq!(single(&c.addresses().admin.to_string()).get("later-39").await.unwrap().map(|v| v.len()), Some(1000));
    for n in [a, b, c] {
        n.stop().await.unwrap();
    }
}
