//! Cluster membership on the metadata store: node records, liveness, the
//! cluster epoch, the node-side cached view and the node-local copy of what
//! was last seen enabled.
//!
//! # Key layout (under a root, `rollgate/` by default)
//!
//! | key | value | written by |
//! |---|---|---|
//! | `cluster_id` | JSON string, random, created once | [`Cluster::open`] |
//! | `epoch` | JSON `u64`, +1 per membership or flag change | every [`Cluster::update`] |
//! | `members/<node>` | JSON [`NodeRecord`] | join, update, leave, forget (epoch-fenced) |
//! | `flags/<name>` | JSON [`FlagRecord`] | flag changes (epoch-fenced) |
//! | `flag_acks/<name>/<node>` | JSON [`FlagAck`]: a node ran its per-node enable step, or cleared its bit of a flag being disabled | the node, guarded on the flag record's mod revision (the attempt it answers) |
//! | `live/<node>` | JSON [`LiveRecord`], attached to the node's lease | [`Liveness`] (not fenced) |
//!
//! # The epoch protocol (invariant I5)
//!
//! [`Cluster::update`] reads a [`ClusterView`] with one listing (one
//! revision), runs the caller's validation on it, and commits the resulting
//! ops in one transaction guarded by the epoch key's mod revision, writing
//! epoch + 1. Any other change to membership or flags in between moved the
//! epoch, so the guard fails and the update starts over on a fresh view
//! (bounded attempts). Two changes that are each valid alone but not together
//! (a join of a node lacking flag F, and enabling F) can therefore never both
//! commit: the second re-validates against the first.
//!
//! Architecture invariant: every change to `members/` or `flags/` goes through
//! [`Cluster::update`] (or [`ClusterHandle::update`]); liveness writes only
//! `live/` and never bumps the epoch. Guarded by `tests/it/cluster_epoch_race.rs`.
//!
//! # Liveness
//!
//! A node's `live/<node>` key is attached to a lease the node keeps alive. A
//! crashed node's lease expires and the key disappears, but its member record
//! stays: it shows as **stopped, not gone**, and still counts for every
//! "all members support X" check until an operator [`Cluster::forget`]s it.
//! A member's effective state is running only when it declared itself
//! running and its live key exists.

pub mod floor;
mod handle;
mod liveness;
mod local;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use rollgate_store::{
    Compare, EventKind, KeyValue, LeaseId, MetaStore, Revision, StoreError, Txn, TxnOp, decode_json, encode_json,
};
use rollgate_version::{ProtocolRange, TransportVersion};

pub use handle::{ClusterHandle, HandleOptions, StoreStatus};
pub use liveness::{LeaseStatus, Liveness};
pub use local::{LOCAL_COPY_FILE, LocalCopy, LocalCopyError, MAX_LOCAL_COPY_BYTES};
pub use rollgate_util::now_ms;

pub use rollgate_api::names::{MAX_FLAG_NAME_BYTES, MAX_NODE_ID_BYTES};
pub use rollgate_api::nodes::NodeState;

/// Checks a node id: 1 to 64 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn validate_node_id(id: &str) -> Result<(), ClusterError> {
    rollgate_api::names::check_node_id(id).map_err(ClusterError::InvalidNodeId)
}

/// Checks a flag name: 1 to 64 of `[a-z0-9_]`.
pub fn validate_flag_name(name: &str) -> Result<(), ClusterError> {
    rollgate_api::names::check_flag_name(name).map_err(ClusterError::InvalidFlagName)
}

/// The transport versions a node can read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportRange {
    /// The oldest transport version it still talks to.
    pub min_compatible: TransportVersion,
    /// Its own transport version.
    pub current: TransportVersion,
}

