//! Boot and join: the checks a node passes before it serves, the
//! epoch-fenced join, and the refusals that name the operator's fix.
//!
//! [`Node::start`] (or [`Node::open`], which also handles an unreachable
//! store):
//!
//! 1. read the data dir's local copy (a corrupt one refuses the boot, naming
//!    the file), open the cluster, then the handle (which rewrites the copy);
//!    with the store unreachable, the local copy decides: an unknown enabled
//!    flag refuses the boot naming it and its first release, else "start
//!    again once the store is reachable"; a copy of another cluster than the
//!    store's is checked the same way; for the same cluster the store, being
//!    newer, decides;
//! 2. boot check: nothing enabled, enabling or disabling that the release
//!    lacks;
//! 3. the epoch-fenced join: `join_check` on the view it commits against; on
//!    a fresh cluster (no members, no flags) the same transaction writes every
//!    stable and required flag as `enabling`; otherwise disabled required
//!    flags that every member supports are written as `enabling`, and a
//!    required flag some member lacks refuses the boot with the nodes to
//!    upgrade, the bridge release (from the release table) and
//!    `nodes forget`, changing nothing; the transaction also writes the live
//!    key, so the new member is never taken for dead;
//! 4. liveness and the flag worker; the flags the join wrote are driven to
//!    enabled; recovery of any enabling this node owned before a crash or
//!    whose owner is gone; required flags must end enabled;
//! 5. the per-node steps of the flags that were enabled before this boot;
//! 6. the bits follow the view.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::capabilities::RouteTable;
use crate::cluster::{
    Cluster, ClusterError, ClusterHandle, ClusterView, Committed, FlagRecord, FlagState, HandleOptions, LocalCopy,
    Member, NodeRecord, NodeState, UpdateError, ViewOp, now_ms, validate_node_id,
};
use crate::flags::plan::{self, Begin, PlanContext, RequiredBlock};
use crate::flags::{FlagError, FlagSource, Flags, ReleaseTable, StepContext};
use rollgate_store::{MetaStore, StoreOptions, TxnOp};

use super::driver::{Driving, Shared, attempt_id, flag_worker, follow_bits, is_unavailable};
use super::{Core, Node, NodeConfig, NodeError};

impl Node {
    /// Opens the store named by `url` and starts a node on it. When the
    /// store is unreachable, the local copy in the data dir decides whether
    /// the refusal names an unknown enabled flag.
    pub async fn open(config: NodeConfig, url: &str, options: StoreOptions) -> Result<Node, NodeError> {
        match rollgate_store::open(url, options).await {
            Ok(store) => Node::start(config, store).await,
            Err(e) if e.is_unavailable() => Err(offline_refusal(&config, e.into())),
            Err(e) => Err(NodeError::Cluster(e.into())),
        }
    }

