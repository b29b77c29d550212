//! The enable protocol: plan a request, begin (or take over) an attempt,
//! and the owner's whole side of it ([`drive_enable`]).

use std::collections::BTreeSet;

use serde::Serialize;

use super::recovery::owner_gone;
use super::{Blocker, Bounds, EnableRequest, Me, Mono, in_progress, step_nodes, support_blockers};
use crate::cluster::{ClusterView, EnableAttempt, FlagRecord, FlagState, ViewOp};
use crate::flags::decl::Stability;
use crate::flags::registry::FlagRegistry;
use rollgate_store::Revision;

/// What an enable request would do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EnablePlan {
    /// The flags to enable, dependencies first.
    pub order: Vec<String>,
    /// Requested flags that are enabled already.
    pub already_enabled: Vec<String>,
    /// Everything that blocks the request (empty: it can go ahead).
    pub blockers: Vec<Blocker>,
}

/// The requested flags with their dependencies, dependencies first.
fn wanted_in_order(registry: &FlagRegistry, request: &EnableRequest, plan: &mut EnablePlan) -> Vec<String> {
    let mut wanted: Vec<String> = Vec::new();
    if request.all {
        wanted.extend(
            registry
                .topological()
                .filter(|d| request.experimental || d.get_stability() != Stability::Experimental)
                .map(|d| d.name().to_string()),
        );
    }
    for name in &request.flags {
        match registry.get(name) {
            None => {
                plan.blockers.push(Blocker::UnknownFlag { flag: name.clone(), release: registry.release().to_string() })
            }
            Some(d) if d.get_stability() == Stability::Experimental && !request.experimental => {
                plan.blockers.push(Blocker::Experimental { flag: name.clone(), needed_by: None })
            }
            Some(_) => wanted.push(name.clone()),
        }
    }
    let mut closure = BTreeSet::new();
    for name in &wanted {
        for dep in registry.with_dependencies(name) {
            let d = registry.get(&dep).map(|d| d.get_stability());
            if d == Some(Stability::Experimental) && !request.experimental && dep != *name {
                plan.blockers.push(Blocker::Experimental { flag: dep.clone(), needed_by: Some(name.clone()) });
            }
            closure.insert(dep);
        }
    }
    let rank = registry.topo_rank();
    let mut ordered: Vec<String> = closure.into_iter().collect();
    ordered.sort_by_key(|n| rank.get(n.as_str()).copied().unwrap_or(usize::MAX));
    ordered
}

/// Plans an enable request: the flags to enable with their dependencies,
/// dependencies first, and everything that blocks it (every member, running
/// or stopped, must support each flag; members with a per-node step must be
/// running; experimental flags need `experimental`; an enabling whose owner
/// is alive is in progress).
pub fn plan_enable(view: &ClusterView, registry: &FlagRegistry, request: &EnableRequest, me: &Me<'_>) -> EnablePlan {
    let mut plan = EnablePlan::default();
    if !request.all && request.flags.is_empty() {
        plan.blockers.push(Blocker::NothingRequested);
        return plan;
    }
    let ordered = wanted_in_order(registry, request, &mut plan);
    let requested: BTreeSet<&String> = request.flags.iter().collect();
    let mut planned = BTreeSet::new();
    for flag in ordered {
        let record = view.flags.get(&flag);
        if record.is_some_and(FlagRecord::is_enabled) {
            if request.all || requested.contains(&flag) {
                plan.already_enabled.push(flag);
            }
            continue;
        }
        if let Some((owner, incarnation, state)) = in_progress(record) {
            let takeover = state == "enabling" && owner_gone(view, &flag, owner, incarnation, me);
            if !takeover {
                plan.blockers.push(Blocker::InProgress {
                    flag: flag.clone(),
                    owner: owner.to_string(),
                    state: state.into(),
                });
                continue;
            }
        }
        plan.blockers.extend(support_blockers(view, registry, &flag, &planned));
        planned.insert(flag.clone());
        plan.order.push(flag);
    }
    plan
}

/// The outcome of [`begin_enable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// Already enabled: nothing to do.
    AlreadyEnabled,
    /// Write this record (enabling, owned by the asking node).
    Write(Box<FlagRecord>),
}