/// A member's record, as it registered itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id (see [`validate_node_id`]).
    pub node_id: String,
    /// Where peers reach it.
    pub data_addr: String,
    /// Where its admin API listens.
    pub admin_addr: String,
    /// Its release, for humans only.
    pub release: String,
    /// The protocol versions it speaks.
    pub protocol: ProtocolRange,
    /// The transport versions it reads and writes.
    pub transport: TransportRange,
    /// The feature flags its binary supports.
    #[serde(default)]
    pub supported_flags: BTreeSet<String>,
    /// The cluster features it publishes.
    #[serde(default)]
    pub cluster_features: BTreeSet<String>,
    /// The protocol versions its release marks deprecated: a link that
    /// negotiates one works, and is shown in the upgrade status.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub deprecated_protocols: BTreeSet<u16>,
    /// Features of an older major its release assumes present without
    /// publishing them (see [`crate::features`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub assumed_features: BTreeSet<String>,
    /// The supported flags for which this node runs a per-node enable step
    /// (it must be reachable while such a flag is enabled).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub flag_node_steps: BTreeSet<String>,
    /// The REST routes it serves, for `_capabilities` answers about it while
    /// it is stopped (`None`: it published none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<rollgate_api::routes::RouteTable>,
    /// The flags its release requires (stability `required`): they must
    /// stay enabled while it is a member.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub required_flags: BTreeSet<String>,
    /// The supported flags its release declares irreversible: it may have
    /// written data only they can read, which no disable hook converts back.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub irreversible_flags: BTreeSet<String>,
    /// This run of the node (new at every start, store-unique: the id of
    /// the lease it joined on). Acknowledgements and in-progress records
    /// name it, so that a restart counts as a new node (0: not published).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
    /// How long this node serves after it last confirmed that its view is
    /// current (ms; 0: not published, an older release that does not fence
    /// itself). A disabling waits at most this long for it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub view_lease_ms: u64,
    /// What it declared: running, or stopped after a clean leave.
    pub state: NodeState,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// The digest of its signed release manifest (`sha256:...`), when it
    /// was started with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_manifest: Option<String>,
}

impl NodeRecord {
    /// A running member of `release` with nothing else declared: protocol v1
    /// only, transport version zero, no addresses, flags, features or
    /// routes. Fill in the rest with struct update syntax
    /// (`NodeRecord { supported_flags, ..NodeRecord::new("n1", "1.0") }`).
    pub fn new(node_id: &str, release: &str) -> NodeRecord {
        NodeRecord {
            node_id: node_id.to_string(),
            data_addr: String::new(),
            admin_addr: String::new(),
            release: release.to_string(),
            protocol: ProtocolRange::single(1),
            transport: TransportRange { min_compatible: TransportVersion::ZERO, current: TransportVersion::ZERO },
            supported_flags: BTreeSet::new(),
            cluster_features: BTreeSet::new(),
            assumed_features: BTreeSet::new(),
            deprecated_protocols: BTreeSet::new(),
            flag_node_steps: BTreeSet::new(),
            required_flags: BTreeSet::new(),
            irreversible_flags: BTreeSet::new(),
            incarnation: 0,
            view_lease_ms: 0,
            routes: None,
            state: NodeState::Running,
            started_ms: 0,
            release_manifest: None,
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The value of a node's `live/<node>` key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecord {
    /// The lease the key is attached to.
    pub lease: LeaseId,
    /// When the key was written on this lease (ms since the Unix epoch);
    /// keep-alives refresh the lease, not the key.
    pub heartbeat_ms: u64,
}

/// A member as the cluster sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its record.
    pub record: NodeRecord,
    /// Its live key, when its lease is alive.
    pub live: Option<LiveRecord>,
    /// Running only when declared running and live.
    pub effective: NodeState,
}

impl Member {
    /// Whether the member is effectively running.
    pub fn is_running(&self) -> bool {
        self.effective == NodeState::Running
    }
}

/// A feature flag's cluster-wide state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FlagState {
    /// Enabled: every member may produce data that needs it.
    Enabled {
        /// When it became enabled (ms since the Unix epoch).
        #[serde(default)]
        since_ms: u64,
    },
    /// Being enabled (its enable steps may be running). Nodes do not
    /// produce data that needs it yet, but a node lacking it cannot join.
    Enabling {
        /// Who drives the enabling (a node id).
        owner: String,
        /// When it started (ms since the Unix epoch).
        started_ms: u64,
        /// Where the enabling is, for the driver to resume.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
    },
    /// Being disabled (a reversible flag): nodes stopped producing data
    /// that needs it and the flag's disable hook is converting data back.
    /// A node lacking it still cannot join.
    Disabling {
        /// Who drives the disabling (a node id).
        owner: String,
        /// When it started (ms since the Unix epoch).
        started_ms: u64,
    },
    /// Disabled (the default for a flag without record).
    Disabled,
}

