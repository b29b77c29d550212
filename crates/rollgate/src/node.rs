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
//! flag it must prepare is being enabled, and resumes or rolls back any
//! enabling whose driver is gone (I4). [`Node::enable`] and
//! [`Node::disable`] run the protocols on this node (in a task of their own:
//! a caller that goes away does not cut a protocol in the middle).
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
//! tokio::spawn(admin::serve(listener, node.admin_router(AdminConfig::with_token(&token))));
//!
//! // The hot path: one atomic load.
//! if node.is_enabled(ttl) { /* write the new format */ }
//! node.wait_enabled(ttl).await;
//! node.stop().await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::AbortHandle;

use crate::capabilities::{self, CapabilityQuery, MemberAnswer, RouteTable};
use crate::cluster::{
    Cluster, ClusterError, ClusterHandle, ClusterOptions, ClusterView, Committed, FlagAck, FlagRecord, FlagState,
    HandleOptions, Liveness, LocalCopy, Member, NodeRecord, NodeState, TransportRange, UpdateError, ViewOp, now_ms,
    validate_node_id,
};
use crate::features::{self, FeatureSet};
use crate::flags::failpoint::fail_point;
use crate::flags::plan::{
    self, Begin, BeginDisable, Blocker, EnablePlan, EnableRequest, PlanContext, Recovery, RequiredBlock,
};
use crate::flags::{FlagError, FlagId, FlagRegistry, FlagSource, Flags, PluginSpec, ReleaseTable, StepContext};
use crate::store::{MetaStore, StoreError, StoreOptions, Txn, TxnOp};
use crate::version::{ProtocolRange, TransportVersion};

/// Bounds on the node's protocols.
#[derive(Clone, Debug)]
pub struct NodeTimeouts {
    /// How long the enabling node waits for every member's per-node step.
    pub node_steps_ms: u64,
    /// How long one enable step or disable hook may run.
    pub step_ms: u64,
    /// An enabling or disabling record not refreshed for this long is taken
    /// over even when its owner looks alive (the owner refreshes it while a
    /// long step runs).
    pub stale_ms: u64,
    /// How long a member may take to answer a `_capabilities` question.
    pub capabilities_ms: u64,
    /// How long boot waits for its own view (join, liveness) and for
    /// required flags another node is enabling.
    pub boot_wait_ms: u64,
}

impl Default for NodeTimeouts {
    fn default() -> Self {
        NodeTimeouts {
            node_steps_ms: 30_000,
            step_ms: 600_000,
            stale_ms: 120_000,
            capabilities_ms: capabilities::DEFAULT_TIMEOUT_MS,
            boot_wait_ms: 60_000,
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node id (see [`validate_node_id`]).
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

/// What an enable request did (or, as a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EnableReport {
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// The flags in the order they are (or would be) enabled.
    pub order: Vec<String>,
    /// The flags this request enabled.
    pub enabled: Vec<String>,
    /// Requested flags that were enabled already.
    pub already_enabled: Vec<String>,
    /// What blocks it (dry run only; a real request is refused instead).
    pub blockers: Vec<Blocker>,
    /// The blockers as operator messages.
    pub messages: Vec<String>,
}

/// What a disable request did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DisableReport {
    /// The flag.
    pub flag: String,
    /// False when it was disabled already.
    pub changed: bool,
}

/// One flag as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlagStatus {
    /// The name.
    pub name: String,
    /// `enabled`, `enabling`, `disabling` or `disabled`.
    pub state: String,
    /// Whether this node's release knows it.
    pub known: bool,
    /// What it changes.
    pub description: String,
    /// `required`, `stable` or `experimental`.
    pub stability: String,
    /// The first release that knows it.
    pub introduced_in: String,
    /// Its dependencies.
    pub depends_on: Vec<String>,
    /// Where it is documented.
    pub doc_url: Option<String>,
    /// Who declared it.
    pub provider: String,
    /// Whether it can be disabled.
    pub reversible: bool,
    /// Whether members run a per-node step to enable it.
    pub node_step: bool,
    /// The node driving an enabling or disabling.
    pub owner: Option<String>,
    /// The members that do not support it.
    pub lacking: Vec<String>,
    /// Why the last enabling was rolled back, if it was.
    pub note: Option<String>,
    /// When it was enabled (ms since the Unix epoch).
    pub since_ms: Option<u64>,
}

/// One member as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// The node id.
    pub node_id: String,
    /// Its release.
    pub release: String,
    /// `running` or `stopped` (effective).
    pub state: String,
    /// What it declared.
    pub declared: String,
    /// Its data address.
    pub data_addr: String,
    /// Its admin address.
    pub admin_addr: String,
    /// Its protocol range (`v1..=v2`).
    pub protocol: String,
    /// Its transport version.
    pub transport: u32,
    /// The flags it supports.
    pub supported_flags: Vec<String>,
    /// The cluster features it publishes.
    pub cluster_features: Vec<String>,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// Its last heartbeat, when running.
    pub heartbeat_ms: Option<u64>,
    /// Whether it is the node answering.
    pub this_node: bool,
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
}

