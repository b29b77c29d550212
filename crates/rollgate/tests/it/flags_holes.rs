//! Regression tests for the holes a to h of issue 12 ("The flag protocol,
//! proven as it runs"): one test per hole, named after what it guards, each
//! through real node runtimes (several `rollgate::node::Node`s in this
//! process on one embedded redb store in a temp dir). Each reproduces the
//! hole on the code it was written against and fails there with a message
//! that says what went wrong; the fix of the hole makes it pass unchanged
//! (except where a comment says which hook the fix adds).
//!
//! A test-side tool: [`Cuttable`], a `MetaStore` wrapper that cuts one node
//! off from the shared store (every call answers `Unavailable`, open watches
//! end with it) and heals it again: what a network partition does to that
//! node, while the other nodes keep using the store (holes b and g). No
//! product hook is needed for that: `Node::start` takes any
//! `Arc<dyn MetaStore>`. Whether a node may serve is `Node::serving()` (I11).
//!
//! No sleeps synchronise anything: the tests wait on views, watch channels
//! and explicit signals, each bounded by [`WAIT`]. The only timed waits are
//! a per-node step that *works* for a while (hole d: a long step is the
//! condition under test) and liveness leases expiring (b, g).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rollgate::cluster::{ClusterView, FlagState, TransportRange};
use rollgate::flags::{EnableRequest, FlagDecl, FlagError, FlagRegistry};
use rollgate::migrate::{
    Gate as MigrateGate, Gates, MigrateKeys, Migrations, OwnerRecord, ServiceOptions, ServiceOutcome, ServiceRunner,
    ServiceStep, StepContext as ServiceStepContext, StepError,
};
use rollgate::node::{Node, NodeConfig};
use rollgate::store::{
    LeaseId, Limits, Listing, MetaStore, MetaStoreJson, Revision, StoreError, Txn, TxnResponse, WatchStream,
};
use rollgate::version::{ProtocolRange, TransportVersion};
use tokio::sync::{oneshot, watch};

use crate::flags_support::{self as support, Counters, WAIT, redb, start, tmp, until};

/// Whether `node` says (now) that it may serve.
fn may_serve(node: &Node) -> bool {
    *node.serving().borrow()
}

/// Waits (bounded) until `node` stops serving; false if it never does.
async fn stops_serving(node: &Node) -> bool {
    let mut rx = node.serving();
    matches!(tokio::time::timeout(WAIT, rx.wait_for(|s| !*s)).await, Ok(Ok(_)))
}

// ---------------------------------------------------------------------------
// A node cut off from the store.
// ---------------------------------------------------------------------------

/// The shared store as one node sees it: [`Cuttable::cut`] makes every call
/// answer `Unavailable` and ends the open watches with that error (the
/// node's handle then serves its cached view and retries, its liveness
/// lease is no longer kept alive and expires in the store, as after a
/// network partition); [`Cuttable::heal`] lets it through again.
#[derive(Debug)]
pub struct Cuttable {
    inner: Arc<dyn MetaStore>,
    cut: watch::Sender<bool>,
}

impl Cuttable {
    pub fn new(inner: &Arc<dyn MetaStore>) -> Arc<Cuttable> {
        Arc::new(Cuttable { inner: inner.clone(), cut: watch::Sender::new(false) })
    }
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
    fn unavailable(&self) -> StoreError {
        StoreError::Unavailable { endpoint: self.describe(), reason: "cut off from the store by the test".into() }
    }
    fn check(&self) -> Result<(), StoreError> {
        if *self.cut.borrow() { Err(self.unavailable()) } else { Ok(()) }
    }
}