/// What an enabled flag's record says about the flag, so that a node whose
/// release does not know the flag can still name it in its refusal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagInfo {
    /// What the flag changes.
    #[serde(default)]
    pub description: String,
    /// The first release that knows the flag.
    #[serde(default)]
    pub introduced_in: String,
    /// `required`, `stable` or `experimental` (a string, so that a later
    /// release may add a level that older ones still read).
    #[serde(default)]
    pub stability: String,
    /// The flags it depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Where it is documented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_url: Option<String>,
    /// Who declared it: `service` or `plugin:<name>`.
    #[serde(default)]
    pub provider: String,
    /// Whether it may be disabled again.
    #[serde(default)]
    pub reversible: bool,
}

/// One attempt at enabling or disabling a flag (kept in its record while
/// enabling or disabling).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnableAttempt {
    /// A random id; acknowledgements name it, so that an ack left by an
    /// earlier attempt never counts for a later one.
    pub id: String,
    /// The members with a per-node step when the attempt started (for
    /// display: the owner waits for every *current* member with a step).
    #[serde(default)]
    pub node_steps: BTreeSet<String>,
    /// The owner's incarnation ([`NodeRecord::incarnation`]): once the
    /// owner's member record names another, the owner restarted and the
    /// attempt is orphaned (0: written by an older release).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub owner_incarnation: u64,
}

/// The stored record of one feature flag. Unknown fields are ignored when
/// read, so later releases can add some.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagRecord {
    /// The state.
    #[serde(flatten)]
    pub state: FlagState,
    /// When the record was last written (ms since the Unix epoch).
    #[serde(default)]
    pub updated_ms: u64,
    /// The flag's description, first release and other declared facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<FlagInfo>,
    /// The attempt in progress (while enabling or disabling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<EnableAttempt>,
    /// Why the last attempt was rolled back, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl FlagRecord {
    /// An enabled flag.
    pub fn enabled() -> Self {
        let now = now_ms();
        FlagRecord::with_state(FlagState::Enabled { since_ms: now })
    }
    /// A record in `state`, written now, without info.
    pub fn with_state(state: FlagState) -> Self {
        FlagRecord { state, updated_ms: now_ms(), info: None, attempt: None, note: None }
    }
    /// Whether the flag is enabled.
    pub fn is_enabled(&self) -> bool {
        matches!(self.state, FlagState::Enabled { .. })
    }
    /// Whether a node lacking the flag must be kept out: enabled, being
    /// enabled or being disabled.
    pub fn is_present(&self) -> bool {
        !matches!(self.state, FlagState::Disabled)
    }
}

/// A node's acknowledgement (`flag_acks/<flag>/<node>`): of its per-node
/// enable step (while enabling), or that its bit is cleared (while
/// disabling).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagAck {
    /// The [`EnableAttempt::id`] it answers.
    pub attempt: String,
    /// `None`: the step ran; otherwise why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When (ms since the Unix epoch).
    #[serde(default)]
    pub at_ms: u64,
    /// The incarnation of the node that wrote it: an ack counts only for
    /// the incarnation its member record names (a restarted node runs its
    /// step again).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
}

/// A snapshot of the cluster read at one store revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// The cluster id.
    pub cluster_id: String,
    /// The cluster epoch.
    pub epoch: u64,
    /// The store revision the view was read at.
    pub revision: Revision,
    /// The mod revision of the epoch key (the fence of [`Cluster::try_commit`]).
    pub epoch_revision: Revision,
    /// The members by node id, running or stopped.
    pub members: BTreeMap<String, Member>,
    /// The flag records by name.
    pub flags: BTreeMap<String, FlagRecord>,
    /// Per-node enable step acknowledgements: flag -> node -> ack.
    pub flag_acks: BTreeMap<String, BTreeMap<String, FlagAck>>,
    /// The mod revision of each flag record: the attempt an acknowledgement
    /// and an owned step's writes are fenced on.
    pub flag_revisions: BTreeMap<String, Revision>,
    /// The release floor, once finalized.
    pub floor: Option<floor::ReleaseFloor>,
}

