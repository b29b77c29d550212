//! Replication engine, v1: one write at a time, and key-ordered sync.
//!
//! Fields added later are gated by transport version (`#[wire(since = ..)]`),
//! so a peer on an older transport version never sees them:
//!
//! | field | transport version | release |
//! |---|---|---|
//! | [`Entry::expires_at_ms`] | `replicate_ttl` | 1.1 |
//! | [`SyncRequest::end_key`] | `sync_range_end` | 1.2 |
//! | [`SyncRequest::max_bytes`] replaces [`SyncRequest::limit`] | `sync_max_bytes` | 2.0 |
//!
//! [`Entry::features`] is not gated: the extensible part of a record evolves
//! through new feature keys, not transport versions, and every release
//! carries it.

use rollgate::record::FeatureMap;
use rollgate::wire::{Decode, Encode};

use crate::hlc::Version;

/// Replication engine messages, v1.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Msg {
    /// Store one write (coordinator to replica).
    #[wire(tag = 1)]
    Replicate(Replicate),
    /// The replica stored a write (or a batch) durably, or says why not.
    #[wire(tag = 2)]
    Ack(Ack),
    /// Send the entries after a key (catch-up).
    #[wire(tag = 3)]
    SyncRequest(SyncRequest),
    /// Entries answering a [`SyncRequest`].
    #[wire(tag = 4)]
    SyncChunk(SyncChunk),
}

/// A key's value, or its deletion.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Value {
    /// The key holds these bytes.
    #[wire(tag = 1)]
    Put(Vec<u8>),
    /// The key was deleted (kept so the deletion wins over older writes).
    #[wire(tag = 2)]
    Tombstone,
}

/// One versioned write of one key.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The write's version: the highest version of a key wins.
    pub version: Version,
    /// The value or a tombstone.
    pub value: Value,
    /// When the value expires (ms since the Unix epoch; 0: never). Sent from
    /// transport version `replicate_ttl` (release 1.1) on.
    #[wire(since = "replicate_ttl")]
    pub expires_at_ms: u64,
    /// The record's feature map (`meta@1`, `meta@2`, ...; see
    /// [`crate::record`]), on the wire at every transport version so that a
    /// node of any release passes on the keys it does not know byte for byte.
    pub features: FeatureMap,
}

/// Store one write.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Replicate {
    /// Matches the [`Ack`].
    pub req_id: u64,
    /// The write.
    pub entry: Entry,
}

/// The answer to a [`Replicate`] (or a `ReplicateBatch`).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Ack {
    /// The request answered.
    pub req_id: u64,
    /// `None`: stored durably (or a newer version already was); `Some`: why not.
    pub error: Option<String>,
}

/// Ask for entries in key order, after `after_key`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SyncRequest {
    /// Matches the [`SyncChunk`].
    pub req_id: u64,
    /// Start after this key (exclusive); `None`: from the first key.
    pub after_key: Option<String>,
    /// At most this many entries (the responder caps it too). Sent until
    /// transport version `sync_max_bytes` (release 2.0), which bounds chunks
    /// by bytes instead; absent, it reads as [`DEFAULT_SYNC_LIMIT`].
    #[wire(until = "sync_max_bytes", default = "DEFAULT_SYNC_LIMIT")]
    pub limit: u32,
    /// Stop after this key (inclusive); `None`: to the last key. Sent from
    /// transport version `sync_range_end` (release 1.2) on; an older
    /// responder sends past it and the requester drops the rest.
    #[wire(since = "sync_range_end")]
    pub end_key: Option<String>,
    /// At most about this many bytes of keys and values per chunk (the
    /// responder caps it too; 0: the responder's default). Sent from
    /// transport version `sync_max_bytes` (release 2.0) on: a count of
    /// entries says little when values range from bytes to a mebibyte.
    #[wire(since = "sync_max_bytes")]
    pub max_bytes: u32,
}

/// The entry limit of a [`SyncRequest`] that does not carry one.
pub const DEFAULT_SYNC_LIMIT: u32 = 256;

/// Entries in key order answering a [`SyncRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SyncChunk {
    /// The request answered.
    pub req_id: u64,
    /// The entries, tombstones included, ascending by key.
    pub entries: Vec<Entry>,
    /// No entries follow in the requested range.
    pub done: bool,
    /// `Some`: the responder could not serve the request, and why.
    pub error: Option<String>,
}