#[async_trait::async_trait]
impl MetaStore for Cuttable {
    fn describe(&self) -> String {
        format!("cuttable {}", self.inner.describe())
    }
    fn limits(&self) -> &Limits {
        self.inner.limits()
    }
    async fn get(&self, key: &str) -> Result<Option<rollgate::store::KeyValue>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.check()?;
        self.inner.list(prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.check()?;
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<WatchStream, StoreError> {
        self.check()?;
        let stream = self.inner.watch(prefix, from).await?;
        let endpoint = self.describe();
        let rx = self.cut.subscribe();
        // Ends with `Unavailable` as soon as the node is cut off.
        Ok(Box::pin(futures::stream::unfold((stream, rx, false), move |(mut stream, mut rx, ended)| {
            let endpoint = endpoint.clone();
            async move {
                if ended {
                    return None;
                }
                let next = tokio::select! {
                    item = stream.next() => Some(item?),
                    cut = rx.wait_for(|c| *c) => {
                        drop(cut);
                        None
                    }
                };
                match next {
                    Some(item) => Some((item, (stream, rx, false))),
                    None => Some((
                        Err(StoreError::Unavailable { endpoint, reason: "cut off from the store by the test".into() }),
                        (stream, rx, true),
                    )),
                }
            }
        })))
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.check()?;
        self.inner.compact(revision).await
    }
    async fn lease_grant(&self, ttl_s: i64) -> Result<(LeaseId, i64), StoreError> {
        self.check()?;
        self.inner.lease_grant(ttl_s).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<i64, StoreError> {
        self.check()?;
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.check()?;
        self.inner.lease_revoke(lease).await
    }
}

/// Waits (bounded) until the node's handle reports the store unreachable.
async fn until_cut_off(node: &Node) {
    let mut rx = node.handle().watch_status();
    tokio::time::timeout(WAIT, rx.wait_for(|s| !s.reachable))
        .await
        .unwrap_or_else(|_| panic!("{} never noticed it was cut off from the store", node.id()))
        .unwrap();
}

// ---------------------------------------------------------------------------
// A flag whose steps the test controls.
// ---------------------------------------------------------------------------

/// One controlled run of a step: it reports that it started (with the
/// enabling attempt it saw), waits for the test's go, and reports whether
/// it finished or was dropped (cancelled) before finishing.
struct Gate {
    entered: oneshot::Sender<String>,
    go: oneshot::Receiver<()>,
    outcome: oneshot::Sender<&'static str>,
}

/// The test's ends of a [`Gate`].
struct GateControl {
    entered: oneshot::Receiver<String>,
    go: oneshot::Sender<()>,
    outcome: oneshot::Receiver<&'static str>,
}

fn gate() -> (Gate, GateControl) {
    let (entered_tx, entered) = oneshot::channel();
    let (go, go_rx) = oneshot::channel();
    let (outcome_tx, outcome) = oneshot::channel();
    (Gate { entered: entered_tx, go: go_rx, outcome: outcome_tx }, GateControl { entered, go, outcome })
}

/// What the steps of flag `ttl` do, shared by every node's registry.
#[derive(Clone, Default)]
struct Hooks {
    /// `(node, attempt)` of every per-node step run, in the order they started.
    node_runs: Arc<Mutex<Vec<(String, String)>>>,
    /// Per node: per-node step runs in flight now, and the most at once.
    in_flight: Arc<Mutex<BTreeMap<String, (usize, usize)>>>,
    /// The next cluster step waits at this gate.
    cluster_gate: Arc<Mutex<Option<Gate>>>,
    /// Per node: its next per-node step waits at this gate.
    node_gates: Arc<Mutex<BTreeMap<String, Gate>>>,
    /// Per node: how long each of its per-node steps works (a long step).
    node_work: Arc<Mutex<BTreeMap<String, Duration>>>,
}

impl Hooks {
    fn runs_of(&self, node: &str) -> Vec<String> {
        self.node_runs.lock().unwrap().iter().filter(|(n, _)| n == node).map(|(_, a)| a.clone()).collect()
    }
    fn max_in_flight(&self, node: &str) -> usize {
        self.in_flight.lock().unwrap().get(node).map_or(0, |(_, max)| *max)
    }
}

/// Decrements a node's in-flight count and reports the run's outcome when
/// the step's future ends, finished or dropped.
struct RunGuard {
    hooks: Hooks,
    node: String,
    finished: bool,
    outcome: Option<oneshot::Sender<&'static str>>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(e) = self.hooks.in_flight.lock().unwrap().get_mut(&self.node) {
            e.0 -= 1;
        }
        if let Some(tx) = self.outcome.take() {
            let _ = tx.send(if self.finished { "finished" } else { "dropped before it finished" });
        }
    }
}

