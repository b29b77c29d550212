//! Invariant I5: a join and a flag change racing each other never both
//! succeed when they are incompatible, because both are fenced on the
//! cluster epoch.
//!
//! Each round: a cluster whose only member supports flag `f`; then, at the
//! same time, a "join" of a node lacking `f` (refused if `f` is enabled) and
//! an "enable f" (refused if any member lacks `f`). Exactly one may commit.
//! Thousands of randomised rounds on mem and redb, fewer on a real etcd.
//! `ROLLGATE_RACE_SEED` re-runs a seed, `ROLLGATE_RACE_ROUNDS` changes the count.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rollgate::cluster::{Cluster, ClusterOptions, FlagRecord, NodeRecord, ViewOp};
use rollgate::store::{self, MetaStore, StoreOptions};
use tokio::sync::Barrier;

/// Bound on the wall time of one store's run (the loop also stops at its round count).
const MAX_RUN: Duration = Duration::from_secs(90);

fn record(node: &str, flags: &[&str]) -> NodeRecord {
    NodeRecord {
        data_addr: "127.0.0.1:7000".into(),
        admin_addr: "127.0.0.1:7001".into(),
        supported_flags: flags.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        ..NodeRecord::new(node, "1.0")
    }
}

#[derive(Default, Debug)]
struct Stats {
    rounds: usize,
    join_won: usize,
    enable_won: usize,
    /// Rounds where the loser's validation passed on a stale view and the
    /// epoch fence sent it back to re-validate: the race really happened.
    fenced: usize,
}

fn rounds(default: usize) -> usize {
    std::env::var("ROLLGATE_RACE_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn race(store: Arc<dyn MetaStore>, rounds: usize, seed: u64) -> Stats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = Stats::default();
    let started = Instant::now();
    for round in 0..rounds {
        if started.elapsed() > MAX_RUN {
            panic!("round {round} of {rounds} after {MAX_RUN:?}: too slow (seed {seed})");
        }
        let options = ClusterOptions { root: format!("race/{round}/"), ..ClusterOptions::default() };
        let cluster = Cluster::open(store.clone(), options).await.unwrap();
        cluster.join(record("m0", &["f"]), |_| Ok::<(), String>(())).await.unwrap();

        let barrier = Arc::new(Barrier::new(2));
        let (join_yields, enable_yields) = (rng.random_range(0..4u32), rng.random_range(0..4u32));
        let join_calls = Arc::new(AtomicUsize::new(0));
        let enable_calls = Arc::new(AtomicUsize::new(0));

        let join = {
            let (cluster, barrier, calls) = (cluster.clone(), barrier.clone(), join_calls.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..join_yields {
                    tokio::task::yield_now().await;
                }
                cluster
                    .join(record("n1", &[]), |view| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        if view.is_enabled("f") { Err("flag f is enabled and n1 lacks it".to_string()) } else { Ok(()) }
                    })
                    .await
            })
        };
        let enable = {
            let (cluster, barrier, calls) = (cluster.clone(), barrier.clone(), enable_calls.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..enable_yields {
                    tokio::task::yield_now().await;
                }
                cluster
                    .update(|view| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        match view.members.values().find(|m| !m.record.supported_flags.contains("f")) {
                            Some(m) => Err(format!("member {} lacks f", m.record.node_id)),
                            None => Ok(vec![ViewOp::PutFlag("f".into(), FlagRecord::enabled())]),
                        }
                    })
                    .await
            })
        };
        let (joined, enabled) = (join.await.unwrap(), enable.await.unwrap());
        assert!(
            !(joined.is_ok() && enabled.is_ok()),
            "round {round} (seed {seed}): the join and the enable both committed: {joined:?} {enabled:?}"
        );
        // The loser was refused by its validation, never by contention.
        let (winner_join, loser_err) = match (&joined, &enabled) {
            (Ok(_), Err(e)) => (true, e.rejected().is_none().then(|| format!("{e}"))),
            (Err(e), Ok(_)) => (false, e.rejected().is_none().then(|| format!("{e}"))),
            _ => panic!("round {round} (seed {seed}): neither committed: {joined:?} {enabled:?}"),
        };
        assert_eq!(loser_err, None, "round {round} (seed {seed}): the loser failed for another reason");
        let view = cluster.view().await.unwrap();
        assert!(
            !(view.member("n1").is_some() && view.is_enabled("f")),
            "round {round} (seed {seed}): stored state has n1 as a member with f enabled"
        );
        assert_eq!(view.epoch, 2, "round {round}: one member join and one winning change");
        let loser_calls =
            if winner_join { enable_calls.load(Ordering::SeqCst) } else { join_calls.load(Ordering::SeqCst) };
        if loser_calls > 1 {
            stats.fenced += 1;
        }
        if winner_join {
            stats.join_won += 1;
        } else {
            stats.enable_won += 1;
        }
        stats.rounds += 1;
    }
    stats
}

async fn run(name: &str, store: Arc<dyn MetaStore>, default_rounds: usize) -> Stats {
    let seed = rollgate_testkit::seed("ROLLGATE_RACE_SEED");
    let n = rounds(default_rounds);
    let stats = race(store, n, seed).await;
    eprintln!("{name}: {stats:?} (seed {seed})");
    assert_eq!(stats.rounds, n);
    stats
}

/// A deterministic interleaving of the race: both read the same view, the
/// join commits first, the enable's commit is fenced off and its
/// re-validation refuses it.
#[tokio::test]
async fn a_stale_view_cannot_commit() {
    let store = store::open("mem:", StoreOptions::default()).await.unwrap();
    let cluster = Cluster::open(store, ClusterOptions::default()).await.unwrap();
    cluster.join(record("m0", &["f"]), |_| Ok::<(), String>(())).await.unwrap();
    let for_join = cluster.view().await.unwrap();
    let for_enable = cluster.view().await.unwrap();
    let joined = cluster.try_commit(&for_join, vec![ViewOp::PutMember(record("n1", &[]))]).await.unwrap();
    assert!(joined.is_some());
    let enabled = cluster.try_commit(&for_enable, vec![ViewOp::PutFlag("f".into(), FlagRecord::enabled())]).await;
    assert_eq!(enabled.unwrap(), None, "the epoch moved: the stale commit is refused");
    let view = cluster.view().await.unwrap();
    assert!(!view.is_enabled("f") && view.member("n1").is_some());
    assert_eq!(view.epoch, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_enable_race_mem() {
    let store = store::open("mem:", StoreOptions::default()).await.unwrap();
    let stats = run("mem", store, 3000).await;
    assert!(stats.join_won > 0 && stats.enable_won > 0, "both sides win sometimes: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_enable_race_redb() {
    // A real redb file with durable commits; on tmpfs when there is one, to
    // keep thousands of fsyncs quick.
    let base = if std::path::Path::new("/dev/shm").is_dir() { Some("/dev/shm") } else { None };
    let dir = match base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let url = format!("redb:{}", dir.path().join("meta.redb").display());
    let store = store::open(&url, StoreOptions::default()).await.unwrap();
    let stats = run("redb", store, 1500).await;
    assert!(stats.fenced > 0, "the race really happened (a loser re-validated): {stats:?}");
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_enable_race_etcd() {
    let etcd = rollgate_testkit::EtcdServer::start().expect("start etcd");
    let store = store::open(&etcd.url(), StoreOptions::default()).await.unwrap();
    let stats = run("etcd", store, 150).await;
    assert!(stats.fenced > 0, "the race really happened (a loser re-validated): {stats:?}");
}
