//! One value per message of every protocol version: the golden wire samples
//! (`testdata/wire/<name>/<transport_version>.bin`, checked by
//! `tests/it/wire_golden.rs`) are these, encoded at each transport version.

use rollgate::migrate::MemGates;
use rollgate::record::FeatureMap;

use crate::digest::v1 as digest;
use crate::hlc::Version;
use crate::protocol::{self, Msg};
use crate::quorum::v1 as quorum;
use crate::record::{self, WriteContext};
use crate::replication::{v1 as repl1, v2 as repl2};

fn version() -> Version {
    Version { wall_ms: 1_763_000_000_123, logical: 7, node: "kv-0000beef".into() }
}

/// `meta@1`, and `meta@2` when `v2` (a record written once `record_meta_v2` was enabled).
fn features(v2: bool) -> FeatureMap {
    let gates = if v2 { MemGates::with_flags(["record_meta_v2"]) } else { MemGates::new() };
    let ctx = WriteContext { node: "kv-0000beef", release: "1.2" };
    record::new_features(ctx, &version(), None, &gates)
}

fn entry(key: &str, value: Option<&[u8]>, expires_at_ms: u64) -> repl1::Entry {
    repl1::Entry {
        key: key.into(),
        version: version(),
        value: match value {
            Some(v) => repl1::Value::Put(v.to_vec()),
            None => repl1::Value::Tombstone,
        },
        expires_at_ms,
        features: features(expires_at_ms != 0),
    }
}

fn replicate() -> repl1::Replicate {
    repl1::Replicate { req_id: 42, entry: entry("user/1", Some(b"alice"), 1_763_000_060_000) }
}

fn ack() -> repl1::Ack {
    repl1::Ack { req_id: 42, error: Some("disk full".into()) }
}

fn sync_request() -> repl1::SyncRequest {
    repl1::SyncRequest {
        req_id: 43,
        after_key: Some("user/1".into()),
        limit: 512,
        end_key: Some("user/9".into()),
        max_bytes: 4 << 20,
    }
}

fn sync_chunk() -> repl1::SyncChunk {
    repl1::SyncChunk {
        req_id: 43,
        entries: vec![entry("user/2", Some(b"bob"), 0), entry("user/3", None, 0), entry("user/4", Some(b""), 99)],
        done: true,
        error: None,
    }
}

fn batch() -> repl2::ReplicateBatch {
    repl2::ReplicateBatch { req_id: 44, entries: vec![entry("a", Some(b"1"), 0), entry("b", None, 5)] }
}

fn digest_request() -> digest::DigestRequest {
    digest::DigestRequest {
        req_id: 45,
        ranges: vec![
            digest::KeyRange { after: None, through: Some("m".into()) },
            digest::KeyRange { after: Some("m".into()), through: None },
        ],
    }
}

fn digest_reply() -> digest::DigestReply {
    digest::DigestReply {
        req_id: 45,
        digests: vec![
            digest::RangeDigest { count: 256, hash: [0xab; 16] },
            digest::RangeDigest { count: 0, hash: [0; 16] },
        ],
        error: None,
    }
}

fn read_request() -> quorum::ReadRequest {
    quorum::ReadRequest { req_id: 46, key: "user/".into(), prefix: true, limit: 100 }
}

fn read_reply() -> quorum::ReadReply {
    quorum::ReadReply {
        req_id: 46,
        entries: vec![entry("user/1", Some(b"alice"), 0), entry("user/2", None, 0)],
        truncated: true,
        error: None,
    }
}

/// `(name, message)` for every message of every supported protocol version.
pub fn messages() -> Vec<(&'static str, Msg)> {
    use protocol::{v1, v2, v3, v4};
    vec![
        ("v1_replication_replicate", v1::Msg::Replication(repl1::Msg::Replicate(replicate())).into()),
        ("v1_replication_ack", v1::Msg::Replication(repl1::Msg::Ack(ack())).into()),
        ("v1_replication_sync_request", v1::Msg::Replication(repl1::Msg::SyncRequest(sync_request())).into()),
        ("v1_replication_sync_chunk", v1::Msg::Replication(repl1::Msg::SyncChunk(sync_chunk())).into()),
        ("v2_replication_replicate", v2::Msg::Replication(repl2::Msg::Replicate(replicate())).into()),
        ("v2_replication_ack", v2::Msg::Replication(repl2::Msg::Ack(ack())).into()),
        ("v2_replication_sync_request", v2::Msg::Replication(repl2::Msg::SyncRequest(sync_request())).into()),
        ("v2_replication_sync_chunk", v2::Msg::Replication(repl2::Msg::SyncChunk(sync_chunk())).into()),
        ("v2_replication_replicate_batch", v2::Msg::Replication(repl2::Msg::ReplicateBatch(batch())).into()),
        ("v3_replication_replicate", v3::Msg::Replication(repl2::Msg::Replicate(replicate())).into()),
        ("v3_replication_ack", v3::Msg::Replication(repl2::Msg::Ack(ack())).into()),
        ("v3_replication_sync_request", v3::Msg::Replication(repl2::Msg::SyncRequest(sync_request())).into()),
        ("v3_replication_sync_chunk", v3::Msg::Replication(repl2::Msg::SyncChunk(sync_chunk())).into()),
        ("v3_replication_replicate_batch", v3::Msg::Replication(repl2::Msg::ReplicateBatch(batch())).into()),
        ("v3_digest_request", v3::Msg::Digest(digest::Msg::DigestRequest(digest_request())).into()),
        ("v3_digest_reply", v3::Msg::Digest(digest::Msg::DigestReply(digest_reply())).into()),
        ("v4_replication_replicate", v4::Msg::Replication(repl2::Msg::Replicate(replicate())).into()),
        ("v4_replication_ack", v4::Msg::Replication(repl2::Msg::Ack(ack())).into()),
        ("v4_replication_sync_request", v4::Msg::Replication(repl2::Msg::SyncRequest(sync_request())).into()),
        ("v4_replication_sync_chunk", v4::Msg::Replication(repl2::Msg::SyncChunk(sync_chunk())).into()),
        ("v4_replication_replicate_batch", v4::Msg::Replication(repl2::Msg::ReplicateBatch(batch())).into()),
        ("v4_digest_request", v4::Msg::Digest(digest::Msg::DigestRequest(digest_request())).into()),
        ("v4_digest_reply", v4::Msg::Digest(digest::Msg::DigestReply(digest_reply())).into()),
        ("v4_quorum_read_request", v4::Msg::Quorum(quorum::Msg::ReadRequest(read_request())).into()),
        ("v4_quorum_read_reply", v4::Msg::Quorum(quorum::Msg::ReadReply(read_reply())).into()),
    ]
}
