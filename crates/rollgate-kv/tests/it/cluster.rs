//! A three-node cluster in one process on a real redb metadata store, real
//! TCP on loopback and real data dirs: replication, majority acknowledgement
//! with nodes down, catch-up after a restart, client failover.

use std::time::Duration;

use crate::support::*;
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
    assert!(matches!(c1.put("..", "x", None).await, Err(ClientError::InvalidKey(_))));
    for odd in ["...", "a/../b", "a/b", "sp ace", "ünï", "%2E%2E"] {
        c1.put(odd, odd, None).await.unwrap();
        assert_eq!(c1.get(odd).await.unwrap().as_deref(), Some(odd.as_bytes()), "{odd:?}");
    }
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

    let n3_record = store.get(&format!("rollgate/members/{id3}")).await.unwrap().unwrap();
    let n3_record: serde_json::Value = serde_json::from_slice(&n3_record.value).unwrap();
    assert_eq!(n3_record["state"], "stopped", "a graceful stop leaves the membership declared stopped");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catching_up_node_answers_503_until_it_is_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let n1 = start(&store, "1.2", &data(tmp.path(), "n1")).await;
    // n2 crashes with a long lease: it still counts as running for 30 s.
    let mut cfg = config("1.2", &data(tmp.path(), "n2"));
    cfg.tuning.liveness_ttl_s = 30;
    let n2 = rollgate_kv::node::start(cfg, store.clone()).await.unwrap();
    assert!(n2.wait_ready(READY).await);
    n2.kill().await;
    // n3 waits (inbound_wait, 2 s) for the dead n2 to connect before it pulls.
    let n3 = rollgate_kv::node::start(config("1.2", &data(tmp.path(), "n3")), store.clone()).await.unwrap();
    assert_eq!(n3.state(), rollgate_kv::node::ServingState::CatchingUp);
    let admin = n3.addresses().admin;
    let health = reqwest::Client::builder()
        .use_preconfigured_tls(rollgate::tls::plain_client())
        .build()
        .unwrap()
        .get(format!("http://{admin}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let h: serde_json::Value = health.json().await.unwrap();
    assert_eq!(h["state"], "catching_up", "{h}");
    let e = single(&admin.to_string()).put("k", "v", None).await.unwrap_err();
    assert!(e.to_string().contains("503 catching_up") && e.to_string().contains("catching up"), "{e}");
    assert!(n3.wait_ready(READY).await);
    let o = single(&admin.to_string()).put("k", "v", None).await.unwrap();
    assert_eq!((o.acks, o.members), (2, 3), "n1 and n3 make the majority");
    n1.stop().await.unwrap();
    n3.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_secret_authenticates_links_and_keeps_out_a_node_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let secret_file = tmp.path().join("secret");
    std::fs::write(&secret_file, "a cluster secret of at least 16 bytes").unwrap();
    std::fs::set_permissions(
        &secret_file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let secret = rollgate::handshake::ClusterSecret::from_file(&secret_file).unwrap();
    let with_secret = |name: &str| {
        let mut c = config("1.2", &data(tmp.path(), name));
        c.cluster_secret = Some(secret.clone());
        c
    };
    let a = rollgate_kv::node::start(with_secret("a"), store.clone()).await.unwrap();
    let b = rollgate_kv::node::start(with_secret("b"), store.clone()).await.unwrap();
    assert!(a.wait_ready(READY).await && b.wait_ready(READY).await);
    let st = a.wait_peer(b.node_id(), READY).await.unwrap();
    assert_eq!((st.state, st.authenticated), ("connected", Some(true)), "{st:?}");
    let c = start(&store, "1.2", &data(tmp.path(), "c")).await;
    let st = c.wait_peer(a.node_id(), READY).await.unwrap();
    assert_eq!(st.state, "refused", "{st:?}");
    assert!(st.error.as_deref().unwrap().contains("cluster secret"), "{st:?}");
    for n in [a, b, c] {
        n.stop().await.unwrap();
    }
}

/// A client's later write wins over its earlier one even when the second
/// node's clock is behind the first's: the client sends the highest version
/// it saw (`x-kv-seen`) and the node stamps the write above it. Two separate
/// one-node clusters make the clocks independent; without the header the
/// second write would get the lower version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_writes_are_ordered_as_it_made_them_whichever_node_takes_them() {
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sa, sb) = (redb_store(ta.path()).await, redb_store(tb.path()).await);
    let a = start(&sa, "1.2", &data(ta.path(), "n1")).await;
    let b = start(&sb, "1.2", &data(tb.path(), "n1")).await;
    let (a_addr, b_addr) = (a.addresses().admin.to_string(), b.addresses().admin.to_string());

    // Push node a's clock ten minutes ahead, as a writer that saw such a version would.
    let ahead =
        rollgate_kv::hlc::Version { wall_ms: rollgate::cluster::now_ms() + 600_000, logical: 3, node: "x".into() };
    let http = reqwest::Client::builder().use_preconfigured_tls(rollgate::tls::plain_client()).build().unwrap();
    let resp = http
        .put(format!("http://{a_addr}/kv/push"))
        .header("x-kv-seen", ahead.to_string())
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let pushed: serde_json::Value = resp.json().await.unwrap();
    let pushed: rollgate_kv::hlc::Version = pushed["version"].as_str().unwrap().parse().unwrap();
    assert!(pushed > ahead, "{pushed} is above the seen {ahead}");

    // A client writes through a, then through b.
    let c = single(&a_addr);
    let first = c.put("k", "first", None).await.unwrap();
    let first: rollgate_kv::hlc::Version = first.version.parse().unwrap();
    assert!(first > pushed);
    assert_eq!(c.seen(), Some(first.clone()));
    c.set_nodes(&[&b_addr]).unwrap();
    let second = c.put("k", "second", None).await.unwrap();
    let second: rollgate_kv::hlc::Version = second.version.parse().unwrap();
    assert!(second > first, "the later write {second} is above the earlier {first}");

    // A garbage header is refused and stores nothing.
    for bad in ["soon", "1.2", &format!("{}.0@n", "9".repeat(40)), "1.2@bad node"] {
        let resp = http.put(format!("http://{b_addr}/kv/g")).header("x-kv-seen", bad).body("v").send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: rollgate::api::error::ErrorBody = resp.json().await.unwrap();
        assert_eq!(body.error.code, "bad_request", "{body:?}");
        assert!(body.error.message.contains("x-kv-seen"), "{body:?}");
    }
    assert_eq!(b.local_record("g").await.unwrap(), None);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
