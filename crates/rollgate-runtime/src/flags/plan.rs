//! The sans-IO core of feature flags: pure functions of (cluster view,
//! registry, request) that decide boot, join, enable, recovery and disable.
//! The node runtime ([`crate::node`]) only reads views, calls these and
//! commits what they return under the cluster epoch, so every decision is
//! testable without a store (and model-checked in `tests/it/flags_model.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

pub use rollgate_api::flags::{Blocker, EnableRequest, NodeRef};
use rollgate_util::comma_list as list;

use super::decl::Stability;
use super::registry::FlagRegistry;
use crate::cluster::{ClusterView, EnableAttempt, FlagRecord, FlagState, Member, NodeRecord};

/// The reference of a member, as messages name it.
pub fn node_ref(m: &Member) -> NodeRef {
    NodeRef { node_id: m.record.node_id.clone(), release: m.record.release.clone(), running: m.is_running() }
}

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

/// What the planner needs to know about the node asking.
#[derive(Clone, Copy, Debug)]
pub struct PlanContext<'a> {
    /// This node.
    pub me: &'a str,
    /// Now (ms since the Unix epoch).
    pub now_ms: u64,
    /// An enabling or disabling record not written for this long is taken
    /// over even when its owner looks alive.
    pub stale_ms: u64,
    /// The flags this node is driving right now.
    pub driving: &'a BTreeSet<String>,
}

/// Whether an in-progress record (`owner`, last written `updated_ms`) of
/// `flag` must be recovered by the node of `ctx`: its owner is this node
/// but nothing drives it here (a restart after a crash, or a driver that
/// failed), its owner is not a running member, or it is stale.
pub fn needs_recovery(view: &ClusterView, flag: &str, owner: &str, updated_ms: u64, ctx: &PlanContext<'_>) -> bool {
    (owner == ctx.me && !ctx.driving.contains(flag))
        || !view.member(owner).is_some_and(Member::is_running)
        || ctx.now_ms.saturating_sub(updated_ms) > ctx.stale_ms
}

fn lacking(view: &ClusterView, flag: &str) -> Vec<NodeRef> {
    view.members.values().filter(|m| !m.record.supported_flags.contains(flag)).map(node_ref).collect()
}

fn step_nodes(view: &ClusterView, flag: &str) -> (BTreeSet<String>, Vec<NodeRef>) {
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

fn in_progress(record: Option<&FlagRecord>) -> Option<(&str, &'static str, u64)> {
    match record.map(|r| (&r.state, r.updated_ms)) {
        Some((FlagState::Enabling { owner, .. }, at)) => Some((owner, "enabling", at)),
        Some((FlagState::Disabling { owner, .. }, at)) => Some((owner, "disabling", at)),
        _ => None,
    }
}

/// The checks every member must pass for `flag` to be enabled, given that
/// its dependencies in `planned` will be enabled first.
fn support_blockers(
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

/// Plans an enable request: the flags to enable with their dependencies,
/// dependencies first, and everything that blocks it (every member, running
/// or stopped, must support each flag; members with a per-node step must be
/// running; experimental flags need `experimental`).
pub fn plan_enable(
    view: &ClusterView,
    registry: &FlagRegistry,
    request: &EnableRequest,
    ctx: &PlanContext<'_>,
) -> EnablePlan {
    let mut plan = EnablePlan::default();
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
    if !request.all && request.flags.is_empty() {
        plan.blockers.push(Blocker::NothingRequested);
        return plan;
    }
    // The closure over dependencies, in dependency order.
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
        if let Some((owner, state, at)) = in_progress(record) {
            let takeover = state == "enabling" && needs_recovery(view, &flag, owner, at, ctx);
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

/// Under the epoch fence, the record that starts (or takes over) enabling
/// `flag`, or what blocks it. Dependencies must be enabled already.
pub fn begin_enable(
    view: &ClusterView,
    registry: &FlagRegistry,
    flag: &str,
    attempt_id: &str,
    ctx: &PlanContext<'_>,
) -> Result<Begin, Vec<Blocker>> {
    let record = view.flags.get(flag);
    if record.is_some_and(FlagRecord::is_enabled) {
        return Ok(Begin::AlreadyEnabled);
    }
    if let Some((owner, state, at)) = in_progress(record)
        && (state == "disabling" || !needs_recovery(view, flag, owner, at, ctx))
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
            owner: ctx.me.to_string(),
            started_ms: ctx.now_ms,
            step: Some("enable_steps".into()),
        },
        updated_ms: ctx.now_ms,
        info: Some(decl.info()),
        attempt: Some(EnableAttempt { id: attempt_id.to_string(), node_steps }),
        note: None,
    })))
}

