//! Replication engine, v2 (protocol v2, release 1.1): v1 plus
//! [`ReplicateBatch`], several writes in one message and one durable commit
//! on the replica (the coordinator's group commit).

use rollgate::wire::{Decode, Encode, Reader, WireError};

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

/// Most entries in one `ReplicateBatch` a node accepts: checked from the
/// length prefix, before any entry is decoded.
pub const MAX_BATCH_ENTRIES: usize = 4096;

/// Several writes, stored by the replica in one durable commit. Decoding
/// refuses more than [`MAX_BATCH_ENTRIES`] from the length prefix, so an
/// oversized batch costs nothing to refuse (the encoding is the derived one:
/// the request id, then the entries as a list).
#[derive(Clone, Debug, PartialEq, Eq, Encode)]
pub struct ReplicateBatch {
    /// Matches the [`Ack`].
    pub req_id: u64,
    /// The writes (different keys or not; the highest version of a key wins).
    pub entries: Vec<Entry>,
}

impl Decode for ReplicateBatch {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let req_id = u64::decode(r)?;
        let offset = r.position();
        let len = r.get_len()?;
        if len > MAX_BATCH_ENTRIES {
            return Err(WireError::LengthOverLimit { offset, len: len as u64, max: MAX_BATCH_ENTRIES });
        }
        r.enter()?;
        let entries = Entry::decode_vec(len, r);
        r.leave();
        Ok(ReplicateBatch { req_id, entries: entries? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollgate::version::TransportVersion;
    use rollgate::wire::{Limits, Writer};

    #[test]
    fn a_batch_over_the_limit_is_refused_from_its_length_prefix() {
        // A request id and a list length of a million, and no entries at all:
        // refused at the prefix, naming the limit, before any entry is read.
        let mut w = Writer::new(TransportVersion::ZERO, Limits::DEFAULT);
        w.write(&7u64);
        w.put_len(1_000_000);
        let bytes = w.into_bytes().unwrap();
        let mut r = Reader::new(&bytes, TransportVersion::ZERO, Limits::DEFAULT);
        match ReplicateBatch::decode(&mut r) {
            Err(WireError::LengthOverLimit { len: 1_000_000, max: MAX_BATCH_ENTRIES, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
