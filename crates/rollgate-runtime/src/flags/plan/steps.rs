//! Per-node steps and acknowledgements: what a member runs, aborts and
//! acknowledges for the attempts in its view, and the guarded transactions
//! that write and clean acknowledgements (c).

use std::collections::BTreeMap;

use super::{Me, current_attempt, in_progress};
use crate::cluster::{ClusterView, FlagAck, FlagState, Keys};
use crate::flags::registry::FlagRegistry;
use rollgate_store::{Compare, Revision, StoreError, Txn, TxnOp};

/// A per-node task of this incarnation for one flag: the run of its step
/// (or the write of its disable acknowledgement) for `attempt`, in flight
/// or done. The runtime keeps it until the planner says to abort it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeRun {
    /// The attempt it belongs to.
    pub attempt: String,
    /// Finished and acknowledged (or its attempt ended).
    pub done: bool,
}

/// What a member does about the attempts in its view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StepAction {
    /// Run this node's per-node step for the attempt, then acknowledge it
    /// with [`ack_txn`] guarded on `revision` (the flag record's).
    Start {
        /// The flag.
        flag: String,
        /// The attempt.
        attempt: String,
        /// The flag record's mod revision (the fence).
        revision: Revision,
    },
    /// The attempt ended: abort the run (and await its end) before any other
    /// run of this flag starts, then forget it.
    Abort {
        /// The flag.
        flag: String,
        /// The ended attempt.
        attempt: String,
    },
    /// Acknowledge a disabling: this node's bits come from a view at or
    /// after its commit.
    AckDisable {
        /// The flag.
        flag: String,
        /// The attempt.
        attempt: String,
        /// The flag record's mod revision (the fence).
        revision: Revision,
    },
}

fn acked_by_me(view: &ClusterView, flag: &str, attempt: &str, me: &Me<'_>) -> bool {
    view.flag_acks
        .get(flag)
        .and_then(|a| a.get(me.id))
        .is_some_and(|a| a.attempt == attempt && a.incarnation == me.incarnation)
}

/// This member's actions for the view: abort runs whose attempt is no
/// longer the flag's current one; start the per-node step of every
/// `enabling` attempt this incarnation has not acknowledged (its release has
/// the step; at most one run per flag: never while another is tracked);
/// acknowledge every `disabling` attempt once its bits come from a view at
/// or after that commit. Nothing while the view does not name this
/// incarnation a member (its acknowledgements would not count).
pub fn node_step_actions(
    view: &ClusterView,
    registry: &FlagRegistry,
    me: &Me<'_>,
    runs: &BTreeMap<String, NodeRun>,
) -> Vec<StepAction> {
    let mut out = Vec::new();
    for (flag, run) in runs {
        if current_attempt(view, flag) != Some(run.attempt.as_str()) {
            out.push(StepAction::Abort { flag: flag.clone(), attempt: run.attempt.clone() });
        }
    }
    if view.member(me.id).is_none_or(|m| m.record.incarnation != me.incarnation) {
        return out;
    }
    for (flag, rec) in &view.flags {
        let (Some(attempt), Some(_)) = (rec.attempt.as_ref(), in_progress(Some(rec))) else { continue };
        if runs.contains_key(flag) || acked_by_me(view, flag, &attempt.id, me) {
            continue;
        }
        let revision = view.flag_revisions.get(flag).copied().unwrap_or(0);
        match rec.state {
            FlagState::Enabling { .. } if registry.get(flag).is_some_and(|d| d.has_node_step()) => {
                out.push(StepAction::Start { flag: flag.clone(), attempt: attempt.id.clone(), revision });
            }
            FlagState::Disabling { .. } if me.bits_revision >= revision => {
                out.push(StepAction::AckDisable { flag: flag.clone(), attempt: attempt.id.clone(), revision });
            }
            _ => {}
        }
    }
    out
}

/// The acknowledgement write: lands only while the flag record is still the
/// one of the attempt (`mod_revision(flags/<flag>) == revision`), so an ack
/// of an ended attempt never lands.
pub fn ack_txn(keys: &Keys, flag: &str, node: &str, ack: &FlagAck, revision: Revision) -> Result<Txn, StoreError> {
    Ok(Txn::new()
        .when([Compare::mod_revision(keys.flag(flag), revision)])
        .and_then([TxnOp::put_json(keys.flag_ack(flag, node), ack)?]))
}

/// Deletes the acknowledgements of `flag` once no attempt is in progress:
/// each transaction (at most `max_ops` deletes) is guarded on the flag
/// record still being the one of `view` (no new attempt, whose
/// acknowledgements must stay, began since).
pub fn clean_acks(keys: &Keys, view: &ClusterView, flag: &str, max_ops: usize) -> Vec<Txn> {
    if current_attempt(view, flag).is_some() {
        return Vec::new();
    }
    let Some(acks) = view.flag_acks.get(flag) else { return Vec::new() };
    let revision = view.flag_revisions.get(flag).copied().unwrap_or(0);
    let nodes: Vec<&String> = acks.keys().collect();
    nodes
        .chunks(max_ops.max(1))
        .map(|chunk| {
            Txn::new()
                .when([Compare::mod_revision(keys.flag(flag), revision)])
                .and_then(chunk.iter().map(|n| TxnOp::delete(keys.flag_ack(flag, n))))
        })
        .collect()
}