impl ClusterView {
    /// One member.
    pub fn member(&self, node: &str) -> Option<&Member> {
        self.members.get(node)
    }
    /// The effectively running members.
    pub fn running(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.is_running())
    }
    /// The names of the enabled flags.
    pub fn enabled_flags(&self) -> BTreeSet<String> {
        self.flags.iter().filter(|(_, r)| r.is_enabled()).map(|(n, _)| n.clone()).collect()
    }
    /// Whether a flag is enabled.
    pub fn is_enabled(&self, flag: &str) -> bool {
        self.flags.get(flag).is_some_and(FlagRecord::is_enabled)
    }
}

/// One change an epoch-fenced update commits.
#[derive(Clone, Debug, PartialEq)]
pub enum ViewOp {
    /// Writes a member record (join, rejoin, update, leave).
    PutMember(NodeRecord),
    /// Removes a member and its live key (forget).
    RemoveMember(String),
    /// Writes a flag record.
    PutFlag(String, FlagRecord),
    /// Removes a flag record.
    DeleteFlag(String),
    /// Raises the release floor.
    PutFloor(floor::ReleaseFloor),
    /// Any other store op to commit under the same fence.
    Raw(TxnOp),
}

/// A committed epoch-fenced update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The new epoch.
    pub epoch: u64,
    /// The store revision of the commit.
    pub revision: Revision,
    /// How many attempts it took (more than 1: it lost a race and re-validated).
    pub attempts: usize,
}

/// Errors of the cluster layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A store error.
    #[error(transparent)]
    Store(StoreError),
    /// The store cannot be reached; changes are refused until it is back.
    #[error(
        "metadata store {endpoint} is unreachable ({reason}): membership and flag changes are refused until it is back; the node keeps serving its cached view"
    )]
    StoreUnavailable {
        /// Which store.
        endpoint: String,
        /// The last error.
        reason: String,
    },
    /// The update lost the epoch race too many times.
    #[error("cluster update gave up after {attempts} attempts: the cluster epoch kept moving; retry later")]
    EpochContention {
        /// Attempts made.
        attempts: usize,
    },
    /// A node id that cannot be used.
    #[error(transparent)]
    InvalidNodeId(rollgate_api::names::NameError),
    /// A flag name that cannot be used.
    #[error(transparent)]
    InvalidFlagName(rollgate_api::names::NameError),
    /// The node is not a member.
    #[error("node {node:?} is not a member of the cluster")]
    UnknownNode {
        /// The node.
        node: String,
    },
    /// `forget` of a running node.
    #[error("node {node:?} is running; stop it (or let its liveness lease expire) before forgetting it")]
    NodeRunning {
        /// The node.
        node: String,
    },
    /// The cluster metadata is missing or inconsistent.
    #[error("cluster metadata under {root:?}: {reason}")]
    Metadata {
        /// The key root.
        root: String,
        /// What is wrong.
        reason: String,
    },
    /// The node-local copy could not be written or read.
    #[error(transparent)]
    LocalCopy(#[from] LocalCopyError),
}

impl From<StoreError> for ClusterError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { endpoint, reason } => ClusterError::StoreUnavailable { endpoint, reason },
            other => ClusterError::Store(other),
        }
    }
}

/// The error of an update whose validation may refuse it.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The caller's validation refused the change (on the latest view).
    #[error("refused: {0}")]
    Rejected(E),
    /// The cluster layer failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl<E> UpdateError<E> {
    /// The refusal, if the validation refused.
    pub fn rejected(&self) -> Option<&E> {
        match self {
            UpdateError::Rejected(e) => Some(e),
            UpdateError::Cluster(_) => None,
        }
    }
}