/// The attempt id of `flag`'s enabling record in `view` (or `-`).
fn attempt_of(view: &ClusterView, flag: &str) -> String {
    view.flags.get(flag).and_then(|r| r.attempt.as_ref()).map_or_else(|| "-".to_string(), |a| a.id.clone())
}

/// `base` (stable) and, from 1.1, `ttl`: experimental (so a fresh cluster
/// leaves it off), with a cluster step and a per-node step the [`Hooks`]
/// control.
fn ttl_registry(release: &str, hooks: &Hooks) -> FlagRegistry {
    let mut b = FlagRegistry::builder(release);
    b.declare(FlagDecl::new("base", "the 1.0 format").introduced_in("1.0"));
    if release != "1.0" {
        let (hc, hn) = (hooks.clone(), hooks.clone());
        b.declare(
            FlagDecl::new("ttl", "values may expire")
                .introduced_in("1.1")
                .experimental()
                .on_enable_cluster(move |ctx| {
                    let hooks = hc.clone();
                    async move {
                        let gate = hooks.cluster_gate.lock().unwrap().take();
                        if let Some(g) = gate {
                            let attempt = ctx.cluster.view().await.map(|v| attempt_of(&v, "ttl")).unwrap_or_default();
                            let _ = g.entered.send(attempt);
                            let _ = g.go.await;
                            let _ = g.outcome.send("finished");
                        }
                        Ok(())
                    }
                })
                .on_enable_node(move |ctx| {
                    let hooks = hn.clone();
                    async move {
                        let node = ctx.node_id.clone();
                        let attempt = ctx.cluster.view().await.map(|v| attempt_of(&v, "ttl")).unwrap_or_default();
                        hooks.node_runs.lock().unwrap().push((node.clone(), attempt.clone()));
                        {
                            let mut f = hooks.in_flight.lock().unwrap();
                            let e = f.entry(node.clone()).or_default();
                            e.0 += 1;
                            e.1 = e.1.max(e.0);
                        }
                        let gate = hooks.node_gates.lock().unwrap().remove(&node);
                        let mut guard =
                            RunGuard { hooks: hooks.clone(), node: node.clone(), finished: false, outcome: None };
                        if let Some(g) = gate {
                            guard.outcome = Some(g.outcome);
                            let _ = g.entered.send(attempt);
                            let _ = g.go.await;
                        }
                        let work = hooks.node_work.lock().unwrap().get(&node).copied();
                        if let Some(work) = work {
                            // The step's own work takes this long (not a synchronisation).
                            tokio::time::sleep(work).await;
                        }
                        guard.finished = true;
                        Ok(())
                    }
                }),
        );
    }
    b.build().expect("valid declarations")
}

/// A node config of the small `ttl` service, with the support timeouts.
fn ttl_config(node: &str, release: &str, root: &std::path::Path, hooks: &Hooks) -> NodeConfig {
    let mut c = support::config(node, release, root, &Counters::default());
    c.flags = ttl_registry(release, hooks);
    c.releases = None;
    c
}

// ---------------------------------------------------------------------------
// a. A node joining while F is enabling never runs F's per-node step.
// ---------------------------------------------------------------------------

