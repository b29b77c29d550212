//! The admin API's view of a node: flags, members, cluster features, the
//! upgrade status and `_capabilities` answers, built from the node's cached
//! cluster view into the contract's types (`rollgate-api`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rollgate_api::dashboard::MemberLinks;
use rollgate_api::features::{FeatureList, FeatureStatus};
use rollgate_api::flags::{FlagList, FlagPhase, FlagStatus, Stability};
use rollgate_api::nodes::{NodeList, NodeStatus};
use rollgate_api::routes::{AnswerSource, CapabilityQuery, MemberAnswer};
use rollgate_api::upgrade::{
    BlockedFlag, DeprecatedLink, FlagSummary, MigrationsSection, NodeIdentity, ReleaseCount, StoreReachability,
    UpgradeStatus,
};

use rollgate_runtime::capabilities;
use rollgate_runtime::cluster::{ClusterView, FlagState, Member};
use rollgate_runtime::features;
use rollgate_runtime::flags::FlagRegistry;
use rollgate_runtime::node::Node;

/// One flag's status in `view`, as this node's `registry` knows it (or as
/// the store's record describes it, for a flag this release lacks).
fn flag_status_of(view: &ClusterView, registry: &FlagRegistry, name: &str) -> FlagStatus {
    let record = view.flags.get(name);
    let decl = registry.get(name);
    let info = decl.map(|d| d.info()).or_else(|| record.and_then(|r| r.info.clone())).unwrap_or_default();
    let (state, owner, since) = match record.map(|r| &r.state) {
        Some(FlagState::Enabled { since_ms }) => (FlagPhase::Enabled, None, Some(*since_ms)),
        Some(FlagState::Enabling { owner, .. }) => (FlagPhase::Enabling, Some(owner.clone()), None),
        Some(FlagState::Disabling { owner, .. }) => (FlagPhase::Disabling, Some(owner.clone()), None),
        Some(FlagState::Disabled) | None => (FlagPhase::Disabled, None, None),
    };
    FlagStatus {
        name: name.to_string(),
        state,
        known: decl.is_some(),
        description: info.description,
        stability: Stability::parse_lenient(&info.stability),
        introduced_in: info.introduced_in,
        depends_on: info.depends_on,
        doc_url: info.doc_url,
        provider: info.provider,
        reversible: info.reversible,
        node_step: decl.is_some_and(|d| d.has_node_step()),
        owner,
        lacking: view
            .members
            .values()
            .filter(|m| !m.record.supported_flags.contains(name))
            .map(|m| m.record.node_id.clone())
            .collect(),
        note: record.and_then(|r| r.note.clone()),
        since_ms: since,
    }
}

/// Answers a `_capabilities` query: this node only (`local_only`), or
/// every member (see [`fan_out`](crate::fanout::fan_out)).
pub async fn capabilities(
    node: &Node,
    http: &crate::fanout::MemberClient,
    query: &CapabilityQuery,
    local_only: bool,
) -> (Option<bool>, Vec<MemberAnswer>) {
    let view = node.view();
    if local_only {
        let s = Some(capabilities::supports_in(node.routes(), query, &view));
        return (s, vec![MemberAnswer { node_id: node.id().to_string(), supported: s, source: AnswerSource::Local }]);
    }
    let timeout = Duration::from_millis(node.config().timeouts.capabilities_ms.max(1));
    crate::fanout::fan_out(http, &view, node.id(), node.routes(), query, timeout).await
}

/// Every flag the node knows or the store has, with its state, in `view`.
pub(crate) fn flag_statuses_in(node: &Node, view: &ClusterView) -> Vec<FlagStatus> {
    let registry = node.registry();
    let mut names: BTreeSet<String> = registry.names();
    names.extend(view.flags.keys().cloned());
    names.into_iter().map(|n| flag_status_of(view, registry, &n)).collect()
}

/// Every flag this node knows or the store has, with its state.
pub fn flag_statuses(node: &Node) -> Vec<FlagStatus> {
    flag_statuses_in(node, &node.view())
}

/// `GET /admin/flags`: the flags and the epoch of the view they come from.
pub fn flag_list(node: &Node) -> FlagList {
    let view = node.view();
    FlagList { epoch: view.epoch, flags: flag_statuses_in(node, &view) }
}

/// One flag's status, when this node knows it or the store has it.
pub fn flag_status(node: &Node, name: &str) -> Option<FlagStatus> {
    let view = node.view();
    (node.registry().supports(name) || view.flags.contains_key(name))
        .then(|| flag_status_of(&view, node.registry(), name))
}

/// Every member with its state.
pub fn node_statuses(node: &Node) -> Vec<NodeStatus> {
    node_statuses_in(node, &node.view())
}

pub(crate) fn node_statuses_in(node: &Node, view: &ClusterView) -> Vec<NodeStatus> {
    view.members
        .values()
        .map(|m| NodeStatus {
            node_id: m.record.node_id.clone(),
            release: m.record.release.clone(),
            state: m.effective,
            declared: m.record.state,
            data_addr: m.record.data_addr.clone(),
            admin_addr: m.record.admin_addr.clone(),
            protocol: format!("{}..={}", m.record.protocol.min(), m.record.protocol.max()),
            transport: m.record.transport.current.id(),
            supported_flags: m.record.supported_flags.iter().cloned().collect(),
            cluster_features: m.record.cluster_features.iter().cloned().collect(),
            started_ms: m.record.started_ms,
            heartbeat_ms: m.live.as_ref().map(|l| l.heartbeat_ms),
            clock_offset_ms: None,
            this_node: m.record.node_id == node.id(),
            release_manifest: m.record.release_manifest.clone(),
        })
        .collect()
}

