//! Catch-up at scale: a restarted node copies what it missed in large group
//! commits (nothing else waits for its data file), while its running peers
//! pull from it without holding up their own clients' writes.

use std::time::Duration;

use crate::support::*;

/// Writes `n` keys `k-NNNNN-{tag}` through `c`, 64 at a time (the keys of
/// two tags interleave).
async fn write_many(c: &rollgate_kv::KvClient, tag: &str, n: usize) {
    for start in (0..n).step_by(64) {
        let puts = (start..(start + 64).min(n)).map(|i| async move {
            c.put(&format!("k-{i:05}-{tag}"), "v", None).await.unwrap();
        });
        futures::future::join_all(puts).await;
    }
}

/// A node restarted after missing thousands of writes serves no client
/// until it caught up, so nothing waits for its data file but the copy:
/// the pulled entries are stored in group commits of hundreds, not in the
/// small commits that keep a serving node's client writes quick (one
/// fsync per 64 entries made the last node of a rolling upgrade at
/// saturation take about 10 s to catch up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_stores_what_it_missed_in_large_group_commits() {
    const MISSED: usize = 3_000;
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let n1 = start(&store, "1.2", &data(tmp.path(), "n1")).await;
    let n2 = start(&store, "1.2", &data(tmp.path(), "n2")).await;
    let n3 = start(&store, "1.2", &data(tmp.path(), "n3")).await;
    n3.stop().await.unwrap();
    write_many(&client(&[&n1, &n2]), "missed", MISSED).await;
    assert!(n1.flush_replication(Duration::from_secs(10)).await);
    assert!(n2.flush_replication(Duration::from_secs(10)).await);

    let n3 = start(&store, "1.2", &data(tmp.path(), "n3")).await;
    let commits = n3.group_commits();
    let stats = n3.sync_stats();
    let stored: u64 = stats.values().map(|s| s.entries_stored).sum();
    let received: u64 = stats.values().map(|s| s.entries_received).sum();
    println!("caught up: {received} entries received, {stored} stored, in {commits} group commits: {stats:?}");
    assert!(stored >= MISSED as u64, "{stats:?}");
    assert!(
        commits * 256 <= received,
        "{commits} group commits for {received} pulled entries: fewer than 256 entries per commit"
    );
    for n in [n1, n2, n3] {
        n.stop().await.unwrap();
    }
}

/// A running node pulls from a restarted peer (for what only that peer
/// had) once the peer serves again, not while it catches up: until then
/// the peer holds less than the running node, and the pull would copy
/// back the stale entries it is replacing (at saturation, on the nodes
/// that carry the load). Once it serves, their ranges match but for what
/// the pull is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_nodes_pull_from_a_restarted_peer_once_it_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let n1 = start(&store, "1.2", &data(tmp.path(), "n1")).await;
    let n2 = start(&store, "1.2", &data(tmp.path(), "n2")).await;
    let n3 = start(&store, "1.2", &data(tmp.path(), "n3")).await;
    let id3 = n3.node_id().to_string();
    let c = client(&[&n1, &n2]);
    // Keys written before and while n3 is down interleave, so that every
    // digest range of the running nodes differs from the stale n3's.
    write_many(&c, "a", 1_000).await;
    assert!(n1.flush_replication(Duration::from_secs(10)).await);
    n3.stop().await.unwrap();
    write_many(&c, "b", 1_000).await;
    assert!(n1.flush_replication(Duration::from_secs(10)).await);
    assert!(n2.flush_replication(Duration::from_secs(10)).await);

    let before = n1.sync_stats().get(&id3).map_or(0, |s| s.pulls);
    let n3 = start(&store, "1.2", &data(tmp.path(), "n3")).await;
    let pulled = n1.wait_pulls(&id3, before + 1, READY).await.expect("n1 pulls from the restarted n3");
    assert_eq!(
        (pulled.entries_received, pulled.ranges_skipped),
        (0, pulled.ranges),
        "n1 pulled from n3 before n3 had caught up: {pulled:?}"
    );
    for n in [n1, n2, n3] {
        n.stop().await.unwrap();
    }
}

/// When most digest ranges differ (a node down for a while at saturation:
/// new keys and overwrites land everywhere), a pull copies each run of
/// adjacent differing ranges as one range, in chunks as large as asked
/// for, rather than one range at a time: one round trip per few hundred
/// entries, not one per range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_copies_adjacent_differing_ranges_in_one_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let small_ranges = |name: &str| {
        let mut c = config("1.2", &data(tmp.path(), name));
        c.tuning.digest_range_keys = 16;
        c
    };
    let n1 = start(&store, "1.2", &data(tmp.path(), "n1")).await;
    let n2 = start(&store, "1.2", &data(tmp.path(), "n2")).await;
    let n3 = rollgate_kv::node::start(small_ranges("n3"), store.clone()).await.unwrap();
    assert!(n3.wait_ready(READY).await);
    let c = client(&[&n1, &n2]);
    write_many(&c, "a", 1_000).await;
    assert!(n1.flush_replication(Duration::from_secs(10)).await);
    n3.stop().await.unwrap();
    write_many(&c, "b", 1_000).await;
    assert!(n1.flush_replication(Duration::from_secs(10)).await);
    assert!(n2.flush_replication(Duration::from_secs(10)).await);

    let n3 = rollgate_kv::node::start(small_ranges("n3"), store.clone()).await.unwrap();
    assert!(n3.wait_ready(READY).await);
    for (peer, s) in n3.sync_stats() {
        let differing = s.ranges - s.ranges_skipped;
        assert!(differing > 16, "from {peer}: every range of 16 keys differs: {s:?}");
        assert!(
            s.sync_requests * 4 <= differing as u64,
            "from {peer}: {} sync requests for {differing} differing ranges: {s:?}",
            s.sync_requests
        );
    }
    for n in [n1, n2, n3] {
        n.stop().await.unwrap();
    }
}
