//! Feature flags against same-run baselines:
//!
//! - `flags/check/*`: checking a flag on the hot path (`Flags::is_enabled`
//!   of a running node) against a plain `AtomicBool` load and an
//!   `RwLock<HashSet<String>>` lookup of the same name;
//! - `flags/enable/<N>`: enabling one flag (the whole protocol: plan,
//!   `enabling` commit, steps, `enabled` commit, the node's view and bits
//!   updated) on a cluster of N members (one node runtime and N-1 member
//!   records, all running, on the embedded redb store), N up to 10,000,
//!   against `flags/store_txn`, one guarded transaction on the same store;
//! - `flags/enable_etcd/<N>` (feature `etcd`): the same on a real etcd
//!   (rollgate-testkit's `EtcdServer`), N up to 1,000;
//! - `flags/join/<N>`: a node starting into a cluster of N members (boot
//!   check, join, liveness, recovery, until it serves), N up to 1,000; the
//!   node stops and is forgotten between samples (not timed).
//!
//! The member sizes can be capped with `ROLLGATE_FLAGS_BENCH_MAX_MEMBERS`
//! (a smoke run: `ROLLGATE_FLAGS_BENCH_MAX_MEMBERS=10 cargo bench -p rollgate
//! --bench flags -- --test`).
//!
//! `cargo bench -p rollgate --bench flags` (add `--features etcd` for etcd)

use std::collections::{BTreeSet, HashSet};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rollgate::cluster::{Cluster, ClusterOptions, LiveRecord, NodeRecord, ViewOp};
use rollgate::flags::{EnableRequest, FlagDecl, FlagRegistry};
use rollgate::node::{Node, NodeConfig, NodeTimeouts};
use rollgate::store::{self, Compare, MetaStore, StoreOptions, Txn, TxnOp};

const NAMES: [&str; 10] = ["base", "ttl", "batch", "digest", "compact", "tiered", "quorum", "streams", "leases", "f"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// Ten stable flags, and `f`: experimental (a fresh cluster leaves it off)
/// and reversible (the bench disables it between two enables).
fn registry() -> FlagRegistry {
    let mut b = FlagRegistry::builder("1.0");
    for name in &NAMES[..9] {
        b.declare(FlagDecl::new(name, "a flag").introduced_in("1.0"));
    }
    b.declare(FlagDecl::new("f", "the measured flag").introduced_in("1.0").experimental().reversible());
    b.build().expect("registry")
}

async fn open(dir: &std::path::Path) -> Arc<dyn MetaStore> {
    store::open(&format!("redb:{}", dir.join("meta.redb").display()), StoreOptions::default()).await.expect("store")
}

/// `sizes`, without those over `ROLLGATE_FLAGS_BENCH_MAX_MEMBERS` (the smallest is always kept).
fn sizes(sizes: &[usize]) -> Vec<usize> {
    let max = std::env::var("ROLLGATE_FLAGS_BENCH_MAX_MEMBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
    let mut out: Vec<usize> = sizes.iter().copied().filter(|n| *n <= max).collect();
    if out.is_empty() {
        out.push(sizes[0]);
    }
    out
}

/// The measured node: a short view lease, so that a disable between samples
/// (whose fake members never acknowledge it) waits 0.1 s, not a lease of 10 s.
fn node_config(id: &str, dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::new(id, "1.0", dir.join(id), registry());
    c.timeouts = NodeTimeouts { view_lease_ms: 100, ..NodeTimeouts::default() };
    c
}

fn bench_check(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = rt.block_on(async {
        let store = open(dir.path()).await;
        Node::start(NodeConfig::new("n0", "1.0", dir.path().join("n0"), registry()), store).await.expect("node")
    });
    let flags = node.flags().clone();
    let ttl = node.flag_id("ttl").expect("ttl");
    assert!(flags.is_enabled(ttl), "a fresh cluster enables its stable flags");
    let plain = Arc::new(AtomicBool::new(true));
    let set: RwLock<HashSet<String>> = RwLock::new(NAMES.iter().map(|s| s.to_string()).collect());

    let mut group = c.benchmark_group("flags/check");
    group.bench_function("is_enabled", |b| b.iter(|| flags.is_enabled(black_box(ttl))));
    group.bench_function("atomic_bool", |b| b.iter(|| black_box(&*plain).load(Ordering::Acquire)));
    group.bench_function("rwlock_hashset", |b| {
        b.iter(|| set.read().unwrap_or_else(|p| p.into_inner()).contains(black_box("ttl")))
    });
    group.finish();
    drop(node);
}

fn member(id: &str) -> NodeRecord {
    NodeRecord {
        data_addr: "127.0.0.1:7000".into(),
        admin_addr: "127.0.0.1:7001".into(),
        supported_flags: NAMES.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        ..NodeRecord::new(id, "1.0")
    }
}

/// A node runtime plus `n - 1` running member records, on `store`.
async fn cluster(dir: &std::path::Path, store: Arc<dyn MetaStore>, n: usize) -> Node {
    let node = Node::start(node_config("n0", dir), store.clone()).await.expect("node");
    add_members(&store, "rollgate/", 1..n).await;
    let mut rx = node.handle().watch_view();
    let _ = rx.wait_for(|v| v.running().count() == n).await;
    node
}

/// Running member records `m<i>` for `range` under `root`, their live keys on one lease.
async fn add_members(store: &Arc<dyn MetaStore>, root: &str, range: std::ops::Range<usize>) {
    let options = ClusterOptions { root: root.to_string(), ..ClusterOptions::default() };
    let cl = Cluster::open(store.clone(), options).await.expect("cluster");
    let (lease, _) = store.lease_grant(3600).await.expect("lease");
    let ids: Vec<String> = range.map(|i| format!("m{i:05}")).collect();
    for chunk in ids.chunks(60) {
        cl.update(|_| {
            let mut ops = Vec::new();
            for id in chunk {
                ops.push(ViewOp::PutMember(member(id)));
                let live = serde_json::to_vec(&LiveRecord { lease, heartbeat_ms: 0 }).expect("json");
                ops.push(ViewOp::Raw(TxnOp::put_with_lease(cl.keys().live(id), live, lease)));
            }
            Ok::<_, String>(ops)
        })
        .await
        .expect("members");
    }
}

/// Times enabling `f` (disabling it again between samples, not timed).
fn enable_samples(rt: &tokio::runtime::Runtime, node: &Node, iters: u64) -> Duration {
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = Instant::now();
            let report = node.enable(EnableRequest::flags(["f"]).experimental()).await.expect("enable");
            total += t.elapsed();
            assert_eq!(report.enabled, ["f"]);
            node.disable("f").await.expect("disable");
        }
        total
    })
}

