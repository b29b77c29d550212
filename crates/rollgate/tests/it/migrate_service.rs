//! Service format versions (Ceph style) on a real store: a three-step chain
//! 0 -> 1 -> 2 -> 3 whose last step waits for its flag (I1), a fresh cluster
//! created at the latest allowed version with no step run, gate changes from
//! the cluster view driving the runner, two runners racing on one store
//! (redb, and a real etcd with two clients) never running a step
//! concurrently, and owner crashes: a dropped owner is taken over after its
//! lease expires (I4), and an owner that lost its lease cannot commit.
//! `ROLLGATE_RACE_SEED` re-runs a race seed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rollgate::cluster::ViewOp;
use rollgate::cluster::{Cluster, ClusterHandle, ClusterOptions, FlagRecord, HandleOptions, NodeRecord};
use rollgate::migrate::{
    Gate, Gates, MemGates, MigrateError, MigrateKeys, Migrations, OwnerRecord, ServiceOptions, ServiceOutcome,
    ServiceRunner, ServiceStep, StepContext, StepError,
};
use rollgate::store::{self, EventKind, MetaStore, MetaStoreJson, StoreOptions};
use tokio::sync::{Barrier, oneshot};

const WAIT: Duration = Duration::from_secs(20);

/// Counts step runs and how many run at once.
#[derive(Default)]
struct Probe {
    runs: [AtomicUsize; 3],
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Probe {
    fn runs(&self) -> [usize; 3] {
        [0, 1, 2].map(|i| self.runs[i].load(Ordering::SeqCst))
    }
}

/// What a step may do besides its work (tests of crashes).
type Hook = Arc<dyn Fn(usize) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Steps of `service`: 0 -> 1 behind cluster feature `caps`, 1 -> 2 behind
/// cluster feature `mgr`, 2 -> 3 behind flag `bootstrap` (Ceph's three
/// auth steps). Each writes an idempotent marker key and counts its runs.
fn chain(service: &str, probe: Arc<Probe>, hook: Option<Hook>) -> Migrations {
    let gates = [Gate::feature("caps"), Gate::feature("mgr"), Gate::flag("bootstrap")];
    let names = ["profiles", "mgr_caps", "bootstrap_keys"];
    let mut m = Migrations::new();
    for (i, gate) in gates.into_iter().enumerate() {
        let (probe, hook, service_name) = (probe.clone(), hook.clone(), service.to_string());
        let step = ServiceStep::new(service, i as u32, names[i], gate, move |ctx: StepContext| {
            let (probe, hook, service) = (probe.clone(), hook.clone(), service_name.clone());
            async move {
                let now = probe.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                probe.max_in_flight.fetch_max(now, Ordering::SeqCst);
                probe.runs[i].fetch_add(1, Ordering::SeqCst);
                if let Some(hook) = hook {
                    hook(i).await;
                }
                ctx.store.put(&format!("app/{service}/step{i}"), ctx.node.clone().into_bytes()).await?;
                tokio::task::yield_now().await;
                probe.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), StepError>(())
            }
        })
        .unwrap();
        m.add_step(step).unwrap();
    }
    m
}

fn all_open() -> Arc<MemGates> {
    let gates = MemGates::with_flags(["bootstrap"]);
    gates.add_feature("caps");
    gates.add_feature("mgr");
    Arc::new(gates)
}

async fn redb_store(dir: &tempfile::TempDir) -> Arc<dyn MetaStore> {
    store::open(&format!("redb:{}", dir.path().join("meta.redb").display()), StoreOptions::default()).await.unwrap()
}

fn runner(m: &Arc<Migrations>, store: &Arc<dyn MetaStore>, gates: Arc<dyn Gates>, node: &str) -> ServiceRunner {
    ServiceRunner::new(m.clone(), store.clone(), gates, node, ServiceOptions::default()).unwrap()
}

