//! The sans-IO core of feature flags: every decision of the boot, join,
//! enable, disable, recovery, takeover, per-node-step and serving protocols
//! is a pure function here of (cluster view, registry, the asking node,
//! its driver's state, its own monotonic clock) that returns **what to do**.
//! The node runtime ([`crate::node`], `node/driver.rs`) only reads views,
//! executes the actions these return and reports their outcomes back as
//! driver state; every commit re-runs the deciding function on the view the
//! commit is fenced on (the split openraft makes between engine and runtime).
//! The stateright model (`tests/it/flags_model.rs`) drives these same
//! functions, with no copy of any rule.
//!
//! # The protocol in one page
//!
//! Time is either **store-relative** (a member is running while its live key
//! exists on a lease the store expires) or the asking node's **own monotonic
//! clock** ([`Mono`]), never compared across nodes. No decision reads a wall
//! clock (records keep wall-clock times for display only), so clock skew and
//! long steps cannot cause a takeover (hole d).
//!
//! - **Join** ([`plan_join`], [`join_check`]): the joiner must know every
//!   present flag, publish every cluster feature all members publish, share a
//!   protocol version and be transport-compatible with every running member
//!   (f), and not require a flag that is being disabled. A fresh cluster
//!   starts enabling its stable and required flags in the join; otherwise the
//!   disabled required flags every member supports. The join publishes the
//!   node's incarnation (new at every start), its required and irreversible
//!   flags and its view lease. Per-node steps of flags enabled in the view the
//!   join committed against run before the node serves (a).
//! - **Enable** ([`plan_enable`], [`begin_enable`], [`drive_enable`]): commit
//!   `enabling { owner, attempt { id, owner_incarnation } }`; run the cluster
//!   step; then wait until **every current member whose record has a per-node
//!   step for the flag** acknowledged this attempt from its current
//!   incarnation (a joiner or a restarted member is waited for, not skipped:
//!   a); a failed step, a member with a step that stops, or the owner's own
//!   `node_steps_ms` deadline rolls back naming the nodes; the `enabled`
//!   commit re-checks all of it (and support, dependencies) on the fenced view.
//! - **Per-node steps** ([`node_step_actions`], [`ack_txn`]): a member runs
//!   its step for every `enabling` attempt it has not acknowledged, at most
//!   one run per (node, flag) at a time; a run whose attempt ended is aborted
//!   (and awaited) before the next starts; its acknowledgement is a
//!   transaction guarded on the flag record's mod revision, so a late ack of
//!   an ended attempt never lands (c).
//! - **Takeover and recovery** ([`owner_gone`], [`recovery_for`]): an
//!   in-progress record's owner is gone iff its member is not running, or its
//!   member record names another incarnation (it restarted), or it is this
//!   very incarnation and nothing drives the flag here. A gone owner's
//!   enabling is resumed (a new attempt) when it can still succeed, else
//!   rolled back; a gone owner's disabling is taken over and finished (I4).
//! - **Disable** ([`begin_disable`], [`drive_disable`]): refused while a
//!   member's release requires the flag or cannot reverse it, naming them
//!   (e). Commit `disabling { attempt }`; members acknowledge once their bits
//!   come from a view at or after that commit; the owner runs the hook when
//!   every running member acknowledged **or** the longest view lease of the
//!   members (stretched by the clock margin) has passed on its own clock
//!   since the commit: by then a member that did not acknowledge has stopped
//!   serving (b). Then `disabled`; a failed hook puts the flag back.
//! - **Serving** ([`serving`], [`peer_admitted`]; I11): a node serves only
//!   while its view names it a running member of its incarnation, it knows
//!   every present flag, and it confirmed its lease within `ttl·(1−ρ)` and
//!   its view within `view_lease·(1−ρ)` (b, g). Inbound peer links need the
//!   peer to be a running member.
//! - **Fencing** (c, h): an owned step's writes go through a store fenced on
//!   the flag record's mod revision (the attempt), a service-format step's on
//!   the owner key's create revision.
//!
//! # What guards it
//!
//! The model (`tests/it/flags_model.rs`: `the_flag_protocol_holds_while_enabling_and_joining`,
//! `…_while_disabling_with_a_node_cut_off_and_a_slow_clock`,
//! `…_over_crashes_restarts_and_takeovers`) checks these properties in every
//! interleaving it explores; its mutation tests weaken one rule each through
//! [`Rules::weakened`] and assert that the checker then finds a
//! counterexample (`a_model_whose_finish_skips_the_ack_check_…`,
//! `a_model_whose_fence_has_no_margin_…`).
//!
//! | invariant (`ARCHITECTURE.md`) | model property | regression tests (`tests/it/`) |
//! |---|---|---|
//! | I1 no gated data before the flag is enabled | `P1 bit implies prepared` (every member supports it, every member with a per-node step acknowledged the attempt from its current incarnation), `P2` | `flags_holes::a_…`, `flags_holes::c_…`, `flags_enable::enabling_is_not_enabled_…` |
//! | I2 no member lacking an enabled flag; such a binary does not boot | `P5 no member lacks a present flag`, `P4 serving node knows its flags and is a member` | `flags_holes::g_…`, `flags_boot.rs`, `flags_race.rs` |
//! | I3 enabling refused while a member lacks the flag, naming it | `P1` (support re-checked at the fenced finish), `P5` | `flags_enable::enable_is_refused_…`, `flags_planner.rs`, `flags_holes::e_…` (the same for disabling), `flags_holes::f_…` (for joins) |
//! | I4 never stuck in between after a crash | `P9 every path ends enabled or disabled`, `P8 a live owner is never replaced` | `flags_crash.rs`, `flags_holes::d_…` |
//! | I5 a join and an enable racing never both succeed | `P5` (every commit in the model is epoch-fenced) | `flags_race.rs`, `cluster_epoch_race.rs`, `flags_holes::f_…` |
//! | I11 fail closed | `P2 no serving bit after a disable`, `P4` | `flags_holes::b_…`, `flags_holes::g_…` |
//!
//! Also: `P3 one run per (node, flag)` and `P6 no late ack lands` (c), `P7
//! no member's required flag disabled` (e), `duplicated views are ignored`;
//! `flags_holes::h_…` guards the migration owner's fence.

