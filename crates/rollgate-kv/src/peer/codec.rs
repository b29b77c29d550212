//! Between the versioned wire messages and what the node works with: the
//! one place that knows which message exists in which protocol version.
//! Retiring a protocol version makes the compiler point here.
//!
//! On a connection, the initiator sends [`Request`]s and the responder
//! answers with [`Response`]s carrying the same `req_id`.

use rollgate::version::ProtocolVersion;

use crate::digest::v1 as digest;
use crate::protocol::{self, Msg};
use crate::quorum::v1 as quorum;
use crate::record::Record;
use crate::replication::{v1 as repl1, v2 as repl2};
use crate::storage::{KeyRange, RangeDigest, StoredEntry};

/// What an initiator asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Store one write.
    Replicate(repl1::Replicate),
    /// Store several writes in one commit (protocol v2 on).
    ReplicateBatch(repl2::ReplicateBatch),
    /// Send entries in key order.
    Sync(repl1::SyncRequest),
    /// Send range digests (protocol v3 on).
    Digest(digest::DigestRequest),
    /// Send what is held of a key or prefix (protocol v4 on).
    Read(quorum::ReadRequest),
}

/// What a responder answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Answer to `Replicate` and `ReplicateBatch`.
    Ack(repl1::Ack),
    /// Answer to `Sync`.
    SyncChunk(repl1::SyncChunk),
    /// Answer to `Digest`.
    Digest(digest::DigestReply),
    /// Answer to `Read`.
    Read(quorum::ReadReply),
}

/// A received message, by role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A request (arrives on an inbound connection).
    Request(Request),
    /// A response (arrives on an outbound connection).
    Response(Response),
}

/// A message that the connection's protocol version does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not part of protocol {protocol}")]
pub struct NotInProtocol {
    /// The message.
    pub what: &'static str,
    /// The connection's protocol version.
    pub protocol: ProtocolVersion,
}

impl Request {
    /// The request id.
    pub fn req_id(&self) -> u64 {
        match self {
            Request::Replicate(m) => m.req_id,
            Request::ReplicateBatch(m) => m.req_id,
            Request::Sync(m) => m.req_id,
            Request::Digest(m) => m.req_id,
            Request::Read(m) => m.req_id,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Request::Replicate(_) => "Replicate",
            Request::ReplicateBatch(_) => "ReplicateBatch",
            Request::Sync(_) => "SyncRequest",
            Request::Digest(_) => "DigestRequest",
            Request::Read(_) => "ReadRequest",
        }
    }
}

impl Response {
    /// The id of the request answered.
    pub fn req_id(&self) -> u64 {
        match self {
            Response::Ack(m) => m.req_id,
            Response::SyncChunk(m) => m.req_id,
            Response::Digest(m) => m.req_id,
            Response::Read(m) => m.req_id,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Response::Ack(_) => "Ack",
            Response::SyncChunk(_) => "SyncChunk",
            Response::Digest(_) => "DigestReply",
            Response::Read(_) => "ReadReply",
        }
    }
}

/// Whether protocol `p` has `ReplicateBatch` (replication engine v2).
pub fn has_batches(p: ProtocolVersion) -> bool {
    p.0 >= 2
}

/// Whether protocol `p` has the digest engine.
pub fn has_digests(p: ProtocolVersion) -> bool {
    p.0 >= 3
}

/// Whether protocol `p` has the quorum read engine (linearizable reads).
pub fn has_quorum_reads(p: ProtocolVersion) -> bool {
    p.0 >= 4
}

/// The wire message of `req` in protocol `p`.
pub fn request_to_wire(p: ProtocolVersion, req: Request) -> Result<Msg, NotInProtocol> {
    use Request::*;
    let what = req.name();
    let msg: Msg = match (p.0, req) {
        (1, Replicate(m)) => protocol::v1::Msg::Replication(repl1::Msg::Replicate(m)).into(),
        (1, Sync(m)) => protocol::v1::Msg::Replication(repl1::Msg::SyncRequest(m)).into(),
        (2, Replicate(m)) => protocol::v2::Msg::Replication(repl2::Msg::Replicate(m)).into(),
        (2, ReplicateBatch(m)) => protocol::v2::Msg::Replication(repl2::Msg::ReplicateBatch(m)).into(),
        (2, Sync(m)) => protocol::v2::Msg::Replication(repl2::Msg::SyncRequest(m)).into(),
        (3, Replicate(m)) => protocol::v3::Msg::Replication(repl2::Msg::Replicate(m)).into(),
        (3, ReplicateBatch(m)) => protocol::v3::Msg::Replication(repl2::Msg::ReplicateBatch(m)).into(),
        (3, Sync(m)) => protocol::v3::Msg::Replication(repl2::Msg::SyncRequest(m)).into(),
        (3, Digest(m)) => protocol::v3::Msg::Digest(digest::Msg::DigestRequest(m)).into(),
        (4, Replicate(m)) => protocol::v4::Msg::Replication(repl2::Msg::Replicate(m)).into(),
        (4, ReplicateBatch(m)) => protocol::v4::Msg::Replication(repl2::Msg::ReplicateBatch(m)).into(),
        (4, Sync(m)) => protocol::v4::Msg::Replication(repl2::Msg::SyncRequest(m)).into(),
        (4, Digest(m)) => protocol::v4::Msg::Digest(digest::Msg::DigestRequest(m)).into(),
        (4, Read(m)) => protocol::v4::Msg::Quorum(quorum::Msg::ReadRequest(m)).into(),
        _ => return Err(NotInProtocol { what, protocol: p }),
    };
    Ok(msg)
}

