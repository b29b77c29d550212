//! Takeover and recovery (I4): who may act on an in-progress record whose
//! owner is gone, and what it does.

use std::collections::BTreeSet;

use super::{Me, in_progress, support_blockers};
use crate::cluster::ClusterView;
use crate::flags::registry::FlagRegistry;

/// Whether the owner (`owner`, `owner_incarnation`) of an in-progress record
/// of `flag` is gone: its member is not running (its lease expired, it left,
/// it was forgotten), or its member record names another incarnation (it
/// restarted), or it is the asking incarnation itself and nothing drives the
/// flag here (its driver ended). Liveness is the store's lease, never a wall
/// clock: a live owner is never replaced, however long its steps take.
pub fn owner_gone(view: &ClusterView, flag: &str, owner: &str, owner_incarnation: u64, me: &Me<'_>) -> bool {
    let Some(member) = view.member(owner) else { return true };
    !member.is_running()
        || member.record.incarnation != owner_incarnation
        || (owner == me.id && owner_incarnation == me.incarnation && !me.driving.contains(flag))
}

/// What to do about an in-progress flag record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing (not in progress, or its owner is alive and driving it).
    Nothing,
    /// Take the enabling over with a new attempt (its steps are idempotent).
    ResumeEnable,
    /// Roll the enabling back to disabled, for this reason.
    RollBackEnable {
        /// Why it cannot be resumed.
        reason: String,
    },
    /// Take the disabling over and finish it (its hook is idempotent).
    FinishDisable,
}

/// The recovery rule (I4): an enabling whose owner is gone ([`owner_gone`])
/// is **resumed** when every member still supports the flag, its
/// dependencies are enabled and every member with a per-node step is
/// running; otherwise it is **rolled back** to disabled (safe: enabling
/// does not set the bit). A disabling whose owner is gone is finished by
/// whoever knows the flag. Either way the record leaves the in-progress
/// state: nothing stays stuck.
pub fn recovery_for(view: &ClusterView, registry: &FlagRegistry, flag: &str, me: &Me<'_>) -> Recovery {
    let Some(record) = view.flags.get(flag) else { return Recovery::Nothing };
    let Some((owner, incarnation, state)) = in_progress(Some(record)) else { return Recovery::Nothing };
    if !owner_gone(view, flag, owner, incarnation, me) {
        return Recovery::Nothing;
    }
    if state == "disabling" {
        return if registry.supports(flag) { Recovery::FinishDisable } else { Recovery::Nothing };
    }
    let blockers = support_blockers(view, registry, flag, &BTreeSet::new());
    if blockers.is_empty() {
        Recovery::ResumeEnable
    } else {
        Recovery::RollBackEnable { reason: blockers.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("; ") }
    }
}