/// Options of a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The key root (ends with `/`). Several clusters may share a store under different roots.
    pub root: String,
    /// Most attempts of one epoch-fenced update.
    pub max_update_attempts: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { root: "rollgate/".into(), max_update_attempts: 64 }
    }
}

/// The keys of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

impl Keys {
    /// The keys under `root` (a `/` is added when missing).
    pub fn new(root: &str) -> Keys {
        let mut root = root.to_string();
        if !root.ends_with('/') {
            root.push('/');
        }
        Keys { root }
    }
    /// The root all keys start with.
    pub fn root(&self) -> &str {
        &self.root
    }
    /// `cluster_id`.
    pub fn cluster_id(&self) -> String {
        format!("{}cluster_id", self.root)
    }
    /// `epoch`.
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.root)
    }
    /// `members/<node>`.
    pub fn member(&self, node: &str) -> String {
        format!("{}members/{node}", self.root)
    }
    /// `live/<node>`.
    pub fn live(&self, node: &str) -> String {
        format!("{}live/{node}", self.root)
    }
    /// `flags/<name>`.
    pub fn flag(&self, name: &str) -> String {
        format!("{}flags/{name}", self.root)
    }
    /// `floor`: the release floor.
    pub fn floor(&self) -> String {
        format!("{}floor", self.root)
    }
    /// `flag_acks/<name>/<node>`.
    pub fn flag_ack(&self, name: &str, node: &str) -> String {
        format!("{}flag_acks/{name}/{node}", self.root)
    }
}

/// The raw cluster keys, kept up to date from a listing or a watch.
#[derive(Clone, Debug, Default)]
struct ViewState {
    cluster_id: Option<String>,
    epoch: u64,
    epoch_revision: Revision,
    members: BTreeMap<String, NodeRecord>,
    live: BTreeMap<String, LiveRecord>,
    flags: BTreeMap<String, FlagRecord>,
    flag_revisions: BTreeMap<String, Revision>,
    flag_acks: BTreeMap<String, BTreeMap<String, FlagAck>>,
    floor: Option<floor::ReleaseFloor>,
}

impl ViewState {
    fn from_kvs(root: &str, kvs: &[KeyValue]) -> Result<Self, StoreError> {
        let mut state = ViewState::default();
        for kv in kvs {
            state.apply(root, EventKind::Put, &kv.key, &kv.value, kv.mod_revision)?;
        }
        Ok(state)
    }

    /// Applies one change; a value that does not decode is an error naming the key.
    fn apply(
        &mut self,
        root: &str,
        kind: EventKind,
        key: &str,
        value: &[u8],
        revision: Revision,
    ) -> Result<(), StoreError> {
        let Some(rest) = key.strip_prefix(root) else { return Ok(()) };
        let put = kind == EventKind::Put;
        if rest == "cluster_id" {
            self.cluster_id = if put { Some(decode_json(key, value)?) } else { None };
        } else if rest == "floor" {
            self.floor = if put { Some(decode_json(key, value)?) } else { None };
        } else if rest == "epoch" {
            (self.epoch, self.epoch_revision) = if put { (decode_json(key, value)?, revision) } else { (0, 0) };
        } else if let Some(node) = rest.strip_prefix("members/") {
            if put {
                let record: NodeRecord = decode_json(key, value)?;
                if record.node_id != node {
                    return Err(StoreError::Decode {
                        key: key.to_string(),
                        reason: format!("record names node {:?}", record.node_id),
                    });
                }
                self.members.insert(node.to_string(), record);
            } else {
                self.members.remove(node);
            }
        } else if let Some(node) = rest.strip_prefix("live/") {
            if put {
                self.live.insert(node.to_string(), decode_json(key, value)?);
            } else {
                self.live.remove(node);
            }
        } else if let Some(name) = rest.strip_prefix("flags/") {
            if put {
                self.flags.insert(name.to_string(), decode_json(key, value)?);
                self.flag_revisions.insert(name.to_string(), revision);
            } else {
                self.flags.remove(name);
                self.flag_revisions.remove(name);
            }
        } else if let Some((flag, node)) = rest.strip_prefix("flag_acks/").and_then(|r| r.split_once('/')) {
            if put {
                let ack: FlagAck = decode_json(key, value)?;
                self.flag_acks.entry(flag.to_string()).or_default().insert(node.to_string(), ack);
            } else if let Some(acks) = self.flag_acks.get_mut(flag) {
                acks.remove(node);
                if acks.is_empty() {
                    self.flag_acks.remove(flag);
                }
            }
        }
        Ok(())
    }