/// Hole a: `node_steps` is fixed when the attempt starts, so a member with a
/// per-node step for `ttl` that joins while `ttl` is enabling is not waited
/// for, its flag worker skips the attempt, its boot runs steps only of flags
/// enabled before it joined, and the final commit does not look at acks
/// again: `ttl` ends enabled on a member that never prepared. Safe outcomes
/// (any fix): the join is refused while `ttl` is enabling, or the enabling
/// waits for the newcomer's ack, or it is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_while_a_flag_is_enabling_runs_its_node_step_before_the_flag_is_enabled() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let hooks = Hooks::default();
    let n1 = start(&store, ttl_config("n1", "1.1", dir.path(), &hooks)).await;
    let n2 = start(&store, ttl_config("n2", "1.1", dir.path(), &hooks)).await;
    let (g, control) = gate();
    *hooks.cluster_gate.lock().unwrap() = Some(g);
    let enabling = {
        let n1 = n1.clone();
        tokio::spawn(async move { n1.enable(EnableRequest::flags(["ttl"]).experimental()).await })
    };
    let attempt = tokio::time::timeout(WAIT, control.entered).await.expect("the cluster step starts").unwrap();

    // n3, whose release has a per-node step for ttl, joins now.
    let joined = Node::start(ttl_config("n3", "1.1", dir.path(), &hooks), store.clone()).await;
    let _ = control.go.send(());
    let n3 = match joined {
        Ok(n3) => n3,
        Err(e) => {
            // Fix "refuse the join while ttl is enabling": it must say why.
            let msg = e.to_string();
            assert!(msg.contains("ttl"), "n3's join was refused without naming `ttl`: {msg}");
            let _ = tokio::time::timeout(WAIT, enabling).await;
            return;
        }
    };
    let view = until(&n1, "ttl settled (enabled or disabled)", |v| {
        v.flags.get("ttl").is_some_and(|r| !matches!(r.state, FlagState::Enabling { .. }))
    })
    .await;
    // Read at once: the step records its run before it acknowledges, and an
    // acknowledgement must precede the enabled commit.
    let n3_runs = hooks.runs_of("n3");
    let result = tokio::time::timeout(WAIT, enabling).await.expect("the enable returns").unwrap();
    if view.is_enabled("ttl") && view.member("n3").is_some() {
        let ttl = n3.flag_id("ttl").unwrap();
        let bit = tokio::time::timeout(WAIT, n3.wait_enabled(ttl)).await.is_ok();
        assert!(
            !n3_runs.is_empty(),
            "hole a: flag `ttl` became enabled (attempt {attempt}, enable result {result:?}) while n3, a member whose \
             release has a per-node step for `ttl` and which joined during the enabling, never ran that step \
             (per-node runs so far: {:?}); n3 holds ttl's bit: {bit}",
            hooks.node_runs.lock().unwrap()
        );
    }
    drop((n1, n2, n3));
}

// ---------------------------------------------------------------------------
// b. A member cut off from the store keeps the bit of a disabled flag.
// ---------------------------------------------------------------------------

/// Hole b: disabling settles only the disabling node's view. A member cut
/// off from the store keeps its cached bit and, nothing stopping it from
/// serving, keeps producing `compact` data after the disable (and its hook,
/// the reverse migration) completed. The property: once a disable
/// completes, no node that may still serve holds the flag's bit (I11: a
/// node that cannot confirm its membership and flag view within its lease
/// stops serving; the disable waits for every member to have cleared its
/// bit or to have lost its lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_a_member_cut_off_from_the_store_stops_serving_a_flag_before_its_disable_completes() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, support::config("n1", "1.2", dir.path(), &counters)).await;
    let n2_store = Cuttable::new(&store);
    let mut c2 = support::config("n2", "1.2", dir.path(), &counters);
    c2.liveness_ttl_s = 2;
    let n2 = Node::start(c2, n2_store.clone() as Arc<dyn MetaStore>).await.expect("n2 starts");
    support::bit(&n2, "compact", true).await;
    let compact = n2.flag_id("compact").unwrap();

    n2_store.cut();
    until_cut_off(&n2).await;
    let report = tokio::time::timeout(WAIT, n1.disable("compact")).await.expect("the disable returns");
    let hooks_run = counters.disable_hook.load(Ordering::SeqCst);
    let n1_view = n1.view();
    if let Ok(report) = &report {
        assert!(report.changed);
        let mut holders = Vec::new();
        for n in [&n1, &n2] {
            if n.is_enabled(compact) && may_serve(n) {
                holders.push(n.id().to_string());
            }
        }
        assert!(
            holders.is_empty(),
            "hole b: `disable compact` completed (its hook ran {hooks_run} time(s); the store says {:?}) but {holders:?} \
             still hold compact's bit and may serve: n2 was cut off from the store before the disable and nothing \
             made it stop serving (its store status: {:?})",
            n1_view.flags.get("compact").map(|r| &r.state),
            n2.handle().status().last_error,
        );
    }
    n2_store.heal();
    drop((n1, n2));
}

