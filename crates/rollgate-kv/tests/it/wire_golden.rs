//! Golden wire samples: for every message of rollgate-kv's protocol and
//! every transport version from the minimum compatible one up to the
//! current one, the bytes checked in at
//! `testdata/wire/<message>/<transport_version>.bin` must decode to the
//! expected value and re-encode byte for byte, and today's encoder must
//! produce exactly them. Changing the encoding of an existing version fails
//! here.
//!
//! Adding samples (a new message, or a new transport version): run
//! `ROLLGATE_BLESS=1 cargo test -p rollgate-kv --test it wire_golden`. It writes
//! only missing files and never overwrites one; commit them.

use std::path::PathBuf;

use rollgate::protocol::{decode_message, encode_message};
use rollgate::version::TransportVersion;
use rollgate::wire::Limits;
use rollgate_kv::protocol::{v1, v2, v3, v4};
use rollgate_kv::quorum::v1 as quorum;
use rollgate_kv::replication::{self, v1 as repl1, v2 as repl2};
use rollgate_kv::{Msg, samples, transport_versions};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/wire")
}

fn versions() -> Vec<TransportVersion> {
    rollgate::golden::versions_from(transport_versions::SET)
}

/// What `msg` looks like after a trip through `tv`: fields the version does
/// not carry take their defaults.
fn at_version(msg: &Msg, tv: TransportVersion) -> Msg {
    let entry = |e: &repl1::Entry| repl1::Entry {
        expires_at_ms: if replication::carries_expiry(tv) { e.expires_at_ms } else { 0 },
        ..e.clone()
    };
    let sync = |s: &repl1::SyncRequest| repl1::SyncRequest {
        end_key: if replication::carries_sync_end(tv) { s.end_key.clone() } else { None },
        limit: if replication::carries_sync_max_bytes(tv) { repl1::DEFAULT_SYNC_LIMIT } else { s.limit },
        max_bytes: if replication::carries_sync_max_bytes(tv) { s.max_bytes } else { 0 },
        ..s.clone()
    };
    let chunk = |c: &repl1::SyncChunk| repl1::SyncChunk { entries: c.entries.iter().map(entry).collect(), ..c.clone() };
    let r1 = |m: &repl1::Msg| match m {
        repl1::Msg::Replicate(r) => {
            repl1::Msg::Replicate(repl1::Replicate { req_id: r.req_id, entry: entry(&r.entry) })
        }
        repl1::Msg::SyncRequest(s) => repl1::Msg::SyncRequest(sync(s)),
        repl1::Msg::SyncChunk(c) => repl1::Msg::SyncChunk(chunk(c)),
        other => other.clone(),
    };
    let r2 = |m: &repl2::Msg| match m {
        repl2::Msg::Replicate(r) => {
            repl2::Msg::Replicate(repl1::Replicate { req_id: r.req_id, entry: entry(&r.entry) })
        }
        repl2::Msg::SyncRequest(s) => repl2::Msg::SyncRequest(sync(s)),
        repl2::Msg::SyncChunk(c) => repl2::Msg::SyncChunk(chunk(c)),
        repl2::Msg::ReplicateBatch(b) => repl2::Msg::ReplicateBatch(repl2::ReplicateBatch {
            req_id: b.req_id,
            entries: b.entries.iter().map(entry).collect(),
        }),
        other => other.clone(),
    };
    match msg {
        Msg::V1(v1::Msg::Replication(m)) => v1::Msg::Replication(r1(m)).into(),
        Msg::V2(v2::Msg::Replication(m)) => v2::Msg::Replication(r2(m)).into(),
        Msg::V3(v3::Msg::Replication(m)) => v3::Msg::Replication(r2(m)).into(),
        Msg::V4(v4::Msg::Replication(m)) => v4::Msg::Replication(r2(m)).into(),
        Msg::V4(v4::Msg::Quorum(quorum::Msg::ReadReply(r))) => {
            v4::Msg::Quorum(quorum::Msg::ReadReply(quorum::ReadReply {
                entries: r.entries.iter().map(entry).collect(),
                ..r.clone()
            }))
            .into()
        }
        other => other.clone(),
    }
}

#[test]
fn golden_wire_samples() {
    let msgs = samples::messages();
    let report = rollgate::golden::check(
        &dir(),
        &msgs,
        &versions(),
        at_version,
        "cargo test -p rollgate-kv --test it wire_golden",
    );
    for f in &report.blessed {
        println!("blessed {f}");
    }
    assert!(report.problems.is_empty(), "{}", report.problems.join("\n"));
    assert_eq!(report.checked, msgs.len() * 4, "four transport versions: 1.0, 1.1, 1.2, 2.0");
}

#[test]
fn gated_fields_follow_the_transport_version() {
    let [v10, v11, v12, v20] = versions()[..] else { panic!("{:?}", versions()) };
    let size = |name: &str, tv| {
        let (_, m) = samples::messages().into_iter().find(|(n, _)| *n == name).unwrap();
        encode_message(&m, tv, Limits::DEFAULT).unwrap().len()
    };
    // expires_at_ms (a 6-byte varint here) from 1.1 on.
    assert_eq!(size("v1_replication_replicate", v10) + 6, size("v1_replication_replicate", v11));
    // end_key (Some tag, length, 6 bytes) from 1.2 on.
    assert_eq!(size("v1_replication_sync_request", v11) + 8, size("v1_replication_sync_request", v12));
    // 2.0 drops limit (512: 2 bytes) and adds max_bytes (4 MiB: 4 bytes).
    assert_eq!(size("v3_replication_sync_request", v12) + 2, size("v3_replication_sync_request", v20));
}

#[test]
fn unknown_tags_and_versions_are_typed_errors() {
    let e = decode_message::<Msg>(
        &[9, 0],
        rollgate::version::ProtocolVersion(3),
        transport_versions::CURRENT,
        Limits::DEFAULT,
    )
    .unwrap_err();
    assert!(matches!(e, rollgate::wire::WireError::UnknownTag { tag: 9, .. }), "{e}");
    // A ReplicateBatch (tag 5) does not exist in protocol v1's replication engine.
    let batch = encode_message(&samples::messages()[8].1, transport_versions::CURRENT, Limits::DEFAULT).unwrap();
    let e = decode_message::<Msg>(
        &batch,
        rollgate::version::ProtocolVersion(1),
        transport_versions::CURRENT,
        Limits::DEFAULT,
    )
    .unwrap_err();
    assert!(matches!(e, rollgate::wire::WireError::UnknownTag { tag: 5, .. }), "{e}");
    let e = decode_message::<Msg>(
        &[1, 2, 0],
        rollgate::version::ProtocolVersion(5),
        transport_versions::CURRENT,
        Limits::DEFAULT,
    )
    .unwrap_err();
    assert!(matches!(e, rollgate::wire::WireError::UnsupportedProtocol { .. }), "{e}");
}
