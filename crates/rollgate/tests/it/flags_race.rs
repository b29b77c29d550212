//! Invariant I5 through the node runtime: `flags enable f` on a member and
//! the boot of an old node lacking `f` race each other; exactly one
//! succeeds, and the store never holds the old node as a member with `f`
//! enabled or being enabled. Randomised interleavings (seed printed,
//! `ROLLGATE_FLAGS_RACE_SEED` re-runs one, `ROLLGATE_FLAGS_RACE_ROUNDS`
//! changes the count), on a redb file and on a real etcd.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::flags_support::tmp;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rollgate::cluster::ClusterOptions;
use rollgate::flags::{EnableRequest, FlagDecl, FlagError, FlagRegistry};
use rollgate::node::{Node, NodeConfig, NodeError};
use rollgate::store::{self, MetaStore, StoreOptions};

/// Bound on one store's run.
const MAX_RUN: Duration = Duration::from_secs(100);

fn registry(new: bool) -> FlagRegistry {
    let release = if new { "1.1" } else { "1.0" };
    let mut b = FlagRegistry::builder(release).with(FlagDecl::new("base", "base").introduced_in("1.0"));
    if new {
        // Experimental: a fresh cluster does not enable it on its own.
        b = b.with(FlagDecl::new("f", "the new format").introduced_in("1.1").experimental());
    }
    b.build().unwrap()
}

fn config(node: &str, new: bool, root: &str, dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::new(node, if new { "1.1" } else { "1.0" }, dir.join(root).join(node), registry(new));
    c.cluster = ClusterOptions { root: format!("{root}/"), ..ClusterOptions::default() };
    c.liveness_ttl_s = 30;
    c
}

#[derive(Debug, Default)]
struct Stats {
    enable_won: usize,
    join_won: usize,
}

/// Paces one side: `ticks` ticks of a 1 ms interval, then a few yields.
async fn pace(ticks: u32, yields: u32) {
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..=ticks {
        interval.tick().await;
    }
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
}

/// `max_delay_ms`: how far the enable may start after the old node (a node's
/// boot takes several store round trips before its join; the enable one).
async fn race(store: Arc<dyn MetaStore>, rounds: usize, seed: u64, max_delay_ms: u32) -> Stats {
    let dir = tmp();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = Stats::default();
    let started = Instant::now();
    for round in 0..rounds {
        assert!(started.elapsed() < MAX_RUN, "round {round} of {rounds} after {MAX_RUN:?} (seed {seed})");
        let root = format!("race{round}");
        let member = Node::start(config("m1", true, &root, dir.path()), store.clone()).await.unwrap();
        let (delay, a, b) = (rng.random_range(0..=max_delay_ms), rng.random_range(0..6u32), rng.random_range(0..6u32));
        let enable = {
            let member = member.clone();
            tokio::spawn(async move {
                pace(delay, a).await;
                member.enable(EnableRequest::flags(["f"]).experimental()).await
            })
        };
        let join = {
            let (store, cfg) = (store.clone(), config("old", false, &root, dir.path()));
            tokio::spawn(async move {
                pace(0, b).await;
                Node::start(cfg, store).await
            })
        };
        let (enabled, joined) = (enable.await.unwrap(), join.await.unwrap());
        match (&enabled, &joined) {
            (Ok(_), Err(NodeError::Flag(FlagError::UnknownFlagsAtBoot { .. } | FlagError::JoinRefused(_)))) => {
                stats.enable_won += 1
            }
            (Err(FlagError::EnableRefused { .. }), Ok(_)) => stats.join_won += 1,
            _ => {
                panic!("round {round} (seed {seed}): expected exactly one to win: enable {enabled:?}, join {joined:?}")
            }
        }
        let view = member.cluster().view().await.unwrap();
        let old_member = view.member("old").is_some();
        let f_present = view.flags.get("f").is_some_and(|r| r.is_present());
        assert!(
            !(old_member && f_present),
            "round {round} (seed {seed}): the old node is a member and f is {:?}",
            view.flags.get("f")
        );
        assert_eq!(old_member, joined.is_ok(), "round {round}: membership matches the outcome");
        drop(joined);
        drop(member);
    }
    stats
}

fn rounds(default: usize) -> usize {
    std::env::var("ROLLGATE_FLAGS_RACE_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_and_an_old_join_race_on_redb() {
    let seed = rollgate_testkit::seed("ROLLGATE_FLAGS_RACE_SEED");
    let dir = tmp();
    let store = store::open(&format!("redb:{}", dir.path().join("meta.redb").display()), StoreOptions::default())
        .await
        .unwrap();
    let n = rounds(150);
    let stats = race(store, n, seed, 4).await;
    eprintln!("redb: {stats:?} (seed {seed})");
    assert_eq!(stats.enable_won + stats.join_won, n);
    if n >= 100 {
        assert!(stats.enable_won > 0 && stats.join_won > 0, "both sides win sometimes: {stats:?} (seed {seed})");
    }
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_and_an_old_join_race_on_etcd() {
    let seed = rollgate_testkit::seed("ROLLGATE_FLAGS_RACE_SEED");
    let etcd = rollgate_testkit::EtcdServer::start().expect("start etcd");
    let store = store::open(&etcd.url(), StoreOptions::default()).await.unwrap();
    let n = rounds(40);
    let stats = race(store, n, seed, 20).await;
    eprintln!("etcd: {stats:?} (seed {seed})");
    assert_eq!(stats.enable_won + stats.join_won, n);
}
