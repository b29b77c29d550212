//! The disable protocol: who may disable (every member's release agrees),
//! and the owner's side ([`drive_disable`]): wait until no member that may
//! still serve holds the bit, run the hook, finish.

use std::fmt;

use serde::Serialize;

use super::enable::{DriveAction, Outcome, StepState, owned};
use super::recovery::owner_gone;
use super::{Blocker, Bounds, Me, Mono, NodeRef, in_progress, node_ref};
use crate::cluster::{ClusterView, EnableAttempt, FlagRecord, FlagState, ViewOp};
use crate::flags::registry::FlagRegistry;
use rollgate_store::Revision;

/// Why a member keeps a flag from being disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// Its release requires the flag.
    Requires,
    /// Its release declares the flag irreversible (it may have written data
    /// no disable hook converts back).
    CannotReverse,
}

/// Why a flag cannot be disabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DisableRefusal {
    /// A flag this release does not know.
    UnknownFlag {
        /// The flag.
        flag: String,
        /// This node's release.
        release: String,
    },
    /// The flag is not reversible.
    NotReversible {
        /// The flag.
        flag: String,
    },
    /// Enabled flags depend on it.
    Dependents {
        /// The flag.
        flag: String,
        /// The flags that depend on it.
        dependents: Vec<String>,
    },
    /// Another node is enabling or disabling it.
    InProgress {
        /// The flag.
        flag: String,
        /// The node driving it.
        owner: String,
        /// `enabling` or `disabling`.
        state: String,
    },
    /// Members whose release requires the flag or cannot reverse it.
    NeededByMembers {
        /// The flag.
        flag: String,
        /// The members and why.
        members: Vec<(NodeRef, Need)>,
    },
}

impl fmt::Display for DisableRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisableRefusal::UnknownFlag { flag, release } => {
                Blocker::UnknownFlag { flag: flag.clone(), release: release.clone() }.fmt(f)
            }
            DisableRefusal::NotReversible { flag } => write!(
                f,
                "flag `{flag}` is not reversible: once enabled it stays enabled (nodes may have written data only it can read); only flags declared reversible can be disabled"
            ),
            DisableRefusal::Dependents { flag, dependents } => write!(
                f,
                "flag `{flag}` cannot be disabled while flags that depend on it are enabled: disable {} first",
                dependents.iter().map(|d| format!("`{d}`")).collect::<Vec<_>>().join(", ")
            ),
            DisableRefusal::InProgress { flag, owner, state } => {
                Blocker::InProgress { flag: flag.clone(), owner: owner.clone(), state: state.clone() }.fmt(f)
            }
            DisableRefusal::NeededByMembers { flag, members } => {
                let who: Vec<String> = members
                    .iter()
                    .map(|(n, need)| {
                        let why = match need {
                            Need::Requires => "requires it",
                            Need::CannotReverse => "cannot reverse it (its release declares it irreversible)",
                        };
                        format!("node {n} {why}")
                    })
                    .collect();
                write!(
                    f,
                    "flag `{flag}` cannot be disabled: {}; upgrade those nodes to a release that can do without it, or `rollgate nodes forget` them once they are stopped for good",
                    who.join("; ")
                )
            }
        }
    }
}

/// The outcome of [`begin_disable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeginDisable {
    /// Not enabled: nothing to do.
    AlreadyDisabled,
    /// Write this record (disabling, owned by the asking node).
    Write(Box<FlagRecord>),
}

