//! A stateright model of the flag protocol that drives the real planner
//! (`rollgate::flags::plan`): every decision a node makes in the model is
//! the return value of the planner function the runtime calls at the same
//! point (`plan_join`, `begin_enable`, `drive_enable`, `node_step_actions`,
//! `ack_txn`, `recovery_for`, `begin_disable`, `drive_disable`, `serving`,
//! `apply_view`, `required_at_boot`, `unknown_present`). The model's own code is
//! only the store's semantics (the epoch-fenced commit, the guard of an
//! acknowledgement transaction, lease expiry), the conversions between its
//! compact state and `ClusterView` / `ViewOp`, the environment's
//! nondeterminism and what the runtime does with an action (e.g. a fenced
//! node drops its drivers and runs). No rule is copied here.
//!
//! Three nodes (`n1`, `n2` members; `n3` outside until it joins), two flags:
//! `f1` with a cluster step and a per-node step, `f2` depending on `f1`,
//! reversible with a disable hook. Releases: `Old` (neither flag), `New`
//! (both), `Newer` (both required). Environment: operator enables and
//! disables, joins of each release, crash and restart, a failing step, a node
//! cut off from the store, lease expiry, a slow clock (bounded skew: one tick
//! per lease), forget, duplicated and late views, late acknowledgements,
//! takeovers. Three configurations (one test each) split the faults so that
//! each fits CI: `enable_join` (an enable, a join of each release),
//! `disable_cut_skew` (a disable, a cut-off node on a slow clock, forget, a
//! join), `takeover_crash` (an enable, a crash and restart at every step, a
//! failing step). Bounds, each to keep the state space finite and small:
//! every fault has a budget of one per path; faults happen while a protocol
//! runs; the operator asks `n1` (`n2` is its mirror image); a node's view
//! lags the store by at most one change (it may act on the previous view,
//! and its commit then meets the newer store); time jumps from one deadline
//! to the next (leases, serving deadlines, an owner's deadline), and a node
//! that reaches the store catches up when time passes. Each test prints the
//! states explored and the time.
//!
//! Properties (named in `flags::plan`'s module docs, with the invariants):
//! P1 bit implies prepared, P2 no serving bit after a disable, P3 one run per
//! (node, flag), P4 a serving node knows its flags and is a member, P5 no
//! member lacks a present flag, P6 no late ack lands, P7 no member's required
//! flag disabled, P8 a live owner is never replaced, P9 every path ends
//! enabled or disabled. Two mutation tests weaken one rule each through
//! `Rules::weakened` and assert the checker then finds a counterexample.
//!
//! A test binary of its own (`cargo test -p rollgate --test flags_model`):
//! it keeps both cores busy for minutes, which would starve the lease-timed
//! tests of `tests/it` if it ran beside them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use rollgate::cluster::{
    ClusterView, EnableAttempt, FlagAck, FlagRecord, FlagState, Keys, LiveRecord, Member, NodeRecord, NodeState, ViewOp,
};
use rollgate::flags::plan::{
    self, Begin, BeginDisable, Bounds, Confirmations, DisableDriver, DriveAction, EnableDriver, Me, Mono, Mutation,
    NodeRun, Outcome, Recovery, RequiredState, Rules, Serving, StepAction, StepState,
};
use rollgate::flags::{FlagDecl, FlagRegistry};
use rollgate::store::{CompareTarget, TxnOp};
use stateright::{Checker, HasDiscoveries, Model, Property};