// ---------------------------------------------------------------------------
// c. Acks and step runs of an ended attempt.
// ---------------------------------------------------------------------------

/// Hole c: a per-node step of an attempt that was rolled back keeps running
/// and runs at the same time as the same step of the next attempt on the
/// same node; when it ends it writes its acknowledgement (a plain put, not
/// guarded by the attempt) after the next attempt enabled the flag. The
/// property: at most one run of a (node, flag) per-node step at a time, and
/// no acknowledgement of an ended attempt lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_a_per_node_step_of_an_ended_attempt_never_overlaps_the_next_attempt_nor_acknowledges_late() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let hooks = Hooks::default();
    let mut c1 = ttl_config("n1", "1.1", dir.path(), &hooks);
    c1.timeouts.node_steps_ms = 500;
    let n1 = start(&store, c1).await;
    let _n2 = start(&store, ttl_config("n2", "1.1", dir.path(), &hooks)).await;
    let (g, control) = gate();
    hooks.node_gates.lock().unwrap().insert("n2".into(), g);

    // Attempt 1: n2's step hangs; the owner gives up after 500 ms and rolls back.
    let first = n1.enable(EnableRequest::flags(["ttl"]).experimental()).await;
    let a1 = tokio::time::timeout(WAIT, control.entered).await.expect("n2's first run started").unwrap();
    assert!(
        matches!(&first, Err(FlagError::StepFailed { .. })),
        "attempt 1 was expected to roll back (n2 does not answer within 500 ms): {first:?}"
    );
    // Attempt 2: n2's step answers at once.
    let second = n1.enable(EnableRequest::flags(["ttl"]).experimental()).await;
    let overlapping = hooks.max_in_flight("n2");
    // Now let attempt 1's run (if it still runs) go on.
    let _ = control.go.send(());
    let outcome = tokio::time::timeout(WAIT, control.outcome).await.expect("run 1 ends or is dropped").unwrap_or("?");
    let mut problems = Vec::new();
    if overlapping > 1 {
        problems.push(format!(
            "{overlapping} runs of n2's per-node step of `ttl` were in flight at once (runs by attempt: {:?}); the run \
             of rolled-back attempt {a1} was still going when the next attempt's started",
            hooks.runs_of("n2")
        ));
    }
    if outcome == "finished" {
        // Its acknowledgement is written right after it finishes: does it land?
        let mut rx = n1.handle().watch_view();
        let late = tokio::time::timeout(
            WAIT,
            rx.wait_for(|v| v.flag_acks.get("ttl").and_then(|a| a.get("n2")).is_some_and(|a| a.attempt == a1)),
        )
        .await
        .is_ok();
        if late {
            problems.push(format!(
                "the run of ended attempt {a1} finished after the next attempt ({second:?}) and its acknowledgement \
                 landed in the store: {:?}",
                n1.view().flag_acks.get("ttl")
            ));
        }
    }
    assert!(second.is_ok(), "attempt 2 should enable ttl: {second:?}");
    assert!(problems.is_empty(), "hole c: {}", problems.join("; "));
}

// ---------------------------------------------------------------------------
// d. A live owner waiting for per-node steps is taken over as stale.
// ---------------------------------------------------------------------------