/// Under the epoch fence, the record that starts (or takes over from a gone
/// owner) enabling `flag`, or what blocks it. Dependencies must be enabled
/// already. `me.driving` must not hold `flag` (the caller is about to drive
/// it: a record it owns from a previous driver is its own to take over).
pub fn begin_enable(
    view: &ClusterView,
    registry: &FlagRegistry,
    flag: &str,
    attempt_id: &str,
    me: &Me<'_>,
) -> Result<Begin, Vec<Blocker>> {
    let record = view.flags.get(flag);
    if record.is_some_and(FlagRecord::is_enabled) {
        return Ok(Begin::AlreadyEnabled);
    }
    if let Some((owner, incarnation, state)) = in_progress(record)
        && (state == "disabling" || !owner_gone(view, flag, owner, incarnation, me))
    {
        return Err(vec![Blocker::InProgress {
            flag: flag.to_string(),
            owner: owner.to_string(),
            state: state.into(),
        }]);
    }
    let blockers = support_blockers(view, registry, flag, &BTreeSet::new());
    if !blockers.is_empty() {
        return Err(blockers);
    }
    let decl = registry.get(flag).expect("support_blockers checked the flag is known");
    let (node_steps, _) = step_nodes(view, flag);
    Ok(Begin::Write(Box::new(FlagRecord {
        state: FlagState::Enabling {
            owner: me.id.to_string(),
            started_ms: me.wall_ms,
            step: Some("enable_steps".into()),
        },
        updated_ms: me.wall_ms,
        info: Some(decl.info()),
        attempt: Some(EnableAttempt { id: attempt_id.to_string(), node_steps, owner_incarnation: me.incarnation }),
        note: None,
    })))
}

/// The record of a rolled-back enabling.
pub fn rolled_back(record: &FlagRecord, reason: &str, wall_ms: u64) -> FlagRecord {
    FlagRecord {
        state: FlagState::Disabled,
        updated_ms: wall_ms,
        info: record.info.clone(),
        attempt: None,
        note: Some(format!("enabling rolled back: {reason}")),
    }
}

/// Where an owned step (the cluster step, the disable hook) is, as the
/// runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StepState {
    /// Not started.
    NotStarted,
    /// Running (as a task of the runtime).
    Running,
    /// Finished at this time (the owner's clock).
    Done {
        /// When.
        at: Mono,
    },
    /// Failed: why, naming the node.
    Failed(String),
}

/// The owner's state of one enabling attempt (runtime facts).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnableDriver {
    /// The attempt id.
    pub attempt: String,
    /// The revision of the commit that began it (the flag record's mod
    /// revision: the fence of its steps and acknowledgements).
    pub revision: Revision,
    /// When it began (the owner's clock).
    pub started: Mono,
    /// The cluster step.
    pub cluster_step: StepState,
}

/// What a driven attempt ends with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The flag is enabled.
    Enabled,
    /// The enabling was rolled back.
    RolledBack {
        /// Why.
        reason: String,
    },
    /// The flag is disabled.
    Disabled,
    /// The disabling failed and the flag is enabled again.
    ReEnabled {
        /// Why.
        reason: String,
    },
}

/// What an owner does next.
#[derive(Clone, Debug, PartialEq)]
pub enum DriveAction {
    /// Run the owned step (cluster step / disable hook) as a task, fenced on
    /// the attempt; report its end as [`StepState`].
    RunStep,
    /// The attempt is not ours any more: abort our step task; `by` took it
    /// over (or `nobody`).
    Ended {
        /// The new owner.
        by: String,
    },
    /// Nothing to do until the view changes, a step ends or `until` passes.
    Wait {
        /// What is awaited (for logs).
        pending: Vec<String>,
        /// A deadline on the owner's clock.
        until: Option<Mono>,
    },
    /// Commit these ops under the epoch fence; the runtime re-runs this same
    /// function on the view the commit is fenced on and commits only if it
    /// decides the same.
    Commit {
        /// The ops.
        ops: Vec<ViewOp>,
        /// What the commit means.
        then: Outcome,
    },
}

fn wait(pending: Vec<String>, until: Option<Mono>) -> DriveAction {
    DriveAction::Wait { pending, until }
}

/// The record a driver owns, or who ended it.
pub(crate) fn owned<'a>(view: &'a ClusterView, flag: &str, attempt: &str) -> Result<&'a FlagRecord, DriveAction> {
    let record = view.flags.get(flag);
    match (record, in_progress(record)) {
        (Some(rec), Some(_)) if rec.attempt.as_ref().is_some_and(|a| a.id == attempt) => Ok(rec),
        (_, Some((owner, _, _))) => Err(DriveAction::Ended { by: owner.to_string() }),
        _ => Err(DriveAction::Ended { by: "nobody".into() }),
    }
}