mod disable;
mod enable;
mod finalize;
mod join;
mod recovery;
mod serving;
mod steps;

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

pub use rollgate_api::flags::{Blocker, EnableRequest, NodeRef};
use rollgate_store::Revision;

use super::registry::FlagRegistry;
use crate::cluster::{ClusterView, FlagRecord, FlagState, Member};

pub use disable::{BeginDisable, DisableDriver, DisableRefusal, Need, begin_disable, drive_disable};
pub use enable::{
    Begin, DriveAction, EnableDriver, EnablePlan, Outcome, StepState, begin_enable, drive_enable, plan_enable,
    rolled_back,
};
pub use finalize::{
    Finalize, FinalizeBlocker, FinalizeReport, FinalizeRequest, ReleaseFloor, default_release, plan_finalize,
    stable_flags_of,
};
pub use join::{
    JoinPlan, JoinRefusal, JoinStop, RequiredBlock, RequiredState, UnknownPresentFlag, join_check, plan_join,
    release_floor_check, required_at_boot, required_blocked_message, required_to_enable, unknown_flags_fix,
    unknown_present,
};
pub use recovery::{Recovery, owner_gone, recovery_for};
pub use serving::{Confirmations, FenceReason, PeerRefusal, Serving, apply_view, peer_admitted, serving};
pub use steps::{NodeRun, StepAction, ack_txn, clean_acks, node_step_actions};

/// Milliseconds on the asking node's monotonic clock (since its runtime
/// started). Never compared across nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mono(pub u64);

