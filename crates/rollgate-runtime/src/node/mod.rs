//! The node runtime a service embeds: the metadata store, cluster
//! membership, feature flags, cluster features and capabilities, tied
//! together.
//!
//! [`Node::start`] boots a node (see `ARCHITECTURE.md` for the order of the
//! checks): boot check of the enabled flags (from the store, or from the
//! local copy when the store is unreachable), the epoch-fenced join (flags
//! and features checked on the view it commits against; a fresh cluster gets
//! every stable and required flag; disabled required flags are enabled when
//! every member supports them, otherwise the node refuses to start and says
//! what to upgrade), liveness, recovery of enablings left by a crash, the
//! per-node steps of enabled flags, and finally the hot-path bits.
//!
//! A running node keeps a flag worker that runs its per-node enable steps when a
//! flag it must prepare is being enabled, acknowledges disablings, resumes or
//! rolls back any enabling whose owner is gone (I4), and decides whether the
//! node serves: [`Node::serving`] turns false as soon as the node cannot
//! confirm, within its leases, that it is a member and that its flag view is
//! current (I11, fail closed); services refuse requests meanwhile.
//! [`Node::enable`] and [`Node::disable`] run the protocols on this node (in
//! a task of their own: a caller that goes away does not cut a protocol in
//! the middle). The decisions are the planner's ([`crate::flags::plan`]);
//! `driver.rs` and `worker.rs` execute them.
//!
//! ```no_run
//! use rollgate::admin::{self, AdminConfig};
//! use rollgate::capabilities::{Route, RouteTable};
//! use rollgate::features::FeatureSet;
//! use rollgate::flags::{FlagDecl, FlagRegistry};
//! use rollgate::node::{Node, NodeConfig};
//! use rollgate::store::StoreOptions;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // What release 1.1 supports.
//! let mut flags = FlagRegistry::builder("1.1");
//! let ttl = flags.declare(FlagDecl::new("ttl", "values may expire").introduced_in("1.1"));
//! let mut config = NodeConfig::new("n1", "1.1", "/var/lib/kv/n1", flags.build()?);
//! config.features = FeatureSet::new().feature("kv_ttl")?;
//! config.routes = RouteTable::new().with(Route::new("PUT", "/kv/{key}").parameters(["ttl_s"]))?;
//! let listener = admin::bind(None).await?; // 127.0.0.1:9650
//! config.admin_addr = listener.local_addr()?.to_string();
//!
//! // Boot: checks, join, recovery, steps; refuses with the operator's fix.
//! let node = Node::open(config, "redb:/var/lib/kv/meta.redb", StoreOptions::default()).await?;
//! let token = admin::read_token_file("/etc/kv/admin.token".as_ref())?;
//! tokio::spawn(admin::serve(listener, admin::router(node.clone(), AdminConfig::with_token(&token))));
//!
//! // The hot path: one atomic load.
//! if node.is_enabled(ttl) { /* write the new format */ }
//! node.wait_enabled(ttl).await;
//! node.stop().await?;
//! # Ok(()) }
//! ```

mod boot;
mod driver;
mod floor;
mod operator;
mod release;
mod services;
mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::capabilities::{self, RouteTable};
use crate::cluster::{
    Cluster, ClusterError, ClusterHandle, ClusterOptions, ClusterView, Committed, HandleOptions, NodeRecord,
    TransportRange,
};
use crate::features::{self, FeatureSet};
use crate::flags::plan::{self, EnablePlan, EnableRequest, FenceReason};
use crate::flags::{FlagError, FlagId, FlagRegistry, Flags, PluginSpec, ReleaseTable};
use rollgate_release::{ManifestFormat, ReleaseKey, SignedManifest};
use rollgate_store::StoreError;
use rollgate_version::{ProtocolRange, TransportVersion};

pub use floor::FinalizeError;
pub use operator::LinkSource;
pub use release::{ReleaseRefusal, release_manifest};
pub use rollgate_api::flags::{DisableReport, EnableReport};
pub use rollgate_api::floor::{FinalizeReport, FinalizeRequest};

use driver::Shared;

/// Bounds on the node's protocols.
#[derive(Clone, Debug)]
pub struct NodeTimeouts {
    /// How long the enabling node waits for every member's per-node step.
    pub node_steps_ms: u64,
    /// How long one enable step or disable hook may run.
    pub step_ms: u64,
    /// Ignored (kept for configurations that set it): an in-progress record
    /// is taken over only when its owner's lease is gone or it restarted,
    /// never after a time.
    pub stale_ms: u64,
    /// How long a member may take to answer a `_capabilities` question.
    pub capabilities_ms: u64,
    /// How long boot waits for its own view (join, liveness) and for
    /// required flags another node is enabling.
    pub boot_wait_ms: u64,
    /// How long the node serves after it last confirmed its view current
    /// (0: the liveness TTL). A disabling waits at most this long (the
    /// longest of the members') for members that do not acknowledge it.
    pub view_lease_ms: u64,
    /// The clock margin in millionths: how far a node's clock rate may be
    /// off, plus scheduling slack. A node serves `(1 − margin)` of its
    /// leases; a disabling waits `(1 + margin)` of a view lease.
    pub clock_margin_ppm: u32,
}