fn roll_back(rec: &FlagRecord, flag: &str, reason: String, me: &Me<'_>) -> DriveAction {
    DriveAction::Commit {
        ops: vec![ViewOp::PutFlag(flag.to_string(), rolled_back(rec, &reason, me.wall_ms))],
        then: Outcome::RolledBack { reason },
    }
}

/// The per-node acknowledgements of an attempt: (failed, pending, down).
fn ack_state(view: &ClusterView, flag: &str, attempt: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let acks = view.flag_acks.get(flag);
    let (mut failed, mut pending, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for m in view.members.values().filter(|m| m.record.flag_node_steps.contains(flag)) {
        let n = &m.record.node_id;
        let ack = acks.and_then(|a| a.get(n)).filter(|a| a.attempt == attempt && a.incarnation == m.record.incarnation);
        match ack.map(|a| &a.error) {
            Some(Some(e)) => failed.push(format!("node {n}: {e}")),
            Some(None) => {}
            None if m.is_running() => pending.push(n.clone()),
            None => down.push(n.clone()),
        }
    }
    (failed, pending, down)
}

/// The owner's side of an enabling attempt, decided on `view` at `now` (the
/// owner's clock): whether the attempt is still ours; the cluster step due,
/// running or failed; every current member with a per-node step for the
/// flag acknowledged this attempt from its current incarnation (a failure,
/// a stopped member or the `node_steps_ms` deadline after the cluster step
/// rolls back naming them); support and dependencies re-checked; then the
/// `enabled` commit. The same function decides the commit on its fenced view.
pub fn drive_enable(
    view: &ClusterView,
    registry: &FlagRegistry,
    flag: &str,
    d: &EnableDriver,
    now: Mono,
    bounds: &Bounds,
    me: &Me<'_>,
) -> DriveAction {
    if view.revision < d.revision {
        return wait(vec!["the view of the attempt's own commit".into()], None);
    }
    let rec = match owned(view, flag, &d.attempt) {
        Ok(rec) => rec,
        Err(ended) => return ended,
    };
    let has_cluster_step = registry.get(flag).is_some_and(|decl| decl.on_enable_cluster.is_some());
    let steps_done_at = match &d.cluster_step {
        StepState::NotStarted if has_cluster_step => return DriveAction::RunStep,
        StepState::NotStarted => d.started,
        StepState::Running => return wait(vec!["the cluster step".into()], None),
        StepState::Failed(reason) => return roll_back(rec, flag, reason.clone(), me),
        StepState::Done { at } => *at,
    };
    let blockers = support_blockers(view, registry, flag, &BTreeSet::new())
        .into_iter()
        .filter(|b| !matches!(b, Blocker::StepNodesDown { .. }))
        .collect::<Vec<_>>();
    if !blockers.is_empty() {
        let reason = blockers.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("; ");
        return roll_back(rec, flag, reason, me);
    }
    if me.rules.finish_requires_acks {
        let (failed, pending, down) = ack_state(view, flag, &d.attempt);
        if !failed.is_empty() {
            return roll_back(rec, flag, format!("the per-node enable step failed on {}", failed.join("; ")), me);
        }
        if !down.is_empty() {
            let reason = format!(
                "node {} stopped before running its per-node enable step: start it (or `rollgate nodes forget ID` if it is gone for good) and enable again",
                down.join(", ")
            );
            return roll_back(rec, flag, reason, me);
        }
        if !pending.is_empty() {
            let deadline = steps_done_at.plus(bounds.node_steps_ms);
            if now < deadline {
                return wait(pending, Some(deadline));
            }
            let reason = format!(
                "node {} did not run its per-node enable step within {} ms: check that it is healthy and enable again",
                pending.join(", "),
                bounds.node_steps_ms
            );
            return roll_back(rec, flag, reason, me);
        }
    }
    let done = FlagRecord {
        state: FlagState::Enabled { since_ms: me.wall_ms },
        updated_ms: me.wall_ms,
        info: rec.info.clone(),
        attempt: None,
        note: None,
    };
    DriveAction::Commit { ops: vec![ViewOp::PutFlag(flag.to_string(), done)], then: Outcome::Enabled }
}
