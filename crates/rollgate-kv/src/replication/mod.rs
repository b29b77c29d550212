//! The replication engine's messages, one module per engine version (a new
//! engine version is a copy of the latest with the change applied; message
//! structs that did not change are reused by the newer version).
//!
//! | version | messages | protocol versions |
//! |---|---|---|
//! | [`v1`] | `Replicate`, `Ack`, `SyncRequest`, `SyncChunk` | v1 |
//! | [`v2`] | v1 + `ReplicateBatch` | v2, v3 |
//!
//! The functions below say what a connection's transport version carries;
//! the derived codec gates the same fields with `#[wire(since = ..)]`.

use rollgate::version::TransportVersion;

pub mod v1;
pub mod v2;

/// Whether entries carry `expires_at_ms` at `transport` (release 1.1 on). A
/// TTL write replicated below it reaches the peer without its expiry, which
/// is why producing TTL writes must wait until every member supports it.
pub fn carries_expiry(transport: TransportVersion) -> bool {
    transport.supports(transport_version!("replicate_ttl"))
}

/// Whether a `SyncRequest` carries `end_key` at `transport` (release 1.2 on).
/// Below it, the responder does not see the end of the range and the
/// requester drops entries past it.
pub fn carries_sync_end(transport: TransportVersion) -> bool {
    transport.supports(transport_version!("sync_range_end"))
}

/// Whether a `SyncRequest` carries `max_bytes` instead of `limit` at
/// `transport` (release 2.0 on).
pub fn carries_sync_max_bytes(transport: TransportVersion) -> bool {
    transport.supports(transport_version!("sync_max_bytes"))
}
