//! Replication engine, v2 (protocol v2, release 1.1): v1 plus
//! [`ReplicateBatch`], several writes in one message and one durable commit
//! on the replica (the coordinator's group commit).

use rollgate::wire::{Decode, Encode};

pub use super::v1::{Ack, Entry, Replicate, SyncChunk, SyncRequest, Value};

/// Replication engine messages, v2.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Msg {
    /// Store one write.
    #[wire(tag = 1)]
    Replicate(Replicate),
    /// The replica stored a write or a batch durably, or says why not.
    #[wire(tag = 2)]
    Ack(Ack),
    /// Send the entries after a key.
    #[wire(tag = 3)]
    SyncRequest(SyncRequest),
    /// Entries answering a `SyncRequest`.
    #[wire(tag = 4)]
    SyncChunk(SyncChunk),
    /// Store several writes in one commit; one [`Ack`] answers all of them.
    #[wire(tag = 5)]
    ReplicateBatch(ReplicateBatch),
}

/// Several writes, stored by the replica in one durable commit.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ReplicateBatch {
    /// Matches the [`Ack`].
    pub req_id: u64,
    /// The writes (different keys or not; the highest version of a key wins).
    pub entries: Vec<Entry>,
}
