//! Quorum read engine, v1.

use rollgate::wire::{Decode, Encode};

use crate::replication::v1::Entry;

/// Quorum read engine messages, v1.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Msg {
    /// Ask for the records of a key or of a prefix.
    #[wire(tag = 1)]
    ReadRequest(ReadRequest),
    /// The records held, tombstones and expired values included.
    #[wire(tag = 2)]
    ReadReply(ReadReply),
}

/// Ask for what the responder holds of `key` (or, with `prefix`, of every
/// key starting with `key`, in key order, at most `limit` of them).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ReadRequest {
    /// Matches the [`ReadReply`].
    pub req_id: u64,
    /// The key, or the prefix.
    pub key: String,
    /// Whether `key` is a prefix.
    pub prefix: bool,
    /// Most records of a prefix read (the responder caps it at [`MAX_READ_ENTRIES`]).
    pub limit: u32,
}

/// The records answering a [`ReadRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ReadReply {
    /// The request answered.
    pub req_id: u64,
    /// The records held, ascending by key (tombstones and expired values included).
    pub entries: Vec<Entry>,
    /// More records under the prefix follow the last one.
    pub truncated: bool,
    /// `Some`: the responder could not serve the request, and why.
    pub error: Option<String>,
}

/// Most records in one [`ReadReply`].
pub const MAX_READ_ENTRIES: u32 = 1000;
