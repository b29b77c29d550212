//! The flag-protocol executor. Every decision is [`plan`]'s (see its module
//! docs for the protocol); this module reads views, executes the actions the
//! planner returns and reports their outcomes back as driver state:
//!
//! - a **driver** per enabling or disabling this node owns
//!   ([`Shared::drive`]): it asks [`plan::drive_enable`] /
//!   [`plan::drive_disable`] on each view; runs the owned step as a task
//!   fenced on the attempt (`RunStep`), aborts it when the attempt is not
//!   ours any more (`Ended`), waits on views, the step and the planner's
//!   deadline (`Wait`), and commits (`Commit`) by re-running the same
//!   function on the view the commit is fenced on;
//! - the **flag worker** ([`flag_worker`]), one per node, on every view and
//!   confirmation: applies the hot-path bits ([`plan::apply_view`]),
//!   publishes whether the node serves ([`plan::serving`]; fenced: every run
//!   and driver is aborted), runs, aborts and acknowledges per-node steps
//!   ([`plan::node_step_actions`], acknowledgements guarded by
//!   [`plan::ack_txn`]) and recovers in-progress flags whose owner is gone
//!   ([`plan::recovery_for`]).
//!
//! Fail points (crash tests): `enable.before_enabling_commit`,
//! `enable.after_enabling_committed`, `enable.after_cluster_step`,
//! `enable.after_node_steps`, `enable.after_enabled_committed`,
//! `disable.after_disabling_committed`, `disable.after_hook`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::cluster::{
    Cluster, ClusterError, ClusterHandle, ClusterView, LeaseStatus, Liveness, NodeRecord, UpdateError, ViewOp, now_ms,
};
use crate::flags::failpoint::fail_point;
use crate::flags::plan::{
    self, Begin, BeginDisable, Blocker, Bounds, DisableDriver, DriveAction, EnableDriver, EnableRequest, FenceReason,
    Me, Mono, Outcome, Recovery, Rules, StepState,
};
use crate::flags::{FlagError, Flags, Step, StepContext};
use rollgate_store::{Compare, FencedStore, Revision};

use super::{DisableReport, EnableReport, NodeConfig, StatusSection};

pub(super) struct Shared {
    pub(super) config: NodeConfig,
    pub(super) cluster: Cluster,
    pub(super) handle: ClusterHandle,
    pub(super) flags: Flags,
    pub(super) record: NodeRecord,
    /// The origin of this node's monotonic clock ([`Mono`]).
    pub(super) epoch: Instant,
    pub(super) bounds: Bounds,
    /// Flags whose enabling or disabling this node drives right now.
    pub(super) driving: Mutex<BTreeSet<String>>,
    /// Flags with a recovery queued or running here.
    pub(super) recovering: Mutex<BTreeSet<String>>,
    /// One enable, disable or recovery at a time on this node.
    pub(super) op_lock: tokio::sync::Mutex<()>,
    /// The revision of the view the bits were last set from.
    pub(super) bits_revision: Mutex<Option<Revision>>,
    pub(super) liveness: tokio::sync::Mutex<Option<Liveness>>,
    pub(super) lease: watch::Receiver<LeaseStatus>,
    /// Why the node does not serve (`None`: it does, as far as the protocol goes).
    pub(super) fenced: watch::Sender<Option<FenceReason>>,
    /// Whether it serves: booted and not fenced.
    pub(super) serving: watch::Sender<bool>,
    pub(super) booted: AtomicBool,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The owner's state of one attempt, enabling or disabling.
enum Driver {
    Enable(EnableDriver),
    Disable(DisableDriver),
}

impl Driver {
    fn decide(&self, view: &ClusterView, shared: &Shared, flag: &str, now: Mono, me: &Me<'_>) -> DriveAction {
        let registry = &shared.config.flags;
        match self {
            Driver::Enable(d) => plan::drive_enable(view, registry, flag, d, now, &shared.bounds, me),
            Driver::Disable(d) => plan::drive_disable(view, registry, flag, d, now, &shared.bounds, me),
        }
    }
    fn set_step(&mut self, state: StepState) {
        match self {
            Driver::Enable(d) => d.cluster_step = state,
            Driver::Disable(d) => d.hook = state,
        }
    }
    fn revision(&self) -> Revision {
        match self {
            Driver::Enable(d) => d.revision,
            Driver::Disable(d) => d.revision,
        }
    }
    fn what(&self) -> &'static str {
        match self {
            Driver::Enable(_) => "enabling",
            Driver::Disable(_) => "disabling",
        }
    }
}

