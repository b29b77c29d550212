//! The metadata store: one interface over an in-memory map, redb and etcd.
//!
//! [`MetaStore`] is an etcd-shaped key-value interface: every committed write
//! gets a store-wide, strictly increasing revision; each key carries its create
//! revision, mod revision and version; a transaction evaluates a list of
//! [`Compare`] guards and applies either its success or its failure ops
//! atomically; a watch streams the changes under a prefix from a revision; and
//! leases make keys disappear when their owner stops refreshing them.
//!
//! Pick an implementation with [`open`] and a URL:
//!
//! | URL | implementation |
//! |---|---|
//! | `mem:` | in memory, for unit tests only |
//! | `redb:PATH` | embedded, durable, single process (the default for one node) |
//! | `etcd:HOST:PORT[,HOST:PORT...]` | etcd v3 (cargo feature `etcd`) |
//!
//! All three pass one conformance suite (`tests/it/store_conformance.rs`).
//!
//! Architecture invariant: the three implementations have the same observable
//! semantics (etcd's): what a test proves against `mem:` holds for `redb:` and
//! `etcd:`, and the conformance suite is the one place that says so.

#![warn(missing_docs)]

mod engine;
#[cfg(feature = "etcd")]
mod etcd;
mod fenced;
pub mod lock;
mod redb_file;
mod security;
mod state;
mod url;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rollgate_util::shorten;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use fenced::FencedStore;
pub use security::{EtcdSecurity, SecurityFileError};
pub use url::{MAX_ETCD_ENDPOINTS, StoreUrl};

/// A store revision. Revisions start at 1 for an empty store and grow by one
/// per committed write transaction (etcd semantics). `0` means "absent" in
/// [`Compare`] guards on create and mod revisions.
pub type Revision = i64;

/// A lease id, as granted by [`MetaStore::lease_grant`].
pub type LeaseId = i64;

/// One key with its value and revision metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after the first put).
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// The result of a prefix listing: the keys and the revision they were read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The store revision the listing was read at.
    pub revision: Revision,
    /// The keys under the prefix, in key order.
    pub kvs: Vec<KeyValue>,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's mod revision (0 when absent).
    ModRevision(Revision),
    /// The key's create revision (0 when absent).
    CreateRevision(Revision),
    /// The key's version (0 when absent).
    Version(i64),
    /// The key's value. A value guard on an absent key is always false.
    Value(Vec<u8>),
}

/// How a [`Compare`] compares the key's current field with its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// Field equals the target.
    Equal,
    /// Field differs from the target.
    NotEqual,
    /// Field is greater than the target.
    Greater,
    /// Field is less than the target.
    Less,
}

/// A transaction guard on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key the guard looks at.
    pub key: String,
    /// The comparison.
    pub op: CompareOp,
    /// The field and the value it is compared with.
    pub target: CompareTarget,
}

impl Compare {
    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::CreateRevision(0) }
    }
    /// The key exists.
    pub fn exists(key: impl Into<String>) -> Self {
        Compare { key: key.into(), op: CompareOp::Greater, target: CompareTarget::CreateRevision(0) }
    }
    /// The key's mod revision equals `revision` (0: the key is absent).
    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::ModRevision(revision) }
    }
    /// The key's create revision equals `revision` (0: the key is absent).
    pub fn create_revision(key: impl Into<String>, revision: Revision) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::CreateRevision(revision) }
    }
    /// The key exists and its value equals `value`.
    pub fn value_equals(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::Value(value.into()) }
    }

    /// Evaluates the guard against the key's current state (etcd semantics).
    pub(crate) fn evaluate(&self, current: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ordering = match (&self.target, current) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(want), Some(kv)) => kv.value.as_slice().cmp(want.as_slice()),
            (CompareTarget::ModRevision(want), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(want),
            (CompareTarget::CreateRevision(want), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(want),
            (CompareTarget::Version(want), kv) => kv.map_or(0, |kv| kv.version).cmp(want),
        };
        match self.op {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Greater => ordering == Ordering::Greater,
            CompareOp::Less => ordering == Ordering::Less,
        }
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Write `value` at `key`, attached to `lease` when given (the lease must exist).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease to attach the key to.
        lease: Option<LeaseId>,
    },
    /// Delete `key` (no effect when absent).
    Delete {
        /// The key.
        key: String,
    },
    /// Read `key` inside the transaction.
    Get {
        /// The key.
        key: String,
    },
}