/// What to do about an in-progress flag record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing (not in progress, or its owner is driving it).
    Nothing,
    /// Take the enabling over and run its steps again (they are idempotent).
    ResumeEnable,
    /// Roll the enabling back to disabled, for this reason.
    RollBackEnable {
        /// Why it cannot be resumed.
        reason: String,
    },
    /// Run the disable hook again and finish disabling.
    FinishDisable,
}

/// The recovery rule (I4): an enabling whose driver is gone
/// ([`needs_recovery`]) is **resumed** when every member still supports the
/// flag, its dependencies are enabled and every member with a per-node step
/// is running; otherwise it is **rolled back** to disabled (safe: no node
/// produced data gated by it, since enabling does not set the bit). A
/// disabling whose driver is gone is finished (its hook is idempotent).
/// Either way the record leaves the in-progress state: nothing stays stuck.
pub fn recovery_for(view: &ClusterView, registry: &FlagRegistry, flag: &str, ctx: &PlanContext<'_>) -> Recovery {
    let Some(record) = view.flags.get(flag) else { return Recovery::Nothing };
    let Some((owner, state, at)) = in_progress(Some(record)) else { return Recovery::Nothing };
    if !needs_recovery(view, flag, owner, at, ctx) {
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

/// The record of a rolled-back enabling.
pub fn rolled_back(record: &FlagRecord, reason: &str, now_ms: u64) -> FlagRecord {
    FlagRecord {
        state: FlagState::Disabled,
        updated_ms: now_ms,
        info: record.info.clone(),
        attempt: None,
        note: Some(format!("enabling rolled back: {reason}")),
    }
}

/// One flag a node does not know although the cluster has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnknownPresentFlag {
    /// The flag.
    pub flag: String,
    /// `enabled`, `being enabled` or `being disabled`.
    pub state: String,
    /// The first release that knows it, from its record.
    pub introduced_in: Option<String>,
    /// Its description, from its record.
    pub description: Option<String>,
}

impl fmt::Display for UnknownPresentFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.flag)?;
        let mut facts = Vec::new();
        if let Some(d) = self.description.as_deref().filter(|d| !d.is_empty()) {
            facts.push(format!("{:?}", rollgate_util::shorten(d)));
        }
        facts.push(self.state.clone());
        match self.introduced_in.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => facts.push(format!("introduced in release {r}")),
            None => facts.push("its first release is not recorded".into()),
        }
        write!(f, " ({})", facts.join(", "))
    }
}

fn state_words(state: &FlagState) -> &'static str {
    match state {
        FlagState::Enabled { .. } => "enabled",
        FlagState::Enabling { .. } => "being enabled",
        FlagState::Disabling { .. } => "being disabled",
        FlagState::Disabled => "disabled",
    }
}

/// The flags of `flags` that are enabled, being enabled or being disabled
/// and that `supported` lacks.
pub fn unknown_present<'a>(
    flags: impl IntoIterator<Item = (&'a String, &'a FlagRecord)>,
    supported: &BTreeSet<String>,
) -> Vec<UnknownPresentFlag> {
    flags
        .into_iter()
        .filter(|(name, r)| r.is_present() && !supported.contains(*name))
        .map(|(name, r)| UnknownPresentFlag {
            flag: name.clone(),
            state: state_words(&r.state).to_string(),
            introduced_in: r.info.as_ref().map(|i| rollgate_util::shorten(&i.introduced_in)),
            description: r.info.as_ref().map(|i| rollgate_util::shorten(&i.description)),
        })
        .collect()
}

