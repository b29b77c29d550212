//! Membership: join, leave, crash (lease expiry) shows stopped-not-gone,
//! forget; the node-side handle follows changes; the node-local copy (I2);
//! stored values that do not decode.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rollgate::cluster::{
    Cluster, ClusterError, ClusterHandle, ClusterOptions, ClusterView, FlagRecord, FlagState, HandleOptions,
    LOCAL_COPY_FILE, LocalCopy, LocalCopyError, NodeRecord, NodeState, TransportRange, ViewOp,
};
use rollgate::store::{self, MetaStore, StoreError, StoreOptions};
use rollgate::version::{ProtocolRange, TransportVersion};

const WAIT: Duration = Duration::from_secs(20);

fn record(node: &str, flags: &[&str]) -> NodeRecord {
    NodeRecord {
        data_addr: "127.0.0.1:7000".into(),
        admin_addr: "127.0.0.1:7001".into(),
        protocol: ProtocolRange::new(1, 2).unwrap(),
        transport: TransportRange {
            min_compatible: TransportVersion::from_id(1_000_0_00),
            current: TransportVersion::from_id(1_001_0_00),
        },
        supported_flags: flags.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        cluster_features: ["feature_x".to_string()].into(),
        started_ms: rollgate::cluster::now_ms(),
        ..NodeRecord::new(node, "1.1")
    }
}

async fn mem_cluster() -> Cluster {
    let store = store::open("mem:", StoreOptions::default()).await.unwrap();
    Cluster::open(store, ClusterOptions::default()).await.unwrap()
}

async fn join(cluster: &Cluster, node: &str) {
    cluster.join(record(node, &["f"]), |_| Ok::<(), String>(())).await.unwrap();
}

/// Waits (bounded) until the handle's view satisfies `pred`.
async fn until(handle: &ClusterHandle, what: &str, pred: impl Fn(&ClusterView) -> bool) -> Arc<ClusterView> {
    let mut rx = handle.watch_view();
    match tokio::time::timeout(WAIT, rx.wait_for(|v| pred(v))).await {
        Ok(Ok(v)) => v.clone(),
        _ => panic!("timed out waiting for {what}; view: {:?}", handle.view()),
    }
}

#[tokio::test]
async fn the_cluster_id_is_created_once() {
    let store = store::open("mem:", StoreOptions::default()).await.unwrap();
    let a = Cluster::open(store.clone(), ClusterOptions::default()).await.unwrap();
    let b = Cluster::open(store.clone(), ClusterOptions::default()).await.unwrap();
    assert_eq!(a.cluster_id(), b.cluster_id());
    assert_eq!(a.cluster_id().len(), 32);
    let other = Cluster::open(store, ClusterOptions { root: "other/".into(), ..Default::default() }).await.unwrap();
    assert_ne!(other.cluster_id(), a.cluster_id(), "another root is another cluster");
    assert_eq!(a.view().await.unwrap().epoch, 0);
}