impl Default for NodeTimeouts {
    fn default() -> Self {
        NodeTimeouts {
            node_steps_ms: 30_000,
            step_ms: 600_000,
            stale_ms: 120_000,
            capabilities_ms: capabilities::DEFAULT_TIMEOUT_MS,
            boot_wait_ms: 60_000,
            view_lease_ms: 0,
            clock_margin_ppm: 50_000,
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node id (see [`validate_node_id`](crate::cluster::validate_node_id)).
    pub node_id: String,
    /// The release it runs (for humans; never compared).
    pub release: String,
    /// Its data dir: the local copy of the cluster state lives there.
    pub data_dir: PathBuf,
    /// Where peers reach it.
    pub data_addr: String,
    /// Where its admin API listens (`host:port`).
    pub admin_addr: String,
    /// The protocol versions it speaks.
    pub protocol: ProtocolRange,
    /// The transport versions it reads and writes.
    pub transport: TransportRange,
    /// The feature flags its release supports.
    pub flags: FlagRegistry,
    /// The cluster features its release publishes.
    pub features: FeatureSet,
    /// The REST routes it serves (the admin API's are added).
    pub routes: RouteTable,
    /// Publish test features (and synthetic `gte_v` ones).
    pub test_mode: bool,
    /// The service's release table, for `upgrade plan` and better messages.
    pub releases: Option<ReleaseTable>,
    /// The cluster's key root and update bounds.
    pub cluster: ClusterOptions,
    /// The cluster view's reconnect and probe settings (the local copy dir
    /// is always `data_dir`).
    pub handle: HandleOptions,
    /// The liveness lease TTL, in seconds.
    pub liveness_ttl_s: i64,
    /// Protocol bounds.
    pub timeouts: NodeTimeouts,
    /// The storage formats the release reads and writes, for its release
    /// manifest.
    pub formats: Vec<ManifestFormat>,
    /// The release's signed manifest (with [`NodeConfig::release_key`]).
    pub release_manifest: Option<SignedManifest>,
    /// The trusted release key: the node refuses to start unless
    /// `release_manifest` is signed by it and describes this binary, and
    /// the cluster then accepts only releases signed by it.
    pub release_key: Option<ReleaseKey>,
    /// How many audit log entries the store keeps.
    pub audit_capacity: usize,
    /// The service format steps this release knows (Ceph's
    /// `format_version`): the node runs them, one lease-elected owner at a
    /// time across the cluster, as their gates open. `None`: no service
    /// formats.
    pub services: Option<Arc<crate::migrate::Migrations>>,
    /// Protocol versions this release marks deprecated (published in its
    /// record; links that negotiate one are shown by the upgrade status).
    /// Retiring one later is deleting its module.
    pub deprecated_protocols: std::collections::BTreeSet<u16>,
}

impl NodeConfig {
    /// A config with defaults: protocol v1 only, transport version zero,
    /// no features, no routes, no addresses.
    pub fn new(node_id: &str, release: &str, data_dir: impl Into<PathBuf>, flags: FlagRegistry) -> NodeConfig {
        NodeConfig {
            node_id: node_id.to_string(),
            release: release.to_string(),
            data_dir: data_dir.into(),
            data_addr: String::new(),
            admin_addr: String::new(),
            protocol: ProtocolRange::single(1),
            transport: TransportRange { min_compatible: TransportVersion::ZERO, current: TransportVersion::ZERO },
            flags,
            features: FeatureSet::new(),
            routes: RouteTable::new(),
            test_mode: false,
            releases: None,
            cluster: ClusterOptions::default(),
            handle: HandleOptions::default(),
            liveness_ttl_s: 10,
            timeouts: NodeTimeouts::default(),
            formats: Vec::new(),
            release_manifest: None,
            release_key: None,
            audit_capacity: crate::audit::DEFAULT_CAPACITY,
            deprecated_protocols: Default::default(),
            services: None,
        }
    }
}

/// Why a node cannot start or an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A flag refusal or failure.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// A cluster-layer failure.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A bad configuration.
    #[error("invalid node configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The store is unreachable and the local copy does not refuse the boot.
    #[error(
        "node {node} cannot start: {store_error}; its local copy ({local_copy}) lists no flag that release {release} lacks, so start it again once the metadata store is reachable"
    )]
    StoreUnreachable {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The local copy consulted.
        local_copy: String,
        /// What the store said.
        store_error: String,
    },
    /// The release manifest or key refuses the boot (boxed: it is by far
    /// the largest variant).
    #[error(transparent)]
    Release(Box<ReleaseRefusal>),
    /// A per-node enable step of an enabled flag failed at boot.
    #[error("node {node} cannot start: the per-node step of enabled flag `{flag}` failed: {reason}")]
    NodeStep {
        /// The node.
        node: String,
        /// The flag.
        flag: String,
        /// What failed.
        reason: String,
    },
}