/// `GET /admin/nodes`: the members and the epoch of the view they come from.
pub fn node_list(node: &Node) -> NodeList {
    let view = node.view();
    NodeList { cluster_id: view.cluster_id.clone(), epoch: view.epoch, nodes: node_statuses_in(node, &view) }
}

/// The cluster features with which members publish them.
pub fn feature_statuses(node: &Node) -> FeatureList {
    let view = node.view();
    let mut all: BTreeSet<String> = BTreeSet::new();
    for m in view.members.values() {
        all.extend(m.record.cluster_features.iter().cloned());
        all.extend(m.record.assumed_features.iter().cloned());
    }
    let features = all
        .iter()
        .map(|f| {
            let (with, without): (Vec<&Member>, Vec<&Member>) =
                view.members.values().partition(|m| features::member_has(&m.record, f));
            FeatureStatus {
                name: f.clone(),
                cluster_has: features::cluster_has_feature(&view, f),
                members_with: with.iter().map(|m| m.record.node_id.clone()).collect(),
                members_without: without.iter().map(|m| m.record.node_id.clone()).collect(),
            }
        })
        .collect();
    FeatureList {
        cluster_features: features::cluster_features(&view).into_iter().collect(),
        this_node: node.record().cluster_features.iter().cloned().collect(),
        features,
    }
}

/// The flags by state, with what is ready to enable and what is blocked.
fn flag_summary(statuses: &[FlagStatus]) -> FlagSummary {
    let by_state = |s: FlagPhase| statuses.iter().filter(|f| f.state == s).map(|f| f.name.clone()).collect::<Vec<_>>();
    let disabled: Vec<&FlagStatus> = statuses.iter().filter(|f| f.state == FlagPhase::Disabled).collect();
    FlagSummary {
        enabled: by_state(FlagPhase::Enabled),
        enabling: by_state(FlagPhase::Enabling),
        disabling: by_state(FlagPhase::Disabling),
        disabled: by_state(FlagPhase::Disabled),
        ready_to_enable: disabled
            .iter()
            .filter(|f| f.lacking.is_empty() && f.known && f.stability != Stability::Experimental)
            .map(|f| f.name.clone())
            .collect(),
        blocked: disabled
            .iter()
            .filter(|f| !f.lacking.is_empty())
            .map(|f| BlockedFlag { flag: f.name.clone(), lacking: f.lacking.clone() })
            .collect(),
    }
}

/// The cluster's upgrade status: releases, members, flags, migrations and
/// the sections other parts of the service added (an extensible object:
/// clients ignore what they do not know).
pub async fn upgrade_status(node: &Node, http: &crate::fanout::MemberClient) -> UpgradeStatus {
    let view = node.view();
    let status = node.handle().status();
    let mut releases: BTreeMap<String, ReleaseCount> = BTreeMap::new();
    for m in view.members.values() {
        let e = releases.entry(m.record.release.clone()).or_insert_with(|| ReleaseCount {
            release: m.record.release.clone(),
            nodes: Vec::new(),
            running: 0,
            stopped: 0,
        });
        e.nodes.push(m.record.node_id.clone());
        if m.is_running() {
            e.running += 1;
        } else {
            e.stopped += 1;
        }
    }
    let mut sections = BTreeMap::new();
    for (name, section) in node.status_sections() {
        sections.insert(name, section().await);
    }
    // Service format versions and node-local migrations, cluster-wide:
    // which run, where, how far, and when each finished.
    let migrations =
        match rollgate_runtime::migrate::cluster_status(node.cluster().store().as_ref(), node.cluster().keys().root())
            .await
        {
            Ok(mut m) => {
                node.complete_service_status(&mut m);
                MigrationsSection::Status(m)
            }
            Err(e) => MigrationsSection::Unreadable { error: e.to_string() },
        };
    UpgradeStatus {
        cluster_id: view.cluster_id.clone(),
        epoch: view.epoch,
        revision: view.revision,
        node: NodeIdentity { node_id: node.id().to_string(), release: node.release().to_string() },
        store: StoreReachability { reachable: status.reachable, last_error: status.last_error },
        mixed_releases: releases.len() > 1,
        releases: releases.into_values().collect(),
        flags: flag_summary(&flag_statuses_in(node, &view)),
        migrations,
        floor: view.floor.clone(),
        deprecated_links: if view.members.values().any(|m| !m.record.deprecated_protocols.is_empty()) {
            deprecated_links(&view, &crate::links::links(node, http, &view).await)
        } else {
            // Nothing is deprecated: no need to ask every member for its links
            // (the status is polled, e.g. by `rollgate upgrade wait`).
            Vec::new()
        },
        sections,
    }
}

/// The links of `links` whose protocol version the release of either end
/// marks deprecated (from the members' records).
pub fn deprecated_links(view: &ClusterView, links: &[MemberLinks]) -> Vec<DeprecatedLink> {
    let deprecating = |id: &str, v: u16| view.member(id).is_some_and(|m| m.record.deprecated_protocols.contains(&v));
    let mut out = Vec::new();
    for member in links {
        for link in &member.links {
            let Some(v) = link.protocol else { continue };
            let by: Vec<String> = [member.node_id.as_str(), link.peer.as_str()]
                .into_iter()
                .filter(|id| deprecating(id, v))
                .map(str::to_string)
                .collect();
            if !by.is_empty() {
                out.push(DeprecatedLink {
                    node: member.node_id.clone(),
                    peer: link.peer.clone(),
                    protocol: v,
                    deprecated_by: by,
                });
            }
        }
    }
    out
}
