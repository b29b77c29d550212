//! Boot and join: what a node must know and be to join, what the join
//! commits, and what a booting release needs before it serves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::enable::{Begin, begin_enable};
use super::{Me, NodeRef, lacking, node_ref, step_nodes};
use crate::cluster::{
    ClusterView, FlagRecord, FlagState, LiveRecord, Member, NodeRecord, NodeState, TransportRange, ViewOp,
};
use crate::flags::decl::Stability;
use crate::flags::registry::FlagRegistry;
use rollgate_util::comma_list as list;
use rollgate_version::ProtocolRange;

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
    /// The node shares no protocol version with a running member.
    NoCommonProtocol {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The member.
        member: NodeRef,
        /// The node's protocol versions.
        ours: ProtocolRange,
        /// The member's.
        theirs: ProtocolRange,
    },
    /// The node's transport versions and a running member's cannot talk.
    TransportIncompatible {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The member.
        member: NodeRef,
        /// The node's transport range.
        ours: TransportRange,
        /// The member's.
        theirs: TransportRange,
    },
    /// The node's release is below the cluster's release floor (or cannot
    /// be ordered against it).
    BelowFloor {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The floor.
        floor: String,
    },
    /// The node's release removed a flag (assumes it enabled) that the
    /// cluster does not have enabled.
    RemovedNotEnabled {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The flag.
        flag: String,
    },
    /// The node's release requires a flag that is being disabled.
    RequiredBeingDisabled {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The flag.
        flag: String,
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
            JoinRefusal::NoCommonProtocol { node, release, member, ours, theirs } => write!(
                f,
                "node {node} (release {release}) cannot join: it speaks protocol versions {ours} and running member {member} speaks {theirs}, with no version in common; run a release on {node} that speaks one of {theirs} (or upgrade {} first)",
                member.node_id
            ),
            JoinRefusal::TransportIncompatible { node, release, member, ours, theirs } => write!(
                f,
                "node {node} (release {release}) cannot join: its transport version {} (reading {} and later) and running member {member}'s transport version {} (reading {} and later) cannot talk to each other; run a release on {node} whose transport {} reads",
                ours.current, ours.min_compatible, theirs.current, theirs.min_compatible, member.node_id
            ),
            JoinRefusal::BelowFloor { node, release, floor } => write!(
                f,
                "node {node} (release {release}) cannot join: the cluster's release floor is {floor} (finalized with `rollgate upgrade finalize`), and release {release} is below it; run release {floor} or later on {node}"
            ),
            JoinRefusal::RemovedNotEnabled { node, release, flag } => write!(
                f,
                "node {node} (release {release}) cannot join: release {release} removed flag `{flag}` and assumes it enabled, but this cluster does not have it enabled; upgrade the cluster through a release that requires `{flag}` first (it enables it), then to {release}"
            ),
            JoinRefusal::RequiredBeingDisabled { node, release, flag } => write!(
                f,
                "node {node} (release {release}) cannot join: release {release} requires flag `{flag}`, which is being disabled; wait until the disable finishes and enable `{flag}` again, or run a release that does not require it"
            ),
        }
    }
}

/// Whether two transport ranges can talk (the handshake's rule on ranges).
fn transports_talk(a: &TransportRange, b: &TransportRange) -> bool {
    a.current >= b.min_compatible && b.current >= a.min_compatible
}

/// The version checks against every running member (a stopped one is
/// checked by its own rejoin): a common protocol version, compatible
/// transports (f).
fn version_check(view: &ClusterView, record: &NodeRecord) -> Result<(), JoinRefusal> {
    for m in view.running().filter(|m| m.record.node_id != record.node_id) {
        if record.protocol.highest_common(m.record.protocol).is_none() {
            return Err(JoinRefusal::NoCommonProtocol {
                node: record.node_id.clone(),
                release: record.release.clone(),
                member: node_ref(m),
                ours: record.protocol,
                theirs: m.record.protocol,
            });
        }
        if !transports_talk(&record.transport, &m.record.transport) {
            return Err(JoinRefusal::TransportIncompatible {
                node: record.node_id.clone(),
                release: record.release.clone(),
                member: node_ref(m),
                ours: record.transport,
                theirs: m.record.transport,
            });
        }
    }
    Ok(())
}