impl From<ReleaseRefusal> for NodeError {
    fn from(r: ReleaseRefusal) -> NodeError {
        NodeError::Release(Box::new(r))
    }
}

/// A named section of `GET /admin/upgrade/status` that another part of the
/// service fills in (e.g. migrations).
pub type StatusSection = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = serde_json::Value> + Send>> + Send + Sync>;

/// A running node (cheap to clone; the node stops when the last clone is
/// dropped, as a crash would: no leave, its liveness lease expires).
#[derive(Clone)]
pub struct Node {
    core: Arc<Core>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.core.shared.config.node_id)
            .field("release", &self.core.shared.config.release)
            .finish()
    }
}

struct Core {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Where the service reports its peer links (`None`: it does not).
    links: Mutex<Option<LinkSource>>,
}

impl Drop for Core {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

impl Node {
    fn spawn_task(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut);
        self.core.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(handle.abort_handle());
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.core.shared
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.shared().config.node_id
    }
    /// The release.
    pub fn release(&self) -> &str {
        &self.shared().config.release
    }
    /// The configuration it started with.
    pub fn config(&self) -> &NodeConfig {
        &self.shared().config
    }
    /// The record it joined with.
    pub fn record(&self) -> &NodeRecord {
        &self.shared().record
    }
    /// The flag registry.
    pub fn registry(&self) -> &FlagRegistry {
        &self.shared().config.flags
    }
    /// The hot-path flag bits (clone it into the code that checks flags).
    pub fn flags(&self) -> &Flags {
        &self.shared().flags
    }
    /// A flag's id.
    pub fn flag_id(&self, name: &str) -> Option<FlagId> {
        self.registry().id(name)
    }
    /// Whether a flag is enabled (one atomic load).
    pub fn is_enabled(&self, id: FlagId) -> bool {
        self.shared().flags.is_enabled(id)
    }
    /// Whether a flag is enabled, by name (a map lookup, then the bit).
    pub fn flag_enabled(&self, name: &str) -> bool {
        self.flag_id(name).is_some_and(|id| self.is_enabled(id))
    }
    /// Waits until a flag is enabled.
    pub async fn wait_enabled(&self, id: FlagId) {
        self.shared().flags.wait_enabled(id).await
    }
    /// Whether this node may serve, as a watch channel: true once it booted
    /// and while it confirms, within its leases, that it is a running member
    /// of the cluster and that its flag view is current; false from the
    /// moment it cannot (store cut off, lease lost, forgotten, a flag its
    /// release does not know) until it has confirmed both again (I11, fail
    /// closed). A forgotten node stays fenced until it is restarted.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.shared().serving.subscribe()
    }
    /// Why the node does not serve now (`None`: it serves, or it is still booting).
    pub fn fence_reason(&self) -> Option<FenceReason> {
        self.shared().fenced.borrow().clone()
    }
    /// The cached cluster view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.shared().handle.view()
    }
    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.shared().cluster
    }
    /// The cluster handle (view, status, subscriptions).
    pub fn handle(&self) -> &ClusterHandle {
        &self.shared().handle
    }
    /// Whether every member publishes the cluster feature.
    pub fn cluster_has_feature(&self, feature: &str) -> bool {
        features::cluster_has_feature(&self.view(), feature)
    }
    /// The routes this node serves (its own and the admin API's).
    pub fn routes(&self) -> &RouteTable {
        self.shared().record.routes.as_ref().expect("a node always publishes its routes")
    }

    /// Plans an enable request on a fresh view, without changing anything.
    pub async fn plan_enable(&self, request: &EnableRequest) -> Result<EnablePlan, FlagError> {
        let shared = self.shared();
        let view = shared.cluster.view().await?;
        let driving = shared.driving_now();
        Ok(plan::plan_enable(&view, &shared.config.flags, request, &shared.me(&driving)))
    }

    /// Plans an enable request on `view` (e.g. the cached one), without
    /// reading the store or changing anything.
    pub fn plan_enable_in(&self, view: &ClusterView, request: &EnableRequest) -> EnablePlan {
        let shared = self.shared();
        let driving = shared.driving_now();
        plan::plan_enable(view, &shared.config.flags, request, &shared.me(&driving))
    }

    /// Enables flags (dependencies first), or plans it as a dry run. A
    /// refusal lists everything that blocks; see the enable protocol. Audited
    /// as done by the service itself ([`Node::enable_as`] names the caller).
    pub async fn enable(&self, request: EnableRequest) -> Result<EnableReport, FlagError> {
        self.enable_as(request, &rollgate_api::audit::Caller::library()).await
    }

    async fn enable_unaudited(&self, request: EnableRequest) -> Result<EnableReport, FlagError> {
        let shared = self.shared().clone();
        self.run_protocol(async move { shared.enable(request).await }).await
    }

    /// Disables a reversible flag: nodes stop producing data that needs it,
    /// its disable hook runs, then it is disabled. Audited as done by the
    /// service itself ([`Node::disable_as`] names the caller).
    pub async fn disable(&self, flag: &str) -> Result<DisableReport, FlagError> {
        self.disable_as(flag, &rollgate_api::audit::Caller::library()).await
    }

    async fn disable_unaudited(&self, flag: &str) -> Result<DisableReport, FlagError> {
        let shared = self.shared().clone();
        let flag = flag.to_string();
        self.run_protocol(async move { shared.disable(&flag).await }).await
    }

    async fn run_protocol<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, FlagError>> + Send + 'static,
    ) -> Result<T, FlagError> {
        let handle = tokio::spawn(fut);
        {
            let mut spawned = self.shared().spawned.lock().unwrap_or_else(|p| p.into_inner());
            spawned.retain(|h| !h.is_finished());
            spawned.push(handle.abort_handle());
        }
        handle.await.map_err(|e| {
            FlagError::Cluster(ClusterError::Metadata {
                root: self.shared().cluster.keys().root().to_string(),
                reason: format!("the flag protocol task ended abnormally: {e}"),
            })
        })?
    }

    /// Forgets a stopped member for good; returns once this node's view
    /// shows it (bounded by `boot_wait_ms`). Audited as done by the service
    /// itself ([`Node::forget_as`] names the caller).
    pub async fn forget(&self, node: &str) -> Result<Committed, ClusterError> {
        self.forget_as(node, &rollgate_api::audit::Caller::library()).await
    }

    async fn forget_unaudited(&self, node: &str) -> Result<Committed, ClusterError> {
        let committed = self.shared().handle.forget(node).await?;
        self.shared().settle(committed.revision).await;
        Ok(committed)
    }

    /// Whether a plugin's required flags are supported and enabled.
    pub fn check_plugin(&self, plugin: &PluginSpec) -> Result<(), FlagError> {
        plan::check_plugin(&self.view(), self.registry(), plugin).map_err(FlagError::PluginRefused)
    }

    /// Adds (or replaces) a named section of the upgrade status.
    pub fn set_status_section(&self, name: &str, section: StatusSection) {
        self.shared().sections.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), section);
    }

    /// The named sections of the upgrade status, in name order.
    pub fn status_sections(&self) -> Vec<(String, StatusSection)> {
        self.shared()
            .sections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// What the operator must do to bring every member to `to` (needs the
    /// release table in the config).
    pub fn upgrade_plan(&self, to: &str) -> Result<crate::flags::UpgradePlan, UpgradePlanRefusal> {
        let Some(table) = &self.config().releases else {
            return Err(UpgradePlanRefusal::NoReleaseTable { node: self.id().to_string() });
        };
        crate::flags::plan_upgrade(&self.view(), table, to).map_err(UpgradePlanRefusal::Plan)
    }

    /// A graceful stop: leaves the cluster (declared stopped, still a
    /// member), revokes the liveness lease and stops the node's tasks.
    pub async fn stop(&self) -> Result<(), NodeError> {
        let shared = self.shared();
        if shared.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        for t in self.core.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
        for t in shared.spawned.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
        shared.fenced.send_replace(Some(FenceReason::Stopping));
        shared.serving.send_replace(false);
        let left = shared.cluster.leave(&shared.config.node_id).await;
        if let Some(l) = shared.liveness.lock().await.take() {
            l.stop().await?;
        }
        left?;
        Ok(())
    }
}

/// Why no upgrade plan was made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradePlanRefusal {
    /// The service did not give its release table.
    #[error("node {node} has no release table: the service must set NodeConfig::releases for upgrade plans")]
    NoReleaseTable {
        /// The node.
        node: String,
    },
    /// The plan cannot be made.
    #[error(transparent)]
    Plan(crate::flags::UpgradePlanError),
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        NodeError::Cluster(e.into())
    }
}

/// A running node's gates: a flag counts once this node's bit for it is set
/// (the store said enabled and the local copy was written: I1), a cluster
/// feature once every member publishes it.
impl crate::migrate::Gates for Node {
    fn flag_enabled(&self, name: &str) -> bool {
        Node::flag_enabled(self, name)
    }
    fn cluster_has_feature(&self, name: &str) -> bool {
        Node::cluster_has_feature(self, name)
    }
}