impl TxnOp {
    /// A put without lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp::Put { key: key.into(), value: value.into(), lease: None }
    }
    /// A put attached to a lease.
    pub fn put_with_lease(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Self {
        TxnOp::Put { key: key.into(), value: value.into(), lease: Some(lease) }
    }
    /// A delete.
    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete { key: key.into() }
    }
    /// A read.
    pub fn get(key: impl Into<String>) -> Self {
        TxnOp::Get { key: key.into() }
    }
    /// A JSON-encoded put; the error names the key.
    pub fn put_json<T: Serialize + ?Sized>(key: impl Into<String>, value: &T) -> Result<Self, StoreError> {
        let key = key.into();
        let bytes = encode_json(&key, value)?;
        Ok(TxnOp::Put { key, value: bytes, lease: None })
    }
    /// The key the op touches.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => key,
        }
    }
}

/// A guarded multi-key transaction: if every compare holds, the success ops
/// are applied, otherwise the failure ops; atomically, at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// The guards (all must hold).
    pub compares: Vec<Compare>,
    /// Applied when every guard holds.
    pub success: Vec<TxnOp>,
    /// Applied when a guard fails.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction (no guards: the success ops are applied).
    pub fn new() -> Self {
        Txn::default()
    }
    /// Adds guards.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }
    /// Adds success ops.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }
    /// Adds failure ops.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// Checks the limits and the shape before anything is applied. A put and
    /// another write of the same key in one branch is refused (as etcd does).
    pub fn validate(&self, limits: &Limits) -> Result<(), StoreError> {
        let count = self.compares.len() + self.success.len().max(self.failure.len());
        if self.compares.len() > limits.max_txn_ops
            || self.success.len() > limits.max_txn_ops
            || self.failure.len() > limits.max_txn_ops
        {
            return Err(StoreError::TooManyOps { count, max: limits.max_txn_ops });
        }
        for c in &self.compares {
            limits.check_key(&c.key)?;
            if let CompareTarget::Value(v) = &c.target {
                limits.check_value(&c.key, v)?;
            }
        }
        for branch in [&self.success, &self.failure] {
            let mut written = std::collections::BTreeSet::new();
            for op in branch {
                limits.check_key(op.key())?;
                if let TxnOp::Put { key, value, .. } = op {
                    limits.check_value(key, value)?;
                }
                if !matches!(op, TxnOp::Get { .. }) && !written.insert(op.key()) {
                    return Err(StoreError::DuplicateKey { key: op.key().to_string() });
                }
            }
        }
        Ok(())
    }
}

/// The response of one transaction op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResponse {
    /// A put was applied.
    Put,
    /// A delete was applied; how many keys it removed (0 or 1).
    Delete {
        /// Keys removed.
        deleted: u64,
    },
    /// A read inside the transaction.
    Get(Option<KeyValue>),
}

/// The outcome of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every guard held (and the success ops were applied).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    /// One response per applied op, in order.
    pub responses: Vec<OpResponse>,
}

/// Whether a watched key was written or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted (explicitly or by lease expiry).
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The new value (empty for a delete).
    pub value: Vec<u8>,
    /// The revision of the change.
    pub revision: Revision,
    /// The create revision of the key (0 for a delete).
    pub create_revision: Revision,
}

