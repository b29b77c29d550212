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
//!    (all of it decided by [`plan::plan_join`] on the view the join commits
//!    against, which also names the per-node steps due before serving);
//! 4. liveness and the flag worker (bits, serving, per-node steps of
//!    attempts in progress, recovery: see `worker.rs`); the flags the join
//!    wrote are driven to enabled; recovery of any enabling this node owned
//!    before a crash or whose owner is gone; required flags must end enabled
//!    ([`plan::required_at_boot`]);
//! 5. the per-node steps of the flags enabled in the view the join
//!    committed against (a flag enabled between the boot check and the join
//!    is not missed);
//! 6. the node serves ([`Node::serving`]) from here on, while the worker
//!    confirms its membership, lease and view (I11).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::capabilities::RouteTable;
use crate::cluster::{
    Cluster, ClusterError, ClusterHandle, Committed, HandleOptions, LocalCopy, Member, NodeRecord, NodeState,
    UpdateError, ViewOp, now_ms, validate_node_id,
};
use crate::flags::plan::{self, Bounds, JoinPlan, JoinStop, Me, RequiredState, Rules};
use crate::flags::{FlagError, FlagSource, Flags, ReleaseTable};
use rollgate_store::{MetaStore, StoreOptions, TxnOp};

use super::driver::{Shared, attempt_id, is_unavailable};
use super::worker::flag_worker;
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
        let epoch = Instant::now();
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
            let unknown = plan::unknown_present(&copy.flags, &config.flags.known());
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
        // The release manifest and key, and the cluster's release key.
        let release = super::release::check(&config, &cluster).await?;
        let bounds = bounds(&config);
        // Probe often enough that a quiet, healthy node confirms its view well within its lease.
        let handle_options = HandleOptions {
            local_copy_dir: Some(config.data_dir.clone()),
            probe_interval_ms: config.handle.probe_interval_ms.min((bounds.view_lease_ms / 4).max(1)),
            ..config.handle.clone()
        };
        let handle = ClusterHandle::start(cluster.clone(), handle_options).await.map_err(|e| offline(&config, e))?;

        // Boot checks: the release floor, then (I2) the store has nothing
        // enabled this release lacks.
        let names = config.flags.known();
        let initial = handle.view();
        plan::release_floor_check(&initial, &config.node_id, &config.release).map_err(FlagError::JoinRefused)?;
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

        // The join lease: its id is this run's incarnation (store-unique).
        let (join_lease, _) = cluster.store().lease_grant(config.liveness_ttl_s).await?;
        let mut record = node_record(&config, &bounds, join_lease as u64);
        record.release_manifest = release.map(|d| d.to_text());

        // The epoch-fenced join (I5). It writes the live key too (on a lease
        // of its own), so that the node is running from the moment it is a
        // member: nobody takes its first enablings for orphans.
        let (joined, plan) = join(&handle, &config, &record, join_lease).await?;
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
            epoch,
            bounds,
            driving: Mutex::new(BTreeSet::new()),
            recovering: Mutex::new(BTreeSet::new()),
            op_lock: tokio::sync::Mutex::new(()),
            bits_revision: Mutex::new(None),
            lease: liveness.watch(),
            liveness: tokio::sync::Mutex::new(Some(liveness)),
            fenced: watch::Sender::new(None),
            serving: watch::Sender::new(false),
            booted: AtomicBool::new(false),
            sections: Mutex::new(BTreeMap::new()),
            spawned: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let node = Node {
            core: Arc::new(Core { shared: shared.clone(), tasks: Mutex::new(Vec::new()), links: Mutex::new(None) }),
        };
        match node.boot(joined, plan).await {
            Ok(()) => Ok(node),
            Err(e) => {
                tracing::error!(node = %shared.config.node_id, error = %e, "boot failed; leaving the cluster");
                let _ = node.stop().await;
                Err(e)
            }
        }
    }

    async fn boot(&self, joined: Committed, plan: JoinPlan) -> Result<(), NodeError> {
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
        // flags): driven here, dependencies first, with their attempts (the
        // worker must not take them for orphans meanwhile).
        let guards: Vec<_> = plan.drive.iter().map(|(flag, _)| shared.drive_guard(flag)).collect();
        self.spawn_task(flag_worker(shared.clone()));
        for (flag, attempt) in &plan.drive {
            if let Err(e) = shared.drive_enable(flag, attempt, joined.revision).await {
                tracing::warn!(node = %me, flag = %flag, error = %e, "enabling at boot failed");
            }
        }
        drop(guards);
        // Recovery (I4): enablings this node owned before a crash, and any
        // whose owner is gone.
        let order: Vec<String> = shared.config.flags.topological().map(|d| d.name().to_string()).collect();
        for flag in &order {
            if let Err(e) = shared.clone().recover(flag).await {
                tracing::warn!(node = %me, flag = %flag, error = %e, "recovery at boot failed");
            }
        }
        self.required_flags(&mut rx, wait).await?;
        // Per-node steps of the flags enabled in the view the join committed against.
        for flag in &plan.boot_steps {
            let Some(step) = shared.config.flags.get(flag).and_then(|d| d.on_enable_node.clone()) else { continue };
            let revision = shared.handle.view().flag_revisions.get(flag).copied().unwrap_or(0);
            let limit = Duration::from_millis(shared.config.timeouts.step_ms.max(1));
            let result = match tokio::time::timeout(limit, step(shared.step_context(flag, revision))).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {} ms", limit.as_millis())),
            };
            result.map_err(|reason| NodeError::NodeStep { node: me.clone(), flag: flag.clone(), reason })?;
        }
        shared.refresh_bits(&shared.handle.view());
        self.start_services(plan.fresh).await?;
        shared.booted.store(true, Ordering::SeqCst);
        shared.serving.send_replace(shared.fenced.borrow().is_none());
        tracing::info!(node = %me, release = %shared.config.release, "node started");
        Ok(())
    }

    /// Required flags must be enabled before this release serves.
    async fn required_flags(
        &self,
        rx: &mut watch::Receiver<Arc<crate::cluster::ClusterView>>,
        wait: Duration,
    ) -> Result<(), NodeError> {
        let shared = &self.core.shared;
        let deadline = Instant::now() + wait;
        loop {
            let view = rx.borrow_and_update().clone();
            let flag = match plan::required_at_boot(&view, &shared.config.flags) {
                RequiredState::Ready => return Ok(()),
                RequiredState::Refuse { flag, reason } => {
                    return Err(FlagError::RequiredNotEnabled {
                        node: shared.config.node_id.clone(),
                        release: shared.config.release.clone(),
                        flag,
                        reason,
                    }
                    .into());
                }
                RequiredState::Wait { flag } => flag,
            };
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(FlagError::RequiredNotEnabled {
                    node: shared.config.node_id.clone(),
                    release: shared.config.release.clone(),
                    flag,
                    reason: format!("it is still being enabled after {} ms", wait.as_millis()),
                }
                .into());
            }
        }
    }
}