impl Drop for Core {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

struct Shared {
    config: NodeConfig,
    cluster: Cluster,
    handle: ClusterHandle,
    flags: Flags,
    record: NodeRecord,
    http: reqwest::Client,
    /// Flags whose enabling or disabling this node drives right now.
    driving: Mutex<BTreeSet<String>>,
    /// Per-node steps of current attempts running or run here: (flag,
    /// attempt); kept until the attempt is over.
    steps: Mutex<BTreeSet<(String, String)>>,
    /// Flags with a recovery queued or running here.
    recovering: Mutex<BTreeSet<String>>,
    /// One enable, disable or recovery at a time on this node.
    op_lock: tokio::sync::Mutex<()>,
    /// The revision of the view the bits were last set from.
    bits_revision: Mutex<i64>,
    liveness: tokio::sync::Mutex<Option<Liveness>>,
    sections: Mutex<BTreeMap<String, StatusSection>>,
    /// Spawned protocol tasks, aborted with the node.
    spawned: Mutex<Vec<AbortHandle>>,
    stopped: AtomicBool,
}

/// Removes a flag from the driving set when dropped.
struct Driving<'a> {
    shared: &'a Shared,
    flag: String,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.shared.driving.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.flag);
    }
}

fn attempt_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn is_unavailable(e: &ClusterError) -> bool {
    matches!(e, ClusterError::StoreUnavailable { .. }) || matches!(e, ClusterError::Store(s) if s.is_unavailable())
}

/// Why a join closure stopped.
enum JoinStop {
    Refused(plan::JoinRefusal),
    Required(Vec<RequiredBlock>),
    Store(String),
}

/// Why an update closure stopped without committing.
enum Stop {
    Done,
    Blocked(Vec<Blocker>),
    Disable(plan::DisableRefusal),
    NotOurs(String),
}

