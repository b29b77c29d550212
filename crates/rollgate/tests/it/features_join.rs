//! Cluster features: true only when every member (running or stopped)
//! publishes one; then a ratchet at join, fenced by the epoch; test-only
//! and synthetic `gte_v` features in test mode.

use crate::flags_support::*;
use rollgate::cluster::{Cluster, ClusterOptions, NodeRecord, ViewOp};
use rollgate::flags::FlagError;
use rollgate::flags::plan::{JoinRefusal, join_check};
use rollgate::node::{Node, NodeError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_holds_when_every_member_running_or_stopped_publishes_it() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let mut nodes = rolled_cluster(&store, dir.path(), &["n1", "n2", "n3"], "1.0", &counters).await;
    let n3 = nodes.pop().unwrap();
    let n2 = upgrade(&store, dir.path(), nodes.pop().unwrap(), "1.1", &counters).await;
    let n1 = upgrade(&store, dir.path(), nodes.pop().unwrap(), "1.1", &counters).await;
    assert!(n1.cluster_has_feature("kv_v1"));
    assert!(!n1.cluster_has_feature("kv_ttl"), "n3 (1.0) does not publish it");
    n3.stop().await.unwrap();
    drop(n3);
    until(&n1, "n3 stopped", |v| v.member("n3").is_some_and(|m| !m.is_running())).await;
    assert!(!n1.cluster_has_feature("kv_ttl"), "a stopped member still counts: it may come back");
    n1.forget("n3").await.unwrap();
    until(&n2, "n3 forgotten", |v| v.member("n3").is_none()).await;
    assert!(n1.cluster_has_feature("kv_ttl") && n2.cluster_has_feature("kv_ttl"));
    let statuses = serde_json::to_value(rollgate::admin::view::feature_statuses(&n1)).unwrap();
    assert_eq!(statuses["cluster_features"], serde_json::json!(["kv_ttl", "kv_v1"]));

    // The ratchet: a 1.0 node may not join any more (it knows every enabled flag).
    let before = snapshot(&store).await;
    let err = Node::start(config("n9", "1.0", dir.path(), &counters), store.clone()).await.unwrap_err();
    assert!(matches!(err, NodeError::Flag(FlagError::JoinRefused(JoinRefusal::MissingFeatures { .. }))), "{err}");
    assert_eq!(
        err.to_string(),
        "node n9 is missing required features [kv_ttl]: every member of the cluster publishes them, so a node \
         without them cannot join; run a release that supports them on n9"
    );
    assert_eq!(snapshot(&store).await, before, "a refused join changes nothing");
    // The same node on a newer release joins.
    let n9 = start(&store, config("n9", "1.1", dir.path(), &counters)).await;
    assert!(n9.cluster_has_feature("kv_ttl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_features_and_release_features_are_published_in_test_mode_only() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, config("n1", "1.1", dir.path(), &counters)).await;
    let mut cfg = config("t1", "1.1", dir.path(), &counters);
    cfg.test_mode = true;
    let t1 = start(&store, cfg).await;
    let published =
        |id: &str| t1.view().member(id).unwrap().record.cluster_features.iter().cloned().collect::<Vec<_>>();
    assert_eq!(published("n1"), ["kv_ttl", "kv_v1"]);
    assert_eq!(published("t1"), ["gte_v1.0", "gte_v1.1", "kv_test_hooks", "kv_ttl", "kv_v1"]);
    assert!(!t1.cluster_has_feature("gte_v1.1"), "n1 is not in test mode");
    n1.stop().await.unwrap();
    t1.forget("n1").await.unwrap();
    until(&t1, "n1 forgotten", |v| v.member("n1").is_none()).await;
    assert!(t1.cluster_has_feature("gte_v1.0") && t1.cluster_has_feature("gte_v1.1"));
    assert!(!t1.cluster_has_feature("gte_v1.2"));
}

/// A join validated on a stale view (when the cluster did not have the
/// feature yet) cannot commit once a change gave the cluster the feature:
/// the epoch moved, and the re-validation refuses it.
#[tokio::test]
async fn the_feature_ratchet_is_fenced_by_the_epoch() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let cluster = Cluster::open(store.clone(), ClusterOptions::default()).await.unwrap();
    let record = |id: &str, features: &[&str]| NodeRecord {
        cluster_features: features.iter().map(|s| s.to_string()).collect(),
        state: rollgate::cluster::NodeState::Stopped,
        ..NodeRecord::new(id, "1.0")
    };
    cluster.join(record("new", &["x"]), |_| Ok::<(), String>(())).await.unwrap();
    cluster.join(record("old", &[]), |_| Ok::<(), String>(())).await.unwrap();
    cluster.leave("old").await.unwrap();
    let joiner = record("late", &[]);
    let stale = cluster.view().await.unwrap();
    join_check(&stale, &joiner).expect("the cluster lacks x while old is a member");
    cluster.forget("old").await.unwrap();
    assert_eq!(cluster.try_commit(&stale, vec![ViewOp::PutMember(joiner.clone())]).await.unwrap(), None, "fenced");
    let fresh = cluster.view().await.unwrap();
    let refusal = join_check(&fresh, &joiner).unwrap_err();
    assert_eq!(refusal.to_string().split(':').next().unwrap(), "node late is missing required features [x]");
    // Through the epoch-fenced join itself.
    let err = cluster.join(joiner, |view| join_check(view, &record("late", &[]))).await.unwrap_err();
    assert!(err.rejected().is_some());
    assert!(cluster.view().await.unwrap().member("late").is_none());
}

/// A 2.0 node that assumes 1.x's `kv_ttl` instead of publishing it: it
/// joins a cluster whose members publish it, the cluster keeps the feature,
/// and its record no longer lists it among its features.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_major_release_assumes_the_previous_majors_features_without_publishing_them() {
    use rollgate::features::FeatureSet;
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, config("n1", "1.1", dir.path(), &counters)).await;
    assert!(n1.cluster_has_feature("kv_ttl"));
    let mut cfg = config("n2", "2.0", dir.path(), &counters);
    cfg.features = FeatureSet::new().feature("kv_v1").unwrap().assumed("kv_ttl").unwrap();
    let n2 = start(&store, cfg).await;
    let record = n2.view().member("n2").unwrap().record.clone();
    assert!(!record.cluster_features.contains("kv_ttl"), "not published: {record:?}");
    assert_eq!(record.assumed_features.iter().collect::<Vec<_>>(), ["kv_ttl"]);
    let view = until(&n1, "n2 joined", |v| v.member("n2").is_some()).await;
    assert!(rollgate::features::cluster_has_feature(&view, "kv_ttl"), "still a cluster feature");
    assert!(n2.cluster_has_feature("kv_ttl"));
    // A node that neither publishes nor assumes it is still refused.
    let mut other = view.member("n1").unwrap().record.clone();
    other.node_id = "n9".into();
    other.cluster_features.remove("kv_ttl");
    let refusal = join_check(&view, &other).unwrap_err();
    assert!(matches!(&refusal, JoinRefusal::MissingFeatures { missing, .. } if missing == &["kv_ttl"]), "{refusal}");
    // A feature is either published or assumed, never both.
    let both = FeatureSet::new().feature("kv_ttl").unwrap().assumed("kv_ttl").unwrap_err();
    assert_eq!(both.to_string(), "cluster feature \"kv_ttl\" is declared twice");
    assert!(FeatureSet::new().assumed("Bad!").is_err());
}