/// Hole d: takeover compares the observer's wall clock with the record's
/// `updated_ms`, and nothing refreshes the record while the owner waits for
/// the per-node steps: with a per-node step that works longer than
/// `stale_ms`, a live, healthy owner is taken over, again and again (every
/// new owner waits the same way). The same rule misfires under clock skew
/// above `stale_ms` (see DESIGN-flags.md: the fix bases takeover on the
/// owner's liveness lease and store revisions, so skew cannot matter). The
/// property: an owner that is alive and driving is never taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_a_live_owner_waiting_for_long_node_steps_is_not_taken_over() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let hooks = Hooks::default();
    let stale_ms = 600;
    let config = |id: &str| {
        let mut c = ttl_config(id, "1.1", dir.path(), &hooks);
        c.timeouts.stale_ms = stale_ms;
        c.timeouts.node_steps_ms = 20_000;
        c
    };
    let n1 = start(&store, config("n1")).await;
    let n2 = start(&store, config("n2")).await;
    let n3 = start(&store, config("n3")).await;
    hooks.node_work.lock().unwrap().insert("n2".into(), Duration::from_millis(3 * stale_ms));
    let mut views = n1.handle().subscribe();
    let result = tokio::time::timeout(WAIT, n1.enable(EnableRequest::flags(["ttl"]).experimental()))
        .await
        .expect("the enable returns");
    let mut owners = Vec::new();
    while let Ok(v) = views.try_recv() {
        if let Some(FlagState::Enabling { owner, .. }) = v.flags.get("ttl").map(|r| &r.state) {
            let entry = (owner.clone(), attempt_of(&v, "ttl"));
            if owners.last() != Some(&entry) {
                owners.push(entry);
            }
        }
    }
    assert!(
        result.is_ok() && owners.iter().all(|(o, _)| o == "n1"),
        "hole d: n1 was alive and waiting for n2's per-node step (which works {} ms, longer than stale_ms = \
         {stale_ms} ms) and was taken over as stale: enable returned {result:?}; (owner, attempt) of the enabling \
         records seen: {owners:?}",
        3 * stale_ms
    );
    drop((n1, n2, n3));
}

// ---------------------------------------------------------------------------
// e. Disable consults only the disabling node's release.
// ---------------------------------------------------------------------------

/// `meta_v2`: stable and reversible (with a disable hook) in 1.2; required
/// and irreversible in 2.0 (whose release reads only the new formats).
fn meta_registry(release: &str, hook_runs: &Arc<AtomicUsize>) -> FlagRegistry {
    let mut b = FlagRegistry::builder(release);
    b.declare(FlagDecl::new("base", "the 1.0 format").introduced_in("1.0"));
    let meta = FlagDecl::new("meta_v2", "records carry meta@2").introduced_in("1.1");
    b.declare(if release == "2.0" {
        meta.required()
    } else {
        let h = hook_runs.clone();
        meta.reversible().before_disable(move |_| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    });
    b.build().expect("valid declarations")
}

/// Hole e: disabling consults only the disabling node's declarations. A 1.2
/// node disables `meta_v2` while a 2.0 member, whose release requires it, is
/// running (on kv: the data went back to format 1, which 2.0 cannot read).
/// The property: a disable is refused while a member's release requires the
/// flag or cannot reverse it, naming those members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_disable_is_refused_naming_a_member_whose_release_requires_the_flag() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let hook_runs = Arc::new(AtomicUsize::new(0));
    let config = |id: &str, release: &str| {
        let mut c = support::config(id, release, dir.path(), &Counters::default());
        c.flags = meta_registry(release, &hook_runs);
        c.releases = None;
        c
    };
    let n1 = start(&store, config("n1", "1.2")).await;
    let n2 = start(&store, config("n2", "2.0")).await;
    support::bit(&n2, "meta_v2", true).await;
    let result = n1.disable("meta_v2").await;
    match result {
        Err(FlagError::DisableRefused(r)) => {
            let msg = r.to_string();
            assert!(msg.contains("n2") && msg.contains("meta_v2"), "the refusal must name n2 and the flag: {msg}");
        }
        other => panic!(
            "hole e: n1 (release 1.2) was allowed to disable `meta_v2` while n2 (release 2.0, running), whose \
             release requires it, is a member: {other:?}; the disable hook ran {} time(s); n2's bit of meta_v2 is \
             now {}",
            hook_runs.load(Ordering::SeqCst),
            n2.flag_enabled("meta_v2")
        ),
    }
}

// ---------------------------------------------------------------------------
// f. A join does not check protocol and transport versions.
// ---------------------------------------------------------------------------

