//! The flag-protocol driver: enable, disable and recovery runs this node
//! drives, the flag worker that runs its per-node steps and recovers
//! in-progress flags whose driver is gone, and the hot-path bits following
//! the view. The decisions are [`plan`]'s; this module reads views, commits
//! what they return under the epoch and runs the steps.
//!
//! # Enabling (per flag of the plan, dependencies first; fail points in parentheses)
//!
//! 1. plan on a fresh view (`plan_enable`); refuse with every blocker, or
//!    stop here for a dry run (`enable.before_enabling_commit`);
//! 2. commit `enabling { owner, attempt { id, node_steps } }` with the flag's
//!    info, fenced on the epoch after `begin_enable` re-checked the view:
//!    every member (running or stopped) supports the flag, its dependencies
//!    are enabled, every member with a per-node step is running
//!    (`enable.after_enabling_committed`);
//! 3. run the cluster-wide step on the owner (refreshing the record so nobody
//!    takes a long step over) (`enable.after_cluster_step`);
//! 4. every member in `node_steps` runs its per-node step (its flag worker
//!    sees the attempt in its view) and writes `flag_acks/<flag>/<node>`; the
//!    owner waits for every ack of this attempt, bounded; a failed step, a
//!    member that stops or one that does not answer in time rolls back to
//!    `disabled` with a note naming it (`enable.after_node_steps`);
//! 5. commit `enabled` (fenced: the attempt is still this one, every member
//!    still supports the flag, the dependencies are enabled)
//!    (`enable.after_enabled_committed`); clean up the acks.
//!
//! # Recovery (I4)
//!
//! Any node that looks (at boot, and every running node's flag worker on each
//! view change and periodically): an `enabling` record whose driver is gone
//! (the owner is this node and nothing drives it here; or the owner is not a
//! running member; or the record was not refreshed for `stale_ms`) is
//! **resumed** (taken over with a new attempt; every step runs again, they
//! are idempotent) when every member still supports the flag, its
//! dependencies are enabled and every member with a per-node step is
//! running, and **rolled back** to `disabled` otherwise (safe: the bit was
//! never set). A `disabling` record whose driver is gone is finished.
//!
//! # Disabling (reversible flags, no enabled dependent)
//!
//! Commit `disabling` (bits cleared everywhere)
//! (`disable.after_disabling_committed`), run the `before_disable` hook
//! (`disable.after_hook`), commit `disabled`; a failing hook puts the flag
//! back to enabled with a note.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

use crate::cluster::{
    Cluster, ClusterError, ClusterHandle, ClusterView, FlagAck, FlagRecord, FlagState, Liveness, Member, NodeRecord,
    UpdateError, ViewOp, now_ms,
};
use crate::flags::failpoint::fail_point;
use crate::flags::plan::{self, Begin, BeginDisable, Blocker, EnableRequest, PlanContext, Recovery};
use crate::flags::{FlagError, Flags, StepContext};
use rollgate_store::{Txn, TxnOp};

use super::{DisableReport, EnableReport, NodeConfig, StatusSection};

pub(super) struct Shared {
    pub(super) config: NodeConfig,
    pub(super) cluster: Cluster,
    pub(super) handle: ClusterHandle,
    pub(super) flags: Flags,
    pub(super) record: NodeRecord,
    /// Flags whose enabling or disabling this node drives right now.
    pub(super) driving: Mutex<BTreeSet<String>>,
    /// Per-node steps of current attempts running or run here: (flag,
    /// attempt); kept until the attempt is over.
    pub(super) steps: Mutex<BTreeSet<(String, String)>>,
    /// Flags with a recovery queued or running here.
    pub(super) recovering: Mutex<BTreeSet<String>>,
    /// One enable, disable or recovery at a time on this node.
    pub(super) op_lock: tokio::sync::Mutex<()>,
    /// The revision of the view the bits were last set from.
    pub(super) bits_revision: Mutex<i64>,
    pub(super) liveness: tokio::sync::Mutex<Option<Liveness>>,
    pub(super) sections: Mutex<BTreeMap<String, StatusSection>>,
    /// Spawned protocol tasks, aborted with the node.
    pub(super) spawned: Mutex<Vec<AbortHandle>>,
    pub(super) stopped: AtomicBool,
}

