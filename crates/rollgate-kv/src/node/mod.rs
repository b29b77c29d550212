//! A rollgate-kv node: its data dir, its membership, its peer links, the
//! replication and catch-up logic and its HTTP API, embeddable in any tokio
//! program ([`Node::start`]) and run by `rollgate-kv serve`.
//!
//! # Life of a node
//!
//! 1. Open the data dir (`DIR/kv.redb`, locked) and the node id
//!    (`DIR/node_id`, created on first start).
//!    The `records` unit's format stamp is checked read-only first: a unit
//!    this release does not read is refused with nothing written.
//! 2. Check `--join` with a handshake, bind the data and HTTP listeners, and
//!    start rollgate's node runtime ([`rollgate::node::Node`]) with the
//!    release's flags, cluster features, routes, release table, addresses,
//!    protocol and transport ranges: its boot checks (an enabled flag this
//!    release does not know refuses the start, naming it), the
//!    epoch-fenced join (flags and the cluster-feature ratchet; required
//!    flags enabled or refused), the liveness lease and the flag worker. The
//!    peers are the runtime's view of the members. Then the node's table
//!    migrations follow its flag bits ([`crate::migrations`]), and its
//!    plugins wait for their flags ([`crate::plugins`]).
//! 3. Catch up: wait (bounded) until every running peer has connected to us,
//!    then pull from each (digest ranges with peers speaking protocol v3,
//!    full sync otherwise) while already storing what peers replicate.
//!    Until then the HTTP API answers 503 `catching_up`.
//! 4. Serve: writes are stored locally and replicated to every connected
//!    member, and acknowledged once a majority of the registered members
//!    (running or stopped) stored them durably; reads are local.
//! 5. On a graceful stop: refuse new requests, finish running ones, leave
//!    the membership through the runtime (declared stopped), close the
//!    links, stop the migrations, release the data dir.
//!
//! The HTTP listener (`--admin`, loopback unless an address says otherwise)
//! serves the client API and rollgate's admin API (`/admin/...`,
//! `/_capabilities`), whose mutations need the bearer token of
//! `--admin-token-file`.
//!
//! Whenever a peer connects to a ready node, the node pulls from that peer
//! in the background (anti-entropy), so writes a node missed while its link
//! was down reach it without a restart.

mod catchup;
mod serve;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollgate::admin::AdminConfig;
use rollgate::cluster::{Cluster, ClusterError, ClusterOptions, ClusterView, TransportRange};
use rollgate::handshake::{ClusterSecret, HandshakeConfig};
use rollgate::migrate::{Gates, LocalOptions, LocalRunner, MigrateError};
use rollgate::net::{self, Listener, NetConfig, NetError};
use rollgate::node::NodeTimeouts;
use rollgate::store::MetaStore;
use serde::Serialize;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;

pub use catchup::{CatchUpError, SyncStats};
pub use write::{MAX_SCAN_LIMIT, MAX_SCANNED, WriteError, WriteOutcome};

use crate::Msg;
use crate::gates::KvFlags;
use crate::hlc::Hlc;
use crate::migrations::{self, HookSlot, HookTarget};
use crate::peer::link::{LinkError, LinkSettings, Links, PeerStatus};
use crate::plugins::{Audit, PluginState};
use crate::record::Record;
use crate::releases::{self, FlagHooks, RECORD_META_V2, Release, TTL};
use crate::storage::{Storage, StorageError, StorageOptions};

/// The file holding the node id in the data dir.
pub const NODE_ID_FILE: &str = "node_id";
/// How many recent inbound handshake refusals a node remembers for `/health`.
const MAX_RECENT_REFUSALS: usize = 16;

/// Timeouts, limits and intervals of a node. The defaults suit a LAN; tests
/// shorten the liveness TTL.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How long a write waits for a majority of acknowledgements.
    pub write_timeout: Duration,
    /// TTL of the liveness lease (a crashed node counts as running this long).
    pub liveness_ttl_s: i64,
    /// Longest handshake (connect included).
    pub handshake_timeout: Duration,
    /// A peer connection with nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// First reconnect delay of a link.
    pub backoff_min: Duration,
    /// Longest reconnect delay of a link.
    pub backoff_max: Duration,
    /// How long catch-up waits for a running peer to connect to us (so that
    /// its new writes reach us) before pulling from it anyway.
    pub inbound_wait: Duration,
    /// How long catch-up waits for our link to a peer.
    pub connect_wait: Duration,
    /// Longest catch-up from one peer.
    pub catch_up_timeout: Duration,
    /// How long a peer may take to answer a sync or digest request.
    pub request_timeout: Duration,
    /// Entries per sync chunk.
    pub sync_chunk_entries: u32,
    /// Bytes per sync chunk (keys and values).
    pub sync_chunk_bytes: u32,
    /// Local entries per digest range.
    pub digest_range_keys: usize,
    /// Requests handled at once per inbound connection.
    pub max_inflight_per_connection: usize,
    /// Inbound peer connections at once.
    pub max_peer_connections: usize,
    /// HTTP connections at once.
    pub max_http_connections: usize,
    /// Longest HTTP request, body included.
    pub http_request_timeout: Duration,
    /// The data file's queues and batches.
    pub storage: StorageOptions,
    /// The bounds of rollgate's flag protocols (enable, disable, boot).
    pub flag_timeouts: NodeTimeouts,
    /// How long disabling `record_meta_v2` waits for every running member
    /// to convert its records back.
    pub convert_back_wait: Duration,
    /// Records per batch of a table migration.
    pub migration_batch_records: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            write_timeout: Duration::from_secs(3),
            liveness_ttl_s: 5,
            handshake_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(1_000),
            inbound_wait: Duration::from_secs(5),
            connect_wait: Duration::from_secs(3),
            catch_up_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            sync_chunk_entries: 512,
            sync_chunk_bytes: 4 << 20,
            digest_range_keys: 256,
            max_inflight_per_connection: 256,
            max_peer_connections: 256,
            max_http_connections: 256,
            http_request_timeout: Duration::from_secs(30),
            storage: StorageOptions::default(),
            flag_timeouts: NodeTimeouts::default(),
            convert_back_wait: Duration::from_secs(120),
            migration_batch_records: 500,
        }
    }
}

