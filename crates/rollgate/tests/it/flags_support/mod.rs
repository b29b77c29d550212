//! Shared by the flag, feature, capability and admin tests: a small
//! service with four releases, nodes on a real redb file, waits on views.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rollgate::capabilities::{Route, RouteTable};
use rollgate::cluster::ClusterView;
use rollgate::features::FeatureSet;
use rollgate::flags::{FlagDecl, FlagRegistry, ReleaseTable};
use rollgate::node::{Node, NodeConfig, NodeTimeouts};
use rollgate::store::{self, MetaStore, StoreOptions};

pub const WAIT: Duration = Duration::from_secs(30);

/// The service's releases, oldest first.
pub const RELEASES: [&str; 4] = ["1.0", "1.1", "1.2", "2.0"];

/// Counts how often steps ran, per (step, node), in memory.
#[derive(Clone, Default, Debug)]
pub struct Counters {
    pub cluster_ttl: Arc<AtomicUsize>,
    pub node_ttl: Arc<std::sync::Mutex<Vec<String>>>,
    pub disable_hook: Arc<AtomicUsize>,
}

impl Counters {
    pub fn node_runs(&self, node: &str) -> usize {
        self.node_ttl.lock().unwrap().iter().filter(|n| *n == node).count()
    }
}

/// The flags of `release`:
///
/// | flag | from | stability | notes |
/// |---|---|---|---|
/// | `base` | 1.0 | stable | |
/// | `ttl` | 1.1 | stable (required in 2.0) | cluster step + per-node step |
/// | `batch` | 1.1 | stable | depends on `ttl` |
/// | `fancy` | 1.2 | experimental | |
/// | `compact` | 1.2 | stable | reversible, with a disable hook |
pub fn registry(release: &str, counters: &Counters) -> FlagRegistry {
    let index = RELEASES.iter().position(|r| *r == release).expect("a known release");
    let mut b = FlagRegistry::builder(release);
    b.declare(FlagDecl::new("base", "the 1.0 format").introduced_in("1.0"));
    if index >= 1 {
        let c = counters.clone();
        let n = counters.clone();
        let mut ttl = FlagDecl::new("ttl", "values may expire (PUT ?ttl_s=N)")
            .introduced_in("1.1")
            .doc_url("https://example.invalid/ttl")
            .on_enable_cluster(move |_ctx| {
                let c = c.clone();
                async move {
                    c.cluster_ttl.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .on_enable_node(move |ctx| {
                let n = n.clone();
                async move {
                    n.node_ttl.lock().unwrap().push(ctx.node_id.clone());
                    Ok(())
                }
            });
        if release == "2.0" {
            ttl = ttl.required();
        }
        b.declare(ttl);
        b.declare(FlagDecl::new("batch", "replicate in batches").introduced_in("1.1").depends_on(["ttl"]));
    }
    if index >= 2 {
        b.declare(FlagDecl::new("fancy", "an experiment").introduced_in("1.2").experimental());
        let h = counters.clone();
        b.declare(FlagDecl::new("compact", "compact records").introduced_in("1.2").reversible().before_disable(
            move |_ctx| {
                let h = h.clone();
                async move {
                    h.disable_hook.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        ));
    }
    b.build().expect("valid declarations")
}

/// The release table of the service.
pub fn release_table() -> ReleaseTable {
    let c = Counters::default();
    let regs: Vec<FlagRegistry> = RELEASES.iter().map(|r| registry(r, &c)).collect();
    ReleaseTable::from_registries(regs.iter())
}

/// The features of `release`: `kv_v1` always, `kv_ttl` from 1.1, a test
/// feature and the synthetic `gte_v` ones.
pub fn features(release: &str) -> FeatureSet {
    let index = RELEASES.iter().position(|r| *r == release).unwrap();
    let mut set = FeatureSet::new().feature("kv_v1").unwrap();
    if index >= 1 {
        set = set.feature("kv_ttl").unwrap();
    }
    set.test_feature("kv_test_hooks").unwrap().release_features(&RELEASES, release).unwrap()
}

/// The routes of `release`: `GET /kv/{key}` always; `PUT /kv/{key}` with
/// `ttl_s` from 1.1 (conditional on the `kv_ttl` feature).
pub fn routes(release: &str) -> RouteTable {
    let index = RELEASES.iter().position(|r| *r == release).unwrap();
    let mut t = RouteTable::new();
    t.add(Route::new("GET", "/kv/{key}")).unwrap();
    if index >= 1 {
        t.add(Route::new("PUT", "/kv/{key}").parameters(["ttl_s"]).capabilities(["ttl"]).requires_feature("kv_ttl"))
            .unwrap();
    } else {
        t.add(Route::new("PUT", "/kv/{key}")).unwrap();
    }
    t
}

/// A node config with short timeouts.
pub fn config(node: &str, release: &str, root: &Path, counters: &Counters) -> NodeConfig {
    let mut c = NodeConfig::new(node, release, root.join(node), registry(release, counters));
    c.features = features(release);
    c.routes = routes(release);
    c.releases = Some(release_table());
    c.admin_addr = "127.0.0.1:1".into();
    c.data_addr = "127.0.0.1:1".into();
    c.liveness_ttl_s = 10;
    c.timeouts = NodeTimeouts {
        node_steps_ms: 10_000,
        step_ms: 20_000,
        stale_ms: 60_000,
        capabilities_ms: 1_000,
        boot_wait_ms: 20_000,
        ..NodeTimeouts::default()
    };
    c
}

/// A temporary dir, on tmpfs when there is one (thousands of fsyncs stay quick).
pub fn tmp() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// A real redb store file in `dir`.
pub async fn redb(dir: &Path) -> Arc<dyn MetaStore> {
    store::open(&format!("redb:{}", redb_path(dir).display()), StoreOptions::default()).await.unwrap()
}

pub fn redb_path(dir: &Path) -> PathBuf {
    dir.join("meta.redb")
}

/// Starts a node.
pub async fn start(store: &Arc<dyn MetaStore>, config: NodeConfig) -> Node {
    let id = config.node_id.clone();
    Node::start(config, store.clone()).await.unwrap_or_else(|e| panic!("node {id} did not start: {e}"))
}

/// Waits (bounded) until the node's view satisfies `pred`.
pub async fn until(node: &Node, what: &str, pred: impl Fn(&ClusterView) -> bool) -> Arc<ClusterView> {
    let mut rx = node.handle().watch_view();
    match tokio::time::timeout(WAIT, rx.wait_for(|v| pred(v))).await {
        Ok(Ok(v)) => v.clone(),
        _ => panic!("timed out waiting for {what}; view: {:#?}", node.view()),
    }
}

/// A cluster of `ids` started at 1.0 (fresh: `base` enabled), then rolled
/// to `to` one node at a time, without enabling anything new.
pub async fn rolled_cluster(
    store: &Arc<dyn MetaStore>,
    root: &Path,
    ids: &[&str],
    to: &str,
    counters: &Counters,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(start(store, config(id, "1.0", root, counters)).await);
    }
    if to == "1.0" {
        return nodes;
    }
    let mut upgraded = Vec::new();
    for (id, node) in ids.iter().zip(nodes) {
        node.stop().await.unwrap();
        drop(node);
        upgraded.push(start(store, config(id, to, root, counters)).await);
    }
    upgraded
}

/// Restarts `node` on release `to` (a graceful stop, then a start with the
/// same id and data dir).
pub async fn upgrade(store: &Arc<dyn MetaStore>, root: &Path, node: Node, to: &str, counters: &Counters) -> Node {
    let id = node.id().to_string();
    node.stop().await.unwrap();
    drop(node);
    start(store, config(&id, to, root, counters)).await
}

/// Waits (bounded) until the flag's bit on `node` is `enabled`.
pub async fn bit(node: &Node, flag: &str, enabled: bool) {
    let id = node.flag_id(flag).unwrap();
    let wait =
        async { if enabled { node.flags().wait_enabled(id).await } else { node.flags().wait_disabled(id).await } };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("{}: bit of {flag} never became {enabled}", node.id()));
}

/// The store's keys and values except liveness (heartbeats rewrite those)
/// and the audit log (it records refused requests too: who tried what).
pub async fn snapshot(store: &Arc<dyn MetaStore>) -> Vec<(String, Vec<u8>)> {
    store
        .list("")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .filter(|kv| !kv.key.contains("/live/") && !kv.key.contains("/audit/"))
        .map(|kv| (kv.key, kv.value))
        .collect()
}

/// Starts a node whose admin API is served on a free loopback port (the
/// address is in its node record, so other members can ask it).
pub async fn start_with_admin(
    store: &Arc<dyn MetaStore>,
    mut config: NodeConfig,
    admin: rollgate::admin::AdminConfig,
) -> (Node, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.admin_addr = addr.to_string();
    let node = start(store, config).await;
    let router = rollgate::admin::router(node.clone(), admin);
    let task = tokio::spawn(async move {
        let _ = rollgate::admin::serve(listener, router).await;
    });
    (node, addr, task)
}

/// An HTTP client for tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(rollgate::tls::plain_client())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