/// Waits (bounded, by watching the key) until `formats/<service>` reaches `version`.
async fn wait_version(store: &Arc<dyn MetaStore>, service: &str, version: u32) {
    let key = MigrateKeys::new("rollgate/").format(service);
    let reached = async {
        loop {
            let listing = store.list(&key).await.unwrap();
            let current = listing.kvs.first().map(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).unwrap());
            if current.is_some_and(|v| v["version"].as_u64() >= Some(version as u64)) {
                return;
            }
            let mut watch = store.watch(&key, Some(listing.revision + 1)).await.unwrap();
            watch.next().await.unwrap().unwrap();
        }
    };
    tokio::time::timeout(WAIT, reached).await.unwrap_or_else(|_| panic!("{service} did not reach {version}"));
}

#[tokio::test]
async fn a_gated_step_waits_for_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store(&dir).await;
    let probe = Arc::new(Probe::default());
    let m = Arc::new(chain("auth", probe.clone(), None));
    let gates = Arc::new(MemGates::new());
    gates.add_feature("caps");
    gates.add_feature("mgr");
    let r = runner(&m, &store, gates.clone(), "node-a");

    let report = r.run_once().await.unwrap().remove(0);
    assert_eq!(report.outcome, ServiceOutcome::Migrated { from: 0 });
    assert_eq!(report.version, 2, "stops at 2: step 2 -> 3 waits for its flag");
    assert_eq!(report.blocked, Some((2, Gate::flag("bootstrap"))));
    assert_eq!(report.steps.iter().map(|s| (s.from, s.to)).collect::<Vec<_>>(), [(0, 1), (1, 2)]);
    assert_eq!(probe.runs(), [1, 1, 0], "I1: the gated step did not run");
    assert!(store.get("app/auth/step2").await.unwrap().is_none());
    let (format, _) = r.read_format("auth").await.unwrap();
    assert_eq!(format.version, 2);
    assert_eq!(format.history.len(), 2);
    assert!(format.history.iter().all(|h| h.node == "node-a" && h.finished_ms >= h.started_ms));
    let owner_key = MigrateKeys::new("rollgate/").owner("auth");
    assert!(store.get(&owner_key).await.unwrap().is_none(), "the owner key is released");

    // Again: nothing to do, nothing written.
    let revision = store.get(&MigrateKeys::new("rollgate/").format("auth")).await.unwrap().unwrap().mod_revision;
    let report = r.run_once().await.unwrap().remove(0);
    assert_eq!((report.outcome, report.version), (ServiceOutcome::UpToDate, 2));
    assert_eq!(probe.runs(), [1, 1, 0]);
    let after = store.get(&MigrateKeys::new("rollgate/").format("auth")).await.unwrap().unwrap().mod_revision;
    assert_eq!(after, revision);

    // The flag is enabled: the chain continues.
    gates.enable_flag("bootstrap");
    let report = r.run_once().await.unwrap().remove(0);
    assert_eq!((report.outcome, report.version, report.blocked), (ServiceOutcome::Migrated { from: 2 }, 3, None));
    assert_eq!(probe.runs(), [1, 1, 1]);
    assert_eq!(store.get("app/auth/step2").await.unwrap().unwrap().value, b"node-a");
    assert_eq!(r.run_once().await.unwrap()[0].outcome, ServiceOutcome::UpToDate);
    assert_eq!(probe.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_fresh_cluster_starts_at_the_latest_allowed_version_with_no_step_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store(&dir).await;
    let probe = Arc::new(Probe::default());
    let m = Arc::new(chain("auth", probe.clone(), None));
    let r = runner(&m, &store, all_open(), "node-a");
    assert_eq!(r.create_fresh("auth").await.unwrap(), 3);
    assert_eq!(probe.runs(), [0, 0, 0], "no migration on a fresh cluster");
    assert_eq!(r.run_once().await.unwrap()[0].outcome, ServiceOutcome::UpToDate);
    assert_eq!(probe.runs(), [0, 0, 0]);
    let key = MigrateKeys::new("rollgate/").format("auth");
    let before = store.get(&key).await.unwrap().unwrap();
    assert_eq!(r.create_fresh("auth").await.unwrap(), 3, "an existing record is kept");
    assert_eq!(store.get(&key).await.unwrap().unwrap(), before);

    // A fresh cluster whose flag is not enabled yet starts below it.
    let probe = Arc::new(Probe::default());
    let m = Arc::new(chain("mon", probe.clone(), None));
    let gates = all_open();
    gates.disable_flag("bootstrap");
    let r = runner(&m, &store, gates.clone(), "node-a");
    assert_eq!(r.create_fresh("mon").await.unwrap(), 2);
    gates.enable_flag("bootstrap");
    assert_eq!(r.run_once().await.unwrap()[0].version, 3);
    assert_eq!(probe.runs(), [0, 0, 1]);
}