/// What a node is configured with (`rollgate-kv serve`'s flags).
#[derive(Clone)]
pub struct NodeConfig {
    /// The release to run as.
    pub release: &'static Release,
    /// The data dir.
    pub data_dir: PathBuf,
    /// The address peers connect to (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// The HTTP address of the client API and the admin API: `PORT` or
    /// `localhost:PORT` (loopback), or `IP:PORT` (bind to a non-loopback
    /// address only on purpose, with a token and a firewall).
    pub admin: String,
    /// A peer's data address to check with a handshake before joining.
    pub join: Option<String>,
    /// The node id; by default the one in the data dir, else a new random one.
    pub node_id: Option<String>,
    /// The cluster secret; `None` runs unauthenticated handshakes (warned).
    pub cluster_secret: Option<ClusterSecret>,
    /// The admin API's bearer token (`--admin-token-file`); without one,
    /// admin mutations (enable, disable, forget) are refused, saying how to
    /// configure it.
    pub admin_token: Option<String>,
    /// The plugins to run (`--plugins`), from the release's
    /// [`Release::plugins`]; each starts once the flags it requires are enabled.
    pub plugins: Vec<String>,
    /// Timeouts and limits.
    pub tuning: Tuning,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("release", &self.release.name)
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .field("join", &self.join)
            .field("node_id", &self.node_id)
            .field("cluster_secret", &self.cluster_secret.is_some())
            .field("admin_token", &self.admin_token.is_some())
            .field("plugins", &self.plugins)
            .finish()
    }
}

impl NodeConfig {
    /// A configuration with defaults for everything optional.
    pub fn new(
        release: &'static Release,
        data_dir: impl Into<PathBuf>,
        listen: impl Into<String>,
        admin: impl Into<String>,
    ) -> Self {
        NodeConfig {
            release,
            data_dir: data_dir.into(),
            listen: listen.into(),
            admin: admin.into(),
            join: None,
            node_id: None,
            cluster_secret: None,
            admin_token: None,
            plugins: Vec::new(),
            tuning: Tuning::default(),
        }
    }
}

/// Where a node serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Addresses {
    /// Peer connections.
    pub data: SocketAddr,
    /// HTTP (client API).
    pub admin: SocketAddr,
}

/// Where a node is in serving clients and peers: catching up after a start,
/// ready, stopping, stopped. (Not its membership state in the cluster,
/// which is rollgate's [`rollgate::cluster::NodeState`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServingState {
    /// Registered, pulling from peers; requests get 503.
    CatchingUp,
    /// Serving.
    Ready,
    /// Stopping gracefully; new requests get 503.
    Stopping,
    /// Stopped (or killed).
    Stopped,
}

impl ServingState {
    /// The state as the `code` of a 503 answer and in `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServingState::CatchingUp => "catching_up",
            ServingState::Ready => "ready",
            ServingState::Stopping => "stopping",
            ServingState::Stopped => "stopped",
        }
    }
}