impl Mono {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Mono {
        Mono(self.0.saturating_add(ms))
    }
}

/// A rule a test may weaken ([`Rules::weakened`]), to show that the model
/// checker then finds a counterexample.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// Finish an enabling without checking the per-node acknowledgements.
    FinishWithoutAcks,
    /// Serve until the very end of a confirmation's lease (no clock margin).
    NoFenceMargin,
}

/// The protocol's rules: [`Rules::strict`] everywhere but the model's
/// mutation tests. A runtime value, not a cargo feature: features unify
/// across a workspace, and a weakened rule must never reach another test
/// or a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rules {
    finish_requires_acks: bool,
    fence_margin: bool,
}

impl Rules {
    /// The protocol as specified.
    pub const fn strict() -> Rules {
        Rules { finish_requires_acks: true, fence_margin: true }
    }

    /// The protocol with one rule weakened (model mutation tests only).
    #[doc(hidden)]
    pub const fn weakened(m: Mutation) -> Rules {
        match m {
            Mutation::FinishWithoutAcks => Rules { finish_requires_acks: false, fence_margin: true },
            Mutation::NoFenceMargin => Rules { finish_requires_acks: true, fence_margin: false },
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::strict()
    }
}

/// The bounds the protocols work with (ms, on each node's own clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bounds {
    /// How long an owner waits for the per-node steps once its cluster step is done.
    pub node_steps_ms: u64,
    /// The liveness lease TTL.
    pub ttl_ms: u64,
    /// How long a node serves after it last confirmed its view current.
    pub view_lease_ms: u64,
    /// The clock margin ρ in millionths: how far a node's clock rate may be
    /// off, plus scheduling slack. A node serves `(1−ρ)` of a lease; a
    /// disabling owner waits `(1+ρ)` of one.
    pub margin_ppm: u32,
}

impl Bounds {
    /// `ms·(1−ρ)` (all of it without the margin rule).
    pub fn shrink(&self, ms: u64, rules: Rules) -> u64 {
        if !rules.fence_margin {
            return ms;
        }
        let ppm = u64::from(self.margin_ppm.min(1_000_000));
        ms - ms.saturating_mul(ppm) / 1_000_000
    }

    /// `ms·(1+ρ)`.
    pub fn stretch(&self, ms: u64) -> u64 {
        ms.saturating_add(ms.saturating_mul(u64::from(self.margin_ppm)) / 1_000_000)
    }
}

/// Who asks, and what this incarnation is doing right now (runtime facts
/// the store does not have).
#[derive(Clone, Copy, Debug)]
pub struct Me<'a> {
    /// The node id.
    pub id: &'a str,
    /// This incarnation ([`crate::cluster::NodeRecord::incarnation`]).
    pub incarnation: u64,
    /// The flags whose enabling or disabling a driver of this incarnation runs now.
    pub driving: &'a BTreeSet<String>,
    /// The revision of the view the hot-path bits were last set from.
    pub bits_revision: Revision,
    /// Wall-clock ms, for the display fields of the records written (never compared).
    pub wall_ms: u64,
    /// The rules.
    pub rules: Rules,
}

/// The reference of a member, as messages name it.
pub fn node_ref(m: &Member) -> NodeRef {
    NodeRef { node_id: m.record.node_id.clone(), release: m.record.release.clone(), running: m.is_running() }
}

pub(crate) fn lacking(view: &ClusterView, flag: &str) -> Vec<NodeRef> {
    view.members.values().filter(|m| !m.record.supported_flags.contains(flag)).map(node_ref).collect()
}

/// The members with a per-node step for `flag`: running ones, stopped ones.
pub(crate) fn step_nodes(view: &ClusterView, flag: &str) -> (BTreeSet<String>, Vec<NodeRef>) {
    let mut up = BTreeSet::new();
    let mut down = Vec::new();
    for m in view.members.values().filter(|m| m.record.flag_node_steps.contains(flag)) {
        if m.is_running() {
            up.insert(m.record.node_id.clone());
        } else {
            down.push(node_ref(m));
        }
    }
    (up, down)
}