#[tokio::test]
async fn join_leave_and_forget() {
    let cluster = mem_cluster().await;
    join(&cluster, "n1").await;
    let live = cluster.start_liveness("n1", 30).await.unwrap();
    let view = cluster.view().await.unwrap();
    let m = view.member("n1").unwrap();
    assert_eq!((m.effective, view.epoch), (NodeState::Running, 1));
    assert_eq!(m.record.cluster_features, ["feature_x".to_string()].into());
    assert!(m.live.as_ref().unwrap().heartbeat_ms > 0);

    // Forgetting a running node is refused and changes nothing.
    let err = cluster.forget("n1").await.unwrap_err();
    assert!(matches!(err, ClusterError::NodeRunning { .. }), "{err}");
    assert_eq!(cluster.view().await.unwrap().epoch, 1);

    // A clean leave: still a member, stopped; the live key is gone.
    cluster.leave("n1").await.unwrap();
    let view = cluster.view().await.unwrap();
    let m = view.member("n1").expect("still a member");
    assert_eq!((m.record.state, m.effective, m.live.is_none()), (NodeState::Stopped, NodeState::Stopped, true));
    live.stop().await.unwrap();

    // A stopped member still counts: enabling a flag it lacks is refused.
    cluster.update_member("n1", |r| r.supported_flags.clear()).await.unwrap();
    let refused = cluster
        .update(|view| match view.members.values().find(|m| !m.record.supported_flags.contains("g")) {
            Some(m) => Err(format!("member {} ({:?}) lacks g", m.record.node_id, m.effective)),
            None => Ok(vec![ViewOp::PutFlag("g".into(), FlagRecord::enabled())]),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.rejected().unwrap(), "member n1 (Stopped) lacks g");

    let epoch = cluster.view().await.unwrap().epoch;
    let committed = cluster.forget("n1").await.unwrap();
    assert_eq!(committed.epoch, epoch + 1);
    assert!(cluster.view().await.unwrap().member("n1").is_none());
    assert!(matches!(cluster.forget("n1").await, Err(ClusterError::UnknownNode { .. })));
    assert!(matches!(cluster.leave("ghost").await, Err(ClusterError::UnknownNode { .. })));
    assert!(matches!(cluster.forget("bad/id").await, Err(ClusterError::InvalidNodeId { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_shows_as_stopped_not_gone_until_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        store::open(&format!("redb:{}", dir.path().join("m.redb").display()), StoreOptions::default()).await.unwrap();
    let cluster = Cluster::open(store, ClusterOptions::default()).await.unwrap();
    let handle = ClusterHandle::start(cluster.clone(), HandleOptions::default()).await.unwrap();
    join(&cluster, "n1").await;
    join(&cluster, "n2").await;
    let n1 = cluster.start_liveness("n1", 1).await.unwrap();
    let _n2 = cluster.start_liveness("n2", 30).await.unwrap();
    until(&handle, "both running", |v| v.running().count() == 2).await;

    // n1 "crashes": its heartbeats stop without a leave; its lease expires.
    let epoch = handle.view().epoch;
    drop(n1);
    let view = until(&handle, "n1 stopped", |v| v.member("n1").is_some_and(|m| !m.is_running())).await;
    let m = view.member("n1").expect("a crashed node stays a member");
    assert_eq!(m.record.state, NodeState::Running, "it never declared itself stopped");
    assert_eq!(m.effective, NodeState::Stopped);
    assert!(view.member("n2").unwrap().is_running());
    assert_eq!(view.epoch, epoch, "liveness does not move the epoch");

    // It may come back (e.g. with its old binary): running again.
    let n1_back = cluster.start_liveness("n1", 30).await.unwrap();
    until(&handle, "n1 back", |v| v.member("n1").is_some_and(|m| m.is_running())).await;
    n1_back.stop().await.unwrap();
    until(&handle, "n1 stopped again", |v| v.member("n1").is_some_and(|m| !m.is_running())).await;

    // Forgotten: gone for good.
    handle.forget("n1").await.unwrap();
    let view = until(&handle, "n1 gone", |v| v.member("n1").is_none()).await;
    assert_eq!(view.members.keys().collect::<Vec<_>>(), ["n2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_publishes_every_revision_and_writes_the_local_copy_first() {
    let data = tempfile::tempdir().unwrap();
    let cluster = mem_cluster().await;
    let options = HandleOptions { local_copy_dir: Some(data.path().to_path_buf()), ..HandleOptions::default() };
    let handle = ClusterHandle::start(cluster.clone(), options).await.unwrap();
    let first = LocalCopy::load(data.path()).unwrap().expect("written at start");
    assert_eq!((first.cluster_id.as_str(), first.epoch), (cluster.cluster_id(), 0));

    let mut changes = handle.subscribe();
    join(&cluster, "n1").await;
    for flag in ["a", "b", "c"] {
        let name = flag.to_string();
        cluster.update(|_| Ok::<_, String>(vec![ViewOp::PutFlag(name.clone(), FlagRecord::enabled())])).await.unwrap();
    }
    let enabling = FlagRecord {
        state: FlagState::Enabling { owner: "n1".into(), started_ms: 1, step: Some("migrate".into()) },
        updated_ms: 1,
        info: None,
        attempt: None,
        note: None,
    };
    cluster.update(|_| Ok::<_, String>(vec![ViewOp::PutFlag("d".into(), enabling.clone())])).await.unwrap();
    let mut epochs = Vec::new();
    while epochs.last() != Some(&5) {
        let view = tokio::time::timeout(WAIT, changes.recv()).await.expect("a change").unwrap();
        // The local copy is on disk before a view with new flags is published
        // (a membership change alone does not rewrite it).
        let copy = LocalCopy::load(data.path()).unwrap().unwrap();
        let last_flag_change = view.flag_revisions.values().max().copied().unwrap_or(0);
        assert!(
            copy.revision >= last_flag_change,
            "copy at revision {} behind the flag change at {last_flag_change} of the published view",
            copy.revision
        );
        epochs.push(view.epoch);
    }
    assert_eq!(epochs, [1, 2, 3, 4, 5], "every change seen, in order");
    let copy = LocalCopy::load(data.path()).unwrap().unwrap();
    assert!(copy.matches(&handle.view()));
    assert_eq!(copy.enabled().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(copy.flags["d"], enabling, "enabling flags are recorded too");
    assert!(!data.path().join(format!("{LOCAL_COPY_FILE}.tmp")).exists(), "no temporary file left");
}

#[test]
fn a_corrupt_local_copy_is_a_clear_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(LocalCopy::load(dir.path()).unwrap(), None, "no copy yet");
    let path = dir.path().join(LOCAL_COPY_FILE);
    let valid = r#"{"format":1,"cluster_id":"c1","epoch":3,"revision":9,"flags":{"f":{"state":"enabled","since_ms":1}},"written_ms":2}"#;
    std::fs::write(&path, valid).unwrap();
    let copy = LocalCopy::load(dir.path()).unwrap().unwrap();
    assert_eq!((copy.epoch, copy.enabled().collect::<Vec<_>>()), (3, vec!["f"]));

    let cases: &[(&str, &str)] = &[
        ("", "EOF"),
        ("garbage", "expected value"),
        ("{\"format\":1,\n\"cluster_id\":", "line 2"),
        (r#"{"format":2,"cluster_id":"c","epoch":1,"revision":1,"flags":{},"written_ms":0}"#, "format 2"),
        (r#"{"format":1,"cluster_id":"","epoch":1,"revision":1,"flags":{},"written_ms":0}"#, "cluster id"),
        (r#"{"format":1,"cluster_id":"c","epoch":-1,"revision":1,"flags":{},"written_ms":0}"#, "invalid value"),
        (
            r#"{"format":1,"cluster_id":"c","epoch":1,"revision":1,"flags":{"Bad-Name":{"state":"enabled"}},"written_ms":0}"#,
            "invalid flag name",
        ),
        (
            r#"{"format":1,"cluster_id":"c","epoch":1,"revision":1,"flags":{"f":{"state":"on"}},"written_ms":0}"#,
            "unknown variant",
        ),
    ];
    for (text, fragment) in cases {
        std::fs::write(&path, text).unwrap();
        let err = LocalCopy::load(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LocalCopyError::Corrupt { .. }), "{text:?}: {msg}");
        assert!(msg.contains(&path.display().to_string()), "names the file: {msg}");
        assert!(msg.contains(fragment), "{text:?}: {msg:?} lacks {fragment:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), *text, "left as it was");
    }
    std::fs::write(&path, vec![b' '; rollgate::cluster::MAX_LOCAL_COPY_BYTES as usize + 1]).unwrap();
    assert!(matches!(LocalCopy::load(dir.path()), Err(LocalCopyError::TooLarge { .. })));
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert!(matches!(LocalCopy::load(dir.path()), Err(LocalCopyError::Corrupt { .. })));
}

#[test]
fn the_local_copy_write_replaces_the_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    // A leftover temporary file from a crash mid-write is ignored and replaced.
    std::fs::write(dir.path().join(format!("{LOCAL_COPY_FILE}.tmp")), "half a fil").unwrap();
    let mut copy = LocalCopy {
        format: 1,
        cluster_id: "c1".into(),
        epoch: 1,
        revision: 5,
        flags: [("f".to_string(), FlagRecord::enabled())].into(),
        written_ms: 1,
    };
    copy.write(dir.path()).unwrap();
    assert_eq!(LocalCopy::load(dir.path()).unwrap().unwrap(), copy);
    copy.epoch = 2;
    copy.flags.clear();
    copy.write(dir.path()).unwrap();
    assert_eq!(LocalCopy::load(dir.path()).unwrap().unwrap(), copy);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [LOCAL_COPY_FILE], "only the copy itself remains");
    let missing = dir.path().join("no-such-dir");
    assert!(matches!(copy.write(&missing), Err(LocalCopyError::Io { .. })));
}

#[test]
fn concurrent_local_copy_writes_to_one_data_dir_all_succeed() {
    // Two handles on one data dir (a node restarted in-process while its old
    // watcher still publishes) write at the same time.
    let dir = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let dir = dir.path();
            s.spawn(move || {
                for i in 0..50u64 {
                    let copy = LocalCopy {
                        format: 1,
                        cluster_id: "c1".into(),
                        epoch: t * 100 + i,
                        revision: 1,
                        flags: Default::default(),
                        written_ms: 1,
                    };
                    copy.write(dir).unwrap_or_else(|e| panic!("writer {t}, write {i}: {e}"));
                }
            });
        }
    });
    assert!(LocalCopy::load(dir.path()).unwrap().is_some());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [LOCAL_COPY_FILE], "no temporary file is left");
}

#[tokio::test]
async fn a_member_record_that_does_not_decode_is_an_error_naming_the_key() {
    let store: Arc<dyn MetaStore> = store::open("mem:", StoreOptions::default()).await.unwrap();
    let cluster = Cluster::open(store.clone(), ClusterOptions::default()).await.unwrap();
    join(&cluster, "n1").await;
    let key = cluster.keys().member("n1");
    store.put(&key, b"{\"node_id\": 7}".to_vec()).await.unwrap();
    let before = store.list("").await.unwrap();
    let err = cluster.view().await.unwrap_err();
    assert!(err.to_string().contains(&key), "names the key: {err}");
    assert!(matches!(err, ClusterError::Store(StoreError::Decode { .. })), "{err}");
    // Every change is refused on such a view, and nothing is written.
    let err = cluster.update(|_| Ok::<_, String>(vec![ViewOp::PutFlag("f".into(), FlagRecord::enabled())])).await;
    assert!(err.is_err());
    assert!(cluster.leave("n1").await.is_err());
    assert_eq!(store.list("").await.unwrap(), before, "nothing overwritten");
    // A record filed under another node's key is refused too.
    let mut other = record("n2", &[]);
    other.node_id = "n3".into();
    store.put(&cluster.keys().member("n2"), serde_json::to_vec(&other).unwrap()).await.unwrap();
    store.put(&key, serde_json::to_vec(&record("n1", &[])).unwrap()).await.unwrap();
    let err = cluster.view().await.unwrap_err();
    assert!(err.to_string().contains("record names node \"n3\""), "{err}");
}

/// A handle whose watch falls behind (queue depth 1, many changes while it
/// cannot run) is cut off, re-lists, and still ends on the latest view.
#[tokio::test(flavor = "current_thread")]
async fn a_handle_that_falls_behind_re_lists() {
    let options = StoreOptions {
        limits: rollgate::store::Limits { max_watch_queue: 1, ..Default::default() },
        ..StoreOptions::default()
    };
    let store = store::open("mem:", options).await.unwrap();
    let cluster = Cluster::open(store, ClusterOptions::default()).await.unwrap();
    let handle = ClusterHandle::start(cluster.clone(), HandleOptions::default()).await.unwrap();
    // Its watch is live once it has seen a change.
    cluster.update(|_| Ok::<_, String>(vec![])).await.unwrap();
    until(&handle, "epoch 1", |v| v.epoch == 1).await;
    // On this single-threaded runtime the handle's task cannot run while
    // these in-memory updates complete, so its watch queue overflows.
    for i in 0..10 {
        let name = format!("f{i}");
        cluster.update(|_| Ok::<_, String>(vec![ViewOp::PutFlag(name.clone(), FlagRecord::enabled())])).await.unwrap();
    }
    let view = until(&handle, "epoch 11", |v| v.epoch == 11).await;
    assert_eq!(view.enabled_flags().len(), 10);
    assert!(handle.status().relists >= 1, "{:?}", handle.status());
    assert!(handle.status().reachable);
}