/// Why a node could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data dir.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The node id file.
    #[error("node id file {}: {reason}", path.display())]
    NodeId {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// The membership or the metadata store.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// rollgate's node runtime refused the start (an enabled flag this
    /// release lacks, a cluster feature it lacks, a required flag that cannot
    /// be enabled: the message names the flag or feature, the nodes and the
    /// fix) or failed.
    #[error(transparent)]
    Runtime(#[from] rollgate::node::NodeError),
    /// The table migrations could not be set up.
    #[error("storage migrations: {0}")]
    Migrate(#[from] MigrateError),
    /// Binding a listener.
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// Which listener.
        what: &'static str,
        /// The OS error.
        reason: String,
    },
    /// The `--join` peer refused us or could not be reached.
    #[error("cannot join through {addr}: {reason}")]
    Join {
        /// The address.
        addr: String,
        /// The handshake's message (naming what to upgrade) or the connection error.
        reason: String,
    },
    /// Setting up the peer listener failed.
    #[error(transparent)]
    Net(#[from] NetError),
}

impl NodeError {
    /// Whether the operator can fix it (bad flags, an incompatible peer, a
    /// data dir in use): exit code 2 rather than 1.
    pub fn is_operator_error(&self) -> bool {
        match self {
            NodeError::Config(_) | NodeError::NodeId { .. } | NodeError::Bind { .. } | NodeError::Join { .. } => true,
            NodeError::Storage(e) => matches!(
                e,
                StorageError::AlreadyOpen { .. } | StorageError::Corrupt { .. } | StorageError::Format { .. }
            ),
            NodeError::Cluster(e) => matches!(e, ClusterError::InvalidNodeId { .. }),
            NodeError::Runtime(e) => match e {
                rollgate::node::NodeError::Flag(f) => f.is_refusal(),
                rollgate::node::NodeError::Config { .. } => true,
                rollgate::node::NodeError::Cluster(c) => matches!(c, ClusterError::InvalidNodeId { .. }),
                _ => false,
            },
            NodeError::Migrate(_) => false,
            NodeError::Net(e) => matches!(e, NetError::Config(_)),
        }
    }
}

/// The state every part of a running node shares.
pub(crate) struct Shared {
    pub(crate) node_id: String,
    pub(crate) release: &'static Release,
    pub(crate) tuning: Tuning,
    pub(crate) cluster_id: String,
    pub(crate) addresses: Addresses,
    pub(crate) storage: Storage,
    pub(crate) hlc: Hlc,
    /// rollgate's node runtime: taken out when the node stops or is killed,
    /// so that nothing keeps it (its liveness lease) alive after that.
    runtime: Mutex<Option<rollgate::node::Node>>,
    /// The runtime's cluster view (the last one stays readable after a stop).
    views: watch::Receiver<Arc<ClusterView>>,
    /// The flags kv checks, on the hot path.
    pub(crate) flags: KvFlags,
    /// The audit plugin, when configured.
    pub(crate) audit: Option<Arc<Audit>>,
    /// The table migrations' runner, while the node runs.
    runner: Mutex<Option<Arc<LocalRunner>>>,
    pub(crate) links: Links,
    state: watch::Sender<ServingState>,
    /// Set by `kill`: HTTP connections fail from then on.
    pub(crate) killed: Arc<AtomicBool>,
    /// Peers that connected to us since the start.
    inbound_seen: Mutex<BTreeSet<String>>,
    inbound_notify: Notify,
    /// Recent inbound handshake failures (for `/health`).
    refusals: Mutex<VecDeque<String>>,
    /// Background pulls running (peer -> run again when done).
    resyncs: Mutex<HashMap<String, bool>>,
    background: Mutex<JoinSet<()>>,
    /// The last catch-up from each peer.
    sync_stats: Mutex<BTreeMap<String, SyncStats>>,
}

impl Shared {
    pub(crate) fn state(&self) -> ServingState {
        *self.state.borrow()
    }

    fn set_state(&self, to: ServingState) {
        self.state.send_if_modified(|s| {
            // Never back from stopping or stopped.
            let allowed = !matches!(*s, ServingState::Stopping | ServingState::Stopped) || to == ServingState::Stopped;
            let changed = allowed && *s != to;
            if changed {
                tracing::info!(node = %self.node_id, from = s.as_str(), to = to.as_str(), "node state");
                *s = to;
            }
            changed
        });
    }

    pub(crate) fn view(&self) -> Arc<ClusterView> {
        self.views.borrow().clone()
    }

    /// rollgate's node runtime, while the node runs.
    pub(crate) fn runtime(&self) -> Option<rollgate::node::Node> {
        self.runtime.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether every member publishes the cluster feature.
    pub(crate) fn cluster_has_feature(&self, feature: &str) -> bool {
        rollgate::features::cluster_has_feature(&self.view(), feature)
    }

    fn note_inbound(&self, peer: &str) {
        let new = self.inbound_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(peer.to_string());
        if new {
            self.inbound_notify.notify_waiters();
        }
    }

    fn has_inbound(&self, peer: &str) -> bool {
        self.inbound_seen.lock().unwrap_or_else(|p| p.into_inner()).contains(peer)
    }

    fn note_refusal(&self, message: String) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == MAX_RECENT_REFUSALS {
            r.pop_front();
        }
        r.push_back(message);
    }

    pub(crate) fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    pub(crate) fn spawn_background(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut bg = self.background.lock().unwrap_or_else(|p| p.into_inner());
        while bg.try_join_next().is_some() {}
        bg.spawn(f);
    }
}

/// Health, as `/health` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    /// The node id.
    pub node: String,
    /// Its release.
    pub release: &'static str,
    /// Its state.
    pub state: &'static str,
    /// Whether it serves requests.
    pub ready: bool,
    /// The cluster id.
    pub cluster_id: String,
    /// Its protocol range.
    pub protocols: String,
    /// Its transport version.
    pub transport: u32,
    /// Registered members (running or stopped), itself included.
    pub members: usize,
    /// Its links to peers.
    pub peers: Vec<PeerStatus>,
    /// Recent inbound handshakes it refused or that failed.
    pub refused_inbound: Vec<String>,
    /// The feature flags enabled in the cluster (from its view).
    pub flags_enabled: Vec<String>,
    /// Its plugins and whether each runs.
    pub plugins: BTreeMap<String, PluginState>,
    /// Its `records` unit (filled in by `/health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,
}

/// A node's `records` unit, as `/health` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct StorageStatus {
    /// The unit.
    pub unit: &'static str,
    /// Its format now.
    pub format: u32,
    /// The format it was created with.
    pub created_format: u32,
    /// The formats this release reads.
    pub readable: String,
    /// Entries in the expiry index (format 3).
    pub expiry_index: u64,
}

