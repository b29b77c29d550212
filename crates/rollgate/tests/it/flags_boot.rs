//! Boot checks (I2): a release that lacks an enabled flag refuses to start,
//! from the store and, with the store unreachable, from its local copy; a
//! fresh cluster starts with its stable and required flags; required flags
//! are enabled when every member supports them, and otherwise the node
//! refuses to start with a way forward.

use crate::flags_support::*;
use rollgate::cluster::FlagState;
#[cfg(feature = "etcd")]
use rollgate::flags::EnableRequest;
use rollgate::flags::FlagError;
use rollgate::node::{Node, NodeError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cluster_starts_with_its_stable_and_required_flags() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, config("n1", "2.0", dir.path(), &counters)).await;
    let view = n1.view();
    let enabled = view.enabled_flags();
    assert_eq!(enabled.into_iter().collect::<Vec<_>>(), ["base", "batch", "compact", "ttl"]);
    assert!(!view.flags.contains_key("fancy"), "experimental flags stay off");
    for f in ["base", "ttl", "batch", "compact"] {
        assert!(n1.flag_enabled(f), "bit of {f}");
    }
    assert!(!n1.flag_enabled("fancy"));
    assert_eq!(counters.cluster_ttl.load(std::sync::atomic::Ordering::SeqCst), 1, "steps ran on the fresh cluster");
    assert_eq!(counters.node_runs("n1"), 1);
    // Restarting the same node runs the per-node step again (idempotent), enables nothing new.
    let epoch = view.epoch;
    n1.stop().await.unwrap();
    drop(n1);
    let n1 = start(&store, config("n1", "2.0", dir.path(), &counters)).await;
    assert_eq!(counters.node_runs("n1"), 2, "per-node steps of enabled flags run at every boot");
    assert_eq!(n1.view().enabled_flags().len(), 4);
    assert_eq!(n1.view().epoch, epoch + 2, "a leave and a rejoin, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_lacking_an_enabled_flag_refuses_to_start_naming_it_and_its_release() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, config("n1", "1.1", dir.path(), &counters)).await;
    assert!(n1.view().is_enabled("ttl"));
    let before = snapshot(&store).await;
    // A new node on the old release, and the same node downgraded.
    for id in ["n2", "n1"] {
        if id == "n1" {
            n1.stop().await.unwrap();
        }
        let before = snapshot(&store).await;
        let err = Node::start(config(id, "1.0", dir.path(), &counters), store.clone()).await.unwrap_err();
        let store_desc = format!("redb:{}", redb_path(dir.path()).display());
        assert_eq!(
            err.to_string(),
            format!(
                "node {id} (release 1.0) cannot start: the cluster has feature flags that release 1.0 does not know \
                 (according to the metadata store {store_desc}): `batch` (\"replicate in batches\", enabled, introduced \
                 in release 1.1), `ttl` (\"values may expire (PUT ?ttl_s=N)\", enabled, introduced in release 1.1); run \
                 a release that knows all of them on this node"
            )
        );
        assert!(matches!(err, NodeError::Flag(FlagError::UnknownFlagsAtBoot { .. })));
        assert_eq!(snapshot(&store).await, before, "a refused boot changes nothing in the store");
    }
    let _ = before;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_the_local_copy_refuses_an_unknown_enabled_flag() {
    use rollgate::store::StoreOptions;
    let mut etcd = rollgate_testkit::EtcdServer::start().expect("start etcd");
    let dir = tmp();
    let counters = Counters::default();
    let options = || StoreOptions { connect_timeout_ms: 500, request_timeout_ms: 1_000, ..StoreOptions::default() };
    // An old cluster, upgraded, ttl enabled by an operator.
    let n1 = Node::open(config("n1", "1.0", dir.path(), &counters), &etcd.url(), options()).await.unwrap();
    n1.stop().await.unwrap();
    drop(n1);
    let n1 = Node::open(config("n1", "1.1", dir.path(), &counters), &etcd.url(), options()).await.unwrap();
    n1.enable(EnableRequest::flags(["ttl"])).await.unwrap();
    n1.stop().await.unwrap();
    drop(n1);

    etcd.stop();
    // The node is rolled back to its old binary while etcd is down.
    let err = Node::open(config("n1", "1.0", dir.path(), &counters), &etcd.url(), options()).await.unwrap_err();
    let copy = dir.path().join("n1").join(rollgate::cluster::LOCAL_COPY_FILE);
    assert_eq!(
        err.to_string(),
        format!(
            "node n1 (release 1.0) cannot start: the cluster has feature flags that release 1.0 does not know \
             (according to the local copy {}; the metadata store is unreachable): `ttl` (\"values may expire (PUT \
             ?ttl_s=N)\", enabled, introduced in release 1.1); run release 1.1 or later on this node",
            copy.display()
        )
    );
    // The release that knows it is told to wait for the store instead.
    let err = Node::open(config("n1", "1.1", dir.path(), &counters), &etcd.url(), options()).await.unwrap_err();
    assert!(matches!(err, NodeError::StoreUnreachable { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("node n1 cannot start: metadata store etcd:127.0.0.1:"), "{msg}");
    assert!(
        msg.ends_with("lists no flag that release 1.1 lacks, so start it again once the metadata store is reachable"),
        "{msg}"
    );

    etcd.restart().expect("restart etcd");
    let n1 = Node::open(config("n1", "1.1", dir.path(), &counters), &etcd.url(), options()).await.unwrap();
    assert!(n1.flag_enabled("ttl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_flag_is_enabled_at_boot_when_every_member_supports_it() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let nodes = rolled_cluster(&store, dir.path(), &["n1", "n2"], "1.1", &counters).await;
    assert!(!nodes[0].view().flags.contains_key("ttl"));
    // 2.0 requires ttl: its first node enables it, with the full protocol.
    let n3 = start(&store, config("n3", "2.0", dir.path(), &counters)).await;
    assert!(n3.flag_enabled("ttl"));
    let view = until(&nodes[0], "ttl enabled", |v| v.is_enabled("ttl")).await;
    assert!(!view.is_enabled("batch"), "only what is required");
    assert_eq!(counters.cluster_ttl.load(std::sync::atomic::Ordering::SeqCst), 1);
    for n in ["n1", "n2", "n3"] {
        assert_eq!(counters.node_runs(n), 1, "{n} ran its step");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_flag_that_cannot_be_enabled_blocks_with_a_way_forward() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let mut nodes = rolled_cluster(&store, dir.path(), &["n1", "n2", "n3"], "1.0", &counters).await;
    let n3 = nodes.pop().unwrap();
    n3.stop().await.unwrap();
    let before = snapshot(&store).await;
    let err = Node::start(config("n4", "2.0", dir.path(), &counters), store.clone()).await.unwrap_err();
    assert!(matches!(err, NodeError::Flag(FlagError::RequiredBlocked { .. })), "{err}");
    assert_eq!(
        err.to_string(),
        "node n4 (release 2.0) cannot start: release 2.0 requires feature flags that are disabled in this cluster and \
         cannot be enabled yet: `ttl`, introduced in release 1.1: node n1 (release 1.0, running), n2 (release 1.0, \
         running), n3 (release 1.0, stopped) do not support it. Nothing was changed. To go on: upgrade n1, n2, n3 to \
         release 1.2, which supports them without requiring them (or `rollgate nodes forget ID` a stopped node that \
         is gone for good); then start this node again (it enables them itself) or run `rollgate flags enable ttl`. \
         Until then, keep this node on its previous release."
    );
    assert_eq!(snapshot(&store).await, before, "nothing was changed");

    // The way forward: upgrade the running nodes to 1.2, forget the stopped one.
    let n2 = upgrade(&store, dir.path(), nodes.pop().unwrap(), "1.2", &counters).await;
    let n1 = upgrade(&store, dir.path(), nodes.pop().unwrap(), "1.2", &counters).await;
    let err = Node::start(config("n4", "2.0", dir.path(), &counters), store.clone()).await.unwrap_err();
    assert!(err.to_string().contains("n3 (release 1.0, stopped) do not support it"), "{err}");
    n1.forget("n3").await.unwrap();
    let n4 = start(&store, config("n4", "2.0", dir.path(), &counters)).await;
    assert!(n4.flag_enabled("ttl"));
    let view = until(&n2, "ttl enabled", |v| v.is_enabled("ttl")).await;
    assert!(matches!(view.flags["ttl"].state, FlagState::Enabled { .. }));
}

/// The data dir itself says which flags its data was written under: a
/// release that lacks one refuses it even against another cluster's store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_from_a_cluster_with_an_unknown_enabled_flag_is_refused() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, config("n1", "1.1", dir.path(), &counters)).await;
    assert!(n1.view().is_enabled("ttl"));
    n1.stop().await.unwrap();
    drop(n1);
    let mut other = config("n1", "1.0", dir.path(), &counters);
    other.cluster.root = "other/".into();
    let err = Node::start(other, store.clone()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("node n1 (release 1.0) cannot start"), "{msg}");
    assert!(msg.contains("the data dir comes from another cluster than the store's"), "{msg}");
    assert!(msg.contains("`ttl` (\"values may expire (PUT ?ttl_s=N)\", enabled, introduced in release 1.1)"), "{msg}");
    // A release that knows every flag may use it.
    let mut other = config("n1", "1.1", dir.path(), &counters);
    other.cluster.root = "other/".into();
    start(&store, other).await;
}
