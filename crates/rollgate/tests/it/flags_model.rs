//! A stateright model of the enable / join / crash / recovery protocol.
//!
//! The model's decisions are the real ones: each step builds a
//! `ClusterView` from the model state and asks the planner
//! (`begin_enable`, `join_check`, `recovery_for`). The epoch fence is
//! modelled by splitting each change into a read (which remembers the epoch)
//! and a commit (which succeeds only if the epoch did not move, else the
//! actor reads again). The checker explores every interleaving of:
//!
//! - `n1` enabling flag `f` (read, commit `enabling`, finish), and crashing
//!   at any point after its `enabling` commit, then maybe restarting;
//! - `old`, a node whose release lacks `f`, trying to join;
//! - `n2`, a running member, recovering an enabling whose owner is dead.
//!
//! Properties: a node lacking `f` is never a member while `f` is present
//! (I2, I5); every path ends with `f` enabled or disabled (I4: never stuck);
//! and each outcome (enable wins, join wins, resume, roll back) happens.

use std::collections::{BTreeMap, BTreeSet};

use rollgate::cluster::{ClusterView, EnableAttempt, FlagRecord, FlagState, LiveRecord, Member, NodeRecord, NodeState};
use rollgate::flags::plan::{self, Begin, PlanContext, Recovery};
use rollgate::flags::{FlagDecl, FlagRegistry};
use stateright::{Checker, Model, Property};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Flag {
    Off,
    /// Enabling, driven by this node.
    Enabling(&'static str),
    On,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Pc {
    Idle,
    /// Read the view at this epoch; the planner allowed the change.
    Read(u64),
    /// `n1` committed `enabling` and drives it.
    Driving,
    Done,
    Refused,
    Crashed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct State {
    epoch: u64,
    flag: Flag,
    n1_running: bool,
    old_member: bool,
    enabler: Pc,
    joiner: Pc,
    /// `n1` restarted after its crash (at most once).
    restarted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    EnableRead,
    EnableCommit,
    EnableFinish,
    Crash,
    Restart,
    JoinRead,
    JoinCommit,
    /// `n2` recovers an enabling whose owner is dead.
    Recover,
}

struct EnableJoin {
    registry: FlagRegistry,
}

fn record(id: &str, flag: bool, running: bool) -> NodeRecord {
    NodeRecord {
        supported_flags: if flag { ["f".to_string()].into() } else { BTreeSet::new() },
        flag_node_steps: if flag { ["f".to_string()].into() } else { BTreeSet::new() },
        state: if running { NodeState::Running } else { NodeState::Stopped },
        ..NodeRecord::new(id, if flag { "1.1" } else { "1.0" })
    }
}

fn member(id: &str, flag: bool, running: bool) -> (String, Member) {
    (
        id.to_string(),
        Member {
            record: record(id, flag, running),
            live: running.then_some(LiveRecord { lease: 1, heartbeat_ms: 0 }),
            effective: if running { NodeState::Running } else { NodeState::Stopped },
        },
    )
}

impl State {
    fn view(&self) -> ClusterView {
        let mut members: BTreeMap<String, Member> =
            [member("n1", true, self.n1_running), member("n2", true, true)].into();
        if self.old_member {
            members.extend([member("old", false, true)]);
        }
        let mut flags = BTreeMap::new();
        let state = match self.flag {
            Flag::Off => None,
            Flag::On => Some(FlagState::Enabled { since_ms: 1 }),
            Flag::Enabling(owner) => Some(FlagState::Enabling { owner: owner.into(), started_ms: 1, step: None }),
        };
        if let Some(state) = state {
            let attempt = matches!(state, FlagState::Enabling { .. })
                .then(|| EnableAttempt { id: "a".into(), node_steps: BTreeSet::new() });
            flags.insert("f".to_string(), FlagRecord { state, updated_ms: 1, info: None, attempt, note: None });
        }
        ClusterView {
            cluster_id: "c".into(),
            epoch: self.epoch,
            revision: self.epoch as i64,
            epoch_revision: self.epoch as i64,
            members,
            flags,
            flag_acks: BTreeMap::new(),
        }
    }
}

fn ctx<'a>(me: &'a str, driving: &'a BTreeSet<String>) -> PlanContext<'a> {
    PlanContext { me, now_ms: 1, stale_ms: 1_000, driving }
}

impl Model for EnableJoin {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            epoch: 1,
            flag: Flag::Off,
            n1_running: true,
            old_member: false,
            enabler: Pc::Idle,
            joiner: Pc::Idle,
            restarted: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        match s.enabler {
            Pc::Idle => actions.push(Action::EnableRead),
            Pc::Read(_) => actions.push(Action::EnableCommit),
            Pc::Driving => actions.extend([Action::EnableFinish, Action::Crash]),
            Pc::Crashed if !s.restarted => actions.push(Action::Restart),
            _ => {}
        }
        match s.joiner {
            Pc::Idle => actions.push(Action::JoinRead),
            Pc::Read(_) => actions.push(Action::JoinCommit),
            _ => {}
        }
        if matches!(s.flag, Flag::Enabling(owner) if owner == "n1") && !s.n1_running {
            actions.push(Action::Recover);
        }
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        let mut n = s.clone();
        let view = s.view();
        let none = BTreeSet::new();
        match action {
            Action::EnableRead => {
                let driving: BTreeSet<String> = BTreeSet::new();
                n.enabler = match plan::begin_enable(&view, &self.registry, "f", "a", &ctx("n1", &driving)) {
                    Ok(Begin::Write(_)) => Pc::Read(s.epoch),
                    Ok(Begin::AlreadyEnabled) => Pc::Done,
                    Err(_) => Pc::Refused,
                };
            }
            Action::EnableCommit => {
                let Pc::Read(seen) = s.enabler else { return None };
                if seen != s.epoch {
                    n.enabler = Pc::Idle; // fenced: read again
                } else {
                    n.flag = Flag::Enabling("n1");
                    n.epoch += 1;
                    n.enabler = Pc::Driving;
                }
            }
            Action::EnableFinish => {
                // The final commit re-checks every member (under the fence).
                if view.members.values().any(|m| !m.record.supported_flags.contains("f")) {
                    n.flag = Flag::Off;
                    n.enabler = Pc::Refused;
                } else if s.flag == Flag::Enabling("n1") {
                    n.flag = Flag::On;
                    n.enabler = Pc::Done;
                } else {
                    n.enabler = Pc::Refused; // taken over or rolled back meanwhile
                    return Some(n);
                }
                n.epoch += 1;
            }
            Action::Crash => {
                n.enabler = Pc::Crashed;
                n.n1_running = false;
            }
            Action::Restart => {
                // The restarted owner recovers its own enabling at boot.
                n.n1_running = true;
                n.restarted = true;
                let view = n.view();
                match plan::recovery_for(&view, &self.registry, "f", &ctx("n1", &none)) {
                    Recovery::ResumeEnable => {
                        n.flag = Flag::Enabling("n1");
                        n.epoch += 1;
                        n.enabler = Pc::Driving;
                    }
                    Recovery::RollBackEnable { .. } => {
                        n.flag = Flag::Off;
                        n.epoch += 1;
                        n.enabler = Pc::Refused;
                    }
                    Recovery::Nothing | Recovery::FinishDisable => n.enabler = Pc::Done,
                }
            }
            Action::Recover => match plan::recovery_for(&view, &self.registry, "f", &ctx("n2", &none)) {
                Recovery::ResumeEnable => {
                    // n2 takes over and finishes (its own final commit).
                    n.flag = Flag::On;
                    n.epoch += 2;
                }
                Recovery::RollBackEnable { .. } => {
                    n.flag = Flag::Off;
                    n.epoch += 1;
                }
                _ => return None,
            },
            Action::JoinRead => {
                let old = record("old", false, true);
                n.joiner = match plan::join_check(&view, &old) {
                    Ok(()) => Pc::Read(s.epoch),
                    Err(_) => Pc::Refused,
                };
            }
            Action::JoinCommit => {
                let Pc::Read(seen) = s.joiner else { return None };
                if seen != s.epoch {
                    n.joiner = Pc::Idle;
                } else {
                    n.old_member = true;
                    n.epoch += 1;
                    n.joiner = Pc::Done;
                }
            }
        }
        Some(n)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no member lacks a present flag (I2, I5)", |_, s: &State| {
                !(s.old_member && s.flag != Flag::Off)
            }),
            Property::eventually("settled: never stuck enabling (I4)", |_, s: &State| {
                !matches!(s.flag, Flag::Enabling(_))
                    && matches!(s.enabler, Pc::Done | Pc::Refused | Pc::Crashed)
                    && matches!(s.joiner, Pc::Done | Pc::Refused)
            }),
            Property::sometimes("the enable wins", |_, s: &State| s.flag == Flag::On && s.joiner == Pc::Refused),
            Property::sometimes("the join wins", |_, s: &State| s.old_member && s.enabler == Pc::Refused),
            Property::sometimes("a crash is resumed", |_, s: &State| s.restarted && s.flag == Flag::On),
            Property::sometimes("a crash is rolled back", |_, s: &State| {
                s.enabler == Pc::Crashed && s.flag == Flag::Off
            }),
        ]
    }
}

#[test]
fn enable_and_join_are_safe_and_never_stuck_in_every_interleaving() {
    let registry = FlagRegistry::builder("1.1")
        .with(FlagDecl::new("f", "the new format").introduced_in("1.1").on_enable_node(|_| async { Ok(()) }))
        .build()
        .unwrap();
    let checker = EnableJoin { registry }.checker().spawn_bfs().join();
    checker.assert_properties();
    eprintln!("states explored: {}", checker.unique_state_count());
    assert!(checker.unique_state_count() > 20, "the model explores the interleavings");
}