/// The join check (I2, I5, the feature ratchet, the release floor), run on
/// the view the join commits against: the node's release must be at or
/// above the release floor, know every flag that is
/// enabled, being enabled or being disabled, publish every cluster feature
/// all current members publish, share a protocol version and be
/// transport-compatible with every running member, and not require a flag
/// that is being disabled.
pub fn join_check(view: &ClusterView, record: &NodeRecord) -> Result<(), JoinRefusal> {
    floor_check(view, record)?;
    knowledge_check(view, record)?;
    compatibility_check(view, record)
}

/// The joiner's release is at or above the release floor, if there is one.
fn floor_check(view: &ClusterView, record: &NodeRecord) -> Result<(), JoinRefusal> {
    release_floor_check(view, &record.node_id, &record.release)
}

/// Whether `node` of `release` may boot or join under the view's release
/// floor (checked first at boot, for the clearest refusal, and again in
/// the fenced join).
pub fn release_floor_check(view: &ClusterView, node: &str, release: &str) -> Result<(), JoinRefusal> {
    match &view.floor {
        Some(floor) if !crate::cluster::floor::at_or_above(release, &floor.release) => Err(JoinRefusal::BelowFloor {
            node: node.to_string(),
            release: release.to_string(),
            floor: floor.release.clone(),
        }),
        _ => Ok(()),
    }
}