fn member(node: &str, features: &[&str]) -> NodeRecord {
    NodeRecord {
        data_addr: "127.0.0.1:7000".into(),
        admin_addr: "127.0.0.1:7001".into(),
        supported_flags: BTreeSet::from(["bootstrap".to_string()]),
        cluster_features: features.iter().map(|f| f.to_string()).collect(),
        ..NodeRecord::new(node, "1.2")
    }
}

#[tokio::test]
async fn gate_changes_in_the_cluster_view_drive_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store(&dir).await;
    let cluster = Cluster::open(store.clone(), ClusterOptions::default()).await.unwrap();
    cluster.join(member("node-a", &["caps", "mgr"]), |_| Ok::<(), String>(())).await.unwrap();
    // node-b lacks `mgr`: the cluster does not have it yet.
    cluster.join(member("node-b", &["caps"]), |_| Ok::<(), String>(())).await.unwrap();
    let handle = Arc::new(ClusterHandle::start(cluster.clone(), HandleOptions::default()).await.unwrap());
    let probe = Arc::new(Probe::default());
    let m = Arc::new(chain("auth", probe.clone(), None));
    let r = runner(&m, &store, handle.clone(), "node-a");
    let changes = handle.watch_view();
    let task = tokio::spawn(async move { r.run_on_changes(changes).await });

    wait_version(&store, "auth", 1).await;
    assert_eq!(probe.runs(), [1, 0, 0], "a cluster feature one member lacks holds the step back");

    cluster
        .update_member("node-b", |rec| {
            rec.cluster_features.insert("mgr".into());
        })
        .await
        .unwrap();
    wait_version(&store, "auth", 2).await;
    cluster
        .update(|_| Ok::<_, String>(vec![ViewOp::PutFlag("bootstrap".into(), FlagRecord::enabled())]))
        .await
        .unwrap();
    wait_version(&store, "auth", 3).await;
    assert_eq!(probe.runs(), [1, 1, 1]);
    task.abort();
}

async fn race(stores: [Arc<dyn MetaStore>; 2], rounds: usize, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut busy = 0;
    let started = Instant::now();
    for round in 0..rounds {
        assert!(started.elapsed() < Duration::from_secs(90), "round {round}: too slow (seed {seed})");
        let service = format!("svc{round}");
        let probe = Arc::new(Probe::default());
        let m = Arc::new(chain(&service, probe.clone(), None));
        let gates: Arc<dyn Gates> = all_open();
        let runners = [runner(&m, &stores[0], gates.clone(), "node-a"), runner(&m, &stores[1], gates, "node-b")];
        let barrier = Arc::new(Barrier::new(2));
        let mut tasks = Vec::new();
        for r in runners {
            let (barrier, service, yields) = (barrier.clone(), service.clone(), rng.random_range(0..6u32));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                r.run_service_once(&service).await.unwrap()
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap().outcome);
        }
        busy += outcomes.iter().filter(|o| matches!(o, ServiceOutcome::Busy { .. })).count();
        assert_eq!(probe.max_in_flight.load(Ordering::SeqCst), 1, "round {round}: two steps at once (seed {seed})");
        assert_eq!(probe.runs(), [1, 1, 1], "round {round}: each step once (seed {seed}): {outcomes:?}");
        assert_eq!(
            outcomes.iter().filter(|o| matches!(o, ServiceOutcome::Migrated { from: 0 })).count(),
            1,
            "round {round}: one runner migrated (seed {seed}): {outcomes:?}"
        );
        let version = store_version(&stores[0], &service).await;
        assert_eq!(version, 3, "round {round} (seed {seed})");
    }
    eprintln!("{rounds} rounds, {busy} found the other runner owning the migrations");
    busy
}