/// Removes a flag from the driving set when dropped.
pub(super) struct Driving<'a> {
    shared: &'a Shared,
    flag: String,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.shared.driving.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.flag);
    }
}

pub(super) fn attempt_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub(super) fn is_unavailable(e: &ClusterError) -> bool {
    matches!(e, ClusterError::StoreUnavailable { .. }) || matches!(e, ClusterError::Store(s) if s.is_unavailable())
}

/// Why an update closure stopped without committing.
enum Stop {
    Done,
    Blocked(Vec<Blocker>),
    Disable(plan::DisableRefusal),
    NotOurs(String),
}
impl Shared {
    pub(super) fn driving_now(&self) -> BTreeSet<String> {
        self.driving.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn ctx<'a>(&'a self, driving: &'a BTreeSet<String>) -> PlanContext<'a> {
        PlanContext { me: &self.config.node_id, now_ms: now_ms(), stale_ms: self.config.timeouts.stale_ms, driving }
    }

    pub(super) fn drive(&self, flag: &str) -> Driving<'_> {
        self.driving.lock().unwrap_or_else(|p| p.into_inner()).insert(flag.to_string());
        Driving { shared: self, flag: flag.to_string() }
    }

    pub(super) fn step_context(&self, flag: &str) -> StepContext {
        StepContext { flag: flag.to_string(), node_id: self.config.node_id.clone(), cluster: self.cluster.clone() }
    }

    /// Sets the bits from `view` unless a newer view was applied already.
    pub(super) fn refresh_bits(&self, view: &ClusterView) {
        let mut last = self.bits_revision.lock().unwrap_or_else(|p| p.into_inner());
        if view.revision < *last {
            return;
        }
        *last = view.revision;
        self.flags.store(&Flags::words_for(&self.config.flags, view));
    }

    /// Waits until the handle's view reached `revision` and applies its bits.
    pub(super) async fn settle(&self, revision: i64) {
        let wait = Duration::from_millis(self.config.timeouts.boot_wait_ms.max(1));
        if let Some(view) = self.handle.wait_for_revision(revision, wait).await {
            self.refresh_bits(&view);
        }
    }