const N: usize = 3;
const NAMES: [&str; N] = ["n1", "n2", "n3"];
const FLAGS: [&str; 2] = ["f1", "f2"];
const ROOT: &str = "m/";
/// In ticks: lease and view lease 4, margin 25% (serve 3, wait 5), steps 2.
const BOUNDS: Bounds = Bounds { node_steps_ms: 2, ttl_ms: 4, view_lease_ms: 4, margin_ppm: 250_000 };

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Rel {
    Old,
    New,
    Newer,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Rec {
    Disabled,
    Enabling { owner: u8, inc: u64, attempt: u8 },
    Enabled,
    Disabling { owner: u8, inc: u64, attempt: u8 },
}

/// The metadata store (also what a node's view holds).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Store {
    rev: i64,
    epoch: u64,
    epoch_rev: i64,
    /// (release, incarnation, declared running)
    members: [Option<(Rel, u64, bool)>; N],
    live: [bool; N],
    /// (record, mod revision; 0: no record)
    flags: [(Rec, i64); 2],
    /// (attempt, incarnation, ok)
    acks: [[Option<(u8, u64, bool)>; N]; 2],
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Drv {
    E(EnableDriver),
    D(DisableDriver),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RunPc {
    Running,
    Acking(bool),
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Up {
    rel: Rel,
    inc: u64,
    seen: Store,
    bits: [bool; 2],
    bits_rev: Option<i64>,
    lease_at: u64,
    view_at: u64,
    booted: bool,
    driver: Option<(u8, Drv)>,
    /// The join's flags still to drive: (flag, attempt, revision).
    queue: Vec<(u8, u8, i64)>,
    /// (flag, attempt, fence revision, pc)
    runs: Vec<(u8, u8, i64, RunPc)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct NodeSt {
    up: Option<Up>,
    cut: bool,
    slow: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Budget {
    enables: u8,
    disables: u8,
    joins: u8,
    crashes: u8,
    restarts: u8,
    cuts: u8,
    fails: u8,
    slow: u8,
    forgets: u8,
}

/// For properties only; never read by the model's decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Ghost {
    bad_enable: bool,
    bad_disable: bool,
    late_ack: bool,
    replaced_live_owner: bool,
    bad_dup: bool,
    disable_done: [bool; 2],
    prepared: BTreeSet<(u8, u64, u8)>,
    enabled_f2: bool,
    join_refused: bool,
    resumed: bool,
    rolled_back: bool,
    refused_disable: bool,
    fenced_cut: bool,
    ack_refused: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    store: Store,
    /// Store time; a lease expires at `expires[i]`.
    time: u64,
    expires: [u64; N],
    nodes: [NodeSt; N],
    next_attempt: u8,
    next_inc: u64,
    budget: Budget,
    ghost: Ghost,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Tick,
    SlowTick(u8),
    Deliver(u8),
    Enable(u8, u8),
    Disable(u8, u8),
    DriverAct(u8),
    StepDone(u8, bool),
    Recover(u8, u8),
    StartRun(u8, u8),
    AbortRun(u8, u8),
    FinishRun(u8, u8, bool),
    AckDisable(u8, u8),
    WriteAck(u8, u8),
    Join(u8, Rel),
    BootDone(u8),
    Crash(u8),
    Cut(u8),
    Heal(u8),
    Forget(u8),
}

struct FlagModel {
    name: &'static str,
    init: State,
    joins: Vec<(u8, Rel)>,
    max_time: u64,
    rules: Rules,
    old: FlagRegistry,
    new: FlagRegistry,
    newer: FlagRegistry,
    keys: Keys,
}

thread_local! {
    static VIEWS: RefCell<HashMap<Store, Arc<ClusterView>>> = RefCell::new(HashMap::new());
}

fn registry(rel: Rel) -> FlagRegistry {
    let release = match rel {
        Rel::Old => return FlagRegistry::builder("1.0").build().unwrap(),
        Rel::New => "1.1",
        Rel::Newer => "2.0",
    };
    let f1 = FlagDecl::new("f1", "the new format")
        .introduced_in("1.1")
        .on_enable_cluster(|_| async { Ok(()) })
        .on_enable_node(|_| async { Ok(()) });
    let f1 = if rel == Rel::Newer { f1.required() } else { f1 };
    let f2 = FlagDecl::new("f2", "built on f1").introduced_in("1.1").depends_on(["f1"]);
    let f2 = if rel == Rel::Newer { f2.required() } else { f2.reversible().before_disable(|_| async { Ok(()) }) };
    FlagRegistry::builder(release).with(f1).with(f2).build().unwrap()
}

fn node_index(id: &str) -> usize {
    NAMES.iter().position(|n| *n == id).expect("a model node")
}

fn flag_index(name: &str) -> usize {
    FLAGS.iter().position(|n| *n == name).expect("a model flag")
}

fn attempt_of(id: &str) -> u8 {
    id.trim_start_matches('a').parse().expect("a model attempt id")
}

impl FlagModel {
    fn reg(&self, rel: Rel) -> &FlagRegistry {
        match rel {
            Rel::Old => &self.old,
            Rel::New => &self.new,
            Rel::Newer => &self.newer,
        }
    }

    fn record(&self, i: usize, rel: Rel, inc: u64, running: bool) -> NodeRecord {
        let reg = self.reg(rel);
        NodeRecord {
            supported_flags: reg.names(),
            flag_node_steps: reg.node_step_flags(),
            required_flags: reg.release_flags().required,
            irreversible_flags: reg.iter().filter(|(_, d)| !d.is_reversible()).map(|(_, d)| d.name().into()).collect(),
            incarnation: inc,
            view_lease_ms: BOUNDS.view_lease_ms,
            state: if running { NodeState::Running } else { NodeState::Stopped },
            ..NodeRecord::new(NAMES[i], reg.release())
        }
    }

    /// The `ClusterView` of a store (data conversion, memoised: the planner is pure).
    fn view(&self, s: &Store) -> Arc<ClusterView> {
        if let Some(v) = VIEWS.with(|m| m.borrow().get(s).cloned()) {
            return v;
        }
        let mut members = BTreeMap::new();
        for (i, m) in s.members.iter().enumerate() {
            let Some((rel, inc, running)) = *m else { continue };
            let live = s.live[i].then_some(LiveRecord { lease: inc as i64, heartbeat_ms: 0 });
            let effective = if running && live.is_some() { NodeState::Running } else { NodeState::Stopped };
            members.insert(NAMES[i].to_string(), Member { record: self.record(i, rel, inc, running), live, effective });
        }
        let (mut flags, mut flag_revisions, mut flag_acks) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for (f, (rec, rev)) in s.flags.iter().enumerate() {
            if *rev == 0 {
                continue;
            }
            let attempt = |owner: u8, inc: u64, a: u8| {
                (
                    NAMES[owner as usize].to_string(),
                    Some(EnableAttempt { id: format!("a{a}"), node_steps: BTreeSet::new(), owner_incarnation: inc }),
                )
            };
            let (state, attempt) = match *rec {
                Rec::Disabled => (FlagState::Disabled, None),
                Rec::Enabled => (FlagState::Enabled { since_ms: 0 }, None),
                Rec::Enabling { owner, inc, attempt: a } => {
                    let (owner, at) = attempt(owner, inc, a);
                    (FlagState::Enabling { owner, started_ms: 0, step: None }, at)
                }
                Rec::Disabling { owner, inc, attempt: a } => {
                    let (owner, at) = attempt(owner, inc, a);
                    (FlagState::Disabling { owner, started_ms: 0 }, at)
                }
            };
            let info = self.new.get(FLAGS[f]).map(|d| d.info());
            flags.insert(FLAGS[f].to_string(), FlagRecord { state, updated_ms: 0, info, attempt, note: None });
            flag_revisions.insert(FLAGS[f].to_string(), *rev);
        }
        for (f, acks) in s.acks.iter().enumerate() {
            let mut by_node = BTreeMap::new();
            for (i, ack) in acks.iter().enumerate() {
                if let Some((a, inc, ok)) = *ack {
                    let error = (!ok).then(|| "boom".to_string());
                    by_node.insert(
                        NAMES[i].to_string(),
                        FlagAck { attempt: format!("a{a}"), error, at_ms: 0, incarnation: inc },
                    );
                }
            }
            if !by_node.is_empty() {
                flag_acks.insert(FLAGS[f].to_string(), by_node);
            }
        }
        let view = Arc::new(ClusterView {
            cluster_id: "model".into(),
            epoch: s.epoch,
            revision: s.rev,
            epoch_revision: s.epoch_rev,
            members,
            flags,
            flag_acks,
            flag_revisions,
            floor: None,
        });
        VIEWS.with(|m| m.borrow_mut().insert(s.clone(), view.clone()));
        view
    }

    /// The store's epoch-fenced commit of `ops` (data conversion).
    fn apply(&self, s: &mut Store, ops: &[ViewOp]) {
        s.rev += 1;
        s.epoch += 1;
        s.epoch_rev = s.rev;
        for op in ops {
            match op {
                ViewOp::PutFlag(name, rec) => {
                    let owned = |owner: &str| {
                        let a = rec.attempt.as_ref().expect("an in-progress record has an attempt");
                        (node_index(owner) as u8, a.owner_incarnation, attempt_of(&a.id))
                    };
                    let r = match &rec.state {
                        FlagState::Disabled => Rec::Disabled,
                        FlagState::Enabled { .. } => Rec::Enabled,
                        FlagState::Enabling { owner, .. } => {
                            let (owner, inc, attempt) = owned(owner);
                            Rec::Enabling { owner, inc, attempt }
                        }
                        FlagState::Disabling { owner, .. } => {
                            let (owner, inc, attempt) = owned(owner);
                            Rec::Disabling { owner, inc, attempt }
                        }
                    };
                    s.flags[flag_index(name)] = (r, s.rev);
                }
                ViewOp::PutMember(r) => {
                    let rel = match r.release.as_str() {
                        "1.0" => Rel::Old,
                        "1.1" => Rel::New,
                        _ => Rel::Newer,
                    };
                    s.members[node_index(&r.node_id)] = Some((rel, r.incarnation, r.state == NodeState::Running));
                }
                ViewOp::RemoveMember(n) => {
                    s.members[node_index(n)] = None;
                    s.live[node_index(n)] = false;
                }
                ViewOp::DeleteFlag(_) | ViewOp::PutFloor(_) | ViewOp::Raw(_) => {
                    unreachable!("the flag planner writes no such op")
                }
            }
        }
    }

    fn local(&self, st: &State, i: usize) -> Mono {
        Mono(st.time - st.nodes[i].slow)
    }

    fn driving(up: &Up) -> BTreeSet<String> {
        let mut d: BTreeSet<String> = up.queue.iter().map(|(f, _, _)| FLAGS[*f as usize].to_string()).collect();
        if let Some((f, _)) = &up.driver {
            d.insert(FLAGS[*f as usize].to_string());
        }
        d
    }

    fn me<'a>(&self, i: usize, up: &Up, driving: &'a BTreeSet<String>) -> Me<'a> {
        Me {
            id: NAMES[i],
            incarnation: up.inc,
            driving,
            bits_revision: up.bits_rev.unwrap_or(0),
            wall_ms: 0,
            rules: self.rules,
        }
    }

    /// `plan::serving` for node i (its own clock and confirmations).
    fn serving(&self, st: &State, i: usize) -> Serving {
        let up = st.nodes[i].up.as_ref().expect("an up node");
        let driving = Self::driving(up);
        let c = Confirmations { lease_at: Some(Mono(up.lease_at)), view_at: Some(Mono(up.view_at)), stopping: false };
        let view = self.view(&up.seen);
        plan::serving(&view, self.reg(up.rel), &self.me(i, up, &driving), &c, self.local(st, i), &BOUNDS)
    }

    fn serves(&self, st: &State, i: usize) -> bool {
        st.nodes[i].up.as_ref().is_some_and(|u| u.booted) && matches!(self.serving(st, i), Serving::Serve { .. })
    }

    fn decide(&self, st: &State, i: usize, view: &ClusterView) -> Option<DriveAction> {
        let up = st.nodes[i].up.as_ref()?;
        let (f, drv) = up.driver.as_ref()?;
        let driving = Self::driving(up);
        let me = self.me(i, up, &driving);
        let (reg, flag, now) = (self.reg(up.rel), FLAGS[*f as usize], self.local(st, i));
        Some(match drv {
            Drv::E(d) => plan::drive_enable(view, reg, flag, d, now, &BOUNDS, &me),
            Drv::D(d) => plan::drive_disable(view, reg, flag, d, now, &BOUNDS, &me),
        })
    }

    fn step_actions(&self, up: &Up, i: usize) -> Vec<StepAction> {
        let runs: BTreeMap<String, NodeRun> = up
            .runs
            .iter()
            .map(|(f, a, _, pc)| {
                (FLAGS[*f as usize].to_string(), NodeRun { attempt: format!("a{a}"), done: *pc == RunPc::Done })
            })
            .collect();
        let driving = Self::driving(up);
        plan::node_step_actions(&self.view(&up.seen), self.reg(up.rel), &self.me(i, up, &driving), &runs)
    }

    /// The next store time at which something depends on time: a lease
    /// expires, a fenced-to-be node's serving deadline, an owner's deadline
    /// (time jumps from event to event; in between, nothing decides on it).
    fn next_event(&self, st: &State) -> Option<u64> {
        let mut events = Vec::new();
        for i in 0..N {
            let node = &st.nodes[i];
            if st.store.live[i] && (node.up.is_none() || node.cut) {
                events.push(st.expires[i]);
            }
            let Some(up) = &node.up else { continue };
            if node.cut
                && let Serving::Serve { until } = self.serving(st, i)
            {
                events.push(until.0 + node.slow);
            }
            if let Some(DriveAction::Wait { until: Some(u), .. }) = self.decide(st, i, &self.view(&up.seen)) {
                events.push(u.0 + node.slow);
            }
        }
        events.into_iter().filter(|t| *t > st.time && *t <= self.max_time).min()
    }
}

#[path = "flags_model/transitions.rs"]
mod transitions;

impl Model for FlagModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.init.clone()]
    }

    fn actions(&self, st: &State, out: &mut Vec<Action>) {
        self.offer(st, out);
    }

    fn next_state(&self, st: &State, action: Action) -> Option<State> {
        let mut n = st.clone();
        self.step(&mut n, action)?;
        self.settle_fences(&mut n);
        Some(n)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("P1 bit implies prepared", |m: &FlagModel, st: &State| {
                !st.ghost.bad_enable
                    && (0..N).all(|i| {
                        let Some(up) = st.nodes[i].up.as_ref().filter(|_| m.serves(st, i)) else { return true };
                        (0..2).all(|f| {
                            !up.bits[f]
                                || !m.reg(up.rel).get(FLAGS[f]).is_some_and(|d| d.has_node_step())
                                || st.ghost.prepared.contains(&(i as u8, up.inc, f as u8))
                        })
                    })
            }),
            Property::always("P2 no serving bit after a disable", |m: &FlagModel, st: &State| {
                (0..2).all(|f| {
                    !st.ghost.disable_done[f]
                        || (0..N).all(|i| !m.serves(st, i) || !st.nodes[i].up.as_ref().is_some_and(|u| u.bits[f]))
                })
            }),
            Property::always("P3 one run per (node, flag)", |_: &FlagModel, st: &State| {
                st.nodes
                    .iter()
                    .filter_map(|n| n.up.as_ref())
                    .all(|u| (0..2u8).all(|f| u.runs.iter().filter(|r| r.0 == f && r.3 != RunPc::Done).count() <= 1))
            }),
            Property::always("P4 serving node knows its flags and is a member", |m: &FlagModel, st: &State| {
                (0..N).all(|i| {
                    if !m.serves(st, i) {
                        return true;
                    }
                    let up = st.nodes[i].up.as_ref().expect("up");
                    let member = st.store.members[i].is_some_and(|(_, inc, _)| inc == up.inc);
                    member && (0..2).all(|f| st.store.flags[f].0 == Rec::Disabled || m.reg(up.rel).supports(FLAGS[f]))
                })
            }),
            Property::always("P5 no member lacks a present flag", |m: &FlagModel, st: &State| {
                st.store.members.iter().flatten().all(|(rel, _, _)| {
                    (0..2).all(|f| st.store.flags[f].0 == Rec::Disabled || m.reg(*rel).supports(FLAGS[f]))
                })
            }),
            Property::always("P6 no late ack lands", |_: &FlagModel, st: &State| !st.ghost.late_ack),
            Property::always("P7 no member's required flag disabled", |_: &FlagModel, st: &State| {
                !st.ghost.bad_disable
            }),
            Property::always("P8 a live owner is never replaced", |_: &FlagModel, st: &State| {
                !st.ghost.replaced_live_owner
            }),
            Property::always("duplicated views are ignored", |_: &FlagModel, st: &State| !st.ghost.bad_dup),
            Property::eventually("P9 every path ends enabled or disabled", |_: &FlagModel, st: &State| {
                st.store.flags.iter().all(|(r, _)| matches!(r, Rec::Disabled | Rec::Enabled))
                    && st.nodes.iter().filter_map(|n| n.up.as_ref()).all(|u| u.driver.is_none() && u.queue.is_empty())
            }),
            Property::sometimes("f2 is enabled", |_: &FlagModel, st: &State| st.ghost.enabled_f2),
            Property::sometimes("a join is refused", |_: &FlagModel, st: &State| st.ghost.join_refused),
            Property::sometimes("an orphan is resumed", |_: &FlagModel, st: &State| st.ghost.resumed),
            Property::sometimes("an enabling is rolled back", |_: &FlagModel, st: &State| st.ghost.rolled_back),
            Property::sometimes("a disable is refused naming a member", |_: &FlagModel, st: &State| {
                st.ghost.refused_disable
            }),
            Property::sometimes("a disable completes", |_: &FlagModel, st: &State| st.ghost.disable_done[1]),
            Property::sometimes("a cut node is fenced", |_: &FlagModel, st: &State| st.ghost.fenced_cut),
            Property::sometimes("a late ack is refused", |_: &FlagModel, st: &State| st.ghost.ack_refused),
        ]
    }
}