/// The fix for a node whose release lacks flags the cluster has.
pub fn unknown_flags_fix(flags: &[UnknownPresentFlag]) -> String {
    match flags {
        [one] => match one.introduced_in.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => format!("run release {r} or later on this node"),
            None => "run a release that knows it on this node".into(),
        },
        _ => "run a release that knows all of them on this node".into(),
    }
}

/// Why a node may not join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JoinRefusal {
    /// The cluster has flags the node's release does not know.
    UnknownFlags {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The flags.
        flags: Vec<UnknownPresentFlag>,
    },
    /// The node lacks cluster features every member publishes.
    MissingFeatures {
        /// The node.
        node: String,
        /// The features.
        missing: Vec<String>,
    },
}

impl fmt::Display for JoinRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinRefusal::UnknownFlags { node, release, flags } => write!(
                f,
                "node {node} (release {release}) cannot join: the cluster has feature flags that release {release} does not support: {}; {}",
                list(flags),
                unknown_flags_fix(flags)
            ),
            JoinRefusal::MissingFeatures { node, missing } => {
                f.write_str(&crate::features::missing_features_message(node, missing))
            }
        }
    }
}

/// The join check (I2, I5, the feature ratchet), run on the view the join
/// commits against: the node's release must know every flag that is
/// enabled, being enabled or being disabled, and it must publish every
/// cluster feature all current members publish.
pub fn join_check(view: &ClusterView, record: &NodeRecord) -> Result<(), JoinRefusal> {
    let unknown = unknown_present(&view.flags, &record.supported_flags);
    if !unknown.is_empty() {
        return Err(JoinRefusal::UnknownFlags {
            node: record.node_id.clone(),
            release: record.release.clone(),
            flags: unknown,
        });
    }
    let missing = crate::features::missing_features(view, record);
    if !missing.is_empty() {
        return Err(JoinRefusal::MissingFeatures { node: record.node_id.clone(), missing });
    }
    Ok(())
}

/// A required flag that cannot be enabled, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequiredBlock {
    /// The flag.
    pub flag: String,
    /// The release that introduced it.
    pub introduced_in: String,
    /// Members that do not support it.
    pub lacking: Vec<NodeRef>,
    /// Members with a per-node step that are not running.
    pub steps_down: Vec<NodeRef>,
}

/// The required flags (with their dependencies) a booting node must enable
/// itself, in dependency order, or, when some cannot be enabled, what
/// blocks each. `view` must already include the booting node's record.
pub fn required_to_enable(view: &ClusterView, registry: &FlagRegistry) -> Result<Vec<String>, Vec<RequiredBlock>> {
    let mut wanted = BTreeSet::new();
    for d in registry.topological().filter(|d| d.get_stability() == Stability::Required) {
        wanted.extend(registry.with_dependencies(d.name()));
    }
    let mut todo = Vec::new();
    let mut blocks = Vec::new();
    for d in registry.topological().filter(|d| wanted.contains(d.name())) {
        let flag = d.name();
        if view.flags.get(flag).is_some_and(FlagRecord::is_present) {
            continue;
        }
        let lacking = lacking(view, flag);
        let (_, steps_down) = step_nodes(view, flag);
        if lacking.is_empty() && steps_down.is_empty() {
            todo.push(flag.to_string());
        } else {
            blocks.push(RequiredBlock {
                flag: flag.to_string(),
                introduced_in: d.get_introduced_in().to_string(),
                lacking,
                steps_down,
            });
        }
    }
    if blocks.is_empty() { Ok(todo) } else { Err(blocks) }
}