/// Hole f: the join checks flags and cluster features, not versions. A node
/// whose protocol range shares nothing with a running member's, or whose
/// transport version is below a member's minimum compatible, joins and only
/// fails later on its links. The property: such a join is refused, naming
/// the member and both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_a_join_is_refused_when_its_protocol_or_transport_cannot_talk_to_a_running_member() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let base_only = |release: &str| {
        FlagRegistry::builder(release)
            .with(FlagDecl::new("base", "the 1.0 format").introduced_in("1.0"))
            .build()
            .expect("valid declarations")
    };
    let config = |id: &str, release: &str, protocol: (u16, u16), transport: (u32, u32)| {
        let mut c = NodeConfig::new(id, release, dir.path().join(id), base_only(release));
        c.protocol = ProtocolRange::new(protocol.0, protocol.1).unwrap();
        c.transport = TransportRange {
            min_compatible: TransportVersion::from_id(transport.0),
            current: TransportVersion::from_id(transport.1),
        };
        c
    };
    // n1 speaks v2..=v3 at transport 1003000, talking to 1002000 and later.
    let _n1 = start(&store, config("n1", "2.0", (2, 3), (1_002_000, 1_003_000))).await;
    let mut problems = Vec::new();
    // n2 speaks only v1: no common protocol version with n1.
    match Node::start(config("n2", "1.0", (1, 1), (1_000_000, 1_000_000)), store.clone()).await {
        Ok(n2) => problems.push(format!(
            "n2 (protocol v1..=v1) joined although running member n1 speaks v2..=v3 (no common version); members: {:?}",
            n2.view().members.keys().collect::<Vec<_>>()
        )),
        Err(e) => {
            let msg = e.to_string();
            if !(msg.contains("n1") && msg.contains("protocol")) {
                problems.push(format!("n2's refusal does not name n1 and the protocol ranges: {msg}"));
            }
        }
    }
    // n3 shares v2 with n1 but its transport 1001000 is below n1's minimum compatible 1002000.
    match Node::start(config("n3", "1.1", (1, 2), (1_000_000, 1_001_000)), store.clone()).await {
        Ok(n3) => problems.push(format!(
            "n3 (transport 1001000) joined although running member n1's minimum compatible transport is 1002000; \
             members: {:?}",
            n3.view().members.keys().collect::<Vec<_>>()
        )),
        Err(e) => {
            let msg = e.to_string();
            if !(msg.contains("n1") && msg.contains("transport")) {
                problems.push(format!("n3's refusal does not name n1 and the transport versions: {msg}"));
            }
        }
    }
    assert!(problems.is_empty(), "hole f: {}", problems.join("; "));
}

// ---------------------------------------------------------------------------
// g. A forgotten member keeps running.
// ---------------------------------------------------------------------------

/// Hole g: a member that was forgotten (or lost its lease) keeps running:
/// its heartbeat only logs "not a member any more". Here n2 (release 1.0)
/// is cut off, its lease expires, an operator forgets it, `ttl` (which 1.0
/// lacks) is enabled, and n2 comes back: its view says it is not a member
/// and shows a flag its release does not know, and it keeps serving. The
/// property: a node that is not a member (or lost its lease) stops serving
/// until it has joined again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_a_forgotten_member_stops_serving_when_it_comes_back() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n2_store = Cuttable::new(&store);
    let mut c2 = support::config("n2", "1.0", dir.path(), &counters);
    c2.liveness_ttl_s = 2;
    let n2 = Node::start(c2, n2_store.clone() as Arc<dyn MetaStore>).await.expect("n2 starts");
    let n1 = start(&store, support::config("n1", "1.1", dir.path(), &counters)).await;

    n2_store.cut();
    until_cut_off(&n2).await;
    until(&n1, "n2's lease expired", |v| v.member("n2").is_some_and(|m| !m.is_running())).await;
    n1.forget("n2").await.expect("a stopped member can be forgotten");
    n1.enable(EnableRequest::flags(["ttl"])).await.expect("no member lacks ttl any more");
    n2_store.heal();
    let view = until(&n2, "n2 sees that it was forgotten", |v| v.member("n2").is_none() && v.is_enabled("ttl")).await;
    assert!(
        stops_serving(&n2).await,
        "hole g: n2 was forgotten while cut off from the store, and `ttl`, which its release 1.0 does not know, was \
         enabled meanwhile; n2 is back, its own view (revision {}) says it is not a member, and it keeps serving",
        view.revision
    );
    drop((n1, n2));
}