    fn view(&self, revision: Revision) -> ClusterView {
        let members = self
            .members
            .iter()
            .map(|(id, record)| {
                let live = self.live.get(id).cloned();
                let effective = if record.state == NodeState::Running && live.is_some() {
                    NodeState::Running
                } else {
                    NodeState::Stopped
                };
                (id.clone(), Member { record: record.clone(), live, effective })
            })
            .collect();
        ClusterView {
            cluster_id: self.cluster_id.clone().unwrap_or_default(),
            epoch: self.epoch,
            revision,
            epoch_revision: self.epoch_revision,
            members,
            flags: self.flags.clone(),
            flag_acks: self.flag_acks.clone(),
            flag_revisions: self.flag_revisions.clone(),
            floor: self.floor.clone(),
        }
    }
}

/// Cluster membership and the epoch on one metadata store.
#[derive(Clone, Debug)]
pub struct Cluster {
    store: Arc<dyn MetaStore>,
    keys: Keys,
    options: ClusterOptions,
    cluster_id: String,
}

impl Cluster {
    /// Opens the cluster under `options.root`, creating its id and epoch on
    /// first use (once, whoever comes first).
    pub async fn open(store: Arc<dyn MetaStore>, options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let mut root = options.root.clone();
        if !root.ends_with('/') {
            root.push('/');
        }
        store.limits().check_key(&root)?;
        let keys = Keys { root };
        let id_key = keys.cluster_id();
        let fresh_id = format!("{:032x}", rand::random::<u128>());
        let create = Txn::new()
            .when([Compare::absent(&id_key)])
            .and_then([TxnOp::put_json(&id_key, &fresh_id)?, TxnOp::put_json(keys.epoch(), &0u64)?])
            .or_else([TxnOp::get(&id_key)]);
        let resp = store.txn(create).await?;
        let cluster_id = if resp.succeeded {
            fresh_id
        } else {
            match resp.responses.first() {
                Some(rollgate_store::OpResponse::Get(Some(kv))) => decode_json::<String>(&kv.key, &kv.value)?,
                _ => {
                    return Err(ClusterError::Metadata {
                        root: keys.root.clone(),
                        reason: "the cluster id vanished while opening".into(),
                    });
                }
            }
        };
        let options = ClusterOptions { root: keys.root.clone(), ..options };
        Ok(Cluster { store, keys, options, cluster_id })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }
    /// The same cluster through another store (e.g. a fenced one).
    pub fn with_store(&self, store: Arc<dyn MetaStore>) -> Cluster {
        Cluster { store, ..self.clone() }
    }
    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }
    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Reads the cluster at one revision.
    pub async fn view(&self) -> Result<ClusterView, ClusterError> {
        let listing = self.store.list(&self.keys.root).await?;
        let state = ViewState::from_kvs(&self.keys.root, &listing.kvs)?;
        if state.epoch_revision == 0 {
            return Err(ClusterError::Metadata {
                root: self.keys.root.clone(),
                reason: "the epoch key is missing".into(),
            });
        }
        Ok(state.view(listing.revision))
    }

    /// Commits `ops` if the epoch has not moved since `view` was read, bumping
    /// it. `Ok(None)`: the epoch moved (re-read and re-validate).
    pub async fn try_commit(&self, view: &ClusterView, ops: Vec<ViewOp>) -> Result<Option<Committed>, ClusterError> {
        let epoch = view.epoch + 1;
        let mut txn_ops = Vec::with_capacity(ops.len() + 1);
        for op in ops {
            match op {
                ViewOp::PutMember(record) => {
                    validate_node_id(&record.node_id)?;
                    txn_ops.push(TxnOp::put_json(self.keys.member(&record.node_id), &record)?);
                }
                ViewOp::RemoveMember(node) => {
                    validate_node_id(&node)?;
                    txn_ops.push(TxnOp::delete(self.keys.member(&node)));
                    txn_ops.push(TxnOp::delete(self.keys.live(&node)));
                }
                ViewOp::PutFlag(name, record) => {
                    validate_flag_name(&name)?;
                    txn_ops.push(TxnOp::put_json(self.keys.flag(&name), &record)?);
                }
                ViewOp::DeleteFlag(name) => {
                    validate_flag_name(&name)?;
                    txn_ops.push(TxnOp::delete(self.keys.flag(&name)));
                }
                ViewOp::PutFloor(floor) => txn_ops.push(TxnOp::put_json(self.keys.floor(), &floor)?),
                ViewOp::Raw(op) => txn_ops.push(op),
            }
        }
        txn_ops.push(TxnOp::put(self.keys.epoch(), encode_json(&self.keys.epoch(), &epoch)?));
        let txn = Txn::new().when([Compare::mod_revision(self.keys.epoch(), view.epoch_revision)]).and_then(txn_ops);
        let resp = self.store.txn(txn).await?;
        Ok(resp.succeeded.then_some(Committed { epoch, revision: resp.revision, attempts: 1 }))
    }

    /// Reads the view, asks `f` for the ops (or a refusal), and commits them
    /// fenced on the epoch; on a lost race, starts over on a fresh view.
    pub async fn update<E, F>(&self, f: F) -> Result<Committed, UpdateError<E>>
    where
        F: FnMut(&ClusterView) -> Result<Vec<ViewOp>, E>,
    {
        self.update_from(None, f).await
    }

    /// [`Cluster::update`], whose first attempt uses `cached` (e.g. a
    /// handle's view) instead of listing the store: the epoch guard makes
    /// that safe (a stale view fails the guard and the next attempt lists),
    /// and it saves one read of every member when the view is current. A
    /// refusal on the cached view is checked again on a fresh one.
    pub async fn update_from<E, F>(
        &self,
        cached: Option<Arc<ClusterView>>,
        mut f: F,
    ) -> Result<Committed, UpdateError<E>>
    where
        F: FnMut(&ClusterView) -> Result<Vec<ViewOp>, E>,
    {
        // One more attempt when the first is on the cached view.
        let attempts = self.options.max_update_attempts.max(1) + usize::from(cached.is_some());
        let mut cached = cached;
        for attempt in 1..=attempts {
            let (view, from_cache) = match cached.take() {
                Some(v) => (v, true),
                None => (Arc::new(self.view().await?), false),
            };
            let ops = match f(&view) {
                Ok(ops) => ops,
                // A refusal holds only on a fresh view: a cached one may lag
                // behind a change that lifted it (the commit of an accepted
                // change is fenced on the epoch; a refusal commits nothing).
                Err(_) if from_cache => continue,
                Err(e) => return Err(UpdateError::Rejected(e)),
            };
            if let Some(committed) = self.try_commit(&view, ops).await? {
                return Ok(Committed { attempts: attempt, ..committed });
            }
            tracing::debug!(attempt, epoch = view.epoch, "cluster epoch moved; re-validating");
            if attempt % 8 == 0 {
                tokio::task::yield_now().await;
            }
        }
        Err(ClusterError::EpochContention { attempts }.into())
    }

    /// Joins (or re-joins) a node: writes its record, declared running, after
    /// `check` accepted the current view.
    pub async fn join<E, F>(&self, record: NodeRecord, mut check: F) -> Result<Committed, UpdateError<E>>
    where
        F: FnMut(&ClusterView) -> Result<(), E>,
    {
        validate_node_id(&record.node_id)?;
        let record = NodeRecord { state: NodeState::Running, ..record };
        self.update(|view| {
            check(view)?;
            Ok(vec![ViewOp::PutMember(record.clone())])
        })
        .await
    }

    /// Changes a member's record (e.g. new supported flags after an upgrade).
    pub async fn update_member(
        &self,
        node: &str,
        mut change: impl FnMut(&mut NodeRecord),
    ) -> Result<Committed, ClusterError> {
        validate_node_id(node)?;
        self.update(|view| {
            let mut record =
                view.member(node).ok_or_else(|| ClusterError::UnknownNode { node: node.to_string() })?.record.clone();
            change(&mut record);
            record.node_id = node.to_string();
            Ok(vec![ViewOp::PutMember(record)])
        })
        .await
        .map_err(flatten)
    }

    /// A clean leave: the node stays a member, declared stopped, and its live
    /// key goes.
    pub async fn leave(&self, node: &str) -> Result<Committed, ClusterError> {
        validate_node_id(node)?;
        self.update(|view| {
            let mut record =
                view.member(node).ok_or_else(|| ClusterError::UnknownNode { node: node.to_string() })?.record.clone();
            record.state = NodeState::Stopped;
            Ok(vec![ViewOp::PutMember(record), ViewOp::Raw(TxnOp::delete(self.keys.live(node)))])
        })
        .await
        .map_err(flatten)
    }

    /// Removes a member that will never come back. Refused while it runs.
    pub async fn forget(&self, node: &str) -> Result<Committed, ClusterError> {
        validate_node_id(node)?;
        self.update(|view| match view.member(node) {
            None => Err(ClusterError::UnknownNode { node: node.to_string() }),
            Some(m) if m.is_running() => Err(ClusterError::NodeRunning { node: node.to_string() }),
            Some(_) => Ok(vec![ViewOp::RemoveMember(node.to_string())]),
        })
        .await
        .map_err(flatten)
    }
}