/// The message for a node blocked by required flags: which flags, which
/// nodes, and the way forward (nothing was changed; the nodes can be
/// upgraded to a release that supports the flags without requiring them).
pub fn required_blocked_message(node: &str, release: &str, blocks: &[RequiredBlock], bridge: Option<&str>) -> String {
    let mut parts = Vec::new();
    let mut all_lacking: BTreeMap<String, ()> = BTreeMap::new();
    for b in blocks {
        let mut why = Vec::new();
        if !b.lacking.is_empty() {
            why.push(format!("node {} do not support it", list(&b.lacking)));
            for n in &b.lacking {
                all_lacking.insert(n.node_id.clone(), ());
            }
        }
        if !b.steps_down.is_empty() {
            why.push(format!("node {} must run its per-node enable step but is not running", list(&b.steps_down)));
        }
        let intro = if b.introduced_in.is_empty() {
            String::new()
        } else {
            format!(", introduced in release {}", b.introduced_in)
        };
        parts.push(format!("`{}`{intro}: {}", b.flag, why.join(" and ")));
    }
    let nodes: Vec<String> = all_lacking.into_keys().collect();
    let target = match bridge {
        Some(r) => format!("release {r}, which supports them without requiring them"),
        None => "a release that supports them without requiring them".to_string(),
    };
    let upgrade = if nodes.is_empty() {
        "start the stopped nodes named above (or `rollgate nodes forget ID` those gone for good)".to_string()
    } else {
        format!(
            "upgrade {} to {target} (or `rollgate nodes forget ID` a stopped node that is gone for good)",
            nodes.join(", ")
        )
    };
    let flags: Vec<&str> = blocks.iter().map(|b| b.flag.as_str()).collect();
    format!(
        "node {node} (release {release}) cannot start: release {release} requires feature flags that are disabled in this cluster and cannot be enabled yet: {}. Nothing was changed. To go on: {upgrade}; then start this node again (it enables them itself) or run `rollgate flags enable {}`. Until then, keep this node on its previous release.",
        parts.join("; "),
        flags.join(" ")
    )
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

/// Under the epoch fence, the record that starts disabling `flag` (only a
/// reversible flag no enabled flag depends on), or why not.
pub fn begin_disable(
    view: &ClusterView,
    registry: &FlagRegistry,
    flag: &str,
    ctx: &PlanContext<'_>,
) -> Result<BeginDisable, DisableRefusal> {
    let Some(decl) = registry.get(flag) else {
        return Err(DisableRefusal::UnknownFlag { flag: flag.to_string(), release: registry.release().to_string() });
    };
    if !decl.is_reversible() {
        return Err(DisableRefusal::NotReversible { flag: flag.to_string() });
    }
    let record = view.flags.get(flag);
    if let Some((owner, state, at)) = in_progress(record) {
        let mine = state == "disabling" && needs_recovery(view, flag, owner, at, ctx);
        if !mine {
            return Err(DisableRefusal::InProgress {
                flag: flag.to_string(),
                owner: owner.to_string(),
                state: state.into(),
            });
        }
    } else if !record.is_some_and(FlagRecord::is_enabled) {
        return Ok(BeginDisable::AlreadyDisabled);
    }
    let dependents: Vec<String> = view
        .flags
        .iter()
        .filter(|(name, r)| r.is_present() && name.as_str() != flag)
        .filter(|(name, r)| {
            registry
                .get(name)
                .map(|d| d.get_depends_on().iter().any(|x| x == flag))
                .unwrap_or_else(|| r.info.as_ref().is_some_and(|i| i.depends_on.iter().any(|x| x == flag)))
        })
        .map(|(name, _)| name.clone())
        .collect();
    if !dependents.is_empty() {
        return Err(DisableRefusal::Dependents { flag: flag.to_string(), dependents });
    }
    Ok(BeginDisable::Write(Box::new(FlagRecord {
        state: FlagState::Disabling { owner: ctx.me.to_string(), started_ms: ctx.now_ms },
        updated_ms: ctx.now_ms,
        info: Some(decl.info()),
        attempt: None,
        note: None,
    })))
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
