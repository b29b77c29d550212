//! The light tests' helpers: in-process nodes on a real redb metadata
//! store, real TCP on loopback, real data dirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::clients::{quick, single};
use rollgate::store::{MetaStore, StoreOptions};
use rollgate_kv::releases;
use rollgate_kv::{KvClient, NodeConfig, NodeHandle, Tuning, node};

/// How long a node may take to become ready in a test.
pub const READY: Duration = Duration::from_secs(30);

/// Short timeouts: a crashed node's lease expires after 2 s.
pub fn tuning() -> Tuning {
    Tuning {
        liveness_ttl_s: 2,
        inbound_wait: Duration::from_secs(2),
        connect_wait: Duration::from_secs(2),
        write_timeout: Duration::from_secs(5),
        backoff_max: Duration::from_millis(200),
        ..Tuning::default()
    }
}

/// A redb metadata store in `dir` (one per process: redb is single-process).
pub async fn redb_store(dir: &Path) -> Arc<dyn MetaStore> {
    let url = format!("redb:{}", dir.join("meta.redb").display());
    rollgate::store::open(&url, StoreOptions::default()).await.expect("open the redb metadata store")
}

/// The config of a node running `release` on `data` with loopback ports picked by the OS.
pub fn config(release: &str, data: &Path) -> NodeConfig {
    let mut c = NodeConfig::new(releases::find(release).unwrap(), data, "127.0.0.1:0", "127.0.0.1:0");
    c.tuning = tuning();
    c
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Starts a node and waits until it is ready.
pub async fn start(store: &Arc<dyn MetaStore>, release: &str, data: &Path) -> NodeHandle {
    logs();
    let node = node::start(config(release, data), store.clone()).await.expect("start a node");
    assert!(node.wait_ready(READY).await, "node {} did not become ready", node.node_id());
    node
}

/// A data dir `name` under `root`.
pub fn data(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// A client of `nodes` (failover in this order).
pub fn client(nodes: &[&NodeHandle]) -> KvClient {
    let addrs: Vec<String> = nodes.iter().map(|n| n.addresses().admin.to_string()).collect();
    KvClient::new(&addrs, quick()).unwrap()
}
/// Registers `peer` as a running member that no node can reach: a test's
/// hand-made peer (nodes serve links from running members only). Remove it
/// with [`remove_hand_made_member`] before writes that count members.
pub async fn hand_made_member(node: &NodeHandle, peer: &str) -> rollgate::cluster::Liveness {
    let runtime = node.runtime().expect("the node runs");
    let record = rollgate::cluster::NodeRecord {
        node_id: peer.into(),
        data_addr: "127.0.0.1:1".into(),
        admin_addr: "127.0.0.1:1".into(),
        ..runtime.record().clone()
    };
    runtime.cluster().join(record, |_| Ok::<(), String>(())).await.expect("the hand-made peer joins");
    let live = runtime.cluster().start_liveness(peer, 30).await.expect("its liveness");
    let mut views = runtime.handle().watch_view();
    tokio::time::timeout(READY, views.wait_for(|v| v.member(peer).is_some_and(|m| m.is_running())))
        .await
        .expect("the node sees the hand-made peer")
        .unwrap();
    live
}

/// Stops and forgets a [`hand_made_member`].
pub async fn remove_hand_made_member(node: &NodeHandle, peer: &str, live: rollgate::cluster::Liveness) {
    live.stop().await.expect("stop its liveness");
    node.runtime().expect("the node runs").forget(peer).await.expect("forget it");
}

/// An HTTP client for plain (loopback) nodes: reqwest is built without a
/// default TLS provider, so every client names its TLS configuration.
pub fn plain_http() -> reqwest::Client {
    reqwest::Client::builder().use_preconfigured_tls(rollgate::tls::plain_client()).build().unwrap()
}