/// The client API of a node (what the HTTP routes call): cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub(crate) shared: Arc<Shared>,
}

impl Api {
    /// Stores `value` under `key` (with an optional TTL) and returns once a
    /// majority of members stored it.
    pub async fn put(&self, key: String, value: Vec<u8>, ttl_s: Option<u64>) -> Result<WriteOutcome, WriteError> {
        write::write(&self.shared, key, Some(value), ttl_s, None).await
    }

    /// Stores `value` (`None`: deletes) under `key`, after the writer's
    /// highest seen version: the write's version is above `seen`, so a
    /// client that wrote a key through one node and writes it again
    /// through another is not overtaken by its own earlier write, even
    /// when the second node has not received the first one yet.
    pub async fn write(
        &self,
        key: String,
        value: Option<Vec<u8>>,
        ttl_s: Option<u64>,
        seen: Option<&crate::hlc::Version>,
    ) -> Result<WriteOutcome, WriteError> {
        write::write(&self.shared, key, value, ttl_s, seen).await
    }

    /// Deletes `key` (a tombstone), acknowledged like a put.
    pub async fn delete(&self, key: String) -> Result<WriteOutcome, WriteError> {
        write::write(&self.shared, key, None, None, None).await
    }

    /// The live value of `key` on this node and its record.
    pub async fn get(&self, key: &str) -> Result<Option<Record>, WriteError> {
        write::read(&self.shared, key).await
    }

    /// The node's health.
    pub fn health(&self) -> Health {
        let s = &self.shared;
        let state = s.state();
        let view = s.view();
        Health {
            node: s.node_id.clone(),
            release: s.release.name,
            state: state.as_str(),
            ready: state == ServingState::Ready,
            cluster_id: s.cluster_id.clone(),
            protocols: s.release.protocols.to_string(),
            transport: s.release.transport.id(),
            members: view.members.len().max(1),
            peers: s.links.status(),
            refused_inbound: s.refusals(),
            flags_enabled: view.flags.iter().filter(|(_, r)| r.is_enabled()).map(|(n, _)| n.clone()).collect(),
            plugins: s.audit.iter().map(|a| (a.name().to_string(), a.state())).collect(),
            storage: None,
        }
    }

    /// The node's `records` unit: its format stamp and expiry index.
    pub async fn storage_status(&self) -> Result<StorageStatus, StorageError> {
        let s = &self.shared;
        let stamp = s.storage.unit_stamp().await?;
        Ok(StorageStatus {
            unit: releases::RECORDS_UNIT,
            format: stamp.format,
            created_format: stamp.created_format,
            readable: format!("{}..={}", s.release.formats.min_readable, s.release.formats.max),
            expiry_index: s.storage.expiry_index_len().await?,
        })
    }

    /// The live records whose key starts with `prefix` (see [`crate::http`]'s `GET /kv?prefix=`).
    pub async fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<crate::storage::StoredEntry>, bool), WriteError> {
        write::scan_prefix(&self.shared, prefix, limit).await
    }

    /// The release it runs as.
    pub fn release(&self) -> &'static Release {
        self.shared.release
    }

    /// Whether every member publishes the cluster feature.
    pub fn cluster_has_feature(&self, feature: &str) -> bool {
        self.shared.cluster_has_feature(feature)
    }

    /// The members that do not publish the cluster feature, as `node (release R)`.
    pub fn members_without(&self, feature: &str) -> Vec<String> {
        self.shared
            .view()
            .members
            .values()
            .filter(|m| !m.record.cluster_features.contains(feature))
            .map(|m| format!("{} (release {})", m.record.node_id, m.record.release))
            .collect()
    }

    /// The audit plugin, when configured.
    pub fn audit(&self) -> Option<&Arc<Audit>> {
        self.shared.audit.as_ref()
    }

    /// The names of the configured plugins.
    pub fn plugin_names(&self) -> Vec<String> {
        self.shared.audit.iter().map(|a| a.name().to_string()).collect()
    }
}

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts a node on `store` (the cluster's metadata store) and returns
    /// once it is registered and listening; it then catches up in the
    /// background ([`NodeHandle::wait_ready`]).
    pub async fn start(config: NodeConfig, store: Arc<dyn MetaStore>) -> Result<NodeHandle, NodeError> {
        let release = config.release;
        if let Some(id) = &config.node_id {
            rollgate::cluster::validate_node_id(id).map_err(|e| NodeError::Config(format!("--node-id: {e}")))?;
        }
        check_plugins(release, &config.plugins)?;
        let dir = config.data_dir.clone();
        let storage_options = config.tuning.storage.clone();
        let explicit = config.node_id.clone();
        let policy = release.format_policy();
        let (storage, floor, node_id) = tokio::task::spawn_blocking(move || {
            let (storage, floor) = Storage::open(&dir, storage_options, &policy)?;
            let node_id = load_or_create_node_id(&dir, explicit.as_deref())?;
            Ok::<_, NodeError>((storage, floor, node_id))
        })
        .await
        .map_err(|e| NodeError::Config(format!("opening the data dir: {e}")))??;
        match start_with(config, store, storage.clone(), floor, node_id).await {
            Ok(handle) => Ok(handle),
            Err(e) => {
                storage.close().await;
                Err(e)
            }
        }
        .inspect(|h| tracing::info!(node = %h.node_id(), release = release.name, "node started"))
    }
}