/// The events of one revision under the watched prefix, in the order the
/// transaction applied them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    /// The revision of every event of the batch.
    pub revision: Revision,
    /// The events.
    pub events: Vec<WatchEvent>,
}

/// A stream of changes. It ends with an error when the watch cannot go on:
/// [`StoreError::Compacted`] or [`StoreError::WatchLagged`] (re-list and watch
/// again), or [`StoreError::Unavailable`] (reconnect and resume from the last
/// revision seen).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch, StoreError>> + Send>>;

/// Limits on what crosses into the store. Every implementation enforces the
/// same ones before anything is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most guards, and most ops per branch, of one transaction (etcd's default is 128).
    pub max_txn_ops: usize,
    /// Most undelivered batches a watch queues before it is cut off with
    /// [`StoreError::WatchLagged`].
    pub max_watch_queue: usize,
    /// Most keys one listing returns before it fails with [`StoreError::TooManyKeys`].
    pub max_list_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_txn_ops: 128,
            max_watch_queue: 1024,
            max_list_keys: 100_000,
        }
    }
}

impl Limits {
    /// Checks a key: non-empty, at most `max_key_bytes`, no NUL or control characters.
    pub fn check_key(&self, key: &str) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::InvalidKey { key: String::new(), reason: "a key must not be empty".into() });
        }
        if key.len() > self.max_key_bytes {
            return Err(StoreError::KeyTooLong { key: shorten(key), len: key.len(), max: self.max_key_bytes });
        }
        if key.chars().any(char::is_control) {
            return Err(StoreError::InvalidKey {
                key: shorten(key),
                reason: "a key must not contain control characters".into(),
            });
        }
        Ok(())
    }
    /// Checks a value's size.
    pub fn check_value(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        if value.len() > self.max_value_bytes {
            return Err(StoreError::ValueTooLarge { key: shorten(key), len: value.len(), max: self.max_value_bytes });
        }
        Ok(())
    }
}

