//! The flag worker: one task per node that, on every view, confirmation
//! and step outcome, applies the hot-path bits ([`plan::apply_view`]),
//! publishes whether the node serves ([`plan::serving`]: fenced, it aborts
//! its per-node runs and its drivers stop), executes the per-node step
//! actions ([`plan::node_step_actions`]: start, abort and await, acknowledge
//! with [`plan::ack_txn`]) and starts the recovery of in-progress flags
//! whose owner is gone ([`plan::recovery_for`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::driver::Shared;
use crate::cluster::{ClusterView, FlagAck, LeaseStatus, now_ms};
use crate::flags::plan::{self, Confirmations, NodeRun, Recovery, Serving, StepAction};
use rollgate_store::Revision;

/// How a per-node task ended.
enum RunResult {
    /// Acknowledged (the step ran, or failed and said so).
    Acked,
    /// The acknowledgement was refused: the attempt had ended.
    Ended,
    /// The acknowledgement could not be written: run it again.
    Retry,
}

struct RunDone {
    flag: String,
    attempt: String,
    result: RunResult,
}

/// A per-node task of this incarnation, aborted when dropped.
struct Tracked {
    run: NodeRun,
    task: Option<JoinHandle<()>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Tracked {
    /// Aborts the task and waits until it is gone (never two runs at once).
    async fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

pub(super) async fn flag_worker(shared: Arc<Shared>) {
    let mut views = shared.handle.watch_view();
    let mut confirmed = shared.handle.watch_confirmed();
    let mut lease = shared.lease.clone();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<RunDone>();
    let mut runs: BTreeMap<String, Tracked> = BTreeMap::new();
    let mut recoveries = JoinSet::new();
    loop {
        let view = views.borrow_and_update().clone();
        shared.refresh_bits(&view);
        let view_at = *confirmed.borrow_and_update();
        let lease_status = *lease.borrow_and_update();
        let until = shared.publish_serving(&view, view_at, &lease_status);
        let mut again = false;
        if shared.fenced.borrow().is_some() {
            for (_, t) in std::mem::take(&mut runs) {
                t.stop().await;
            }
        } else {
            again = shared.node_steps(&view, &mut runs, &done_tx).await;
            shared.recover_orphans(&view, &mut recoveries);
        }
        while recoveries.try_join_next().is_some() {}
        if again {
            continue;
        }
        let deadline = until.map(|u| shared.epoch + Duration::from_millis(u.0));
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            changed = confirmed.changed() => if changed.is_err() { return },
            changed = lease.changed() => if changed.is_err() { return },
            Some(done) = done_rx.recv() => note_done(&mut runs, done),
            _ = async { tokio::time::sleep_until(deadline.expect("a deadline")).await }, if deadline.is_some() => {}
        }
    }
}

fn note_done(runs: &mut BTreeMap<String, Tracked>, done: RunDone) {
    let Some(t) = runs.get_mut(&done.flag).filter(|t| t.run.attempt == done.attempt) else { return };
    match done.result {
        RunResult::Acked | RunResult::Ended => {
            t.run.done = true;
            t.task = None;
        }
        RunResult::Retry => {
            runs.remove(&done.flag);
        }
    }
}

impl Shared {
    /// Decides whether this node serves and publishes it; returns until when.
    fn publish_serving(&self, view: &ClusterView, view_at: Instant, lease: &LeaseStatus) -> Option<plan::Mono> {
        let c = Confirmations {
            lease_at: Some(self.mono_of(lease.confirmed_at)),
            view_at: Some(self.mono_of(view_at)),
            stopping: self.stopped.load(Ordering::SeqCst),
        };
        let driving = self.driving_now();
        let me = self.me(&driving);
        let (fence, until) = match plan::serving(view, &self.config.flags, &me, &c, self.mono(), &self.bounds) {
            Serving::Serve { until } => (None, Some(until)),
            Serving::Fenced(reason) => (Some(reason), None),
        };
        self.fenced.send_if_modified(|f| {
            if *f == fence {
                return false;
            }
            match &fence {
                Some(reason) => tracing::warn!(node = %self.config.node_id, %reason, "not serving"),
                None => tracing::info!(node = %self.config.node_id, "serving"),
            }
            *f = fence.clone();
            true
        });
        let serves = self.booted.load(Ordering::SeqCst) && fence.is_none();
        self.serving.send_if_modified(|s| std::mem::replace(s, serves) != serves);
        until
    }