fn store(members: [Option<(Rel, u64, bool)>; N], flags: [(Rec, i64); 2]) -> Store {
    Store {
        rev: 10,
        epoch: 10,
        epoch_rev: 10,
        live: [members[0].is_some(), members[1].is_some(), members[2].is_some()],
        members,
        flags,
        acks: [[None; N]; 2],
    }
}

fn model(
    name: &'static str,
    budget: Budget,
    enabled: bool,
    joins: Vec<(u8, Rel)>,
    max_time: u64,
    rules: Rules,
) -> FlagModel {
    let on = if enabled { (Rec::Enabled, 10) } else { (Rec::Disabled, 0) };
    let three = false;
    let members = [Some((Rel::New, 1, true)), Some((Rel::New, 2, true)), three.then_some((Rel::New, 3, true))];
    let s = store(members, [on.clone(), on]);
    let up = |inc: u64| Up {
        rel: Rel::New,
        inc,
        seen: s.clone(),
        bits: [enabled, enabled],
        bits_rev: Some(10),
        lease_at: 0,
        view_at: 0,
        booted: true,
        driver: None,
        queue: Vec::new(),
        runs: Vec::new(),
    };
    let node = |inc: Option<u64>| NodeSt { up: inc.map(up), cut: false, slow: 0 };
    let mut prepared = BTreeSet::new();
    if enabled {
        prepared.extend([(0, 1, 0), (1, 2, 0)]);
    }
    let init = State {
        store: s.clone(),
        time: 0,
        expires: [BOUNDS.ttl_ms; N],
        nodes: [node(Some(1)), node(Some(2)), node(three.then_some(3))],
        next_attempt: 1,
        next_inc: 4,
        budget,
        ghost: Ghost { prepared, ..Ghost::default() },
    };
    FlagModel {
        name,
        init,
        joins,
        max_time,
        rules,
        old: registry(Rel::Old),
        new: registry(Rel::New),
        newer: registry(Rel::Newer),
        keys: Keys::new(ROOT),
    }
}