/// The checks every member must pass for `flag` to be enabled, given that
/// its dependencies in `planned` will be enabled first.
pub(crate) fn support_blockers(
    view: &ClusterView,
    registry: &FlagRegistry,
    flag: &str,
    planned: &BTreeSet<String>,
) -> Vec<Blocker> {
    let mut out = Vec::new();
    let Some(decl) = registry.get(flag) else {
        return vec![Blocker::UnknownFlag { flag: flag.to_string(), release: registry.release().to_string() }];
    };
    for dep in decl.get_depends_on() {
        if !view.is_enabled(dep) && !planned.contains(dep) {
            out.push(Blocker::DependencyNotEnabled { flag: flag.to_string(), dependency: dep.clone() });
        }
    }
    let nodes = lacking(view, flag);
    if !nodes.is_empty() {
        out.push(Blocker::NotSupported {
            flag: flag.to_string(),
            introduced_in: decl.get_introduced_in().to_string(),
            nodes,
        });
    }
    let (_, down) = step_nodes(view, flag);
    if !down.is_empty() {
        out.push(Blocker::StepNodesDown { flag: flag.to_string(), nodes: down });
    }
    out
}

/// An in-progress record: (owner, owner incarnation, `enabling`/`disabling`).
pub(crate) fn in_progress(record: Option<&FlagRecord>) -> Option<(&str, u64, &'static str)> {
    let record = record?;
    let incarnation = record.attempt.as_ref().map_or(0, |a| a.owner_incarnation);
    match &record.state {
        FlagState::Enabling { owner, .. } => Some((owner, incarnation, "enabling")),
        FlagState::Disabling { owner, .. } => Some((owner, incarnation, "disabling")),
        _ => None,
    }
}

/// The attempt id of an in-progress record.
pub(crate) fn current_attempt<'a>(view: &'a ClusterView, flag: &str) -> Option<&'a str> {
    let record = view.flags.get(flag)?;
    in_progress(Some(record))?;
    record.attempt.as_ref().map(|a| a.id.as_str())
}

/// Why a plugin may not start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginRefusal {
    /// The plugin.
    pub plugin: String,
    /// This node's release.
    pub release: String,
    /// Required flags the release does not support.
    pub unsupported: Vec<String>,
    /// Required flags that are supported but not enabled.
    pub not_enabled: Vec<String>,
}

impl fmt::Display for PluginRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = |v: &[String]| v.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ");
        let mut why = Vec::new();
        if !self.unsupported.is_empty() {
            why.push(format!(
                "release {} does not support {} (run a release that does)",
                self.release,
                quote(&self.unsupported)
            ));
        }
        if !self.not_enabled.is_empty() {
            why.push(format!(
                "{} not enabled (run `rollgate flags enable {}`)",
                quote(&self.not_enabled),
                self.not_enabled.join(" ")
            ));
        }
        write!(
            f,
            "plugin `{}` cannot start: it requires feature flags that are not available: {}",
            self.plugin,
            why.join("; ")
        )
    }
}

/// Whether a plugin's required flags are all supported and enabled.
pub fn check_plugin(
    view: &ClusterView,
    registry: &FlagRegistry,
    plugin: &super::decl::PluginSpec,
) -> Result<(), PluginRefusal> {
    let mut refusal = PluginRefusal {
        plugin: plugin.name.clone(),
        release: registry.release().to_string(),
        unsupported: Vec::new(),
        not_enabled: Vec::new(),
    };
    for flag in &plugin.requires {
        if !registry.supports(flag) {
            refusal.unsupported.push(flag.clone());
        } else if !view.is_enabled(flag) {
            refusal.not_enabled.push(flag.clone());
        }
    }
    if refusal.unsupported.is_empty() && refusal.not_enabled.is_empty() { Ok(()) } else { Err(refusal) }
}