/// The member record a node joins with: what its release supports,
/// requires and cannot reverse, its per-node steps, its incarnation.
fn node_record(config: &NodeConfig, bounds: &Bounds, incarnation: u64) -> NodeRecord {
    let mut routes = config.routes.clone();
    routes.merge(&RouteTable::admin_routes());
    NodeRecord {
        node_id: config.node_id.clone(),
        data_addr: config.data_addr.clone(),
        admin_addr: config.admin_addr.clone(),
        release: config.release.clone(),
        protocol: config.protocol,
        transport: config.transport,
        // A removed flag counts as supported, required and irreversible: its
        // record stays enabled, and no member may disable it.
        supported_flags: config.flags.known(),
        cluster_features: config.features.published(config.test_mode),
        assumed_features: config.features.assumed_features().clone(),
        deprecated_protocols: config.deprecated_protocols.clone(),
        flag_node_steps: config.flags.node_step_flags(),
        required_flags: config
            .flags
            .release_flags()
            .required
            .into_iter()
            .chain(config.flags.removed().iter().cloned())
            .collect(),
        irreversible_flags: config
            .flags
            .iter()
            .filter(|(_, d)| !d.is_reversible())
            .map(|(_, d)| d.name().to_string())
            .chain(config.flags.removed().iter().cloned())
            .collect(),
        incarnation,
        view_lease_ms: bounds.view_lease_ms,
        routes: Some(routes),
        state: NodeState::Running,
        started_ms: now_ms(),
        release_manifest: None,
    }
}

/// The protocol bounds of a node's config.
fn bounds(config: &NodeConfig) -> Bounds {
    let ttl_ms = config.liveness_ttl_s.max(1) as u64 * 1000;
    let view_lease_ms = if config.timeouts.view_lease_ms > 0 { config.timeouts.view_lease_ms } else { ttl_ms };
    Bounds {
        node_steps_ms: config.timeouts.node_steps_ms,
        ttl_ms,
        view_lease_ms,
        margin_ppm: config.timeouts.clock_margin_ppm,
    }
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
                copy.as_ref().map(|c| plan::unknown_present(&c.flags, &config.flags.known())).unwrap_or_default();
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

/// The join ([`plan::plan_join`] on the view it commits against), with
/// the live key on the join lease.
async fn join(
    handle: &ClusterHandle,
    config: &NodeConfig,
    record: &NodeRecord,
    lease: rollgate_store::LeaseId,
) -> Result<(Committed, JoinPlan), NodeError> {
    let me_id = config.node_id.as_str();
    let keys = handle.cluster().keys().clone();
    let live = crate::cluster::LiveRecord { lease, heartbeat_ms: now_ms() };
    let live_value = rollgate_store::encode_json(&keys.live(me_id), &live)?;
    let driving = BTreeSet::new();
    let mut planned = None;
    let result = handle
        .update(|view| {
            let me = Me {
                id: me_id,
                incarnation: record.incarnation,
                driving: &driving,
                bits_revision: 0,
                wall_ms: now_ms(),
                rules: Rules::strict(),
            };
            let plan = plan::plan_join(view, &config.flags, record, &me, &mut attempt_id)?;
            let mut ops = plan.ops.clone();
            ops.push(ViewOp::Raw(TxnOp::put_with_lease(keys.live(me_id), live_value.clone(), lease)));
            planned = Some(plan);
            Ok(ops)
        })
        .await;
    match result {
        Ok(c) => Ok((c, planned.expect("a committed join has a plan"))),
        Err(UpdateError::Rejected(JoinStop::Refused(r))) => Err(FlagError::JoinRefused(r).into()),
        Err(UpdateError::Rejected(JoinStop::Required(blocks))) => {
            let bridge = config.releases.as_ref().and_then(|t| bridge_release(t, &config.release, &blocks));
            let message = plan::required_blocked_message(me_id, &config.release, &blocks, bridge.as_deref());
            Err(FlagError::RequiredBlocked { blocks, message }.into())
        }
        Err(UpdateError::Cluster(e)) => Err(e.into()),
    }
}

/// The latest release before `release` that supports the blocked flags
/// without requiring them.
fn bridge_release(table: &ReleaseTable, release: &str, blocks: &[plan::RequiredBlock]) -> Option<String> {
    let (index, _) = table.get(release)?;
    table.releases[..index]
        .iter()
        .rev()
        .find(|r| blocks.iter().all(|b| r.supported.contains(&b.flag) && !r.required.contains(&b.flag)))
        .map(|r| r.release.clone())
}