/// Checks `--plugins` against what the release ships.
fn check_plugins(release: &Release, plugins: &[String]) -> Result<(), NodeError> {
    let mut seen = BTreeSet::new();
    for p in plugins {
        if release.plugin(p).is_none() {
            let ships = releases::RELEASES.iter().filter(|r| r.plugin(p).is_some()).map(|r| r.name).collect::<Vec<_>>();
            let theirs: Vec<&str> = release.plugins.iter().map(|p| p.name).collect();
            return Err(NodeError::Config(format!(
                "--plugins: release {} has no plugin {:?} (its plugins: {}){}",
                release.name,
                rollgate::util::shorten_to(p, 64),
                if theirs.is_empty() { "none".to_string() } else { theirs.join(", ") },
                match ships.first() {
                    Some(first) => format!("; run release {first} or later to use it"),
                    None => String::new(),
                }
            )));
        }
        if !seen.insert(p.as_str()) {
            return Err(NodeError::Config(format!("--plugins: plugin {p:?} is named twice")));
        }
    }
    Ok(())
}

async fn start_with(
    config: NodeConfig,
    store: Arc<dyn MetaStore>,
    storage: Storage,
    floor: Option<crate::hlc::Version>,
    node_id: String,
) -> Result<NodeHandle, NodeError> {
    let release = config.release;
    let tuning = config.tuning.clone();
    let cluster = Cluster::open(store.clone(), ClusterOptions::default()).await?;
    let cluster_id = cluster.cluster_id().to_string();
    drop(cluster);

    let mut handshake =
        HandshakeConfig::new(&node_id, release.name, &cluster_id, release.protocols, release.transport_set());
    handshake.secret = config.cluster_secret.clone();
    let mut net_config = NetConfig::new(handshake);
    net_config.handshake_timeout = tuning.handshake_timeout;
    net_config.idle_timeout = Some(tuning.idle_timeout);
    net_config.max_pending_handshakes = 64;

    if let Some(addr) = &config.join {
        probe_join(addr, net_config.clone()).await?;
    }

    let listener = Listener::<Msg>::bind(config.listen.as_str(), net_config.clone()).await.map_err(|e| match e {
        NetError::Io { message, .. } => {
            NodeError::Bind { addr: config.listen.clone(), what: "--listen, peer connections", reason: message }
        }
        other => NodeError::Net(other),
    })?;
    let data_addr = listener.local_addr();
    if data_addr.ip().is_unspecified() {
        return Err(NodeError::Config(format!(
            "--listen {}: peers connect to the address a node registers, so listen on a specific address, not {}",
            config.listen,
            data_addr.ip()
        )));
    }
    // Loopback unless the address says otherwise (rollgate's admin listener rules).
    let http = rollgate::admin::bind(Some(config.admin.as_str())).await.map_err(|e| NodeError::Bind {
        addr: rollgate::util::shorten_to(&config.admin, 128),
        what: "--admin, the HTTP API",
        reason: e.to_string(),
    })?;
    let admin_addr = http.local_addr().map_err(|e| NodeError::Bind {
        addr: config.admin.clone(),
        what: "--admin",
        reason: e.to_string(),
    })?;
    if admin_addr.ip().is_unspecified() {
        return Err(NodeError::Config(format!(
            "--admin {}: members call each other's admin API at the address a node registers (for \
             _capabilities), so listen on a specific address, not {}",
            config.admin,
            admin_addr.ip()
        )));
    }

    // rollgate's node runtime: boot checks, the fenced join, liveness, the flag worker.
    let hook_slot: HookSlot = Arc::default();
    let mut hooks = FlagHooks::default();
    if release.flags.iter().any(|f| f.spec.name == RECORD_META_V2.name && f.reversible()) {
        hooks
            .before_disable
            .insert(RECORD_META_V2.name, migrations::disable_hook(hook_slot.clone(), tuning.convert_back_wait));
    }
    let registry = release.registry(&hooks).map_err(|e| NodeError::Config(e.to_string()))?;
    let mut rc = rollgate::node::NodeConfig::new(&node_id, release.name, &config.data_dir, registry);
    rc.data_addr = data_addr.to_string();
    rc.admin_addr = admin_addr.to_string();
    rc.protocol = release.protocols;
    rc.transport = TransportRange { min_compatible: release.minimum_compatible, current: release.transport };
    rc.features = release.feature_set().map_err(|e| NodeError::Config(e.to_string()))?;
    rc.routes = crate::http::route_table(release, &config.plugins).map_err(|e| NodeError::Config(e.to_string()))?;
    rc.test_mode = false;
    rc.releases = Some(releases::release_table());
    rc.liveness_ttl_s = tuning.liveness_ttl_s;
    rc.timeouts = tuning.flag_timeouts.clone();
    let runtime = rollgate::node::Node::start(rc, store.clone()).await?;
    // Registered: from here on, a failure leaves the membership again.
    let addresses = Addresses { data: data_addr, admin: admin_addr };
    let identity = Identity { node_id, cluster_id, addresses, floor };
    let started = with_runtime(config, store, storage, identity, net_config, &runtime, hook_slot).await;
    let (parts, http_app) = match started {
        Ok(x) => x,
        Err(e) => {
            if let Err(left) = runtime.stop().await {
                tracing::warn!(node = %runtime.id(), error = %left, "could not leave the membership after a failed start");
            }
            return Err(e);
        }
    };
    let Parts { shared, mut tasks } = parts;
    tasks.spawn(serve::accept_loop(shared.clone(), listener));
    let (http_stop, http_stopped) = oneshot::channel::<()>();
    let http_listener = crate::http::KillableListener::new(http, shared.killed.clone(), tuning.max_http_connections);
    let http_task = tokio::spawn(async move {
        let serve = axum::serve(http_listener, http_app).with_graceful_shutdown(async move {
            let _ = http_stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tasks.spawn(catchup::initial(shared.clone()));
    Ok(NodeHandle { shared, tasks, http_stop: Some(http_stop), http_task: Some(http_task) })
}

/// What a started node is made of, before it serves.
struct Parts {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

/// Who a starting node is.
struct Identity {
    node_id: String,
    cluster_id: String,
    addresses: Addresses,
    floor: Option<crate::hlc::Version>,
}

/// Everything that needs the runtime: the flags, the migrations, the plugins,
/// the links, and the HTTP app (client routes and the admin API).
async fn with_runtime(
    config: NodeConfig,
    store: Arc<dyn MetaStore>,
    storage: Storage,
    identity: Identity,
    net_config: NetConfig,
    runtime: &rollgate::node::Node,
    hook_slot: HookSlot,
) -> Result<(Parts, axum::Router), NodeError> {
    let Identity { node_id, cluster_id, addresses, floor } = identity;
    let release = config.release;
    let tuning = config.tuning.clone();
    let views = runtime.handle().watch_view();
    let flags = KvFlags::new(runtime.registry(), runtime.flags().clone(), views.clone());
    let gates: Arc<dyn Gates> = Arc::new(flags.clone());
    let mut tasks = JoinSet::new();

    // The table migrations of the records unit, following the flag bits.
    let table_migrations = migrations::for_release(release, gates.clone())?;
    let runner = if table_migrations.table_migrations().is_empty() {
        None
    } else {
        let options = LocalOptions {
            release: release.name.to_string(),
            root: ClusterOptions::default().root,
            batch_records: tuning.migration_batch_records.max(1),
            publish_interval_ms: 500,
            ..LocalOptions::default()
        };
        let runner = LocalRunner::new(Arc::new(table_migrations), storage.database()?, &node_id, options)?
            .publish_to(store.clone());
        Some(Arc::new(runner))
    };
    if let Some(runner) = &runner {
        let _ = hook_slot.set(HookTarget { runner: Arc::downgrade(runner), gates: gates.clone() });
        // A unit below what this release reads (an empty one, see
        // `Storage::open`) is brought up before anything is stored.
        let stamp = storage.unit_stamp().await?;
        if stamp.format < release.formats.min_readable {
            runner.run_once(&*gates).await?;
            let now = storage.unit_stamp().await?;
            if now.format < release.formats.min_readable {
                return Err(NodeError::Config(format!(
                    "the records unit is at format {} but release {} reads formats {}..={}, and the flags that \
                     migrate it are not enabled: enable them from a node of an older release first",
                    now.format, release.name, release.formats.min_readable, release.formats.max
                )));
            }
        }
        let (changes, watchers) = flags.changes(&[RECORD_META_V2.name, TTL.name]);
        let (runner, flags) = (runner.clone(), flags.clone());
        tasks.spawn(async move {
            let _watchers = watchers;
            let _ = runner.run_on_changes(&flags, changes).await;
        });
    }

    // Plugins: each starts once the flags it requires are enabled.
    let audit = config.plugins.iter().filter_map(|p| release.plugin(p)).map(|def| Arc::new(Audit::new(def))).next();
    if let Some(audit) = &audit {
        tasks.spawn(crate::plugins::run(audit.clone(), runtime.clone(), flags.clone()));
    }

    // `GET /admin/upgrade/status` shows this node's records unit too.
    let status_storage = storage.clone();
    let status_node = node_id.clone();
    runtime.set_status_section(
        "storage",
        Arc::new(move || {
            let (storage, node) = (status_storage.clone(), status_node.clone());
            Box::pin(async move {
                match storage.unit_stamp().await {
                    Ok(stamp) => serde_json::json!({
                        "node": node,
                        "unit": releases::RECORDS_UNIT,
                        "format": stamp.format,
                        "created_format": stamp.created_format,
                        "written_by": stamp.written_by,
                    }),
                    Err(e) => serde_json::json!({"node": node, "error": e.to_string()}),
                }
            })
        }),
    );

    let links = Links::new(LinkSettings {
        net: net_config,
        backoff_min: tuning.backoff_min,
        backoff_max: tuning.backoff_max,
        max_pending: 4096,
        write_queue_len: 4096,
        batch_max_entries: 256,
        batch_max_bytes: 4 << 20,
        max_inflight_batches: 4,
        replicate_timeout: tuning.write_timeout,
    });
    let shared = Arc::new(Shared {
        hlc: Hlc::new(node_id.clone(), floor.as_ref()),
        node_id,
        release,
        tuning: tuning.clone(),
        cluster_id,
        addresses,
        storage,
        runtime: Mutex::new(Some(runtime.clone())),
        views,
        flags,
        audit,
        runner: Mutex::new(runner),
        links,
        state: watch::Sender::new(ServingState::CatchingUp),
        killed: Arc::new(AtomicBool::new(false)),
        inbound_seen: Mutex::default(),
        inbound_notify: Notify::new(),
        refusals: Mutex::default(),
        resyncs: Mutex::default(),
        background: Mutex::new(JoinSet::new()),
        sync_stats: Mutex::default(),
    });
    tasks.spawn(manage_links(shared.clone()));
    let api = Api { shared: shared.clone() };
    let admin = match &config.admin_token {
        Some(token) => AdminConfig::with_token(token),
        None => AdminConfig::default(),
    };
    let admin = AdminConfig {
        token_hint: "start rollgate-kv serve with --admin-token-file FILE (one line, 8 to 1024 printable characters) \
                     and give rollgate the same file with --token-file FILE"
            .into(),
        ..admin
    };
    let app = crate::http::app(api, rollgate::admin::router(runtime.clone(), admin), tuning.http_request_timeout);
    Ok((Parts { shared, tasks }, app))
}
/// Connects to `addr` once to check that it accepts us.
async fn probe_join(addr: &str, config: NetConfig) -> Result<(), NodeError> {
    match net::connect::<Msg>(addr, config).await {
        Ok(conn) => {
            tracing::info!(
                peer = %conn.negotiated().peer_node_id, protocol = %conn.negotiated().protocol,
                transport = %conn.negotiated().transport, "--join: the peer accepts this node"
            );
            let _ = conn.close().await;
            Ok(())
        }
        Err(e) => Err(NodeError::Join { addr: addr.to_string(), reason: e.to_string() }),
    }
}

/// Keeps a link to every running member.
async fn manage_links(shared: Arc<Shared>) {
    let mut tasks = JoinSet::new();
    let mut views = shared.views.clone();
    loop {
        let view = views.borrow_and_update().clone();
        let desired: BTreeMap<String, String> = view
            .running()
            .filter(|m| m.record.node_id != shared.node_id)
            .map(|m| (m.record.node_id.clone(), m.record.data_addr.clone()))
            .collect();
        shared.links.reconcile(&desired, &mut tasks);
        while tasks.try_join_next().is_some() {}
        if views.changed().await.is_err() {
            break;
        }
    }
}

fn load_or_create_node_id(dir: &Path, explicit: Option<&str>) -> Result<String, NodeError> {
    let path = dir.join(NODE_ID_FILE);
    let err = |reason: String| NodeError::NodeId { path: path.clone(), reason };
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > 1024 => return Err(err(format!("{} bytes, not a node id", m.len()))),
        Ok(_) => {
            let text = std::fs::read_to_string(&path).map_err(|e| err(format!("cannot read it: {e}")))?;
            let stored = text.trim();
            rollgate::cluster::validate_node_id(stored).map_err(|e| err(e.to_string()))?;
            if let Some(given) = explicit
                && given != stored
            {
                return Err(err(format!(
                    "the data dir belongs to node {stored:?}, not {given:?}: drop --node-id, or use another --data dir"
                )));
            }
            return Ok(stored.to_string());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(format!("cannot read it: {e}"))),
    }
    let id = match explicit {
        Some(id) => id.to_string(),
        None => format!("kv-{:08x}", rand::random::<u32>()),
    };
    let tmp = dir.join(format!(".{NODE_ID_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| err(format!("cannot write it: {e}")))?;
    Ok(id)
}

/// A running node (see [`Node::start`]).
pub struct NodeHandle {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    http_stop: Option<oneshot::Sender<()>>,
    http_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node", &self.shared.node_id)
            .field("release", &self.shared.release.name)
            .field("addresses", &self.shared.addresses)
            .finish()
    }
}

impl NodeHandle {
    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// The release it runs as.
    pub fn release(&self) -> &'static Release {
        self.shared.release
    }

    /// Where it serves (the bound ports, also when configured as `:0`).
    pub fn addresses(&self) -> Addresses {
        self.shared.addresses
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.shared.cluster_id
    }

    /// Its state.
    pub fn state(&self) -> ServingState {
        self.shared.state()
    }

    /// Whether it serves requests.
    pub fn is_ready(&self) -> bool {
        self.state() == ServingState::Ready
    }

    /// Waits until it serves (at most `timeout`); `false` on timeout or stop.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.state.subscribe();
        let ready = rx.wait_for(|s| matches!(s, ServingState::Ready | ServingState::Stopping | ServingState::Stopped));
        matches!(tokio::time::timeout(timeout, ready).await, Ok(Ok(s)) if *s == ServingState::Ready)
    }

    /// The client API (what the HTTP routes call).
    pub fn api(&self) -> Api {
        Api { shared: self.shared.clone() }
    }

    /// rollgate's node runtime of this node (flags, membership, the admin
    /// API's operations), while it runs. Do not keep the clone past
    /// [`stop`](Self::stop) or [`kill`](Self::kill): it would keep the
    /// node's liveness lease alive.
    pub fn runtime(&self) -> Option<rollgate::node::Node> {
        self.shared.runtime()
    }

    /// The node's `records` unit.
    pub async fn storage_status(&self) -> Result<StorageStatus, StorageError> {
        self.api().storage_status().await
    }

    /// Its links to peers (agreed protocol and transport versions, refusals).
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared.links.status()
    }

    /// The link to `peer` once it is connected or refused (at most `timeout`).
    pub async fn wait_peer(&self, peer: &str, timeout: Duration) -> Result<PeerStatus, LinkError> {
        self.shared.links.wait_status(peer, timeout).await
    }

    /// Waits (at most `timeout`) until every write this node sent to a peer
    /// so far was answered; `false` on timeout.
    pub async fn flush_replication(&self, timeout: Duration) -> bool {
        self.shared.links.flush(timeout).await
    }

    /// The last catch-up from each peer.
    pub fn sync_stats(&self) -> BTreeMap<String, SyncStats> {
        self.shared.sync_stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The stored record of `key` on this node (tombstones and expired
    /// values included), for verification.
    pub async fn local_record(&self, key: &str) -> Result<Option<Record>, StorageError> {
        self.shared.storage.get(key).await
    }

    /// Compares this node's data with `peer`'s by digest ranges (the peer
    /// must speak protocol v3): the number of ranges compared and the ranges
    /// that differ. A verification helper; nothing is copied.
    pub async fn compare_with(&self, peer: &str) -> Result<catchup::Comparison, CatchUpError> {
        catchup::compare(&self.shared, peer).await
    }

    /// Stops gracefully: refuses new requests, finishes the running ones,
    /// leaves the membership (declared stopped), closes the peer links and
    /// releases the data dir.
    pub async fn stop(mut self) -> Result<(), NodeError> {
        let s = self.shared.clone();
        s.set_state(ServingState::Stopping);
        self.stop_http(Duration::from_secs(5)).await;
        if !s.links.flush(Duration::from_secs(5)).await {
            tracing::warn!(node = %s.node_id, "replication to peers still running after 5 s; stopping anyway");
        }
        // Migrations and plugins first: a batch that is cut short resumes from its checkpoint.
        self.shutdown_tasks().await;
        let runtime = s.runtime.lock().unwrap_or_else(|p| p.into_inner()).take();
        let left = match &runtime {
            Some(rt) => rt.stop().await,
            None => Ok(()),
        };
        drop(runtime);
        s.links.close_all().await;
        s.runner.lock().unwrap_or_else(|p| p.into_inner()).take();
        s.storage.close().await;
        s.set_state(ServingState::Stopped);
        tracing::info!(node = %s.node_id, "node stopped");
        left.map_err(NodeError::Runtime)
    }

    /// Stops abruptly, as a crash would: no leave (the member stays
    /// registered, running until its lease expires), connections dropped,
    /// HTTP connections fail. The data dir is released (so the node can be
    /// restarted on it in the same process).
    pub async fn kill(mut self) {
        let s = self.shared.clone();
        s.killed.store(true, Ordering::Release);
        s.set_state(ServingState::Stopped);
        // Every HTTP connection fails now; closing them drops the admin
        // API's handle on the runtime, whose liveness must stop with it.
        self.stop_http(Duration::from_secs(2)).await;
        self.shutdown_tasks().await;
        drop(s.runtime.lock().unwrap_or_else(|p| p.into_inner()).take());
        s.links.close_all().await;
        s.runner.lock().unwrap_or_else(|p| p.into_inner()).take();
        s.storage.close().await;
        tracing::info!(node = %s.node_id, "node killed");
    }

    /// Stops the HTTP server: no new connections, idle ones closed, running
    /// requests given `grace` to finish (then their connections fail).
    async fn stop_http(&mut self, grace: Duration) {
        if let Some(stop) = self.http_stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.http_task.take()
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            tracing::warn!(node = %self.shared.node_id, "HTTP requests still running after {} ms; closing them", grace.as_millis());
            self.shared.killed.store(true, Ordering::Release);
            task.abort();
            let _ = task.await;
        }
    }

    async fn shutdown_tasks(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let mut bg = std::mem::take(&mut *self.shared.background.lock().unwrap_or_else(|p| p.into_inner()));
        bg.abort_all();
        while bg.join_next().await.is_some() {}
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.tasks.abort_all();
        if let Some(t) = &self.http_task {
            t.abort();
        }
        self.shared.background.lock().unwrap_or_else(|p| p.into_inner()).abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_created_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create_node_id(dir.path(), None).unwrap();
        assert!(id.starts_with("kv-"), "{id}");
        assert_eq!(load_or_create_node_id(dir.path(), None).unwrap(), id, "kept");
        assert_eq!(load_or_create_node_id(dir.path(), Some(&id)).unwrap(), id);
        let e = load_or_create_node_id(dir.path(), Some("other")).unwrap_err();
        assert!(e.to_string().contains("belongs to node") && e.to_string().contains(NODE_ID_FILE), "{e}");
        assert!(e.is_operator_error());

        let explicit = tempfile::tempdir().unwrap();
        assert_eq!(load_or_create_node_id(explicit.path(), Some("n-1")).unwrap(), "n-1");
    }

    #[test]
    fn a_damaged_node_id_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_ID_FILE);
        for (content, what) in
            [(&b"bad id/with slash"[..], "letters"), (&[0xff, 0xfe][..], "read"), (&[b'x'; 5000][..], "bytes")]
        {
            std::fs::write(&path, content).unwrap();
            let e = load_or_create_node_id(dir.path(), None).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()) && msg.contains(what), "{msg}");
            assert_eq!(std::fs::read(&path).unwrap(), content, "left as it was");
        }
    }
}
