//! Digest engine, v1.

use rollgate::wire::{Decode, Encode};

/// Digest engine messages, v1.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Msg {
    /// Ask for the digest of each range.
    #[wire(tag = 1)]
    DigestRequest(DigestRequest),
    /// The digests, one per requested range, in order.
    #[wire(tag = 2)]
    DigestReply(DigestReply),
}

/// A key range `(after, through]`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct KeyRange {
    /// Exclusive lower bound; `None`: from the first key.
    pub after: Option<String>,
    /// Inclusive upper bound; `None`: to the last key.
    pub through: Option<String>,
}

/// The digest of a key range: how many entries (tombstones included) and a
/// hash over their keys, versions and expiry times, in key order.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RangeDigest {
    /// Entries in the range.
    pub count: u64,
    /// The first 16 bytes of SHA-256 over the entries.
    pub hash: [u8; 16],
}

/// Ask for the digests of key ranges.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct DigestRequest {
    /// Matches the [`DigestReply`].
    pub req_id: u64,
    /// The ranges, ascending and disjoint (at most [`MAX_RANGES`]).
    pub ranges: Vec<KeyRange>,
}

/// The digests of the requested ranges.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct DigestReply {
    /// The request answered.
    pub req_id: u64,
    /// One digest per requested range, in order (empty with `error`).
    pub digests: Vec<RangeDigest>,
    /// `Some`: the responder could not serve the request, and why.
    pub error: Option<String>,
}

/// Most ranges in one [`DigestRequest`].
pub const MAX_RANGES: usize = 64;
