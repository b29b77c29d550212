//! A flag's whole life through real node runtimes on the embedded store:
//! introduced as experimental, made required, then removed. A release that
//! removed it runs only where it is enabled (and says how to get there
//! otherwise), creates it enabled on a fresh cluster, and its nodes publish
//! it as required so that nobody can disable it.

use crate::flags_support::{redb, snapshot, tmp};
use rollgate::flags::plan::JoinRefusal;
use rollgate::flags::{FlagDecl, FlagError, FlagRegistry};
use rollgate::node::{Node, NodeConfig, NodeError};

/// `f`: experimental in 1.0, required in 1.1, removed in 1.2.
fn registry(release: &str) -> FlagRegistry {
    let f = || FlagDecl::new("f", "a flag that comes and goes").introduced_in("1.0");
    match release {
        "1.0" => FlagRegistry::builder("1.0").with(f().experimental()),
        "1.1" => FlagRegistry::builder("1.1").with(f().required()),
        _ => FlagRegistry::builder("1.2").removed("f"),
    }
    .build()
    .unwrap()
}

fn config(node: &str, release: &str, root: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::new(node, release, root.join(node), registry(release));
    c.liveness_ttl_s = 10;
    c
}

async fn start(store: &std::sync::Arc<dyn rollgate::store::MetaStore>, c: NodeConfig) -> Result<Node, NodeError> {
    Node::start(c, store.clone()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_removed_a_flag_runs_only_where_the_flag_is_enabled() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    // A 1.0 cluster: `f` is experimental, so it stays disabled.
    let n1 = start(&store, config("n1", "1.0", dir.path())).await.unwrap();
    assert!(!n1.view().is_enabled("f"));
    // Straight to 1.2 is refused, naming the way: through a release that requires it.
    let before = snapshot(&store).await;
    let err = start(&store, config("n2", "1.2", dir.path())).await.unwrap_err();
    assert!(
        matches!(&err, NodeError::Flag(FlagError::JoinRefused(JoinRefusal::RemovedNotEnabled { flag, .. })) if flag == "f"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "node n2 (release 1.2) cannot join: release 1.2 removed flag `f` and assumes it enabled, but this cluster \
         does not have it enabled; upgrade the cluster through a release that requires `f` first (it enables it), \
         then to 1.2"
    );
    assert_eq!(snapshot(&store).await, before, "a refused join writes nothing");

    // Through 1.1, which requires `f` and so enables it at boot, 1.2 runs.
    n1.stop().await.unwrap();
    drop(n1);
    let n1 = start(&store, config("n1", "1.1", dir.path())).await.unwrap();
    assert!(n1.view().is_enabled("f"), "1.1 enabled its required flag");
    let n2 = start(&store, config("n2", "1.2", dir.path())).await.unwrap();
    let record = n2.view().member("n2").unwrap().record.clone();
    assert!(record.supported_flags.contains("f") && record.required_flags.contains("f"), "{record:?}");
    // Nobody may disable a flag a member's release has removed.
    let err = n1.disable("f").await.unwrap_err();
    assert!(err.to_string().starts_with("flag `f` is not reversible"), "{err}");
    assert!(n2.view().is_enabled("f"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cluster_of_a_release_that_removed_a_flag_has_it_enabled() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let n1 = start(&store, config("n1", "1.2", dir.path())).await.unwrap();
    assert!(n1.view().is_enabled("f"), "written enabled with the first join");
    // A node of a release that still has the code meets it enabled, as it would after an upgrade.
    let n2 = start(&store, config("n2", "1.1", dir.path())).await.unwrap();
    assert!(n2.flag_enabled("f"));
    // One that never knew it cannot join.
    let err = start(&store, NodeConfig::new("n3", "0.9", dir.path().join("n3"), FlagRegistry::empty("0.9")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`f`"), "{err}");
}