async fn store_version(store: &Arc<dyn MetaStore>, service: &str) -> u32 {
    let key = MigrateKeys::new("rollgate/").format(service);
    let (v, _) = store.get_json::<serde_json::Value>(&key).await.unwrap().unwrap();
    v["version"].as_u64().unwrap() as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_on_one_redb_store_never_run_a_step_concurrently() {
    let seed = rollgate_testkit::seed("ROLLGATE_RACE_SEED");
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store(&dir).await;
    let busy = race([store.clone(), store], 60, seed).await;
    assert!(busy > 0, "the runners never overlapped: the race did not happen (seed {seed})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_on_a_real_etcd_never_run_a_step_concurrently() {
    let seed = rollgate_testkit::seed("ROLLGATE_RACE_SEED");
    let etcd = rollgate_testkit::EtcdServer::start().unwrap();
    // Two clients, as two nodes would have.
    let a = store::open(&etcd.url(), StoreOptions::default()).await.unwrap();
    let b = store::open(&etcd.url(), StoreOptions::default()).await.unwrap();
    let busy = race([a, b], 25, seed).await;
    assert!(busy > 0, "the runners never overlapped: the race did not happen (seed {seed})");
}

/// A hook that blocks step `index` forever the first time it runs, after
/// saying so on `entered`.
fn block_once(index: usize, entered: oneshot::Sender<()>) -> Hook {
    let entered = Arc::new(Mutex::new(Some(entered)));
    let first = Arc::new(AtomicBool::new(true));
    Arc::new(move |i| {
        let (entered, first) = (entered.clone(), first.clone());
        Box::pin(async move {
            if i == index && first.swap(false, Ordering::SeqCst) {
                if let Some(tx) = entered.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                futures::future::pending::<()>().await;
            }
        })
    })
}

async fn wait_owner_gone(store: &Arc<dyn MetaStore>, service: &str) {
    let key = MigrateKeys::new("rollgate/").owner(service);
    let gone = async {
        let listing = store.list(&key).await.unwrap();
        if listing.kvs.is_empty() {
            return;
        }
        let mut watch = store.watch(&key, Some(listing.revision + 1)).await.unwrap();
        while let Some(batch) = watch.next().await {
            if batch.unwrap().events.iter().any(|e| e.kind == EventKind::Delete) {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, gone).await.expect("the owner key expires with its lease");
}

#[tokio::test]
async fn i4_a_crashed_owner_is_taken_over_when_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store(&dir).await;
    let probe = Arc::new(Probe::default());
    let (entered_tx, entered_rx) = oneshot::channel();
    let m = Arc::new(chain("auth", probe.clone(), Some(block_once(1, entered_tx))));
    // Long enough that the dead owner still holds the key when node-b first looks.
    let options = ServiceOptions { owner_ttl_s: 2, ..ServiceOptions::default() };
    let a = ServiceRunner::new(m.clone(), store.clone(), all_open(), "node-a", options.clone()).unwrap();
    let b = ServiceRunner::new(m.clone(), store.clone(), all_open(), "node-b", options).unwrap();

    // node-a commits step 0 -> 1, then "crashes" inside step 1 -> 2.
    let crashed = tokio::spawn(async move { a.run_once().await });
    tokio::time::timeout(WAIT, entered_rx).await.unwrap().unwrap();
    crashed.abort();
    assert!(crashed.await.unwrap_err().is_cancelled());
    assert_eq!(store_version(&store, "auth").await, 1);

    let report = b.run_once().await.unwrap().remove(0);
    assert_eq!(report.outcome, ServiceOutcome::Busy { owner: "node-a".into() }, "the dead owner's lease still holds");
    assert_eq!(report.version, 1);

    wait_owner_gone(&store, "auth").await;
    let report = b.run_once().await.unwrap().remove(0);
    assert_eq!((report.outcome, report.version), (ServiceOutcome::Migrated { from: 1 }, 3));
    assert_eq!(probe.runs(), [1, 2, 1], "the interrupted step ran again (steps are idempotent)");
    let (format, _) = b.read_format("auth").await.unwrap();
    let by: Vec<(u32, &str)> = format.history.iter().map(|h| (h.from, h.node.as_str())).collect();
    assert_eq!(by, [(0, "node-a"), (1, "node-b"), (2, "node-b")]);
}

#[tokio::test]
async fn an_owner_that_lost_its_lease_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store(&dir).await;
    let probe = Arc::new(Probe::default());
    let (entered_tx, entered_rx) = oneshot::channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let hook: Hook = {
        let entered = Arc::new(Mutex::new(Some(entered_tx)));
        let release = release.clone();
        Arc::new(move |i| {
            let (entered, release) = (entered.clone(), release.clone());
            Box::pin(async move {
                if i == 0 {
                    if let Some(tx) = entered.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    release.notified().await;
                }
            })
        })
    };
    let m = Arc::new(chain("auth", probe.clone(), Some(hook)));
    let a = runner(&m, &store, all_open(), "node-a");
    let running = tokio::spawn(async move { a.run_once().await });
    tokio::time::timeout(WAIT, entered_rx).await.unwrap().unwrap();
    // The owner's lease goes (as after a long pause): its key is deleted.
    let key = MigrateKeys::new("rollgate/").owner("auth");
    let (owner, _) = store.get_json::<OwnerRecord>(&key).await.unwrap().unwrap();
    assert_eq!(owner.node, "node-a");
    store.lease_revoke(owner.lease).await.unwrap();
    release.notify_one();
    let err = running.await.unwrap().unwrap_err();
    assert!(matches!(err, MigrateError::LostOwnership { .. }), "{err}");
    assert!(err.to_string().contains("node node-a lost the migration ownership of service `auth`"), "{err}");
    assert_eq!(
        store.get(&MigrateKeys::new("rollgate/").format("auth")).await.unwrap(),
        None,
        "the step's commit was fenced off"
    );
}

#[tokio::test]
async fn steps_are_registered_in_order_with_valid_names() {
    let noop = |_ctx: StepContext| async { Ok::<(), StepError>(()) };
    let mut m = Migrations::new();
    let err = m.add_step(ServiceStep::new("auth", 1, "late", Gate::flag("f"), noop).unwrap()).unwrap_err();
    assert_eq!(err.to_string(), "service `auth`: step 1 -> 2 registered where step 0 -> 1 was expected");
    m.add_step(ServiceStep::new("auth", 0, "first", Gate::flag("f"), noop).unwrap()).unwrap();
    assert!(m.add_step(ServiceStep::new("auth", 0, "again", Gate::flag("f"), noop).unwrap()).is_err());
    for (service, name, gate) in [
        ("Auth", "x", Gate::flag("f")),
        ("auth", "", Gate::flag("f")),
        ("auth", "x", Gate::flag("F-1")),
        ("auth", "x", Gate::feature("")),
    ] {
        let err = ServiceStep::new(service, 0, name, gate, noop).unwrap_err();
        assert!(matches!(err, MigrateError::InvalidName { .. }), "{err}");
    }
    let store = store::open("mem:", StoreOptions::default()).await.unwrap();
    let m = Arc::new(m);
    assert!(ServiceRunner::new(m, store, all_open(), "bad node", ServiceOptions::default()).is_err());
}