fn flatten(e: UpdateError<ClusterError>) -> ClusterError {
    match e {
        UpdateError::Rejected(e) | UpdateError::Cluster(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_flag_names_are_checked() {
        for ok in ["n1", "node-1.eu_west", "A"] {
            validate_node_id(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(validate_node_id(bad).is_err(), "{bad:?}");
        }
        validate_flag_name("quorum_queues_v2").unwrap();
        for bad in ["", "Upper", "a-b", "a/b", &"f".repeat(65)] {
            assert!(validate_flag_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flag_records_read_unknown_fields_and_round_trip() {
        let json = r#"{"state":"enabling","owner":"n1","started_ms":5,"extra":{"x":1},"updated_ms":7}"#;
        let r: FlagRecord = serde_json::from_str(json).unwrap();
        assert_eq!(r.state, FlagState::Enabling { owner: "n1".into(), started_ms: 5, step: None });
        assert_eq!(r.updated_ms, 7);
        assert_eq!((r.info.as_ref(), r.attempt.as_ref(), r.note.as_ref()), (None, None, None));
        let back: FlagRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<FlagRecord>(r#"{"state":"exploded"}"#).is_err());
    }

    #[tokio::test]
    async fn a_refusal_on_a_stale_cached_view_is_checked_again_on_a_fresh_one() {
        let store = rollgate_store::open("mem:", rollgate_store::StoreOptions::default()).await.unwrap();
        let cluster = Cluster::open(store, ClusterOptions::default()).await.unwrap();
        let stale = Arc::new(cluster.view().await.unwrap());
        cluster.join(NodeRecord::new("n1", "1.0"), |_| Ok::<_, ()>(())).await.unwrap();
        // The caller refuses while n1 is not a member: true of the cached view
        // only, so the refusal must not stand.
        let mut seen = Vec::new();
        let committed = cluster
            .update_from(Some(stale), |view| {
                seen.push(view.member("n1").is_some());
                if view.member("n1").is_none() { Err("n1 is not a member") } else { Ok(Vec::new()) }
            })
            .await;
        assert!(committed.is_ok(), "refused on a stale view: {:?} (views seen: {seen:?})", committed.err());
        assert_eq!(seen, [false, true], "the cached view first, then a fresh one");
        // A refusal on a fresh view stands.
        let refused = cluster.update_from(None, |_| Err::<Vec<ViewOp>, _>("no")).await;
        assert!(matches!(refused, Err(UpdateError::Rejected("no"))));
    }
}