/// The joiner knows every present flag and publishes every common feature.
fn knowledge_check(view: &ClusterView, record: &NodeRecord) -> Result<(), JoinRefusal> {
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

/// The joiner can talk to every running member and does not require a flag
/// being disabled.
fn compatibility_check(view: &ClusterView, record: &NodeRecord) -> Result<(), JoinRefusal> {
    version_check(view, record)?;
    let disabling = view.flags.iter().find(|(name, r)| {
        matches!(r.state, FlagState::Disabling { .. }) && record.required_flags.contains(name.as_str())
    });
    if let Some((flag, _)) = disabling {
        return Err(JoinRefusal::RequiredBeingDisabled {
            node: record.node_id.clone(),
            release: record.release.clone(),
            flag: flag.clone(),
        });
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

/// What a join commits and starts.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinPlan {
    /// The ops (the member record and the flags the join starts enabling;
    /// the runtime adds the live key on its lease).
    pub ops: Vec<ViewOp>,
    /// The flags the join wrote as enabling, with their attempts,
    /// dependencies first: this node drives them.
    pub drive: Vec<(String, String)>,
    /// The flags enabled in the view the join commits against whose
    /// per-node step this release has: run before the node serves (a).
    pub boot_steps: Vec<String>,
    /// Whether the join creates the cluster (no members, no flags before):
    /// service formats then start at their latest version, no step run.
    pub fresh: bool,
}

/// Why a join stopped without committing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinStop {
    /// Refused.
    Refused(JoinRefusal),
    /// Required flags cannot be enabled.
    Required(Vec<RequiredBlock>),
}

/// The join, decided on the view it commits against: [`join_check`]; a
/// release that removed a flag joins only a cluster that has it enabled; on
/// a fresh cluster (no members, no flags) the removed flags are written
/// enabled and every stable and required flag as enabling, otherwise the disabled required flags every member
/// supports (or the blocks); and the per-node steps due before serving.
/// `me` is the joining incarnation (`me.driving` empty); `attempt_id` gives
/// a fresh attempt id per call.
pub fn plan_join(
    view: &ClusterView,
    registry: &FlagRegistry,
    record: &NodeRecord,
    me: &Me<'_>,
    attempt_id: &mut dyn FnMut() -> String,
) -> Result<JoinPlan, JoinStop> {
    // Required flags are checked before versions: their refusal names the
    // release to upgrade the members to, the more useful message.
    knowledge_check(view, record).map_err(JoinStop::Refused)?;
    let mut with_me = view.clone();
    with_me.members.insert(
        record.node_id.clone(),
        Member {
            record: record.clone(),
            live: Some(LiveRecord { lease: 0, heartbeat_ms: me.wall_ms }),
            effective: NodeState::Running,
        },
    );
    let fresh = view.members.is_empty() && view.flags.is_empty();
    if let Some(flag) = registry.removed().iter().find(|f| !fresh && !view.is_enabled(f)) {
        return Err(JoinStop::Refused(JoinRefusal::RemovedNotEnabled {
            node: record.node_id.clone(),
            release: record.release.clone(),
            flag: flag.clone(),
        }));
    }
    let to_enable: Vec<String> = if fresh {
        registry
            .topological()
            .filter(|d| d.get_stability() != Stability::Experimental)
            .map(|d| d.name().to_string())
            .collect()
    } else {
        required_to_enable(&with_me, registry).map_err(JoinStop::Required)?
    };
    compatibility_check(view, record).map_err(JoinStop::Refused)?;
    let mut plan =
        JoinPlan { ops: vec![ViewOp::PutMember(record.clone())], drive: Vec::new(), boot_steps: Vec::new(), fresh };
    if fresh {
        // A fresh cluster of a release that removed flags has them enabled
        // from the start: older releases that know them meet them enabled.
        for flag in registry.removed() {
            plan.ops.push(ViewOp::PutFlag(flag.clone(), FlagRecord::enabled()));
            with_me.flags.insert(flag.clone(), FlagRecord::enabled());
        }
    }
    for flag in to_enable {
        let attempt = attempt_id();
        match begin_enable(&with_me, registry, &flag, &attempt, me) {
            Ok(Begin::Write(rec)) => {
                // Dependencies come first in the same batch: count them enabled for the next check.
                with_me.flags.insert(
                    flag.clone(),
                    FlagRecord { state: FlagState::Enabled { since_ms: me.wall_ms }, ..(*rec).clone() },
                );
                plan.drive.push((flag.clone(), attempt));
                plan.ops.push(ViewOp::PutFlag(flag, *rec));
            }
            Ok(Begin::AlreadyEnabled) | Err(_) => {}
        }
    }
    plan.boot_steps = registry
        .topological()
        .filter(|d| d.has_node_step() && view.is_enabled(d.name()))
        .map(|d| d.name().to_string())
        .collect();
    Ok(plan)
}

/// Whether a booting release's required flags allow it to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequiredState {
    /// Every required flag is enabled.
    Ready,
    /// A required flag is being enabled: wait for it.
    Wait {
        /// The flag.
        flag: String,
    },
    /// A required flag is not enabled and is not being enabled.
    Refuse {
        /// The flag.
        flag: String,
        /// Why, from its record.
        reason: String,
    },
}

/// Whether the release's required flags are enabled in `view` (a release
/// serves only once they are).
pub fn required_at_boot(view: &ClusterView, registry: &FlagRegistry) -> RequiredState {
    for d in registry.topological().filter(|d| d.get_stability() == Stability::Required) {
        let flag = d.name().to_string();
        match view.flags.get(&flag) {
            Some(r) if r.is_enabled() => {}
            Some(r) if matches!(r.state, FlagState::Enabling { .. }) => return RequiredState::Wait { flag },
            Some(r) if r.note.is_some() => {
                return RequiredState::Refuse { flag, reason: r.note.clone().unwrap_or_default() };
            }
            _ => {
                return RequiredState::Refuse {
                    flag,
                    reason: "it could not be enabled; see `rollgate flags info` for why".into(),
                };
            }
        }
    }
    RequiredState::Ready
}