    pub(super) async fn enable(self: Arc<Self>, request: EnableRequest) -> Result<EnableReport, FlagError> {
        let _op = self.op_lock.lock().await;
        let view = self.cluster.view().await?;
        let driving = self.driving_now();
        let plan = plan::plan_enable(&view, &self.config.flags, &request, &self.ctx(&driving));
        let mut report = EnableReport {
            dry_run: request.dry_run,
            order: plan.order.clone(),
            already_enabled: plan.already_enabled.clone(),
            messages: plan.blockers.iter().map(|b| b.to_string()).collect(),
            blockers: plan.blockers.clone(),
            enabled: Vec::new(),
        };
        if request.dry_run {
            return Ok(report);
        }
        if !plan.blockers.is_empty() {
            return Err(FlagError::EnableRefused { blockers: plan.blockers, enabled: Vec::new() });
        }
        for flag in &plan.order {
            match self.enable_flag(flag).await {
                Ok(true) => report.enabled.push(flag.clone()),
                Ok(false) => report.already_enabled.push(flag.clone()),
                Err(FlagError::EnableRefused { blockers, .. }) => {
                    return Err(FlagError::EnableRefused { blockers, enabled: report.enabled });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Begins (or takes over) enabling one flag and drives it. `Ok(false)`:
    /// it was enabled already.
    pub(super) async fn enable_flag(&self, flag: &str) -> Result<bool, FlagError> {
        let _driving = self.drive(flag);
        fail_point("enable.before_enabling_commit").await;
        let attempt = attempt_id();
        let driving = self.driving_now();
        let committed = self
            .handle
            .update(|view| {
                // This node drives the flag now: a record it owns is its own to take over.
                let none = BTreeSet::new();
                let ctx = PlanContext { driving: &none, ..self.ctx(&driving) };
                match plan::begin_enable(view, &self.config.flags, flag, &attempt, &ctx) {
                    Ok(Begin::AlreadyEnabled) => Err(Stop::Done),
                    Ok(Begin::Write(rec)) => Ok(vec![ViewOp::PutFlag(flag.to_string(), *rec)]),
                    Err(blockers) => Err(Stop::Blocked(blockers)),
                }
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(UpdateError::Rejected(Stop::Done)) => return Ok(false),
            Err(UpdateError::Rejected(Stop::Blocked(blockers))) => {
                return Err(FlagError::EnableRefused { blockers, enabled: Vec::new() });
            }
            Err(UpdateError::Rejected(Stop::Disable(_) | Stop::NotOurs(_))) => return Ok(false),
            Err(UpdateError::Cluster(e)) => return Err(e.into()),
        };
        tracing::info!(node = %self.config.node_id, flag, attempt = %attempt, "enabling");
        self.settle(committed.revision).await;
        fail_point("enable.after_enabling_committed").await;
        self.drive_enable(flag, &attempt).await?;
        Ok(true)
    }

    /// Steps 2 to 5 of the enable protocol for an attempt this node owns.
    pub(super) async fn drive_enable(&self, flag: &str, attempt: &str) -> Result<(), FlagError> {
        let me = self.config.node_id.clone();
        let decl = self.config.flags.get(flag).cloned();
        if let Some(step) = decl.as_ref().and_then(|d| d.on_enable_cluster.clone()) {
            let result = self.run_owned_step(flag, attempt, step).await;
            if let Err(reason) = result {
                let reason = format!("the cluster-wide enable step failed on node {me}: {reason}");
                self.roll_back(flag, attempt, &reason).await;
                return Err(FlagError::StepFailed { flag: flag.to_string(), what: "enabling", reason });
            }
        }
        fail_point("enable.after_cluster_step").await;
        self.wait_node_steps(flag, attempt).await?;
        fail_point("enable.after_node_steps").await;
        let committed = self
            .handle
            .update(|view| {
                let Some(rec) = view.flags.get(flag) else { return Err(Stop::NotOurs("nobody".into())) };
                match (&rec.state, &rec.attempt) {
                    (FlagState::Enabling { .. }, Some(a)) if a.id == attempt => {}
                    (FlagState::Enabling { owner, .. }, _) => return Err(Stop::NotOurs(owner.clone())),
                    _ => return Err(Stop::NotOurs("nobody".into())),
                }
                let mut blockers = Vec::new();
                if let Some(d) = self.config.flags.get(flag) {
                    for dep in d.get_depends_on() {
                        if !view.is_enabled(dep) {
                            blockers.push(Blocker::DependencyNotEnabled { flag: flag.into(), dependency: dep.clone() });
                        }
                    }
                }
                let lacking: Vec<plan::NodeRef> = view
                    .members
                    .values()
                    .filter(|m| !m.record.supported_flags.contains(flag))
                    .map(plan::node_ref)
                    .collect();
                if !lacking.is_empty() {
                    let introduced_in = rec.info.as_ref().map(|i| i.introduced_in.clone()).unwrap_or_default();
                    blockers.push(Blocker::NotSupported { flag: flag.into(), introduced_in, nodes: lacking });
                }
                if !blockers.is_empty() {
                    return Err(Stop::Blocked(blockers));
                }
                let now = now_ms();
                Ok(vec![ViewOp::PutFlag(
                    flag.to_string(),
                    FlagRecord {
                        state: FlagState::Enabled { since_ms: now },
                        updated_ms: now,
                        info: rec.info.clone(),
                        attempt: None,
                        note: None,
                    },
                )])
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(UpdateError::Rejected(Stop::NotOurs(by))) => {
                return Err(FlagError::TakenOver { flag: flag.to_string(), by });
            }
            Err(UpdateError::Rejected(Stop::Blocked(blockers))) => {
                let reason = blockers.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("; ");
                self.roll_back(flag, attempt, &reason).await;
                return Err(FlagError::StepFailed { flag: flag.to_string(), what: "enabling", reason });
            }
            Err(UpdateError::Rejected(_)) => return Ok(()),
            Err(UpdateError::Cluster(e)) => return Err(e.into()),
        };
        tracing::info!(node = %me, flag, "enabled");
        fail_point("enable.after_enabled_committed").await;
        self.settle(committed.revision).await;
        self.clean_acks(flag).await;
        Ok(())
    }

    /// Runs a step this node owns, refreshing the record meanwhile so that
    /// nobody takes a long step over, bounded by `step_ms`.
    pub(super) async fn run_owned_step(
        &self,
        flag: &str,
        attempt: &str,
        step: crate::flags::Step,
    ) -> Result<(), String> {
        let limit = Duration::from_millis(self.config.timeouts.step_ms.max(1));
        let refresh_every = Duration::from_millis((self.config.timeouts.stale_ms / 4).max(50));
        let work = step(self.step_context(flag));
        tokio::pin!(work);
        let deadline = tokio::time::Instant::now() + limit;
        let mut tick = tokio::time::interval(refresh_every);
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut work => return r,
                _ = tokio::time::sleep_until(deadline) => return Err(format!("timed out after {} ms", limit.as_millis())),
                _ = tick.tick() => self.refresh_record(flag, attempt).await,
            }
        }
    }

    /// Rewrites the in-progress record's `updated_ms` if it is still ours.
    pub(super) async fn refresh_record(&self, flag: &str, attempt: &str) {
        let me = &self.config.node_id;
        let r = self
            .handle
            .update(|view| match view.flags.get(flag) {
                Some(rec)
                    if rec.attempt.as_ref().is_some_and(|a| a.id == attempt)
                        || matches!(&rec.state, FlagState::Disabling { owner, .. } if owner == me) =>
                {
                    let mut rec = rec.clone();
                    rec.updated_ms = now_ms();
                    Ok(vec![ViewOp::PutFlag(flag.to_string(), rec)])
                }
                _ => Err(()),
            })
            .await;
        if let Err(UpdateError::Cluster(e)) = r {
            tracing::warn!(flag, error = %e, "could not refresh the in-progress flag record");
        }
    }

    /// Waits for every member of the attempt to acknowledge its per-node
    /// step; rolls back when one fails, stops, or does not answer in time.
    pub(super) async fn wait_node_steps(&self, flag: &str, attempt: &str) -> Result<(), FlagError> {
        let limit = Duration::from_millis(self.config.timeouts.node_steps_ms.max(1));
        let deadline = tokio::time::Instant::now() + limit;
        let mut rx = self.handle.watch_view();
        loop {
            let view = rx.borrow_and_update().clone();
            let Some(rec) = view.flags.get(flag) else {
                return Err(FlagError::TakenOver { flag: flag.to_string(), by: "nobody (the record is gone)".into() });
            };
            let nodes = match (&rec.state, &rec.attempt) {
                (FlagState::Enabling { .. }, Some(a)) if a.id == attempt => a.node_steps.clone(),
                (FlagState::Enabling { owner, .. }, _) => {
                    return Err(FlagError::TakenOver { flag: flag.to_string(), by: owner.clone() });
                }
                _ => return Err(FlagError::TakenOver { flag: flag.to_string(), by: "nobody".into() }),
            };
            let acks = view.flag_acks.get(flag);
            let mut pending = Vec::new();
            let mut failed = Vec::new();
            let mut down = Vec::new();
            for n in &nodes {
                match acks.and_then(|a| a.get(n)).filter(|a| a.attempt == attempt) {
                    Some(FlagAck { error: Some(e), .. }) => failed.push(format!("node {n}: {e}")),
                    Some(_) => {}
                    None if view.member(n).is_some_and(Member::is_running) => pending.push(n.clone()),
                    None => down.push(n.clone()),
                }
            }
            let reason = if !failed.is_empty() {
                Some(format!("the per-node enable step failed on {}", failed.join("; ")))
            } else if !down.is_empty() {
                Some(format!(
                    "node {} stopped before running its per-node enable step: start it (or `rollgate nodes forget ID` if it is gone for good) and enable again",
                    down.join(", ")
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                self.roll_back(flag, attempt, &reason).await;
                return Err(FlagError::StepFailed { flag: flag.to_string(), what: "enabling", reason });
            }
            if pending.is_empty() {
                return Ok(());
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(ClusterError::Metadata { root: String::new(), reason: "the cluster view ended".into() }.into());
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let reason = format!(
                        "node {} did not run its per-node enable step within {} ms: check that it is healthy and enable again",
                        pending.join(", "),
                        limit.as_millis()
                    );
                    self.roll_back(flag, attempt, &reason).await;
                    return Err(FlagError::StepFailed { flag: flag.to_string(), what: "enabling", reason });
                }
            }
        }
    }

    /// Rolls an attempt this node owns back to disabled (a no-op when it is
    /// not ours any more).
    pub(super) async fn roll_back(&self, flag: &str, attempt: &str, reason: &str) {
        tracing::warn!(node = %self.config.node_id, flag, reason, "rolling back an enabling");
        let r = self
            .handle
            .update(|view| match view.flags.get(flag) {
                Some(rec)
                    if matches!(rec.state, FlagState::Enabling { .. })
                        && rec.attempt.as_ref().is_some_and(|a| a.id == attempt) =>
                {
                    Ok(vec![ViewOp::PutFlag(flag.to_string(), plan::rolled_back(rec, reason, now_ms()))])
                }
                _ => Err(()),
            })
            .await;
        match r {
            Ok(c) => self.settle(c.revision).await,
            Err(UpdateError::Rejected(())) => {}
            Err(UpdateError::Cluster(e)) => {
                tracing::error!(flag, error = %e, "could not roll back; the next node that looks will")
            }
        }
    }

    /// Deletes the acknowledgements of a finished enabling (best effort).
    pub(super) async fn clean_acks(&self, flag: &str) {
        let Some(acks) = self.handle.view().flag_acks.get(flag).cloned() else { return };
        let keys: Vec<String> = acks.keys().map(|n| self.cluster.keys().flag_ack(flag, n)).collect();
        let per_txn = self.cluster.store().limits().max_txn_ops.max(1);
        for chunk in keys.chunks(per_txn) {
            let txn = Txn::new().and_then(chunk.iter().map(TxnOp::delete));
            if let Err(e) = self.cluster.store().txn(txn).await {
                tracing::debug!(flag, error = %e, "could not clean the acknowledgements");
                return;
            }
        }
    }

    /// Resumes, rolls back or finishes an in-progress flag whose driver is
    /// gone (the recovery rule of [`plan::recovery_for`]).
    pub(super) async fn recover(self: Arc<Self>, flag: &str) -> Result<(), FlagError> {
        let _op = self.op_lock.lock().await;
        let view = self.cluster.view().await?;
        let driving = self.driving_now();
        match plan::recovery_for(&view, &self.config.flags, flag, &self.ctx(&driving)) {
            Recovery::Nothing => Ok(()),
            Recovery::ResumeEnable => {
                tracing::info!(node = %self.config.node_id, flag, "resuming an enabling whose driver is gone");
                self.enable_flag(flag).await.map(|_| ())
            }
            Recovery::RollBackEnable { reason } => {
                tracing::warn!(node = %self.config.node_id, flag, %reason, "rolling back an enabling whose driver is gone");
                let driving = BTreeSet::new();
                let r = self
                    .handle
                    .update(|view| match plan::recovery_for(view, &self.config.flags, flag, &self.ctx(&driving)) {
                        Recovery::RollBackEnable { reason } => {
                            let rec = view
                                .flags
                                .get(flag)
                                .cloned()
                                .unwrap_or_else(|| FlagRecord::with_state(FlagState::Disabled));
                            Ok(vec![ViewOp::PutFlag(flag.to_string(), plan::rolled_back(&rec, &reason, now_ms()))])
                        }
                        _ => Err(()),
                    })
                    .await;
                match r {
                    Ok(c) => {
                        self.settle(c.revision).await;
                        Ok(())
                    }
                    Err(UpdateError::Rejected(())) => Ok(()),
                    Err(UpdateError::Cluster(e)) => Err(e.into()),
                }
            }
            Recovery::FinishDisable => {
                tracing::info!(node = %self.config.node_id, flag, "finishing a disabling whose driver is gone");
                self.disable_locked(flag).await.map(|_| ())
            }
        }
    }

    pub(super) async fn disable(self: Arc<Self>, flag: &str) -> Result<DisableReport, FlagError> {
        let _op = self.op_lock.lock().await;
        self.disable_locked(flag).await
    }

    pub(super) async fn disable_locked(&self, flag: &str) -> Result<DisableReport, FlagError> {
        let _driving = self.drive(flag);
        let me = self.config.node_id.clone();
        let committed = self
            .handle
            .update(|view| {
                let none = BTreeSet::new();
                match plan::begin_disable(view, &self.config.flags, flag, &self.ctx(&none)) {
                    Ok(BeginDisable::AlreadyDisabled) => Err(Stop::Done),
                    Ok(BeginDisable::Write(rec)) => Ok(vec![ViewOp::PutFlag(flag.to_string(), *rec)]),
                    Err(r) => Err(Stop::Disable(r)),
                }
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(UpdateError::Rejected(Stop::Done)) => {
                return Ok(DisableReport { flag: flag.to_string(), changed: false });
            }
            Err(UpdateError::Rejected(Stop::Disable(r))) => return Err(FlagError::DisableRefused(r)),
            Err(UpdateError::Rejected(_)) => return Ok(DisableReport { flag: flag.to_string(), changed: false }),
            Err(UpdateError::Cluster(e)) => return Err(e.into()),
        };
        // Nodes stop producing data that needs the flag from here on.
        self.settle(committed.revision).await;
        fail_point("disable.after_disabling_committed").await;
        if let Some(hook) = self.config.flags.get(flag).and_then(|d| d.before_disable.clone())
            && let Err(reason) = self.run_owned_step(flag, "", hook).await
        {
            let reason = format!("the disable hook failed on node {me}: {reason}; the flag is enabled again");
            let r = self
                .handle
                .update(|view| match view.flags.get(flag) {
                    Some(rec) if matches!(&rec.state, FlagState::Disabling { owner, .. } if *owner == me) => {
                        let now = now_ms();
                        Ok(vec![ViewOp::PutFlag(
                            flag.to_string(),
                            FlagRecord {
                                state: FlagState::Enabled { since_ms: now },
                                updated_ms: now,
                                info: rec.info.clone(),
                                attempt: None,
                                note: Some(reason.clone()),
                            },
                        )])
                    }
                    _ => Err(()),
                })
                .await;
            if let Ok(c) = r {
                self.settle(c.revision).await;
            }
            return Err(FlagError::StepFailed { flag: flag.to_string(), what: "disabling", reason });
        }
        fail_point("disable.after_hook").await;
        let r = self
            .handle
            .update(|view| match view.flags.get(flag) {
                Some(rec) if matches!(&rec.state, FlagState::Disabling { owner, .. } if *owner == me) => {
                    let mut done = FlagRecord::with_state(FlagState::Disabled);
                    done.info = rec.info.clone();
                    Ok(vec![ViewOp::PutFlag(flag.to_string(), done)])
                }
                Some(rec) => Err(match &rec.state {
                    FlagState::Disabling { owner, .. } => owner.clone(),
                    _ => "nobody".into(),
                }),
                None => Err("nobody".into()),
            })
            .await;
        match r {
            Ok(c) => {
                self.settle(c.revision).await;
                tracing::info!(node = %me, flag, "disabled");
                Ok(DisableReport { flag: flag.to_string(), changed: true })
            }
            Err(UpdateError::Rejected(by)) => Err(FlagError::TakenOver { flag: flag.to_string(), by }),
            Err(UpdateError::Cluster(e)) => Err(e.into()),
        }
    }

    /// The flag worker's reaction to a view: run this node's pending per-node
    /// steps and recover in-progress flags whose driver is gone.
    pub(super) fn on_view(
        self: &Arc<Self>,
        view: &ClusterView,
        spawn: &mut dyn FnMut(Pin<Box<dyn Future<Output = ()> + Send>>),
    ) {
        let me = &self.config.node_id;
        // Forget steps of attempts that are over. A step that ran stays in
        // `steps` until then: the view that shows its acknowledgement may
        // come after other views, and those must not run it again.
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).retain(|(flag, attempt)| {
            view.flags.get(flag).is_some_and(|rec| {
                matches!(rec.state, FlagState::Enabling { .. })
                    && rec.attempt.as_ref().is_some_and(|a| a.id == *attempt)
            })
        });
        for (flag, rec) in &view.flags {
            let (FlagState::Enabling { .. }, Some(attempt)) = (&rec.state, &rec.attempt) else { continue };
            if !attempt.node_steps.contains(me) {
                continue;
            }
            let acked = view.flag_acks.get(flag).and_then(|a| a.get(me)).is_some_and(|a| a.attempt == attempt.id);
            let key = (flag.clone(), attempt.id.clone());
            if acked || !self.steps.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
                continue;
            }
            let shared = self.clone();
            spawn(Box::pin(async move {
                if !shared.run_node_step(&key.0, &key.1).await {
                    // Not acknowledged: run it again on the next view.
                    shared.steps.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                }
            }));
        }
        let driving = self.driving_now();
        let ctx = self.ctx(&driving);
        for flag in view.flags.keys() {
            if plan::recovery_for(view, &self.config.flags, flag, &ctx) != Recovery::Nothing
                && self.recovering.lock().unwrap_or_else(|p| p.into_inner()).insert(flag.clone())
            {
                let shared = self.clone();
                let flag = flag.clone();
                spawn(Box::pin(async move {
                    if let Err(e) = shared.clone().recover(&flag).await {
                        tracing::warn!(flag = %flag, error = %e, "recovery failed; retrying on the next change");
                    }
                    shared.recovering.lock().unwrap_or_else(|p| p.into_inner()).remove(&flag);
                }));
            }
        }
    }

    /// Runs this node's per-node step for an attempt and acknowledges it
    /// (a failed step is acknowledged with its error). False when the
    /// acknowledgement could not be stored.
    pub(super) async fn run_node_step(&self, flag: &str, attempt: &str) -> bool {
        let me = &self.config.node_id;
        let error = match self.config.flags.get(flag).and_then(|d| d.on_enable_node.clone()) {
            None => None,
            Some(step) => {
                let limit = Duration::from_millis(self.config.timeouts.step_ms.max(1));
                match tokio::time::timeout(limit, step(self.step_context(flag))).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("timed out after {} ms", limit.as_millis())),
                }
            }
        };
        let ack = FlagAck { attempt: attempt.to_string(), error, at_ms: now_ms() };
        let key = self.cluster.keys().flag_ack(flag, me);
        let value = match rollgate_store::encode_json(&key, &ack) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(flag, error = %e, "cannot encode the acknowledgement");
                return false;
            }
        };
        match self.cluster.store().put(&key, value).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(flag, error = %e, "cannot acknowledge the per-node step; retrying on the next change");
                false
            }
        }
    }
}

/// Follows the view: per-node steps and recovery. Also wakes up regularly,
/// because a record becomes stale with time alone.
pub(super) async fn flag_worker(shared: Arc<Shared>) {
    let mut rx = shared.handle.watch_view();
    let mut tick =
        tokio::time::interval(Duration::from_millis((shared.config.timeouts.stale_ms / 4).clamp(100, 30_000)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let view = rx.borrow_and_update().clone();
        shared.on_view(&view, &mut |f| {
            tasks.spawn(f);
        });
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

/// Keeps the hot-path bits equal to the published view.
pub(super) async fn follow_bits(shared: Arc<Shared>) {
    let mut rx = shared.handle.watch_view();
    loop {
        let view = rx.borrow_and_update().clone();
        shared.refresh_bits(&view);
        if rx.changed().await.is_err() {
            return;
        }
    }
}