// ---------------------------------------------------------------------------
// h. A deposed migration owner's step writes are not fenced.
// ---------------------------------------------------------------------------

/// Hole h: the owner lease guards the format commit but not what the step
/// itself writes through its context. An owner stalls in a step, its lease
/// expires (revoked here: the store deletes its owner key, as at expiry),
/// another node takes over and runs the step to the end; then the stalled
/// owner wakes up and its write lands over the new owner's. `still_owner()`
/// does not help: it changes only when a keep-alive happens to answer
/// `LeaseNotFound`. The property: once ownership moved, a deposed owner's
/// step writes are refused (a fencing token, the owner key's create
/// revision, guards every write a step makes through its context).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_a_step_of_a_deposed_migration_owner_cannot_write_after_the_takeover() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, support::config("n1", "1.0", dir.path(), &counters)).await;
    let n2 = start(&store, support::config("n2", "1.0", dir.path(), &counters)).await;
    let output = "app/svc/output";
    let (g, control) = gate();
    let first = Arc::new(Mutex::new(Some(g)));
    let still_owner_at_write = Arc::new(Mutex::new(Vec::new()));
    let mut migrations = Migrations::new();
    {
        let (first, seen) = (first.clone(), still_owner_at_write.clone());
        migrations
            .add_step(
                ServiceStep::new("svc", 0, "rewrite", MigrateGate::flag("base"), move |ctx: ServiceStepContext| {
                    let (first, seen) = (first.clone(), seen.clone());
                    async move {
                        let gate = first.lock().unwrap().take();
                        if let Some(g) = gate {
                            let _ = g.entered.send(ctx.node.clone());
                            let _ = g.go.await;
                        }
                        // The best a step can do today before writing.
                        seen.lock().unwrap().push((ctx.node.clone(), ctx.still_owner()));
                        if ctx.still_owner() {
                            ctx.store.put(output, ctx.node.clone().into_bytes()).await?;
                        }
                        Ok::<(), StepError>(())
                    }
                })
                .unwrap(),
            )
            .unwrap();
    }
    let migrations = Arc::new(migrations);
    let options = ServiceOptions { owner_ttl_s: 30, ..ServiceOptions::default() };
    let runner = |node: &Node| {
        ServiceRunner::new(
            migrations.clone(),
            store.clone(),
            Arc::new(node.clone()) as Arc<dyn Gates>,
            node.id(),
            options.clone(),
        )
        .unwrap()
    };
    let (r1, r2) = (runner(&n1), runner(&n2));
    let stalled = tokio::spawn(async move { r1.run_service_once("svc").await });
    let _ = tokio::time::timeout(WAIT, control.entered).await.expect("n1's step starts").unwrap();
    // n1 stalls; its owner lease expires (the store deletes its owner key).
    let key = MigrateKeys::new("rollgate/").owner("svc");
    let (owner, _) = store.get_json::<OwnerRecord>(&key).await.unwrap().expect("n1 holds the owner key");
    assert_eq!(owner.node, "n1");
    store.lease_revoke(owner.lease).await.unwrap();
    // n2 takes over and finishes the step.
    let report = r2.run_service_once("svc").await.expect("n2 runs the step");
    assert!(matches!(report.outcome, ServiceOutcome::Migrated { .. }), "{report:?}");
    assert_eq!(store.get(output).await.unwrap().map(|kv| kv.value), Some(b"n2".to_vec()));
    // n1 wakes up.
    let _ = control.go.send(());
    let n1_result = tokio::time::timeout(WAIT, stalled).await.expect("n1's run ends").unwrap();
    let value = store.get(output).await.unwrap().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    assert_eq!(
        value.as_deref(),
        Some("n2"),
        "hole h: n1's step ran on after its owner lease expired and n2 had taken over and finished the step; n1's \
         write landed over n2's (still_owner() at each write: {:?}; n1's run ended with {n1_result:?})",
        still_owner_at_write.lock().unwrap()
    );
    drop((n1, n2));
}