/// The wire message of `resp` in protocol `p`.
pub fn response_to_wire(p: ProtocolVersion, resp: Response) -> Result<Msg, NotInProtocol> {
    use Response::*;
    let what = resp.name();
    let msg: Msg = match (p.0, resp) {
        (1, Ack(m)) => protocol::v1::Msg::Replication(repl1::Msg::Ack(m)).into(),
        (1, SyncChunk(m)) => protocol::v1::Msg::Replication(repl1::Msg::SyncChunk(m)).into(),
        (2, Ack(m)) => protocol::v2::Msg::Replication(repl2::Msg::Ack(m)).into(),
        (2, SyncChunk(m)) => protocol::v2::Msg::Replication(repl2::Msg::SyncChunk(m)).into(),
        (3, Ack(m)) => protocol::v3::Msg::Replication(repl2::Msg::Ack(m)).into(),
        (3, SyncChunk(m)) => protocol::v3::Msg::Replication(repl2::Msg::SyncChunk(m)).into(),
        (3, Digest(m)) => protocol::v3::Msg::Digest(digest::Msg::DigestReply(m)).into(),
        (4, Ack(m)) => protocol::v4::Msg::Replication(repl2::Msg::Ack(m)).into(),
        (4, SyncChunk(m)) => protocol::v4::Msg::Replication(repl2::Msg::SyncChunk(m)).into(),
        (4, Digest(m)) => protocol::v4::Msg::Digest(digest::Msg::DigestReply(m)).into(),
        (4, Read(m)) => protocol::v4::Msg::Quorum(quorum::Msg::ReadReply(m)).into(),
        _ => return Err(NotInProtocol { what, protocol: p }),
    };
    Ok(msg)
}

/// What a received wire message is.
pub fn from_wire(msg: Msg) -> Incoming {
    match msg {
        Msg::V1(protocol::v1::Msg::Replication(m)) => replication_v1(m),
        Msg::V2(protocol::v2::Msg::Replication(m)) => replication_v2(m),
        Msg::V3(protocol::v3::Msg::Replication(m)) => replication_v2(m),
        Msg::V3(protocol::v3::Msg::Digest(m)) | Msg::V4(protocol::v4::Msg::Digest(m)) => digest_v1(m),
        Msg::V4(protocol::v4::Msg::Replication(m)) => replication_v2(m),
        Msg::V4(protocol::v4::Msg::Quorum(m)) => match m {
            quorum::Msg::ReadRequest(r) => Incoming::Request(Request::Read(r)),
            quorum::Msg::ReadReply(r) => Incoming::Response(Response::Read(r)),
        },
    }
}

fn digest_v1(m: digest::Msg) -> Incoming {
    match m {
        digest::Msg::DigestRequest(r) => Incoming::Request(Request::Digest(r)),
        digest::Msg::DigestReply(r) => Incoming::Response(Response::Digest(r)),
    }
}

fn replication_v1(m: repl1::Msg) -> Incoming {
    match m {
        repl1::Msg::Replicate(r) => Incoming::Request(Request::Replicate(r)),
        repl1::Msg::SyncRequest(r) => Incoming::Request(Request::Sync(r)),
        repl1::Msg::Ack(r) => Incoming::Response(Response::Ack(r)),
        repl1::Msg::SyncChunk(r) => Incoming::Response(Response::SyncChunk(r)),
    }
}

fn replication_v2(m: repl2::Msg) -> Incoming {
    match m {
        repl2::Msg::Replicate(r) => Incoming::Request(Request::Replicate(r)),
        repl2::Msg::ReplicateBatch(r) => Incoming::Request(Request::ReplicateBatch(r)),
        repl2::Msg::SyncRequest(r) => Incoming::Request(Request::Sync(r)),
        repl2::Msg::Ack(r) => Incoming::Response(Response::Ack(r)),
        repl2::Msg::SyncChunk(r) => Incoming::Response(Response::SyncChunk(r)),
    }
}