impl Node {
    /// Opens the store named by `url` and starts a node on it. When the
    /// store is unreachable, the local copy in the data dir decides whether
    /// the refusal names an unknown enabled flag.
    pub async fn open(config: NodeConfig, url: &str, options: StoreOptions) -> Result<Node, NodeError> {
        match crate::store::open(url, options).await {
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeouts.capabilities_ms.max(1)))
            .build()
            .map_err(|e| NodeError::Config { reason: format!("cannot build the HTTP client: {e}") })?;
        let shared = Arc::new(Shared {
            flags: Flags::new(&config.flags),
            config,
            cluster,
            handle,
            record,
            http,
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
        Ok(plan::plan_enable(&view, &shared.config.flags, request, &shared.ctx(&driving)))
    }

    /// Enables flags (dependencies first), or plans it as a dry run. A
    /// refusal lists everything that blocks; see the enable protocol.
    pub async fn enable(&self, request: EnableRequest) -> Result<EnableReport, FlagError> {
        let shared = self.shared().clone();
        self.run_protocol(async move { shared.enable(request).await }).await
    }

    /// Disables a reversible flag: nodes stop producing data that needs it,
    /// its disable hook runs, then it is disabled.
    pub async fn disable(&self, flag: &str) -> Result<DisableReport, FlagError> {
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

    /// The admin HTTP API of this node ([`crate::admin::router`]).
    pub fn admin_router(&self, config: crate::admin::AdminConfig) -> axum::Router {
        crate::admin::router(self.clone(), config)
    }

    /// Forgets a stopped member for good; returns once this node's view
    /// shows it (bounded by `boot_wait_ms`).
    pub async fn forget(&self, node: &str) -> Result<Committed, ClusterError> {
        let committed = self.shared().handle.forget(node).await?;
        self.shared().settle(committed.revision).await;
        Ok(committed)
    }

    /// Whether a plugin's required flags are supported and enabled.
    pub fn check_plugin(&self, plugin: &PluginSpec) -> Result<(), FlagError> {
        plan::check_plugin(&self.view(), self.registry(), plugin).map_err(FlagError::PluginRefused)
    }

    /// Answers a `_capabilities` query: this node only (`local_only`), or
    /// every member (see [`capabilities::fan_out`]).
    pub async fn capabilities(&self, query: &CapabilityQuery, local_only: bool) -> (Option<bool>, Vec<MemberAnswer>) {
        let view = self.view();
        if local_only {
            let s = Some(self.routes().supports_in(query, &view));
            return (s, vec![MemberAnswer { node_id: self.id().to_string(), supported: s, source: "local" }]);
        }
        let timeout = Duration::from_millis(self.config().timeouts.capabilities_ms.max(1));
        capabilities::fan_out(&self.shared().http, &view, self.id(), self.routes(), query, timeout).await
    }

    /// Every flag this node knows or the store has, with its state.
    pub fn flag_statuses(&self) -> Vec<FlagStatus> {
        let view = self.view();
        let registry = self.registry();
        let mut names: BTreeSet<String> = registry.names();
        names.extend(view.flags.keys().cloned());
        names.into_iter().map(|n| flag_status(&view, registry, &n)).collect()
    }

    /// One flag's status, when this node knows it or the store has it.
    pub fn flag_status(&self, name: &str) -> Option<FlagStatus> {
        let view = self.view();
        (self.registry().supports(name) || view.flags.contains_key(name))
            .then(|| flag_status(&view, self.registry(), name))
    }

    /// Every member with its state.
    pub fn node_statuses(&self) -> Vec<NodeStatus> {
        let view = self.view();
        view.members
            .values()
            .map(|m| NodeStatus {
                node_id: m.record.node_id.clone(),
                release: m.record.release.clone(),
                state: if m.is_running() { "running" } else { "stopped" }.into(),
                declared: match m.record.state {
                    NodeState::Running => "running",
                    NodeState::Stopped => "stopped",
                }
                .into(),
                data_addr: m.record.data_addr.clone(),
                admin_addr: m.record.admin_addr.clone(),
                protocol: format!("{}..={}", m.record.protocol.min(), m.record.protocol.max()),
                transport: m.record.transport.current.id(),
                supported_flags: m.record.supported_flags.iter().cloned().collect(),
                cluster_features: m.record.cluster_features.iter().cloned().collect(),
                started_ms: m.record.started_ms,
                heartbeat_ms: m.live.as_ref().map(|l| l.heartbeat_ms),
                this_node: m.record.node_id == self.id(),
            })
            .collect()
    }

    /// The cluster features with which members publish them.
    pub fn feature_statuses(&self) -> serde_json::Value {
        let view = self.view();
        let mut all: BTreeSet<String> = BTreeSet::new();
        for m in view.members.values() {
            all.extend(m.record.cluster_features.iter().cloned());
        }
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|f| {
                let (with, without): (Vec<&Member>, Vec<&Member>) =
                    view.members.values().partition(|m| m.record.cluster_features.contains(f));
                serde_json::json!({
                    "name": f,
                    "cluster_has": features::cluster_has_feature(&view, f),
                    "members_with": with.iter().map(|m| m.record.node_id.clone()).collect::<Vec<_>>(),
                    "members_without": without.iter().map(|m| m.record.node_id.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({
            "cluster_features": features::cluster_features(&view),
            "this_node": self.record().cluster_features,
            "features": rows,
        })
    }

    /// Adds (or replaces) a named section of the upgrade status.
    pub fn set_status_section(&self, name: &str, section: StatusSection) {
        self.shared().sections.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), section);
    }

    /// The cluster's upgrade status: releases, members, flags, and the
    /// sections other parts of the service added (an extensible object:
    /// clients ignore what they do not know).
    pub async fn upgrade_status(&self) -> serde_json::Value {
        let view = self.view();
        let status = self.handle().status();
        let mut releases: BTreeMap<String, (Vec<String>, usize, usize)> = BTreeMap::new();
        for m in view.members.values() {
            let e = releases.entry(m.record.release.clone()).or_default();
            e.0.push(m.record.node_id.clone());
            if m.is_running() {
                e.1 += 1;
            } else {
                e.2 += 1;
            }
        }
        let statuses = self.flag_statuses();
        let by_state = |s: &str| statuses.iter().filter(|f| f.state == s).map(|f| f.name.clone()).collect::<Vec<_>>();
        let disabled: Vec<&FlagStatus> = statuses.iter().filter(|f| f.state == "disabled").collect();
        let ready: Vec<String> = disabled
            .iter()
            .filter(|f| f.lacking.is_empty() && f.known && f.stability != "experimental")
            .map(|f| f.name.clone())
            .collect();
        let blocked: Vec<serde_json::Value> = disabled
            .iter()
            .filter(|f| !f.lacking.is_empty())
            .map(|f| serde_json::json!({"flag": f.name, "lacking": f.lacking}))
            .collect();
        let sections: Vec<(String, StatusSection)> = self
            .shared()
            .sections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut extra = serde_json::Map::new();
        for (name, section) in sections {
            extra.insert(name, section().await);
        }
        // Service format versions and node-local migrations, cluster-wide:
        // which run, where, how far, and when each finished.
        let migrations =
            match crate::migrate::cluster_status(self.cluster().store().as_ref(), self.cluster().keys().root()).await {
                Ok(m) => serde_json::to_value(m).unwrap_or_else(|e| serde_json::json!({"error": e.to_string()})),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
        serde_json::json!({
            "cluster_id": view.cluster_id,
            "epoch": view.epoch,
            "revision": view.revision,
            "node": {"node_id": self.id(), "release": self.release()},
            "store": {"reachable": status.reachable, "last_error": status.last_error},
            "mixed_releases": releases.len() > 1,
            "releases": releases.into_iter().map(|(r, (nodes, running, stopped))| {
                serde_json::json!({"release": r, "nodes": nodes, "running": running, "stopped": stopped})
            }).collect::<Vec<_>>(),
            "flags": {
                "enabled": by_state("enabled"),
                "enabling": by_state("enabling"),
                "disabling": by_state("disabling"),
                "disabled": by_state("disabled"),
                "ready_to_enable": ready,
                "blocked": blocked,
            },
            "migrations": migrations,
            "sections": extra,
        })
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

fn flag_status(view: &ClusterView, registry: &FlagRegistry, name: &str) -> FlagStatus {
    let record = view.flags.get(name);
    let decl = registry.get(name);
    let info = decl.map(|d| d.info()).or_else(|| record.and_then(|r| r.info.clone())).unwrap_or_default();
    let (state, owner, since) = match record.map(|r| &r.state) {
        Some(FlagState::Enabled { since_ms }) => ("enabled", None, Some(*since_ms)),
        Some(FlagState::Enabling { owner, .. }) => ("enabling", Some(owner.clone()), None),
        Some(FlagState::Disabling { owner, .. }) => ("disabling", Some(owner.clone()), None),
        Some(FlagState::Disabled) | None => ("disabled", None, None),
    };
    FlagStatus {
        name: name.to_string(),
        state: state.into(),
        known: decl.is_some(),
        description: info.description,
        stability: info.stability,
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
    lease: crate::store::LeaseId,
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
                crate::store::encode_json(&keys.live(me), &live).map_err(|e| JoinStop::Store(e.to_string()))?;
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

impl Shared {
    fn driving_now(&self) -> BTreeSet<String> {
        self.driving.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn ctx<'a>(&'a self, driving: &'a BTreeSet<String>) -> PlanContext<'a> {
        PlanContext { me: &self.config.node_id, now_ms: now_ms(), stale_ms: self.config.timeouts.stale_ms, driving }
    }

    fn drive(&self, flag: &str) -> Driving<'_> {
        self.driving.lock().unwrap_or_else(|p| p.into_inner()).insert(flag.to_string());
        Driving { shared: self, flag: flag.to_string() }
    }

    fn step_context(&self, flag: &str) -> StepContext {
        StepContext { flag: flag.to_string(), node_id: self.config.node_id.clone(), cluster: self.cluster.clone() }
    }

    /// Sets the bits from `view` unless a newer view was applied already.
    fn refresh_bits(&self, view: &ClusterView) {
        let mut last = self.bits_revision.lock().unwrap_or_else(|p| p.into_inner());
        if view.revision < *last {
            return;
        }
        *last = view.revision;
        self.flags.store(&Flags::words_for(&self.config.flags, view));
    }

    /// Waits until the handle's view reached `revision` and applies its bits.
    async fn settle(&self, revision: i64) {
        let wait = Duration::from_millis(self.config.timeouts.boot_wait_ms.max(1));
        if let Some(view) = self.handle.wait_for_revision(revision, wait).await {
            self.refresh_bits(&view);
        }
    }

    async fn enable(self: Arc<Self>, request: EnableRequest) -> Result<EnableReport, FlagError> {
        let _op = self.op_lock.lock().await;
        let view = self.cluster.view().await?;
        let driving = self.driving_now();
        let plan = plan::plan_enable(&view, &self.config.flags, &request, &self.ctx(&driving));
        let mut report = EnableReport {
            dry_run: request.dry_run,
            order: plan.order.clone(),
            already_enabled: plan.already_enabled.clone(),
            messages: plan.blockers.iter().map(|b| b.to_string()).collect(),
            blockers: plan.blockers.clone(),
            enabled: Vec::new(),
        };
        if request.dry_run {
            return Ok(report);
        }
        if !plan.blockers.is_empty() {
            return Err(FlagError::EnableRefused { blockers: plan.blockers, enabled: Vec::new() });
        }
        for flag in &plan.order {
            match self.enable_flag(flag).await {
                Ok(true) => report.enabled.push(flag.clone()),
                Ok(false) => report.already_enabled.push(flag.clone()),
                Err(FlagError::EnableRefused { blockers, .. }) => {
                    return Err(FlagError::EnableRefused { blockers, enabled: report.enabled });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Begins (or takes over) enabling one flag and drives it. `Ok(false)`:
    /// it was enabled already.
    async fn enable_flag(&self, flag: &str) -> Result<bool, FlagError> {
        let _driving = self.drive(flag);
        fail_point("enable.before_enabling_commit").await;
        let attempt = attempt_id();
        let driving = self.driving_now();
        let committed = self
            .handle
            .update(|view| {
                // This node drives the flag now: a record it owns is its own to take over.
                let none = BTreeSet::new();
                let ctx = PlanContext { driving: &none, ..self.ctx(&driving) };
                match plan::begin_enable(view, &self.config.flags, flag, &attempt, &ctx) {
                    Ok(Begin::AlreadyEnabled) => Err(Stop::Done),
                    Ok(Begin::Write(rec)) => Ok(vec![ViewOp::PutFlag(flag.to_string(), *rec)]),
                    Err(blockers) => Err(Stop::Blocked(blockers)),
                }
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(UpdateError::Rejected(Stop::Done)) => return Ok(false),
            Err(UpdateError::Rejected(Stop::Blocked(blockers))) => {
                return Err(FlagError::EnableRefused { blockers, enabled: Vec::new() });
            }
            Err(UpdateError::Rejected(Stop::Disable(_) | Stop::NotOurs(_))) => return Ok(false),
            Err(UpdateError::Cluster(e)) => return Err(e.into()),
        };
        tracing::info!(node = %self.config.node_id, flag, attempt = %attempt, "enabling");
        self.settle(committed.revision).await;
        fail_point("enable.after_enabling_committed").await;
        self.drive_enable(flag, &attempt).await?;
        Ok(true)
    }

    /// Steps 2 to 5 of the enable protocol for an attempt this node owns.
    async fn drive_enable(&self, flag: &str, attempt: &str) -> Result<(), FlagError> {
        let me = self.config.node_id.clone();
        let decl = self.config.flags.get(flag).cloned();
        if let Some(step) = decl.as_ref().and_then(|d| d.on_enable_cluster.clone()) {
            let result = self.run_owned_step(flag, attempt, step).await;
            if let Err(reason) = result {
                let reason = format!("the cluster-wide enable step failed on node {me}: {reason}");
                self.roll_back(flag, attempt, &reason).await;
                return Err(FlagError::StepFailed { flag: flag.to_string(), what: "enabling", reason });
            }
        }
        fail_point("enable.after_cluster_step").await;
        self.wait_node_steps(flag, attempt).await?;
        fail_point("enable.after_node_steps").await;
        let committed = self
            .handle
            .update(|view| {
                let Some(rec) = view.flags.get(flag) else { return Err(Stop::NotOurs("nobody".into())) };
                match (&rec.state, &rec.attempt) {
                    (FlagState::Enabling { .. }, Some(a)) if a.id == attempt => {}
                    (FlagState::Enabling { owner, .. }, _) => return Err(Stop::NotOurs(owner.clone())),
                    _ => return Err(Stop::NotOurs("nobody".into())),
                }
                let mut blockers = Vec::new();
                if let Some(d) = self.config.flags.get(flag) {
                    for dep in d.get_depends_on() {
                        if !view.is_enabled(dep) {
                            blockers.push(Blocker::DependencyNotEnabled { flag: flag.into(), dependency: dep.clone() });
                        }
                    }
                }
                let lacking: Vec<plan::NodeRef> = view
                    .members
                    .values()
                    .filter(|m| !m.record.supported_flags.contains(flag))
                    .map(plan::NodeRef::of)
                    .collect();
                if !lacking.is_empty() {
                    let introduced_in = rec.info.as_ref().map(|i| i.introduced_in.clone()).unwrap_or_default();
                    blockers.push(Blocker::NotSupported { flag: flag.into(), introduced_in, nodes: lacking });
                }
                if !blockers.is_empty() {
                    return Err(Stop::Blocked(blockers));
                }
                let now = now_ms();
                Ok(vec![ViewOp::PutFlag(
                    flag.to_string(),
                    FlagRecord {
                        state: FlagState::Enabled { since_ms: now },
                        updated_ms: now,
                        info: rec.info.clone(),
                        attempt: None,
                        note: None,
                    },
                )])
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(UpdateError::Rejected(Stop::NotOurs(by))) => {
                return Err(FlagError::TakenOver { flag: flag.to_string(), by });
            }
            Err(UpdateError::Rejected(Stop::Blocked(blockers))) => {
                let reason = blockers.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("; ");
                self.roll_back(flag, attempt, &reason).await;
                return Err(FlagError::StepFailed { flag: flag.to_string(), what: "enabling", reason });
            }
            Err(UpdateError::Rejected(_)) => return Ok(()),
            Err(UpdateError::Cluster(e)) => return Err(e.into()),
        };
        tracing::info!(node = %me, flag, "enabled");
        fail_point("enable.after_enabled_committed").await;
        self.settle(committed.revision).await;
        self.clean_acks(flag).await;
        Ok(())
    }

    /// Runs a step this node owns, refreshing the record meanwhile so that
    /// nobody takes a long step over, bounded by `step_ms`.
    async fn run_owned_step(&self, flag: &str, attempt: &str, step: crate::flags::Step) -> Result<(), String> {
        let limit = Duration::from_millis(self.config.timeouts.step_ms.max(1));
        let refresh_every = Duration::from_millis((self.config.timeouts.stale_ms / 4).max(50));
        let work = step(self.step_context(flag));
        tokio::pin!(work);
        let deadline = tokio::time::Instant::now() + limit;
        let mut tick = tokio::time::interval(refresh_every);
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut work => return r,
                _ = tokio::time::sleep_until(deadline) => return Err(format!("timed out after {} ms", limit.as_millis())),
                _ = tick.tick() => self.refresh_record(flag, attempt).await,
            }
        }
    }

    /// Rewrites the in-progress record's `updated_ms` if it is still ours.
    async fn refresh_record(&self, flag: &str, attempt: &str) {
        let me = &self.config.node_id;
        let r = self
            .handle
            .update(|view| match view.flags.get(flag) {
                Some(rec)
                    if rec.attempt.as_ref().is_some_and(|a| a.id == attempt)
                        || matches!(&rec.state, FlagState::Disabling { owner, .. } if owner == me) =>
                {
                    let mut rec = rec.clone();
                    rec.updated_ms = now_ms();
                    Ok(vec![ViewOp::PutFlag(flag.to_string(), rec)])
                }
                _ => Err(()),
            })
            .await;
        if let Err(UpdateError::Cluster(e)) = r {
            tracing::warn!(flag, error = %e, "could not refresh the in-progress flag record");
        }
    }

    /// Waits for every member of the attempt to acknowledge its per-node
    /// step; rolls back when one fails, stops, or does not answer in time.
    async fn wait_node_steps(&self, flag: &str, attempt: &str) -> Result<(), FlagError> {
        let limit = Duration::from_millis(self.config.timeouts.node_steps_ms.max(1));
        let deadline = tokio::time::Instant::now() + limit;
        let mut rx = self.handle.watch_view();
        loop {
            let view = rx.borrow_and_update().clone();
            let Some(rec) = view.flags.get(flag) else {
                return Err(FlagError::TakenOver { flag: flag.to_string(), by: "nobody (the record is gone)".into() });
            };
            let nodes = match (&rec.state, &rec.attempt) {
                (FlagState::Enabling { .. }, Some(a)) if a.id == attempt => a.node_steps.clone(),
                (FlagState::Enabling { owner, .. }, _) => {
                    return Err(FlagError::TakenOver { flag: flag.to_string(), by: owner.clone() });
                }
                _ => return Err(FlagError::TakenOver { flag: flag.to_string(), by: "nobody".into() }),
            };
            let acks = view.flag_acks.get(flag);
            let mut pending = Vec::new();
            let mut failed = Vec::new();
            let mut down = Vec::new();
            for n in &nodes {
                match acks.and_then(|a| a.get(n)).filter(|a| a.attempt == attempt) {
                    Some(FlagAck { error: Some(e), .. }) => failed.push(format!("node {n}: {e}")),
                    Some(_) => {}
                    None if view.member(n).is_some_and(Member::is_running) => pending.push(n.clone()),
                    None => down.push(n.clone()),
                }
            }
            let reason = if !failed.is_empty() {
                Some(format!("the per-node enable step failed on {}", failed.join("; ")))
            } else if !down.is_empty() {
                Some(format!(
                    "node {} stopped before running its per-node enable step: start it (or `rollgate nodes forget ID` if it is gone for good) and enable again",
                    down.join(", ")
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                self.roll_back(flag, attempt, &reason).await;
                return Err(FlagError::StepFailed { flag: flag.to_string(), what: "enabling", reason });
            }
            if pending.is_empty() {
                return Ok(());
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(ClusterError::Metadata { root: String::new(), reason: "the cluster view ended".into() }.into());
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let reason = format!(
                        "node {} did not run its per-node enable step within {} ms: check that it is healthy and enable again",
                        pending.join(", "),
                        limit.as_millis()
                    );
                    self.roll_back(flag, attempt, &reason).await;
                    return Err(FlagError::StepFailed { flag: flag.to_string(), what: "enabling", reason });
                }
            }
        }
    }

    /// Rolls an attempt this node owns back to disabled (a no-op when it is
    /// not ours any more).
    async fn roll_back(&self, flag: &str, attempt: &str, reason: &str) {
        tracing::warn!(node = %self.config.node_id, flag, reason, "rolling back an enabling");
        let r = self
            .handle
            .update(|view| match view.flags.get(flag) {
                Some(rec)
                    if matches!(rec.state, FlagState::Enabling { .. })
                        && rec.attempt.as_ref().is_some_and(|a| a.id == attempt) =>
                {
                    Ok(vec![ViewOp::PutFlag(flag.to_string(), plan::rolled_back(rec, reason, now_ms()))])
                }
                _ => Err(()),
            })
            .await;
        match r {
            Ok(c) => self.settle(c.revision).await,
            Err(UpdateError::Rejected(())) => {}
            Err(UpdateError::Cluster(e)) => {
                tracing::error!(flag, error = %e, "could not roll back; the next node that looks will")
            }
        }
    }

    /// Deletes the acknowledgements of a finished enabling (best effort).
    async fn clean_acks(&self, flag: &str) {
        let Some(acks) = self.handle.view().flag_acks.get(flag).cloned() else { return };
        let keys: Vec<String> = acks.keys().map(|n| self.cluster.keys().flag_ack(flag, n)).collect();
        let per_txn = self.cluster.store().limits().max_txn_ops.max(1);
        for chunk in keys.chunks(per_txn) {
            let txn = Txn::new().and_then(chunk.iter().map(TxnOp::delete));
            if let Err(e) = self.cluster.store().txn(txn).await {
                tracing::debug!(flag, error = %e, "could not clean the acknowledgements");
                return;
            }
        }
    }

    /// Resumes, rolls back or finishes an in-progress flag whose driver is
    /// gone (the recovery rule of [`plan::recovery_for`]).
    async fn recover(self: Arc<Self>, flag: &str) -> Result<(), FlagError> {
        let _op = self.op_lock.lock().await;
        let view = self.cluster.view().await?;
        let driving = self.driving_now();
        match plan::recovery_for(&view, &self.config.flags, flag, &self.ctx(&driving)) {
            Recovery::Nothing => Ok(()),
            Recovery::ResumeEnable => {
                tracing::info!(node = %self.config.node_id, flag, "resuming an enabling whose driver is gone");
                self.enable_flag(flag).await.map(|_| ())
            }
            Recovery::RollBackEnable { reason } => {
                tracing::warn!(node = %self.config.node_id, flag, %reason, "rolling back an enabling whose driver is gone");
                let driving = BTreeSet::new();
                let r = self
                    .handle
                    .update(|view| match plan::recovery_for(view, &self.config.flags, flag, &self.ctx(&driving)) {
                        Recovery::RollBackEnable { reason } => {
                            let rec = view
                                .flags
                                .get(flag)
                                .cloned()
                                .unwrap_or_else(|| FlagRecord::with_state(FlagState::Disabled));
                            Ok(vec![ViewOp::PutFlag(flag.to_string(), plan::rolled_back(&rec, &reason, now_ms()))])
                        }
                        _ => Err(()),
                    })
                    .await;
                match r {
                    Ok(c) => {
                        self.settle(c.revision).await;
                        Ok(())
                    }
                    Err(UpdateError::Rejected(())) => Ok(()),
                    Err(UpdateError::Cluster(e)) => Err(e.into()),
                }
            }
            Recovery::FinishDisable => {
                tracing::info!(node = %self.config.node_id, flag, "finishing a disabling whose driver is gone");
                self.disable_locked(flag).await.map(|_| ())
            }
        }
    }

    async fn disable(self: Arc<Self>, flag: &str) -> Result<DisableReport, FlagError> {
        let _op = self.op_lock.lock().await;
        self.disable_locked(flag).await
    }

    async fn disable_locked(&self, flag: &str) -> Result<DisableReport, FlagError> {
        let _driving = self.drive(flag);
        let me = self.config.node_id.clone();
        let committed = self
            .handle
            .update(|view| {
                let none = BTreeSet::new();
                match plan::begin_disable(view, &self.config.flags, flag, &self.ctx(&none)) {
                    Ok(BeginDisable::AlreadyDisabled) => Err(Stop::Done),
                    Ok(BeginDisable::Write(rec)) => Ok(vec![ViewOp::PutFlag(flag.to_string(), *rec)]),
                    Err(r) => Err(Stop::Disable(r)),
                }
            })
            .await;
        let committed = match committed {
            Ok(c) => c,
            Err(UpdateError::Rejected(Stop::Done)) => {
                return Ok(DisableReport { flag: flag.to_string(), changed: false });
            }
            Err(UpdateError::Rejected(Stop::Disable(r))) => return Err(FlagError::DisableRefused(r)),
            Err(UpdateError::Rejected(_)) => return Ok(DisableReport { flag: flag.to_string(), changed: false }),
            Err(UpdateError::Cluster(e)) => return Err(e.into()),
        };
        // Nodes stop producing data that needs the flag from here on.
        self.settle(committed.revision).await;
        fail_point("disable.after_disabling_committed").await;
        if let Some(hook) = self.config.flags.get(flag).and_then(|d| d.before_disable.clone())
            && let Err(reason) = self.run_owned_step(flag, "", hook).await
        {
            let reason = format!("the disable hook failed on node {me}: {reason}; the flag is enabled again");
            let r = self
                .handle
                .update(|view| match view.flags.get(flag) {
                    Some(rec) if matches!(&rec.state, FlagState::Disabling { owner, .. } if *owner == me) => {
                        let now = now_ms();
                        Ok(vec![ViewOp::PutFlag(
                            flag.to_string(),
                            FlagRecord {
                                state: FlagState::Enabled { since_ms: now },
                                updated_ms: now,
                                info: rec.info.clone(),
                                attempt: None,
                                note: Some(reason.clone()),
                            },
                        )])
                    }
                    _ => Err(()),
                })
                .await;
            if let Ok(c) = r {
                self.settle(c.revision).await;
            }
            return Err(FlagError::StepFailed { flag: flag.to_string(), what: "disabling", reason });
        }
        fail_point("disable.after_hook").await;
        let r = self
            .handle
            .update(|view| match view.flags.get(flag) {
                Some(rec) if matches!(&rec.state, FlagState::Disabling { owner, .. } if *owner == me) => {
                    let mut done = FlagRecord::with_state(FlagState::Disabled);
                    done.info = rec.info.clone();
                    Ok(vec![ViewOp::PutFlag(flag.to_string(), done)])
                }
                Some(rec) => Err(match &rec.state {
                    FlagState::Disabling { owner, .. } => owner.clone(),
                    _ => "nobody".into(),
                }),
                None => Err("nobody".into()),
            })
            .await;
        match r {
            Ok(c) => {
                self.settle(c.revision).await;
                tracing::info!(node = %me, flag, "disabled");
                Ok(DisableReport { flag: flag.to_string(), changed: true })
            }
            Err(UpdateError::Rejected(by)) => Err(FlagError::TakenOver { flag: flag.to_string(), by }),
            Err(UpdateError::Cluster(e)) => Err(e.into()),
        }
    }

    /// The flag worker's reaction to a view: run this node's pending per-node
    /// steps and recover in-progress flags whose driver is gone.
    fn on_view(self: &Arc<Self>, view: &ClusterView, spawn: &mut dyn FnMut(Pin<Box<dyn Future<Output = ()> + Send>>)) {
        let me = &self.config.node_id;
        // Forget steps of attempts that are over. A step that ran stays in
        // `steps` until then: the view that shows its acknowledgement may
        // come after other views, and those must not run it again.
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).retain(|(flag, attempt)| {
            view.flags.get(flag).is_some_and(|rec| {
                matches!(rec.state, FlagState::Enabling { .. })
                    && rec.attempt.as_ref().is_some_and(|a| a.id == *attempt)
            })
        });
        for (flag, rec) in &view.flags {
            let (FlagState::Enabling { .. }, Some(attempt)) = (&rec.state, &rec.attempt) else { continue };
            if !attempt.node_steps.contains(me) {
                continue;
            }
            let acked = view.flag_acks.get(flag).and_then(|a| a.get(me)).is_some_and(|a| a.attempt == attempt.id);
            let key = (flag.clone(), attempt.id.clone());
            if acked || !self.steps.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
                continue;
            }
            let shared = self.clone();
            spawn(Box::pin(async move {
                if !shared.run_node_step(&key.0, &key.1).await {
                    // Not acknowledged: run it again on the next view.
                    shared.steps.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                }
            }));
        }
        let driving = self.driving_now();
        let ctx = self.ctx(&driving);
        for flag in view.flags.keys() {
            if plan::recovery_for(view, &self.config.flags, flag, &ctx) != Recovery::Nothing
                && self.recovering.lock().unwrap_or_else(|p| p.into_inner()).insert(flag.clone())
            {
                let shared = self.clone();
                let flag = flag.clone();
                spawn(Box::pin(async move {
                    if let Err(e) = shared.clone().recover(&flag).await {
                        tracing::warn!(flag = %flag, error = %e, "recovery failed; retrying on the next change");
                    }
                    shared.recovering.lock().unwrap_or_else(|p| p.into_inner()).remove(&flag);
                }));
            }
        }
    }

    /// Runs this node's per-node step for an attempt and acknowledges it
    /// (a failed step is acknowledged with its error). False when the
    /// acknowledgement could not be stored.
    async fn run_node_step(&self, flag: &str, attempt: &str) -> bool {
        let me = &self.config.node_id;
        let error = match self.config.flags.get(flag).and_then(|d| d.on_enable_node.clone()) {
            None => None,
            Some(step) => {
                let limit = Duration::from_millis(self.config.timeouts.step_ms.max(1));
                match tokio::time::timeout(limit, step(self.step_context(flag))).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("timed out after {} ms", limit.as_millis())),
                }
            }
        };
        let ack = FlagAck { attempt: attempt.to_string(), error, at_ms: now_ms() };
        let key = self.cluster.keys().flag_ack(flag, me);
        let value = match crate::store::encode_json(&key, &ack) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(flag, error = %e, "cannot encode the acknowledgement");
                return false;
            }
        };
        match self.cluster.store().put(&key, value).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(flag, error = %e, "cannot acknowledge the per-node step; retrying on the next change");
                false
            }
        }
    }
}

/// Follows the view: per-node steps and recovery. Also wakes up regularly,
/// because a record becomes stale with time alone.
async fn flag_worker(shared: Arc<Shared>) {
    let mut rx = shared.handle.watch_view();
    let mut tick =
        tokio::time::interval(Duration::from_millis((shared.config.timeouts.stale_ms / 4).clamp(100, 30_000)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let view = rx.borrow_and_update().clone();
        shared.on_view(&view, &mut |f| {
            tasks.spawn(f);
        });
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

/// Keeps the hot-path bits equal to the published view.
async fn follow_bits(shared: Arc<Shared>) {
    let mut rx = shared.handle.watch_view();
    loop {
        let view = rx.borrow_and_update().clone();
        shared.refresh_bits(&view);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        NodeError::Cluster(e.into())
    }
}