/// Options of [`open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Limits enforced by the store.
    pub limits: Limits,
    /// How many revisions of change history the embedded stores keep for
    /// watches (older ones are compacted away).
    pub event_log_revisions: usize,
    /// etcd: how long connecting may take.
    pub connect_timeout_ms: u64,
    /// etcd: how long one request may take.
    pub request_timeout_ms: u64,
    /// etcd: TLS and authentication.
    pub etcd: EtcdSecurity,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            limits: Limits::default(),
            event_log_revisions: 10_000,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 5_000,
            etcd: EtcdSecurity::default(),
        }
    }
}

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The `--meta` URL could not be parsed.
    #[error(
        "invalid metadata store URL {url:?}: {reason} (expected `mem:`, `redb:PATH` or `etcd:HOST:PORT[,HOST:PORT...]`)"
    )]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `etcd:` URL with a build that lacks the etcd client.
    #[error(
        "metadata store URL {url:?} needs the etcd client, which this build lacks: rebuild with `--features etcd` (needs protoc)"
    )]
    EtcdNotBuilt {
        /// The URL as given.
        url: String,
    },
    /// The embedded store is owned by another process (or another open in this one).
    #[error(
        "metadata store {} is already open by another process{}; only one process can own an embedded store; use etcd for multi-process clusters",
        path.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyOpen {
        /// The store file.
        path: PathBuf,
        /// The owner's pid, when it could be read from the lock file.
        pid: Option<u32>,
    },
    /// The embedded store file is not a valid store; nothing was changed.
    #[error("metadata store {} is corrupt or not a rollgate store: {reason}; the file was left untouched", path.display())]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file-system error on the embedded store.
    #[error("metadata store {}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A write through a [`FencedStore`] whose fence no longer holds: the
    /// writer lost what entitled it to write (an owner key, an attempt).
    #[error(
        "write refused: the fence on {key} no longer holds (this writer was superseded: its ownership or attempt ended); nothing was written"
    )]
    Fenced {
        /// The key the fence guards.
        key: String,
    },
    /// The store did not answer (network, server down, timeout).
    #[error("metadata store {endpoint} is unavailable: {reason}")]
    Unavailable {
        /// Which store.
        endpoint: String,
        /// The cause.
        reason: String,
    },
    /// A watch asked for history that was compacted away; re-list and watch again.
    #[error(
        "watch from revision {requested} refused: history up to revision {compacted} was compacted; re-list and watch from the listing's revision"
    )]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The newest compacted revision.
        compacted: Revision,
    },
    /// A watcher did not keep up and was cut off; re-list and watch again.
    #[error("watch on {prefix:?} fell more than {depth} batches behind and was cut off; re-list and watch again")]
    WatchLagged {
        /// The watched prefix.
        prefix: String,
        /// The queue depth that was exceeded.
        depth: usize,
    },
    /// The lease does not exist (never granted, revoked or expired).
    #[error("lease {lease} not found (expired or revoked)")]
    LeaseNotFound {
        /// The lease.
        lease: LeaseId,
    },
    /// A lease TTL out of range.
    #[error("invalid lease TTL {ttl_s}s: must be between 1 and {max}s")]
    InvalidTtl {
        /// The TTL asked for.
        ttl_s: i64,
        /// The largest TTL.
        max: i64,
    },
    /// The key is not acceptable.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key (shortened).
        key: String,
        /// Why.
        reason: String,
    },
    /// The key is longer than the limit.
    #[error("key {key:?} is {len} bytes, over the limit of {max}")]
    KeyTooLong {
        /// The key (shortened).
        key: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is larger than the limit.
    #[error("value for key {key:?} is {len} bytes, over the limit of {max}")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The transaction has too many ops.
    #[error("transaction has {count} ops, over the limit of {max}")]
    TooManyOps {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A listing would return more keys than the limit.
    #[error("listing of prefix {prefix:?} has more than {max} keys")]
    TooManyKeys {
        /// The prefix.
        prefix: String,
        /// The limit.
        max: usize,
    },
    /// One transaction branch writes the same key twice.
    #[error("transaction writes key {key:?} twice in one branch")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A stored value does not decode; nothing was changed.
    #[error("stored value of key {key:?} does not decode: {reason}")]
    Decode {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("value for key {key:?} could not be encoded: {reason}")]
    Encode {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// An unexpected failure of the backend.
    #[error("metadata store {endpoint}: {reason}")]
    Backend {
        /// Which store.
        endpoint: String,
        /// What failed.
        reason: String,
    },
}

impl StoreError {
    /// Whether the store could not be reached (retrying later may succeed).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The metadata store interface (etcd semantics). Object safe:
/// use it as `Arc<dyn MetaStore>`.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + fmt::Debug {
    /// A short description for messages (`mem:`, `redb:/path`, `etcd:host:port`).
    fn describe(&self) -> String;

    /// The limits this store enforces.
    fn limits(&self) -> &Limits;

    /// A linearizable read of one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// A linearizable read of every key starting with `prefix`, with the
    /// revision it was read at.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Applies a guarded transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;

    /// Streams the changes under `prefix` with revision `>= from` (`None`:
    /// changes after the current revision). A revision that was compacted
    /// away is [`StoreError::Compacted`].
    async fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<WatchStream, StoreError>;

    /// Drops the change history up to and including `revision`.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Grants a lease that expires `ttl_s` seconds after its last keep-alive.
    /// Returns its id and the granted TTL.
    async fn lease_grant(&self, ttl_s: i64) -> Result<(LeaseId, i64), StoreError>;

    /// Refreshes a lease; returns the remaining TTL in seconds.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<i64, StoreError>;

    /// Revokes a lease: its keys are deleted at once.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Writes one key; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        Ok(self.txn(Txn::new().and_then([TxnOp::put(key, value)])).await?.revision)
    }

    /// Writes one key attached to a lease; returns the new revision.
    async fn put_with_lease(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision, StoreError> {
        Ok(self.txn(Txn::new().and_then([TxnOp::put_with_lease(key, value, lease)])).await?.revision)
    }

    /// Deletes one key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let resp = self.txn(Txn::new().and_then([TxnOp::delete(key)])).await?;
        Ok(matches!(resp.responses.first(), Some(OpResponse::Delete { deleted: 1.. })))
    }
}

/// Typed JSON helpers on any [`MetaStore`]. A stored value that does not
/// decode is [`StoreError::Decode`] naming the key; nothing is written then.
#[async_trait::async_trait]
pub trait MetaStoreJson: MetaStore {
    /// Reads and decodes one key.
    async fn get_json<T: DeserializeOwned + Send>(&self, key: &str) -> Result<Option<(T, KeyValue)>, StoreError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some((decode_json(&kv.key, &kv.value)?, kv))),
        }
    }

    /// Encodes and writes one key; returns the new revision.
    async fn put_json<T: Serialize + Sync + ?Sized>(&self, key: &str, value: &T) -> Result<Revision, StoreError> {
        let bytes = encode_json(key, value)?;
        self.put(key, bytes).await
    }

    /// Reads, changes and writes back one JSON value, guarded on its mod
    /// revision (retried on conflict, at most `max_attempts` times). A stored
    /// value that does not decode is an error and is left as it is.
    async fn update_json<T, F>(&self, key: &str, max_attempts: usize, mut f: F) -> Result<(T, Revision), StoreError>
    where
        T: Serialize + DeserializeOwned + Send + Sync,
        F: FnMut(Option<T>) -> T + Send,
    {
        for _ in 0..max_attempts.max(1) {
            let current = self.get(key).await?;
            let (old, guard) = match &current {
                None => (None, Compare::absent(key)),
                Some(kv) => (Some(decode_json::<T>(key, &kv.value)?), Compare::mod_revision(key, kv.mod_revision)),
            };
            let new = f(old);
            let bytes = encode_json(key, &new)?;
            let resp = self.txn(Txn::new().when([guard]).and_then([TxnOp::put(key, bytes)])).await?;
            if resp.succeeded {
                return Ok((new, resp.revision));
            }
        }
        Err(StoreError::Backend {
            endpoint: self.describe(),
            reason: format!("update of key {key:?} kept conflicting after {max_attempts} attempts"),
        })
    }
}