/// A stored entry as a wire entry.
pub fn entry_to_wire(e: StoredEntry) -> repl1::Entry {
    repl1::Entry {
        key: e.key,
        version: e.record.version,
        value: match e.record.value {
            Some(v) => repl1::Value::Put(v),
            None => repl1::Value::Tombstone,
        },
        expires_at_ms: e.record.expires_at_ms,
        features: e.record.features,
    }
}

/// A wire entry as a stored entry.
pub fn entry_from_wire(e: repl1::Entry) -> StoredEntry {
    StoredEntry {
        key: e.key,
        record: Record {
            version: e.version,
            value: match e.value {
                repl1::Value::Put(v) => Some(v),
                repl1::Value::Tombstone => None,
            },
            expires_at_ms: e.expires_at_ms,
            features: e.features,
        },
    }
}

/// A storage range as a wire range.
pub fn range_to_wire(r: KeyRange) -> digest::KeyRange {
    digest::KeyRange { after: r.after, through: r.through }
}

/// A wire range as a storage range.
pub fn range_from_wire(r: digest::KeyRange) -> KeyRange {
    KeyRange { after: r.after, through: r.through }
}

/// A storage digest as a wire digest.
pub fn digest_to_wire(d: RangeDigest) -> digest::RangeDigest {
    digest::RangeDigest { count: d.count, hash: d.hash }
}

/// A wire digest as a storage digest.
pub fn digest_from_wire(d: digest::RangeDigest) -> RangeDigest {
    RangeDigest { count: d.count, hash: d.hash }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Version;

    fn entry() -> repl1::Entry {
        repl1::Entry {
            key: "k".into(),
            version: Version { wall_ms: 1, logical: 2, node: "n".into() },
            value: repl1::Value::Put(b"v".to_vec()),
            expires_at_ms: 0,
            features: Default::default(),
        }
    }

    #[test]
    fn every_message_round_trips_through_every_protocol_that_has_it() {
        let requests = [
            Request::Replicate(repl1::Replicate { req_id: 1, entry: entry() }),
            Request::ReplicateBatch(repl2::ReplicateBatch { req_id: 2, entries: vec![entry()] }),
            Request::Sync(repl1::SyncRequest { req_id: 3, after_key: None, limit: 5, end_key: None, max_bytes: 0 }),
            Request::Digest(digest::DigestRequest { req_id: 4, ranges: vec![] }),
            Request::Read(quorum::ReadRequest { req_id: 5, key: "k".into(), prefix: false, limit: 1 }),
        ];
        let responses = [
            Response::Ack(repl1::Ack { req_id: 1, error: None }),
            Response::SyncChunk(repl1::SyncChunk { req_id: 3, entries: vec![], done: true, error: None }),
            Response::Digest(digest::DigestReply { req_id: 4, digests: vec![], error: None }),
            Response::Read(quorum::ReadReply { req_id: 5, entries: vec![entry()], truncated: false, error: None }),
        ];
        let mut carried = Vec::new();
        for p in 1..=4 {
            let p = ProtocolVersion(p);
            for r in &requests {
                match request_to_wire(p, r.clone()) {
                    Ok(m) => {
                        assert_eq!(from_wire(m), Incoming::Request(r.clone()));
                        carried.push((p.0, r.name()));
                    }
                    Err(e) => assert_eq!(e.protocol, p),
                }
            }
            for r in &responses {
                match response_to_wire(p, r.clone()) {
                    Ok(m) => {
                        assert_eq!(from_wire(m), Incoming::Response(r.clone()));
                        carried.push((p.0, r.name()));
                    }
                    Err(e) => assert_eq!(e.protocol, p),
                }
            }
        }
        let batches: Vec<_> = carried.iter().filter(|(_, n)| *n == "ReplicateBatch").map(|(p, _)| *p).collect();
        let digests: Vec<_> = carried.iter().filter(|(_, n)| n.starts_with("Digest")).map(|(p, _)| *p).collect();
        let reads: Vec<_> = carried.iter().filter(|(_, n)| n.starts_with("Read")).map(|(p, _)| *p).collect();
        assert_eq!(batches, [2, 3, 4], "batches from protocol v2 on");
        assert_eq!(digests, [3, 3, 4, 4], "digests from protocol v3 on");
        assert_eq!(reads, [4, 4], "quorum reads from protocol v4 on");
        for (p, has) in
            [(1, (false, false, false)), (2, (true, false, false)), (3, (true, true, false)), (4, (true, true, true))]
        {
            let p = ProtocolVersion(p);
            assert_eq!((has_batches(p), has_digests(p), has_quorum_reads(p)), has);
        }
    }

    #[test]
    fn entries_convert_both_ways() {
        let e = entry();
        assert_eq!(entry_to_wire(entry_from_wire(e.clone())), e);
        let t = repl1::Entry { value: repl1::Value::Tombstone, ..e };
        assert_eq!(entry_from_wire(t.clone()).record.value, None);
        assert_eq!(entry_to_wire(entry_from_wire(t.clone())), t);
    }
}