fn dependents(view: &ClusterView, registry: &FlagRegistry, flag: &str) -> Vec<String> {
    view.flags
        .iter()
        .filter(|(name, r)| r.is_present() && name.as_str() != flag)
        .filter(|(name, r)| {
            registry
                .get(name)
                .map(|d| d.get_depends_on().iter().any(|x| x == flag))
                .unwrap_or_else(|| r.info.as_ref().is_some_and(|i| i.depends_on.iter().any(|x| x == flag)))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn needed_by(view: &ClusterView, flag: &str) -> Vec<(NodeRef, Need)> {
    let mut out = Vec::new();
    for m in view.members.values() {
        if m.record.required_flags.contains(flag) {
            out.push((node_ref(m), Need::Requires));
        } else if m.record.irreversible_flags.contains(flag) {
            out.push((node_ref(m), Need::CannotReverse));
        }
    }
    out
}

/// Under the epoch fence, the record that starts disabling `flag` (or takes
/// over a disabling whose owner is gone), or why not: only a flag this
/// release declares reversible, no enabled flag depending on it, and no
/// member (running or stopped) whose release requires it or declares it
/// irreversible (e).
pub fn begin_disable(
    view: &ClusterView,
    registry: &FlagRegistry,
    flag: &str,
    attempt_id: &str,
    me: &Me<'_>,
) -> Result<BeginDisable, DisableRefusal> {
    let Some(decl) = registry.get(flag) else {
        return Err(DisableRefusal::UnknownFlag { flag: flag.to_string(), release: registry.release().to_string() });
    };
    if !decl.is_reversible() {
        return Err(DisableRefusal::NotReversible { flag: flag.to_string() });
    }
    let record = view.flags.get(flag);
    if let Some((owner, incarnation, state)) = in_progress(record) {
        let takeover = state == "disabling" && owner_gone(view, flag, owner, incarnation, me);
        if !takeover {
            return Err(DisableRefusal::InProgress {
                flag: flag.to_string(),
                owner: owner.to_string(),
                state: state.into(),
            });
        }
    } else if !record.is_some_and(FlagRecord::is_enabled) {
        return Ok(BeginDisable::AlreadyDisabled);
    }
    let dependents = dependents(view, registry, flag);
    if !dependents.is_empty() {
        return Err(DisableRefusal::Dependents { flag: flag.to_string(), dependents });
    }
    let members = needed_by(view, flag);
    if !members.is_empty() {
        return Err(DisableRefusal::NeededByMembers { flag: flag.to_string(), members });
    }
    Ok(BeginDisable::Write(Box::new(FlagRecord {
        state: FlagState::Disabling { owner: me.id.to_string(), started_ms: me.wall_ms },
        updated_ms: me.wall_ms,
        info: Some(decl.info()),
        attempt: Some(EnableAttempt {
            id: attempt_id.to_string(),
            node_steps: Default::default(),
            owner_incarnation: me.incarnation,
        }),
        note: None,
    })))
}

/// The owner's state of one disabling attempt (runtime facts).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DisableDriver {
    /// The attempt id.
    pub attempt: String,
    /// The revision of the `disabling` commit.
    pub revision: Revision,
    /// When the commit was seen committed (the owner's clock).
    pub started: Mono,
    /// The disable hook.
    pub hook: StepState,
}

/// How long a member that did not acknowledge a disabling may still serve
/// with its bit, at most: the longest view lease of the members, stretched
/// by the clock margin.
fn lease_wait(view: &ClusterView, bounds: &Bounds) -> u64 {
    let longest = view
        .members
        .values()
        .map(|m| if m.record.view_lease_ms > 0 { m.record.view_lease_ms } else { bounds.view_lease_ms })
        .max()
        .unwrap_or(bounds.view_lease_ms);
    bounds.stretch(longest)
}

/// The owner's side of a disabling, decided on `view` at `now` (the owner's
/// clock): whether the attempt is still ours; then wait until every running
/// member acknowledged (its bits come from a view at or after the commit)
/// or one view lease has passed since the commit (a member that did not
/// acknowledge has stopped serving by then: b); then the hook; then the
/// `disabled` commit, or back to `enabled` when the hook failed.
pub fn drive_disable(
    view: &ClusterView,
    registry: &FlagRegistry,
    flag: &str,
    d: &DisableDriver,
    now: Mono,
    bounds: &Bounds,
    me: &Me<'_>,
) -> DriveAction {
    if view.revision < d.revision {
        return DriveAction::Wait { pending: vec!["the view of the attempt's own commit".into()], until: None };
    }
    let rec = match owned(view, flag, &d.attempt) {
        Ok(rec) => rec,
        Err(ended) => return ended,
    };
    if d.hook == StepState::NotStarted {
        let acks = view.flag_acks.get(flag);
        let pending: Vec<String> = view
            .running()
            .filter(|m| {
                !acks
                    .and_then(|a| a.get(&m.record.node_id))
                    .is_some_and(|a| a.attempt == d.attempt && a.incarnation == m.record.incarnation)
            })
            .map(|m| m.record.node_id.clone())
            .collect();
        let deadline = d.started.plus(lease_wait(view, bounds));
        if !pending.is_empty() && now < deadline {
            return DriveAction::Wait { pending, until: Some(deadline) };
        }
    }
    let has_hook = registry.get(flag).is_some_and(|decl| decl.before_disable.is_some());
    match &d.hook {
        StepState::NotStarted if has_hook => DriveAction::RunStep,
        StepState::Running => DriveAction::Wait { pending: vec!["the disable hook".into()], until: None },
        StepState::Failed(reason) => {
            let back = FlagRecord {
                state: FlagState::Enabled { since_ms: me.wall_ms },
                updated_ms: me.wall_ms,
                info: rec.info.clone(),
                attempt: None,
                note: Some(reason.clone()),
            };
            DriveAction::Commit {
                ops: vec![ViewOp::PutFlag(flag.to_string(), back)],
                then: Outcome::ReEnabled { reason: reason.clone() },
            }
        }
        StepState::NotStarted | StepState::Done { .. } => {
            let done = FlagRecord {
                state: FlagState::Disabled,
                updated_ms: me.wall_ms,
                info: rec.info.clone(),
                attempt: None,
                note: None,
            };
            DriveAction::Commit { ops: vec![ViewOp::PutFlag(flag.to_string(), done)], then: Outcome::Disabled }
        }
    }
}