fn enable_join(rules: Rules) -> FlagModel {
    let budget = Budget { enables: 1, joins: 1, ..Budget::default() };
    model("enable_join", budget, false, vec![(2, Rel::Old), (2, Rel::New), (2, Rel::Newer)], 4, rules)
}

fn disable_cut_skew(rules: Rules) -> FlagModel {
    let budget = Budget { disables: 1, joins: 1, cuts: 1, slow: 1, forgets: 1, ..Budget::default() };
    model("disable_cut_skew", budget, true, vec![(2, Rel::Newer), (2, Rel::Old)], 8, rules)
}

fn takeover_crash(rules: Rules) -> FlagModel {
    let budget = Budget { enables: 1, crashes: 1, restarts: 1, fails: 1, ..Budget::default() };
    model("takeover_crash", budget, false, Vec::new(), 6, rules)
}

/// Most states one configuration may explore: an accidental blow-up fails
/// the test instead of timing it out.
const MAX_STATES: usize = 5_000_000;

fn check(m: FlagModel, sometimes: &[&str]) {
    let name = m.name;
    let started = Instant::now();
    let checker = m.checker().threads(2).target_state_count(MAX_STATES).spawn_bfs().join();
    eprintln!(
        "flags model {name}: {} states explored ({} unique), max depth {}, in {:.1?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    assert!(checker.state_count() < MAX_STATES, "{name}: the state space blew up");
    for p in checker.model().properties() {
        let found = checker.discovery(p.name);
        match p.expectation {
            stateright::Expectation::Sometimes => {
                if sometimes.contains(&p.name) {
                    assert!(found.is_some(), "{name}: {:?} never happens", p.name);
                }
            }
            _ => assert!(found.is_none(), "{name}: {:?} fails: {:#?}", p.name, found.map(|f| f.into_actions())),
        }
    }
}

#[test]
fn the_flag_protocol_holds_while_enabling_and_joining() {
    check(
        enable_join(Rules::strict()),
        &["f2 is enabled", "a join is refused", "an enabling is rolled back", "a late ack is refused"],
    );
}

#[test]
fn the_flag_protocol_holds_while_disabling_with_a_node_cut_off_and_a_slow_clock() {
    check(
        disable_cut_skew(Rules::strict()),
        &["a disable is refused naming a member", "a disable completes", "a cut node is fenced", "a join is refused"],
    );
}

#[test]
fn the_flag_protocol_holds_over_crashes_restarts_and_takeovers() {
    check(takeover_crash(Rules::strict()), &["an orphan is resumed", "an enabling is rolled back"]);
}

/// The model with one rule weakened: the checker must find a counterexample
/// of one of `properties` (it stops at the first, shortest, failure).
fn mutated(m: FlagModel, properties: &[&'static str]) {
    let name = m.name;
    let started = Instant::now();
    let checker = m.checker().threads(2).finish_when(HasDiscoveries::AnyFailures).spawn_bfs().join();
    let found = properties.iter().find_map(|p| checker.discovery(p).map(|path| (p, path)));
    eprintln!(
        "flags model {name}, weakened: {} unique states in {:.1?}; counterexample: {:?}",
        checker.unique_state_count(),
        started.elapsed(),
        found.as_ref().map(|(p, _)| p)
    );
    let (_, path) = found.unwrap_or_else(|| panic!("{name}: the weakened rule went unnoticed by {properties:?}"));
    eprintln!("{:#?}", path.into_actions());
}

#[test]
fn a_model_whose_finish_skips_the_ack_check_finds_a_counterexample() {
    mutated(enable_join(Rules::weakened(Mutation::FinishWithoutAcks)), &["P1 bit implies prepared"]);
}

#[test]
fn a_model_whose_fence_has_no_margin_finds_a_counterexample() {
    // A cut-off node on a slow clock serves past the store's expiry of its
    // lease: with a disable completing then (P2), or after being forgotten (P4).
    mutated(
        disable_cut_skew(Rules::weakened(Mutation::NoFenceMargin)),
        &["P2 no serving bit after a disable", "P4 serving node knows its flags and is a member"],
    );
}
