//! Mixed releases in one cluster (in process, real redb metadata store,
//! real TCP): what each pair of releases negotiates, that TTL writes wait
//! for flag `ttl` (which a 1.0 member blocks), that records keep the feature
//! keys a 1.0 node does not know, that protocol v2 batches and v3 digests
//! are used when negotiated, that 2.0 and 1.0 refuse each other (at the
//! handshake, and because 2.0 requires `record_meta_v2`), and that 2.0 and
//! 1.2 interoperate.

use std::time::Duration;

use crate::support::*;
use rollgate::flags::EnableRequest;
use rollgate::handshake::HandshakeConfig;
use rollgate::net::{self, NetConfig};
use rollgate::record::FeatureKey;
use rollgate_kv::ClientError;
use rollgate_kv::hlc::Version;
use rollgate_kv::peer::codec::{self, Incoming, Request, Response};
use rollgate_kv::record::WriteContext;
use rollgate_kv::releases::find;
use rollgate_kv::replication::v1 as repl1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_zero_and_one_two_speak_v1_and_ttl_waits_for_its_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let old = start(&store, "1.0", &data(tmp.path(), "old")).await;
    let new = start(&store, "1.2", &data(tmp.path(), "new")).await;
    let v10 = find("1.0").unwrap().transport.id();
    for (a, b) in [(&old, &new), (&new, &old)] {
        let st = a.wait_peer(b.node_id(), READY).await.unwrap();
        assert_eq!((st.state, st.protocol, st.transport), ("connected", Some(1), Some(v10)), "{st:?}");
    }

    // A TTL write would reach 1.0 without its expiry (the field is not on
    // 1.0's wire), so 1.2 refuses it until flag `ttl` is enabled, and the
    // flag cannot be enabled while a 1.0 node is a member.
    let c = single(&new.addresses().admin.to_string());
    let e = c.put("ttl-key", "v", Some(3600)).await.unwrap_err();
    let ClientError::Refused { status: 409, code, message, .. } = &e else { panic!("{e}") };
    assert_eq!(code, "flag_not_enabled");
    assert!(message.contains("`ttl`") && message.contains("rollgate flags enable ttl"), "{message}");
    let rt = new.runtime().unwrap();
    let e = rt.enable(EnableRequest::flags(["ttl"])).await.unwrap_err().to_string();
    drop(rt);
    assert!(e.contains(&format!("node {} (release 1.0, running) does not support it", old.node_id())), "{e}");
    assert!(e.contains("1.1 or later"), "{e}");
    assert_eq!(new.local_record("ttl-key").await.unwrap(), None, "nothing stored");

    // 1.0 itself does not know the flag.
    let e = single(&old.addresses().admin.to_string()).put("k", "v", Some(5)).await.unwrap_err();
    let ClientError::Refused { status: 400, code, message, .. } = &e else { panic!("{e}") };
    assert_eq!(code, "ttl_not_supported");
    assert!(message.contains("release 1.0") && message.contains("1.1 or later"), "{message}");

    // Records travel with their feature map: a record carrying keys 1.0 does
    // not know (meta@2, and one no release knows yet), replicated to the 1.0
    // node by a peer, is kept there byte for byte ...
    let gates = rollgate::migrate::MemGates::with_flags(["record_meta_v2"]);
    let version = Version { wall_ms: rollgate::cluster::now_ms(), logical: 0, node: "future-peer".into() };
    let ctx = WriteContext { node: "future-peer", release: "3.0" };
    let mut features = rollgate_kv::record::new_features(ctx, &version, Some(b"v"), &gates);
    features.set(&FeatureKey::<String>::new("zone", 1), &"eu-1".to_string(), &gates).unwrap();
    let sent = repl1::Entry {
        key: "from-the-future".into(),
        version,
        value: repl1::Value::Put(b"v".to_vec()),
        expires_at_ms: 0,
        features: features.clone(),
    };
    let r = find("1.2").unwrap();
    let peer = HandshakeConfig::new("future-peer", "1.2", old.cluster_id(), r.protocols, r.transport_set());
    let peer_live = hand_made_member(&old, "future-peer").await;
    let conn = net::connect::<rollgate_kv::Msg>(old.addresses().data, NetConfig::new(peer)).await.unwrap();
    let p = conn.negotiated().protocol;
    let (tx, mut rx) = conn.split();
    let req = Request::Replicate(repl1::Replicate { req_id: 7, entry: sent });
    tx.send(codec::request_to_wire(p, req).unwrap()).await.unwrap();
    let answer = codec::from_wire(rx.recv().await.unwrap().unwrap());
    assert_eq!(answer, Incoming::Response(Response::Ack(repl1::Ack { req_id: 7, error: None })));
    drop((tx, rx));
    remove_hand_made_member(&old, "future-peer", peer_live).await;
    let on_old = old.local_record("from-the-future").await.unwrap().unwrap();
    assert_eq!(on_old.features.to_bytes(), features.to_bytes(), "1.0 kept every key");

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
    assert!(st.writes.unwrap() >= 100, "{st:?}");
    drop(api);

    // A third node at 1.2 talks v3 with 1.2, and v1 with 1.0.
    let third = start(&store, "1.2", &data(tmp.path(), "third")).await;
    let v12 = find("1.2").unwrap().transport.id();
    let st = third.wait_peer(new.node_id(), READY).await.unwrap();
    assert_eq!((st.protocol, st.transport), (Some(3), Some(v12)), "{st:?}");
    let st = third.wait_peer(old.node_id(), READY).await.unwrap();
    assert_eq!((st.protocol, st.transport), (Some(1), Some(v10)), "{st:?}");
    let stats = third.sync_stats();
    assert!(stats[new.node_id()].digests && !stats[old.node_id()].digests, "{stats:?}");
    // ... and passed on unchanged when 1.0 serves its catch-up (only 1.0 had it).
    let on_third = third.local_record("from-the-future").await.unwrap().unwrap();
    assert_eq!(on_third.features.to_bytes(), features.to_bytes(), "meta@2 survived the 1.0 hop");
    assert_eq!(on_third.writer().unwrap().unwrap().from, "meta@2");
    let got = single(&third.addresses().admin.to_string()).get("from-the-future").await.unwrap();
    assert_eq!(got.as_deref(), Some(&b"v"[..]));

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
    drop(api);
    let st = third.wait_peer(new.node_id(), READY).await.unwrap();
    assert!(st.batches.unwrap() >= 1, "{st:?}");
    let st = third.wait_peer(old.node_id(), READY).await.unwrap();
    assert_eq!(st.batches, Some(0), "{st:?}");

    // The digest verification helper: the two 1.2 nodes hold the same data
    // but the record only 1.0 and the third node had.
    assert!(third.flush_replication(Duration::from_secs(5)).await);
    assert!(new.flush_replication(Duration::from_secs(5)).await);
    let cmp = third.compare_with(new.node_id()).await.unwrap();
    assert!(cmp.ranges >= 1 && cmp.differing.len() <= 1, "{cmp:?}");
    let e = third.compare_with(old.node_id()).await.unwrap_err();
    assert!(e.to_string().contains("digest ranges need v3"), "{e}");
    for n in [old, new, third] {
        n.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_zero_and_one_zero_refuse_each_other_and_two_zero_requires_record_meta_v2() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let old = start(&store, "1.0", &data(tmp.path(), "old")).await;

    // --join through a 1.0 node: refused before registering, naming what to upgrade.
    let mut cfg = config("2.0", &data(tmp.path(), "joiner"));
    cfg.join = Some(old.addresses().data.to_string());
    let e = rollgate_kv::node::start(cfg, store.clone()).await.unwrap_err();
    let msg = e.to_string();
    assert!(e.is_operator_error(), "{msg}");
    // (A refusal to a peer that has not authenticated names no release: the
    // address names the node to upgrade.)
    assert!(msg.contains(&old.addresses().data.to_string()) && msg.contains("protocol v1"), "{msg}");
    assert!(msg.contains("v2..=v4") && msg.contains("upgrade the peer") && msg.contains("v2 or later"), "{msg}");
    assert_eq!(store.list("rollgate/members/").await.unwrap().kvs.len(), 1, "the refused node did not register");

    // Without --join: 2.0 requires record_meta_v2, which the 1.0 member lacks,
    // so it refuses to start with rollgate's actionable message, changing nothing.
    let before = store.list("rollgate/members/").await.unwrap().kvs.len();
    let e = rollgate_kv::node::start(config("2.0", &data(tmp.path(), "new")), store.clone()).await.unwrap_err();
    let msg = e.to_string();
    assert!(e.is_operator_error(), "{msg}");
    assert!(msg.contains("requires feature flags") && msg.contains("`record_meta_v2`"), "{msg}");
    assert!(msg.contains(&format!("upgrade {} to release 1.2", old.node_id())), "{msg}");
    assert!(msg.contains("Nothing was changed"), "{msg}");
    assert_eq!(store.list("rollgate/members/").await.unwrap().kvs.len(), before);
    assert!(store.get("rollgate/flags/record_meta_v2").await.unwrap().is_none());

    // Their links refuse each other at the handshake too.
    let r20 = find("2.0").unwrap();
    let hs = HandshakeConfig::new("a-2-0-node", "2.0", old.cluster_id(), r20.protocols, r20.transport_set());
    let e = net::connect::<rollgate_kv::Msg>(old.addresses().data, NetConfig::new(hs)).await.unwrap_err().to_string();
    assert!(e.contains("protocol v1") && e.contains("v2..=v4"), "{e}");

    // A 1.2 node joins (the flag stays disabled: 1.0 is a member). Once the
    // 1.0 node is stopped and forgotten, the first 2.0 node enables the flag
    // itself, and every node's data follows (records format 2).
    let mid = start(&store, "1.2", &data(tmp.path(), "mid")).await;
    single(&mid.addresses().admin.to_string()).put("before-2.0", "x", None).await.unwrap();
    let old_id = old.node_id().to_string();
    old.stop().await.unwrap();
    let e = rollgate_kv::node::start(config("2.0", &data(tmp.path(), "new")), store.clone()).await.unwrap_err();
    assert!(e.to_string().contains(&format!("{old_id} (release 1.0, stopped)")), "a stopped member still counts: {e}");
    mid.runtime().unwrap().forget(&old_id).await.unwrap();
    let new = start(&store, "2.0", &data(tmp.path(), "new")).await;
    assert!(new.api().health().flags_enabled.contains(&"record_meta_v2".to_string()));
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for n in [&mid, &new] {
        for _ in 0..200 {
            if n.storage_status().await.unwrap().format == 2 {
                break;
            }
            tick.tick().await;
        }
        assert_eq!(n.storage_status().await.unwrap().format, 2, "{}", n.node_id());
    }
    let rec = new.local_record("before-2.0").await.unwrap().unwrap();
    assert_eq!(rec.writer().unwrap().unwrap().from, "meta@2", "migrated on the 2.0 node after its catch-up");
    mid.stop().await.unwrap();
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
    assert_eq!((st.protocol, st.transport), (Some(4), Some(v20)), "2.0 with 2.0 speak v4 (quorum reads): {st:?}");

    let ca = single(&a.addresses().admin.to_string());
    let cb = single(&b.addresses().admin.to_string());
    ca.put("from-1.2", "a", Some(60)).await.unwrap();
    cb.put("from-2.0", "b", None).await.unwrap();
    assert!(a.flush_replication(Duration::from_secs(5)).await && b.flush_replication(Duration::from_secs(5)).await);
    assert_eq!(cb.get("from-1.2").await.unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(ca.get("from-2.0").await.unwrap().as_deref(), Some(&b"b"[..]));
    assert!(b.local_record("from-1.2").await.unwrap().unwrap().expires_at_ms > 0, "1.2 sends the expiry to 2.0");

    // A 2.0 node restarted catches up by digests from both: over v3 from
    // 1.2, over v4 from 2.0 (sync chunks bounded by bytes with 2.0, by
    // entries with 1.2).
    let c_dir = data(tmp.path(), "c");
    c.stop().await.unwrap();
    for i in 0..40 {
        ca.put(&format!("later-{i}"), vec![b'z'; 1000], None).await.unwrap();
    }
    let c = start(&store, "2.0", &c_dir).await;
    let stats = c.sync_stats();
    assert_eq!(stats.get(a.node_id()).map(|s| (s.digests, s.protocol)), Some((true, 3)), "{stats:?}");
    assert_eq!(stats.get(b.node_id()).map(|s| (s.digests, s.protocol)), Some((true, 4)), "{stats:?}");
    assert_eq!(single(&c.addresses().admin.to_string()).get("later-39").await.unwrap().map(|v| v.len()), Some(1000));
    for n in [a, b, c] {
        n.stop().await.unwrap();
    }
}