    /// Starts a node on `store` (see the module docs for the steps).
    pub async fn start(config: NodeConfig, store: Arc<dyn MetaStore>) -> Result<Node, NodeError> {
        check_config(&config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::Config {
            reason: format!("cannot create the data dir {}: {e}", config.data_dir.display()),
        })?;
        let store_desc = store.describe();
        // The data dir's own record, read before the handle rewrites it.
        let copy = LocalCopy::load(&config.data_dir).map_err(|e| NodeError::Cluster(e.into()))?;
        let cluster = Cluster::open(store, config.cluster.clone()).await.map_err(|e| offline(&config, e))?;
        // The same cluster: the store is newer and decides. Another cluster:
        // the data dir was written under its flags, which this release must know (I2).
        if let Some(copy) = copy.filter(|c| c.cluster_id != cluster.cluster_id()) {
            let unknown = plan::unknown_present(&copy.flags, &config.flags.names());
            if !unknown.is_empty() {
                return Err(FlagError::UnknownFlagsAtBoot {
                    node: config.node_id.clone(),
                    release: config.release.clone(),
                    origin: Box::new(FlagSource::OtherCluster {
                        path: LocalCopy::path(&config.data_dir).display().to_string(),
                        copy_cluster: copy.cluster_id.clone(),
                        store_cluster: cluster.cluster_id().to_string(),
                    }),
                    flags: unknown,
                }
                .into());
            }
        }
        let handle_options = HandleOptions { local_copy_dir: Some(config.data_dir.clone()), ..config.handle.clone() };
        let handle = ClusterHandle::start(cluster.clone(), handle_options).await.map_err(|e| offline(&config, e))?;

        // Boot check (I2): the store has nothing enabled this release lacks.
        let names = config.flags.names();
        let initial = handle.view();
        let unknown = plan::unknown_present(&initial.flags, &names);
        if !unknown.is_empty() {
            return Err(FlagError::UnknownFlagsAtBoot {
                node: config.node_id.clone(),
                release: config.release.clone(),
                origin: Box::new(FlagSource::Store(store_desc)),
                flags: unknown,
            }
            .into());
        }

        let mut routes = config.routes.clone();
        routes.merge(&RouteTable::admin_routes());
        let record = NodeRecord {
            node_id: config.node_id.clone(),
            data_addr: config.data_addr.clone(),
            admin_addr: config.admin_addr.clone(),
            release: config.release.clone(),
            protocol: config.protocol,
            transport: config.transport,
            supported_flags: names,
            cluster_features: config.features.published(config.test_mode),
            flag_node_steps: config.flags.node_step_flags(),
            routes: Some(routes),
            state: NodeState::Running,
            started_ms: now_ms(),
        };

        // The epoch-fenced join (I5). It writes the live key too (on a lease
        // of its own), so that the node is running from the moment it is a
        // member: nobody takes its first enablings for orphans.
        let (join_lease, _) = cluster.store().lease_grant(config.liveness_ttl_s).await?;
        let (joined, written) = join(&handle, &config, &record, join_lease).await?;
        let liveness = cluster.start_liveness(&config.node_id, config.liveness_ttl_s).await?;
        if let Err(e) = cluster.store().lease_revoke(join_lease).await {
            tracing::debug!(error = %e, "revoking the join lease");
        }
        let shared = Arc::new(Shared {
            flags: Flags::new(&config.flags),
            config,
            cluster,
            handle,
            record,
            driving: Mutex::new(BTreeSet::new()),
            steps: Mutex::new(BTreeSet::new()),
            recovering: Mutex::new(BTreeSet::new()),
            op_lock: tokio::sync::Mutex::new(()),
            bits_revision: Mutex::new(0),
            liveness: tokio::sync::Mutex::new(Some(liveness)),
            sections: Mutex::new(BTreeMap::new()),
            spawned: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let node = Node { core: Arc::new(Core { shared: shared.clone(), tasks: Mutex::new(Vec::new()) }) };
        match node.boot(joined, written, &initial).await {
            Ok(()) => Ok(node),
            Err(e) => {
                tracing::error!(node = %shared.config.node_id, error = %e, "boot failed; leaving the cluster");
                let _ = node.stop().await;
                Err(e)
            }
        }
    }

    async fn boot(
        &self,
        joined: Committed,
        written: Vec<(String, String)>,
        initial: &ClusterView,
    ) -> Result<(), NodeError> {
        let shared = &self.core.shared;
        let me = shared.config.node_id.clone();
        let wait = Duration::from_millis(shared.config.timeouts.boot_wait_ms.max(1));
        shared.handle.wait_for_revision(joined.revision, wait).await;
        let mut rx = shared.handle.watch_view();
        let running = tokio::time::timeout(wait, rx.wait_for(|v| v.member(&me).is_some_and(Member::is_running)))
            .await
            .is_ok_and(|r| r.is_ok());
        if !running {
            return Err(ClusterError::Metadata {
                root: shared.cluster.keys().root().to_string(),
                reason: format!("node {me} did not see itself running within {} ms", wait.as_millis()),
            }
            .into());
        }
        // The flags the join wrote as enabling (fresh cluster, required
        // flags): driven here, dependencies first, with their attempts.
        let guards: Vec<Driving<'_>> = written.iter().map(|(flag, _)| shared.drive(flag)).collect();
        self.spawn_task(flag_worker(shared.clone()));
        for (flag, attempt) in &written {
            if let Err(e) = shared.drive_enable(flag, attempt).await {
                tracing::warn!(node = %me, flag = %flag, error = %e, "enabling at boot failed");
            }
        }
        drop(guards);

        // Recovery (I4): enablings this node owned before a crash, and any
        // whose driver is gone.
        let order: Vec<String> = shared.config.flags.topological().map(|d| d.name().to_string()).collect();
        for flag in &order {
            if let Err(e) = shared.clone().recover(flag).await {
                tracing::warn!(node = %me, flag = %flag, error = %e, "recovery at boot failed");
            }
        }

        // Required flags must be enabled before this release serves.
        for d in shared.config.flags.topological().filter(|d| d.get_stability() == crate::flags::Stability::Required) {
            let flag = d.name();
            let got = tokio::time::timeout(
                wait,
                rx.wait_for(|v| v.flags.get(flag).is_none_or(|r| !matches!(r.state, FlagState::Enabling { .. }))),
            )
            .await
            .map(|r| r.is_ok());
            let view = shared.handle.view();
            if !view.is_enabled(flag) {
                let reason = match (got, view.flags.get(flag)) {
                    (Err(_), _) => format!("it is still being enabled after {} ms", wait.as_millis()),
                    (_, Some(r)) if r.note.is_some() => r.note.clone().unwrap_or_default(),
                    _ => "it could not be enabled; see `rollgate flags info` for why".into(),
                };
                return Err(FlagError::RequiredNotEnabled {
                    node: me.clone(),
                    release: shared.config.release.clone(),
                    flag: flag.to_string(),
                    reason,
                }
                .into());
            }
        }

        // Per-node steps of flags that were enabled before this boot.
        for d in shared.config.flags.topological() {
            let Some(step) = &d.on_enable_node else { continue };
            if !initial.is_enabled(d.name()) {
                continue;
            }
            let ctx = StepContext { flag: d.name().to_string(), node_id: me.clone(), cluster: shared.cluster.clone() };
            let limit = Duration::from_millis(shared.config.timeouts.step_ms.max(1));
            let result = match tokio::time::timeout(limit, step(ctx)).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {} ms", limit.as_millis())),
            };
            result.map_err(|reason| NodeError::NodeStep { node: me.clone(), flag: d.name().to_string(), reason })?;
        }

        // The hot path follows the view from now on (the handle writes the
        // local copy before it publishes a view).
        shared.refresh_bits(&shared.handle.view());
        self.spawn_task(follow_bits(shared.clone()));
        tracing::info!(node = %me, release = %shared.config.release, "node started");
        Ok(())
    }
}

/// Why a join closure stopped.
enum JoinStop {
    Refused(plan::JoinRefusal),
    Required(Vec<RequiredBlock>),
    Store(String),
}

fn check_config(config: &NodeConfig) -> Result<(), NodeError> {
    validate_node_id(&config.node_id)?;
    let bad = |reason: String| Err(NodeError::Config { reason });
    if config.release.is_empty() || config.release.len() > 64 {
        return bad(format!("release {:?} must be 1 to 64 bytes", rollgate_util::shorten(&config.release)));
    }
    if config.flags.release() != config.release {
        return bad(format!(
            "the flag registry was declared for release {} but the node runs release {}",
            config.flags.release(),
            config.release
        ));
    }
    if !(1..=3600).contains(&config.liveness_ttl_s) {
        return bad(format!("liveness TTL {} s is outside 1..=3600", config.liveness_ttl_s));
    }
    if let Err(e) = config.routes.check() {
        return bad(format!("route table: {e}"));
    }
    Ok(())
}

fn offline(config: &NodeConfig, e: ClusterError) -> NodeError {
    if is_unavailable(&e) { offline_refusal(config, e) } else { NodeError::Cluster(e) }
}

/// With the store unreachable: the local copy decides (I2).
fn offline_refusal(config: &NodeConfig, e: ClusterError) -> NodeError {
    let path = LocalCopy::path(&config.data_dir).display().to_string();
    match LocalCopy::load(&config.data_dir) {
        Err(le) => NodeError::Cluster(ClusterError::LocalCopy(le)),
        Ok(copy) => {
            let unknown =
                copy.as_ref().map(|c| plan::unknown_present(&c.flags, &config.flags.names())).unwrap_or_default();
            if unknown.is_empty() {
                let store_error = match e {
                    ClusterError::StoreUnavailable { endpoint, reason } => {
                        format!("metadata store {endpoint} is unreachable ({reason})")
                    }
                    other => other.to_string(),
                };
                NodeError::StoreUnreachable {
                    node: config.node_id.clone(),
                    release: config.release.clone(),
                    local_copy: if copy.is_some() { path } else { format!("{path}, absent") },
                    store_error,
                }
            } else {
                NodeError::Flag(FlagError::UnknownFlagsAtBoot {
                    node: config.node_id.clone(),
                    release: config.release.clone(),
                    origin: Box::new(FlagSource::LocalCopy(path)),
                    flags: unknown,
                })
            }
        }
    }
}

/// The join: checks flags and features on the view it commits against;
/// on a fresh cluster writes every stable and required flag as enabling,
/// else the disabled required flags every member supports.
async fn join(
    handle: &ClusterHandle,
    config: &NodeConfig,
    record: &NodeRecord,
    lease: rollgate_store::LeaseId,
) -> Result<(Committed, Vec<(String, String)>), NodeError> {
    let registry = &config.flags;
    let me = config.node_id.as_str();
    let driving = BTreeSet::new();
    let keys = handle.cluster().keys().clone();
    let mut written = Vec::new();
    let result = handle
        .update(|view| {
            written.clear();
            plan::join_check(view, record).map_err(JoinStop::Refused)?;
            let mut with_me = view.clone();
            with_me.members.insert(
                me.to_string(),
                Member {
                    record: record.clone(),
                    live: Some(crate::cluster::LiveRecord { lease: 0, heartbeat_ms: now_ms() }),
                    effective: NodeState::Running,
                },
            );
            let fresh = view.members.is_empty() && view.flags.is_empty();
            let to_enable: Vec<String> = if fresh {
                registry
                    .topological()
                    .filter(|d| d.get_stability() != crate::flags::Stability::Experimental)
                    .map(|d| d.name().to_string())
                    .collect()
            } else {
                plan::required_to_enable(&with_me, registry).map_err(JoinStop::Required)?
            };
            let ctx = PlanContext { me, now_ms: now_ms(), stale_ms: config.timeouts.stale_ms, driving: &driving };
            let live = crate::cluster::LiveRecord { lease, heartbeat_ms: now_ms() };
            let live_value =
                rollgate_store::encode_json(&keys.live(me), &live).map_err(|e| JoinStop::Store(e.to_string()))?;
            let mut ops = vec![
                ViewOp::PutMember(record.clone()),
                ViewOp::Raw(TxnOp::put_with_lease(keys.live(me), live_value, lease)),
            ];
            for flag in to_enable {
                // Dependencies are in the same batch (dependency order): count them enabled for the check.
                let attempt = attempt_id();
                match plan::begin_enable(&with_me, registry, &flag, &attempt, &ctx) {
                    Ok(Begin::Write(rec)) => {
                        with_me.flags.insert(flag.clone(), FlagRecord::enabled());
                        written.push((flag.clone(), attempt));
                        ops.push(ViewOp::PutFlag(flag, *rec));
                    }
                    Ok(Begin::AlreadyEnabled) => {}
                    Err(blockers) => {
                        tracing::warn!(flag = %flag, "not enabling at join: {}", blockers[0]);
                    }
                }
            }
            Ok(ops)
        })
        .await;
    match result {
        Ok(c) => Ok((c, written)),
        Err(UpdateError::Rejected(JoinStop::Store(reason))) => {
            Err(ClusterError::Metadata { root: keys.root().to_string(), reason }.into())
        }
        Err(UpdateError::Rejected(JoinStop::Refused(r))) => Err(FlagError::JoinRefused(r).into()),
        Err(UpdateError::Rejected(JoinStop::Required(blocks))) => {
            let bridge = config.releases.as_ref().and_then(|t| bridge_release(t, &config.release, &blocks));
            let message = plan::required_blocked_message(me, &config.release, &blocks, bridge.as_deref());
            Err(FlagError::RequiredBlocked { blocks, message }.into())
        }
        Err(UpdateError::Cluster(e)) => Err(e.into()),
    }
}

/// The latest release before `release` that supports the blocked flags
/// without requiring them.
fn bridge_release(table: &ReleaseTable, release: &str, blocks: &[RequiredBlock]) -> Option<String> {
    let (index, _) = table.get(release)?;
    table.releases[..index]
        .iter()
        .rev()
        .find(|r| blocks.iter().all(|b| r.supported.contains(&b.flag) && !r.required.contains(&b.flag)))
        .map(|r| r.release.clone())
}