/// Why an update closure stopped without committing.
enum Stop {
    Done,
    Blocked(Vec<Blocker>),
    Disable(plan::DisableRefusal),
}

impl Shared {
    /// Now, on this node's monotonic clock.
    pub(super) fn mono(&self) -> Mono {
        self.mono_of(Instant::now())
    }

    pub(super) fn mono_of(&self, at: Instant) -> Mono {
        Mono(at.saturating_duration_since(self.epoch).as_millis() as u64)
    }

    pub(super) fn driving_now(&self) -> BTreeSet<String> {
        lock(&self.driving).clone()
    }

    pub(super) fn me<'a>(&'a self, driving: &'a BTreeSet<String>) -> Me<'a> {
        Me {
            id: &self.config.node_id,
            incarnation: self.record.incarnation,
            driving,
            bits_revision: lock(&self.bits_revision).unwrap_or(0),
            wall_ms: now_ms(),
            rules: Rules::strict(),
        }
    }

    pub(super) fn drive_guard(&self, flag: &str) -> Driving<'_> {
        lock(&self.driving).insert(flag.to_string());
        Driving { shared: self, flag: flag.to_string() }
    }

    /// A step context whose writes are fenced on the flag record's mod
    /// revision: once the attempt ended, the step cannot write (c).
    pub(super) fn step_context(&self, flag: &str, revision: Revision) -> StepContext {
        let fence = Compare::mod_revision(self.cluster.keys().flag(flag), revision);
        let store = Arc::new(FencedStore::new(self.cluster.store().clone(), fence));
        StepContext {
            flag: flag.to_string(),
            node_id: self.config.node_id.clone(),
            cluster: self.cluster.with_store(store),
        }
    }

    /// Sets the bits from `view` unless a view at least as new was applied.
    pub(super) fn refresh_bits(&self, view: &ClusterView) {
        let mut last = lock(&self.bits_revision);
        if let Some(bits) = plan::apply_view(*last, view, &self.config.flags) {
            *last = Some(view.revision);
            self.flags.store_bits(&bits);
        }
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
        let plan = plan::plan_enable(&view, &self.config.flags, &request, &self.me(&driving));
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
        let _driving = self.drive_guard(flag);
        fail_point("enable.before_enabling_commit").await;
        let attempt = attempt_id();
        let none = BTreeSet::new();
        let committed = self
            .handle
            .update(|view| match plan::begin_enable(view, &self.config.flags, flag, &attempt, &self.me(&none)) {
                Ok(Begin::AlreadyEnabled) => Err(Stop::Done),
                Ok(Begin::Write(rec)) => Ok(vec![ViewOp::PutFlag(flag.to_string(), *rec)]),
                Err(blockers) => Err(Stop::Blocked(blockers)),
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(UpdateError::Rejected(Stop::Done)) => return Ok(false),
            Err(UpdateError::Rejected(Stop::Blocked(blockers))) => {
                return Err(FlagError::EnableRefused { blockers, enabled: Vec::new() });
            }
            Err(UpdateError::Rejected(Stop::Disable(_))) => return Ok(false),
            Err(UpdateError::Cluster(e)) => return Err(e.into()),
        };
        tracing::info!(node = %self.config.node_id, flag, attempt = %attempt, "enabling");
        self.drive_enable(flag, &attempt, committed.revision).await?;
        Ok(true)
    }

    /// Drives an enabling attempt this node committed at `revision` (the
    /// caller holds the flag's driving guard).
    pub(super) async fn drive_enable(&self, flag: &str, attempt: &str, revision: Revision) -> Result<(), FlagError> {
        self.settle(revision).await;
        fail_point("enable.after_enabling_committed").await;
        let driver = EnableDriver {
            attempt: attempt.to_string(),
            revision,
            started: self.mono(),
            cluster_step: StepState::NotStarted,
        };
        match self.drive(flag, Driver::Enable(driver)).await? {
            Outcome::Enabled => {
                tracing::info!(node = %self.config.node_id, flag, "enabled");
                fail_point("enable.after_enabled_committed").await;
                Ok(())
            }
            Outcome::RolledBack { reason } | Outcome::ReEnabled { reason } => {
                tracing::warn!(node = %self.config.node_id, flag, %reason, "enabling rolled back");
                Err(FlagError::StepFailed { flag: flag.to_string(), what: "enabling", reason })
            }
            Outcome::Disabled => Ok(()),
        }
    }

    /// Runs the owned step of a driver as a task, fenced on its attempt.
    fn spawn_owned_step(&self, flag: &str, driver: &Driver) -> Option<JoinHandle<Result<(), String>>> {
        let decl = self.config.flags.get(flag)?;
        let step: Step = match driver {
            Driver::Enable(_) => decl.on_enable_cluster.clone()?,
            Driver::Disable(_) => decl.before_disable.clone()?,
        };
        let ctx = self.step_context(flag, driver.revision());
        let limit = Duration::from_millis(self.config.timeouts.step_ms.max(1));
        Some(tokio::spawn(async move {
            match tokio::time::timeout(limit, step(ctx)).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {} ms", limit.as_millis())),
            }
        }))
    }

    /// Executes the planner's actions for one attempt until it ends.
    async fn drive(&self, flag: &str, mut driver: Driver) -> Result<Outcome, FlagError> {
        let me_id = self.config.node_id.clone();
        let mut views = self.handle.watch_view();
        let mut fenced = self.fenced.subscribe();
        let mut step: Option<JoinHandle<Result<(), String>>> = None;
        let abort = |step: &mut Option<JoinHandle<Result<(), String>>>| {
            if let Some(s) = step.take() {
                s.abort();
            }
        };
        loop {
            if let Some(reason) = fenced.borrow_and_update().clone() {
                abort(&mut step);
                return Err(FlagError::NotServing { node: me_id, flag: flag.to_string(), reason: reason.to_string() });
            }
            let view = views.borrow_and_update().clone();
            let driving = self.driving_now();
            let now = self.mono();
            let action = driver.decide(&view, self, flag, now, &self.me(&driving));
            let until = match action {
                DriveAction::RunStep => {
                    step = self.spawn_owned_step(flag, &driver);
                    driver.set_step(if step.is_some() { StepState::Running } else { StepState::Done { at: now } });
                    continue;
                }
                DriveAction::Ended { by } => {
                    abort(&mut step);
                    return Err(FlagError::TakenOver { flag: flag.to_string(), by });
                }
                DriveAction::Commit { then, .. } => {
                    if then == Outcome::Enabled {
                        fail_point("enable.after_node_steps").await;
                    }
                    match self.commit(flag, &driver, now, &then).await? {
                        Some(revision) => {
                            self.settle(revision).await;
                            self.clean_acks(flag).await;
                            return Ok(then);
                        }
                        None => continue,
                    }
                }
                DriveAction::Wait { until, .. } => until,
            };
            let deadline = until.map(|u| self.epoch + Duration::from_millis(u.0));
            tokio::select! {
                changed = views.changed() => if changed.is_err() {
                    abort(&mut step);
                    return Err(ClusterError::Metadata { root: String::new(), reason: "the cluster view ended".into() }.into());
                },
                _ = fenced.changed() => {}
                result = async { step.as_mut().expect("a step runs").await }, if step.is_some() => {
                    step = None;
                    let state = match result {
                        Ok(Ok(())) => StepState::Done { at: self.mono() },
                        Ok(Err(reason)) => StepState::Failed(step_failure(&driver, &me_id, &reason)),
                        Err(e) => StepState::Failed(step_failure(&driver, &me_id, &reason_of_join(e))),
                    };
                    if matches!(state, StepState::Done { .. }) {
                        fail_point(if matches!(driver, Driver::Enable(_)) { "enable.after_cluster_step" } else { "disable.after_hook" }).await;
                    }
                    driver.set_step(state);
                }
                _ = async { tokio::time::sleep_until(deadline.expect("a deadline")).await }, if deadline.is_some() => {}
            }
        }
    }

    /// Commits what the planner decides on the view the commit is fenced
    /// on, if it still decides `then`; `None`: it decides otherwise now.
    async fn commit(
        &self,
        flag: &str,
        driver: &Driver,
        now: Mono,
        then: &Outcome,
    ) -> Result<Option<Revision>, FlagError> {
        let driving = self.driving_now();
        let mut seen = 0;
        let result = self
            .handle
            .update(|view| {
                seen = view.revision;
                match driver.decide(view, self, flag, now, &self.me(&driving)) {
                    DriveAction::Commit { ops, then: t } if t == *then => Ok(ops),
                    _ => Err(()),
                }
            })
            .await;
        match result {
            Ok(c) => Ok(Some(c.revision)),
            Err(UpdateError::Rejected(())) => {
                // Decide again once this node's view is as new as the one that changed the decision.
                let wait = Duration::from_millis(self.config.timeouts.boot_wait_ms.max(1));
                self.handle.wait_for_revision(seen, wait).await;
                Ok(None)
            }
            Err(UpdateError::Cluster(e)) => {
                tracing::warn!(node = %self.config.node_id, flag, what = driver.what(), error = %e, "could not commit; the next node that looks recovers it");
                Err(e.into())
            }
        }
    }

    /// Deletes the acknowledgements of a finished attempt (best effort;
    /// guarded: never those of a newer attempt).
    pub(super) async fn clean_acks(&self, flag: &str) {
        let view = self.handle.view();
        let max_ops = self.cluster.store().limits().max_txn_ops.saturating_sub(1).max(1);
        for txn in plan::clean_acks(self.cluster.keys(), &view, flag, max_ops) {
            if let Err(e) = self.cluster.store().txn(txn).await {
                tracing::debug!(flag, error = %e, "could not clean the acknowledgements");
                return;
            }
        }
    }

    /// Resumes, rolls back or finishes an in-progress flag whose owner is
    /// gone (the recovery rule of [`plan::recovery_for`]).
    pub(super) async fn recover(self: Arc<Self>, flag: &str) -> Result<(), FlagError> {
        let _op = self.op_lock.lock().await;
        let view = self.handle.view();
        let driving = self.driving_now();
        let recovery = plan::recovery_for(&view, &self.config.flags, flag, &self.me(&driving));
        let what = match &recovery {
            Recovery::Nothing => return Ok(()),
            Recovery::ResumeEnable => "resumed the enabling",
            Recovery::RollBackEnable { .. } => "rolled back the enabling",
            Recovery::FinishDisable => "finished the disabling",
        };
        let result = self.clone().recover_with(flag, recovery).await;
        let (root, capacity) = (self.cluster.keys().root(), self.config.audit_capacity);
        let outcome = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        crate::audit::takeover(
            self.cluster.store().as_ref(),
            root,
            capacity,
            &self.config.node_id,
            flag,
            what,
            outcome,
        )
        .await;
        result
    }

    async fn recover_with(self: Arc<Self>, flag: &str, recovery: Recovery) -> Result<(), FlagError> {
        match recovery {
            Recovery::Nothing => Ok(()),
            Recovery::ResumeEnable => {
                tracing::info!(node = %self.config.node_id, flag, "resuming an enabling whose owner is gone");
                self.enable_flag(flag).await.map(|_| ())
            }
            Recovery::RollBackEnable { .. } => {
                let r = self
                    .handle
                    .update(|view| {
                        let driving = self.driving_now();
                        let me = self.me(&driving);
                        match (plan::recovery_for(view, &self.config.flags, flag, &me), view.flags.get(flag)) {
                            (Recovery::RollBackEnable { reason }, Some(rec)) => {
                                tracing::warn!(node = %self.config.node_id, flag, %reason, "rolling back an enabling whose owner is gone");
                                Ok(vec![ViewOp::PutFlag(flag.to_string(), plan::rolled_back(rec, &reason, me.wall_ms))])
                            }
                            _ => Err(()),
                        }
                    })
                    .await;
                match r {
                    Ok(c) => {
                        self.settle(c.revision).await;
                        self.clean_acks(flag).await;
                        Ok(())
                    }
                    Err(UpdateError::Rejected(())) => Ok(()),
                    Err(UpdateError::Cluster(e)) => Err(e.into()),
                }
            }
            Recovery::FinishDisable => {
                tracing::info!(node = %self.config.node_id, flag, "finishing a disabling whose owner is gone");
                self.disable_flag(flag).await.map(|_| ())
            }
        }
    }

    pub(super) async fn disable(self: Arc<Self>, flag: &str) -> Result<DisableReport, FlagError> {
        let _op = self.op_lock.lock().await;
        self.disable_flag(flag).await
    }

    /// Begins (or takes over) disabling a flag and drives it.
    pub(super) async fn disable_flag(&self, flag: &str) -> Result<DisableReport, FlagError> {
        let _driving = self.drive_guard(flag);
        let attempt = attempt_id();
        let none = BTreeSet::new();
        let committed = self
            .handle
            .update(|view| match plan::begin_disable(view, &self.config.flags, flag, &attempt, &self.me(&none)) {
                Ok(BeginDisable::AlreadyDisabled) => Err(Stop::Done),
                Ok(BeginDisable::Write(rec)) => Ok(vec![ViewOp::PutFlag(flag.to_string(), *rec)]),
                Err(r) => Err(Stop::Disable(r)),
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(UpdateError::Rejected(Stop::Disable(r))) => return Err(FlagError::DisableRefused(r)),
            Err(UpdateError::Rejected(_)) => return Ok(DisableReport { flag: flag.to_string(), changed: false }),
            Err(UpdateError::Cluster(e)) => return Err(e.into()),
        };
        // Nodes stop producing data that needs the flag from here on.
        self.settle(committed.revision).await;
        fail_point("disable.after_disabling_committed").await;
        let driver =
            DisableDriver { attempt, revision: committed.revision, started: self.mono(), hook: StepState::NotStarted };
        match self.drive(flag, Driver::Disable(driver)).await? {
            Outcome::Disabled => {
                tracing::info!(node = %self.config.node_id, flag, "disabled");
                Ok(DisableReport { flag: flag.to_string(), changed: true })
            }
            Outcome::ReEnabled { reason } | Outcome::RolledBack { reason } => {
                Err(FlagError::StepFailed { flag: flag.to_string(), what: "disabling", reason })
            }
            Outcome::Enabled => Ok(DisableReport { flag: flag.to_string(), changed: false }),
        }
    }
}

fn reason_of_join(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() { "the step was cancelled".into() } else { format!("the step panicked: {e}") }
}

fn step_failure(driver: &Driver, node: &str, reason: &str) -> String {
    match driver {
        Driver::Enable(_) => format!("the cluster-wide enable step failed on node {node}: {reason}"),
        Driver::Disable(_) => format!("the disable hook failed on node {node}: {reason}; the flag is enabled again"),
    }
}