fn bench_enable(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("flags");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    for n in sizes(&[10, 100, 1000, 10_000]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = rt.block_on(open(dir.path()));
        let node = rt.block_on(cluster(dir.path(), store.clone(), n));
        group.bench_with_input(BenchmarkId::new("enable", n), &n, |b, _| {
            b.iter_custom(|iters| enable_samples(rt, &node, iters))
        });
        if n == 10 {
            let key = "bench/flags/k";
            let mut last = rt.block_on(store.put(key, b"v".to_vec())).expect("put");
            group.bench_function("store_txn", |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(key, last)])
                            .and_then([TxnOp::put(key, b"v".to_vec())]);
                        last = store.txn(txn).await.expect("txn").revision;
                    })
                })
            });
        }
        drop(node);
    }
    group.finish();
}

#[cfg(feature = "etcd")]
fn bench_enable_etcd(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let etcd = rollgate_testkit::EtcdServer::start().expect("start etcd");
    let mut group = c.benchmark_group("flags");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    for (round, n) in sizes(&[10, 100, 1000]).into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = rt.block_on(store::open(&etcd.url(), StoreOptions::default())).expect("etcd store");
        // One cluster per size, under a root of its own.
        let root = format!("bench{round}/");
        let node = rt.block_on(async {
            let mut config = node_config("n0", dir.path());
            config.cluster = ClusterOptions { root: root.clone(), ..ClusterOptions::default() };
            let node = Node::start(config, store.clone()).await.expect("node");
            add_members(&store, &root, 1..n).await;
            let mut rx = node.handle().watch_view();
            let _ = rx.wait_for(|v| v.running().count() == n).await;
            node
        });
        group.bench_with_input(BenchmarkId::new("enable_etcd", n), &n, |b, _| {
            b.iter_custom(|iters| enable_samples(rt, &node, iters))
        });
        drop(node);
    }
    group.finish();
}

/// A node starting into a cluster of `n` members, until it serves.
fn bench_join(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("flags");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    for n in sizes(&[10, 100, 1000]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = rt.block_on(open(dir.path()));
        let first = rt.block_on(cluster(dir.path(), store.clone(), n));
        group.bench_with_input(BenchmarkId::new("join", n), &n, |b, _| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let joiner = Node::start(node_config("joiner", dir.path()), store.clone()).await.expect("join");
                        let mut serving = joiner.serving();
                        serving.wait_for(|s| *s).await.expect("the joiner serves");
                        total += t.elapsed();
                        joiner.stop().await.expect("stop");
                        drop(joiner);
                        first.forget("joiner").await.expect("forget");
                    }
                    total
                })
            })
        });
        drop(first);
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    bench_check(c, &rt);
    bench_enable(c, &rt);
    #[cfg(feature = "etcd")]
    bench_enable_etcd(c, &rt);
    bench_join(c, &rt);
}

criterion_group!(flags_benches, benches);
criterion_main!(flags_benches);