    /// Executes the per-node step actions; true when a run was aborted (the
    /// view must be decided again before another run of that flag starts).
    async fn node_steps(
        self: &Arc<Self>,
        view: &ClusterView,
        runs: &mut BTreeMap<String, Tracked>,
        done: &mpsc::UnboundedSender<RunDone>,
    ) -> bool {
        let snapshot: BTreeMap<String, NodeRun> = runs.iter().map(|(k, t)| (k.clone(), t.run.clone())).collect();
        let driving = self.driving_now();
        let actions = plan::node_step_actions(view, &self.config.flags, &self.me(&driving), &snapshot);
        let mut aborted = false;
        for action in actions {
            match action {
                StepAction::Abort { flag, .. } => {
                    if let Some(t) = runs.remove(&flag) {
                        t.stop().await;
                    }
                    aborted = true;
                }
                StepAction::Start { flag, attempt, revision } => {
                    let task = self.spawn_run(&flag, &attempt, revision, true, done);
                    runs.insert(flag, Tracked { run: NodeRun { attempt, done: false }, task: Some(task) });
                }
                StepAction::AckDisable { flag, attempt, revision } => {
                    let task = self.spawn_run(&flag, &attempt, revision, false, done);
                    runs.insert(flag, Tracked { run: NodeRun { attempt, done: false }, task: Some(task) });
                }
            }
        }
        aborted
    }

    /// Runs this node's per-node step (when `step`) and acknowledges the
    /// attempt, as a task whose end is reported on `done`.
    fn spawn_run(
        self: &Arc<Self>,
        flag: &str,
        attempt: &str,
        revision: Revision,
        step: bool,
        done: &mpsc::UnboundedSender<RunDone>,
    ) -> JoinHandle<()> {
        let (shared, flag, attempt, done) = (self.clone(), flag.to_string(), attempt.to_string(), done.clone());
        tokio::spawn(async move {
            let error = if step { shared.run_node_step(&flag, revision).await } else { None };
            let result = shared.acknowledge(&flag, &attempt, revision, error).await;
            if matches!(result, RunResult::Retry) {
                // Not acknowledged: run again shortly (steps are idempotent).
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = done.send(RunDone { flag, attempt, result });
        })
    }

    /// This node's per-node step for the attempt at `revision`, bounded:
    /// `Some(error)` when it failed.
    async fn run_node_step(&self, flag: &str, revision: Revision) -> Option<String> {
        let step = self.config.flags.get(flag).and_then(|d| d.on_enable_node.clone())?;
        let limit = Duration::from_millis(self.config.timeouts.step_ms.max(1));
        match tokio::time::timeout(limit, step(self.step_context(flag, revision))).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("timed out after {} ms", limit.as_millis())),
        }
    }

    /// Writes the acknowledgement, guarded on the attempt.
    async fn acknowledge(&self, flag: &str, attempt: &str, revision: Revision, error: Option<String>) -> RunResult {
        let me = &self.config.node_id;
        let ack =
            FlagAck { attempt: attempt.to_string(), error, at_ms: now_ms(), incarnation: self.record.incarnation };
        let txn = match plan::ack_txn(self.cluster.keys(), flag, me, &ack, revision) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(flag, error = %e, "cannot encode the acknowledgement");
                return RunResult::Retry;
            }
        };
        match self.cluster.store().txn(txn).await {
            Ok(r) if r.succeeded => RunResult::Acked,
            Ok(_) => {
                tracing::debug!(flag, attempt, "the attempt ended before its acknowledgement; not written");
                RunResult::Ended
            }
            Err(e) => {
                tracing::warn!(flag, error = %e, "cannot acknowledge; retrying");
                RunResult::Retry
            }
        }
    }

    /// Starts the recovery of every in-progress flag whose owner is gone.
    fn recover_orphans(self: &Arc<Self>, view: &ClusterView, tasks: &mut JoinSet<()>) {
        let driving: BTreeSet<String> = self.driving_now();
        let me = self.me(&driving);
        for flag in view.flags.keys() {
            if plan::recovery_for(view, &self.config.flags, flag, &me) == Recovery::Nothing {
                continue;
            }
            if !self.recovering.lock().unwrap_or_else(|p| p.into_inner()).insert(flag.clone()) {
                continue;
            }
            let (shared, flag) = (self.clone(), flag.clone());
            tasks.spawn(async move {
                if let Err(e) = shared.clone().recover(&flag).await {
                    tracing::warn!(flag = %flag, error = %e, "recovery failed; retrying on the next change");
                }
                shared.recovering.lock().unwrap_or_else(|p| p.into_inner()).remove(&flag);
            });
        }
    }
}