impl<S: MetaStore + ?Sized> MetaStoreJson for S {}

/// Decodes a JSON value read from `key`.
pub fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode { key: shorten(key), reason: e.to_string() })
}

/// Encodes a JSON value for `key`.
pub fn encode_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode { key: shorten(key), reason: e.to_string() })
}

/// Opens the store a URL names (see [`StoreUrl`]). Must be called inside a
/// tokio runtime (the embedded stores run a lease reaper task).
pub async fn open(url: &str, options: StoreOptions) -> Result<Arc<dyn MetaStore>, StoreError> {
    let parsed: StoreUrl = url.parse()?;
    open_parsed(&parsed, options).await
}

/// Opens the store of an already parsed URL.
pub async fn open_parsed(url: &StoreUrl, options: StoreOptions) -> Result<Arc<dyn MetaStore>, StoreError> {
    match url {
        StoreUrl::Mem => Ok(Arc::new(engine::EngineStore::open_mem(options))),
        StoreUrl::Redb(path) => Ok(Arc::new(engine::EngineStore::open_redb(path, options).await?)),
        #[cfg(feature = "etcd")]
        StoreUrl::Etcd(endpoints) => Ok(Arc::new(etcd::EtcdStore::connect(endpoints, options).await?)),
        #[cfg(not(feature = "etcd"))]
        StoreUrl::Etcd(_) => Err(StoreError::EtcdNotBuilt { url: url.to_string() }),
    }
}
