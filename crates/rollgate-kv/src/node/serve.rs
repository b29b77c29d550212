//! Inbound peer connections: every request a peer sends on its link to us
//! is handled in its own task and answered on the same connection in the
//! connection's protocol version. Requests in flight per connection are
//! bounded in number (`max_inflight_per_connection`) and in bytes
//! (`max_inflight_bytes_per_connection`): a peer that sends faster than the
//! node stores gets backpressure (the node stops reading its connection),
//! not unbounded tasks or memory.
//! Only running members are served: a link from a peer the cluster view
//! does not show running (forgotten, never joined) is closed, and so is a
//! link whose peer leaves the membership (I11).

use std::sync::Arc;

use rollgate::cluster::ClusterView;
use rollgate::flags::plan::peer_admitted;
use rollgate::net::{self, Connection, Listener};
use rollgate::version::ProtocolVersion;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::catchup;
use super::shared::{ServingState, Shared};
use super::write::NEWER_VERSION;
use crate::Msg;
use crate::digest::v1 as digest;
use crate::peer::codec::{self, Incoming, Request, Response};
use crate::record::MAX_KEY_BYTES;
use crate::replication::v1 as repl1;
use crate::storage::{Applied, KeyRange, StoredEntry};

/// Most entries a node sends in one sync chunk.
pub const MAX_SYNC_ENTRIES: u32 = 4096;
/// Most bytes (keys and values) a node puts in one sync chunk, plus at most one entry.
pub const MAX_SYNC_BYTES: u32 = 8 << 20;
/// Bytes per sync chunk when the request does not say.
pub const DEFAULT_SYNC_BYTES: u32 = 4 << 20;

pub(super) async fn accept_loop(shared: Arc<Shared>, mut listener: Listener<Msg>) {
    let mut connections = JoinSet::new();
    loop {
        let next = match listener.next().await {
            Ok(n) => n,
            Err(_) => break,
        };
        while connections.try_join_next().is_some() {}
        match next {
            Ok(conn) => {
                if connections.len() >= shared.tuning.max_peer_connections {
                    tracing::warn!(
                        peer = %conn.negotiated().peer_node_id,
                        limit = shared.tuning.max_peer_connections,
                        "too many peer connections: closing the new one"
                    );
                    let _ = conn.close().await;
                    continue;
                }
                let peer = conn.negotiated().peer_node_id.clone();
                tracing::debug!(%peer, protocol = %conn.negotiated().protocol, "peer connected");
                shared.note_inbound(&peer);
                if shared.state() == ServingState::Ready {
                    catchup::trigger_resync(&shared, peer);
                }
                connections.spawn(serve_connection(shared.clone(), conn));
            }
            Err(failure) => {
                let message = format!("{}: {}", failure.peer, failure.error);
                tracing::warn!(peer = %failure.peer, error = %failure.error, "inbound handshake failed");
                shared.note_refusal(message);
            }
        }
    }
}

/// Whether `peer` is a running member in this node's view, waiting (up to
/// `inbound_wait`) for a view that shows a peer that just joined.
async fn admitted(shared: &Shared, views: &mut watch::Receiver<Arc<ClusterView>>, peer: &str) -> bool {
    let admitted = {
        let wait = views.wait_for(|v| peer_admitted(v, peer).is_ok());
        matches!(tokio::time::timeout(shared.tuning.inbound_wait, wait).await, Ok(Ok(_)))
    };
    if !admitted && let Err(refusal) = peer_admitted(&views.borrow(), peer) {
        tracing::warn!(%peer, %refusal, "closing a link from a peer that is not a running member");
    }
    admitted
}

async fn serve_connection(shared: Arc<Shared>, conn: Connection<Msg>) {
    let (tx, mut rx) = conn.split();
    let peer = tx.negotiated().peer_node_id.clone();
    let protocol = tx.negotiated().protocol;
    let permits = Arc::new(Semaphore::new(shared.tuning.max_inflight_per_connection.max(1)));
    let budget = shared.tuning.max_inflight_bytes_per_connection.clamp(1, u32::MAX as usize);
    let bytes = Arc::new(Semaphore::new(budget));
    let mut requests = JoinSet::new();
    let mut views = shared.views.clone();
    let mut member = admitted(&shared, &mut views, &peer).await;
    while member {
        let received = tokio::select! {
            r = rx.recv() => r,
            changed = views.changed() => {
                member = changed.is_ok() && admitted(&shared, &mut views, &peer).await;
                continue;
            }
        };
        let msg = match received {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "peer connection ended");
                break;
            }
        };
        while requests.try_join_next().is_some() {}
        match codec::from_wire(msg) {
            Incoming::Request(req) => {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                // A request larger than the whole budget waits for all of it.
                let size = request_bytes(&req).clamp(1, budget) as u32;
                let Ok(held) = bytes.clone().acquire_many_owned(size).await else { break };
                requests.spawn(handle(shared.clone(), tx.clone(), peer.clone(), protocol, req, (permit, held)));
            }
            Incoming::Response(_) => {
                tracing::warn!(%peer, "peer sent an answer on its own connection: protocol violation, closing");
                break;
            }
        }
    }
    // Let answers already computed go out, then close.
    while requests.join_next().await.is_some() {}
    let _ = tx.close().await;
}

async fn handle(
    shared: Arc<Shared>,
    tx: net::Sender<Msg>,
    peer: String,
    protocol: ProtocolVersion,
    req: Request,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
) {
    let resp = match req {
        Request::Replicate(m) => {
            Response::Ack(repl1::Ack { req_id: m.req_id, error: store(&shared, vec![m.entry]).await })
        }
        Request::ReplicateBatch(m) => {
            // (Over MAX_BATCH_ENTRIES the frame does not even decode.)
            Response::Ack(repl1::Ack { req_id: m.req_id, error: store(&shared, m.entries).await })
        }
        Request::Sync(m) => Response::SyncChunk(sync_chunk(&shared, &peer, m).await),
        Request::Digest(m) => Response::Digest(digests(&shared, &peer, m).await),
        Request::Read(m) => Response::Read(super::read::serve_read(&shared, m).await),
    };
    match codec::response_to_wire(protocol, resp) {
        Ok(msg) => {
            if let Err(e) = tx.send(msg).await {
                tracing::debug!(%peer, error = %e, "answer not sent");
            }
        }
        Err(e) => tracing::error!(%peer, error = %e, "cannot answer in the connection's protocol"),
    }
}

/// The bytes a request holds while it is handled: its keys and values (and
/// a fixed cost per entry and per request).
pub(crate) fn request_bytes(req: &Request) -> usize {
    const OVERHEAD: usize = 64;
    let entry = |e: &repl1::Entry| {
        OVERHEAD
            + e.key.len()
            + match &e.value {
                repl1::Value::Put(v) => v.len(),
                repl1::Value::Tombstone => 0,
            }
    };
    OVERHEAD
        + match req {
            Request::Replicate(m) => entry(&m.entry),
            Request::ReplicateBatch(m) => m.entries.iter().map(entry).sum(),
            Request::Sync(_) | Request::Digest(_) => 0,
            Request::Read(m) => m.key.len(),
        }
}

/// Stores replicated writes; `Some(reason)` when they were not all stored
/// as their keys' values, so that the coordinator does not count this node
/// for any of them:
///
/// - a version beyond the drift bound (the coordinator's clock is ahead, see
///   `node::clock`) refuses the whole batch, nothing of it stored;
/// - an entry whose key already holds a newer version is superseded (the
///   other entries are stored); the error names the newer version
///   ([`NEWER_VERSION`]), so the coordinator's clock moves above it.
async fn store(shared: &Shared, entries: Vec<repl1::Entry>) -> Option<String> {
    let entries: Vec<StoredEntry> = entries.into_iter().map(codec::entry_from_wire).collect();
    for e in &entries {
        if let Err(refused) = shared.clock.check_version(&e.record.version) {
            return Some(format!("key {:?}: {refused}; nothing of this batch was stored", shorten(&e.key)));
        }
    }
    let audited =
        shared.audit.as_ref().filter(|a| a.state() == crate::plugins::PluginState::Running).map(|_| entries.clone());
    let applied = match shared.storage.apply(entries.clone()).await {
        Ok(applied) => applied,
        Err(e) => return Some(e.to_string()),
    };
    for e in &entries {
        shared.hlc.observe(&e.record.version);
    }
    if let (Some(audit), Some(audited)) = (&shared.audit, audited) {
        for (e, a) in audited.iter().zip(&applied) {
            if *a == Applied::Stored {
                audit.note(&e.key, &e.record, "replica");
            }
        }
    }
    let superseded: Vec<&StoredEntry> =
        entries.iter().zip(&applied).filter(|(_, a)| **a == Applied::Superseded).map(|(e, _)| e).collect();
    if superseded.is_empty() {
        return None;
    }
    let mut named = Vec::new();
    for e in superseded.iter().take(4) {
        let held =
            shared.storage.get(&e.key).await.ok().flatten().map_or_else(|| "?".into(), |r| r.version.to_string());
        named.push(format!("key {:?} {NEWER_VERSION}{held} than {}", shorten(&e.key), e.record.version));
    }
    Some(format!(
        "superseded: {}{}; the other {} entries were stored",
        named.join(", "),
        if superseded.len() > named.len() {
            format!(" and {} more", superseded.len() - named.len())
        } else {
            String::new()
        },
        entries.len() - superseded.len()
    ))
}

fn shorten(key: &str) -> String {
    rollgate::util::shorten_to(key, 96)
}

fn check_bound(what: &str, key: &Option<String>) -> Result<(), String> {
    match key {
        Some(k) if k.len() > MAX_KEY_BYTES => {
            Err(format!("{what} is {} bytes, longer than any key ({MAX_KEY_BYTES})", k.len()))
        }
        _ => Ok(()),
    }
}

/// The start of a pull from `peer`: once our own link to it is up (so our
/// new writes reach it) and every write queued before now is durable,
/// whatever it reads from us next includes every write it will not get
/// from us by replication.
async fn pull_barrier(shared: &Shared, peer: &str) -> Result<(), String> {
    if let Err(e) = shared.links.wait_up(peer, shared.tuning.inbound_wait).await {
        tracing::debug!(%peer, error = %e, "serving a pull before our link to the puller is up");
    }
    shared.storage.barrier().await.map_err(|e| e.to_string())
}

async fn sync_chunk(shared: &Shared, peer: &str, m: repl1::SyncRequest) -> repl1::SyncChunk {
    let fail =
        |error: String| repl1::SyncChunk { req_id: m.req_id, entries: Vec::new(), done: true, error: Some(error) };
    if let Err(e) = check_bound("after_key", &m.after_key).and_then(|_| check_bound("end_key", &m.end_key)) {
        return fail(e);
    }
    if m.after_key.is_none()
        && let Err(e) = pull_barrier(shared, peer).await
    {
        return fail(e);
    }
    let limit = m.limit.clamp(1, MAX_SYNC_ENTRIES);
    let max_bytes = if m.max_bytes == 0 { DEFAULT_SYNC_BYTES } else { m.max_bytes.min(MAX_SYNC_BYTES) };
    let range = KeyRange { after: m.after_key, through: m.end_key };
    match shared.storage.scan(range, limit as usize, max_bytes as usize).await {
        Ok(chunk) => repl1::SyncChunk {
            req_id: m.req_id,
            entries: chunk.entries.into_iter().map(codec::entry_to_wire).collect(),
            done: chunk.done,
            error: None,
        },
        Err(e) => fail(e.to_string()),
    }
}

async fn digests(shared: &Shared, peer: &str, m: digest::DigestRequest) -> digest::DigestReply {
    let fail = |error: String| digest::DigestReply { req_id: m.req_id, digests: Vec::new(), error: Some(error) };
    if m.ranges.len() > digest::MAX_RANGES {
        return fail(format!("{} ranges requested, over the limit of {}", m.ranges.len(), digest::MAX_RANGES));
    }
    for r in &m.ranges {
        if let Err(e) = check_bound("after", &r.after).and_then(|_| check_bound("through", &r.through)) {
            return fail(e);
        }
    }
    if let Err(e) = pull_barrier(shared, peer).await {
        return fail(e);
    }
    let ranges = m.ranges.into_iter().map(codec::range_from_wire).collect();
    match shared.storage.digests(ranges).await {
        Ok(d) => digest::DigestReply {
            req_id: m.req_id,
            digests: d.into_iter().map(codec::digest_to_wire).collect(),
            error: None,
        },
        Err(e) => fail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::{MAX_FORWARD_DRIFT_MS, Version};
    use crate::node::testing;
    use crate::record::Record;

    const DAY_MS: u64 = 86_400_000;

    /// I10: a replica stores a peer's version as it comes. A write from a
    /// peer whose clock is a day ahead must be clamped to this node's wall
    /// clock plus [`MAX_FORWARD_DRIFT_MS`], or refused (and then not
    /// stored): otherwise it outranks every write the honest nodes make for
    /// a day, and those are acknowledged yet invisible.
    #[tokio::test]
    async fn a_replicated_version_beyond_the_drift_bound_is_clamped_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let node = testing::single_node(dir.path()).await;
        let shared = testing::shared(&node);
        let ahead =
            Version { wall_ms: rollgate::cluster::now_ms() + DAY_MS, logical: 0, node: "peer-a-day-ahead".into() };
        let record = Record {
            version: ahead.clone(),
            value: Some(b"v".to_vec()),
            expires_at_ms: 0,
            features: Default::default(),
        };
        let entry = codec::entry_to_wire(StoredEntry { key: "k".into(), record });
        let refused = store(shared, vec![entry]).await;
        let stored = shared.storage.get("k").await.unwrap();
        let bound = rollgate::cluster::now_ms() + MAX_FORWARD_DRIFT_MS;
        let what = format!(
            "replicating {ahead} (a day ahead) answered {refused:?} and stored {:?}; now + the drift bound is {bound}",
            stored.as_ref().map(|r| r.version.to_string())
        );
        node.stop().await.unwrap();
        match (&refused, &stored) {
            (Some(_), None) => {}                               // refused, nothing stored
            (None, Some(r)) if r.version.wall_ms <= bound => {} // clamped
            _ => panic!("{what}"),
        }
    }

    /// A replica that already holds a newer version of a key must not
    /// acknowledge an older write to it as stored: the coordinator would
    /// count it towards a majority, and acknowledge a write that is not the
    /// key's value anywhere. It answers an error naming the newer version.
    #[tokio::test]
    async fn a_replica_holding_a_newer_version_does_not_acknowledge_an_older_write() {
        let dir = tempfile::tempdir().unwrap();
        let node = testing::single_node(dir.path()).await;
        let shared = testing::shared(&node);
        let now = rollgate::cluster::now_ms();
        let record = |wall_ms: u64, value: &[u8]| Record {
            version: Version { wall_ms, logical: 0, node: "peer".into() },
            value: Some(value.to_vec()),
            expires_at_ms: 0,
            features: Default::default(),
        };
        shared.storage.apply(vec![StoredEntry { key: "k".into(), record: record(now, b"newer") }]).await.unwrap();
        let older = StoredEntry { key: "k".into(), record: record(now - 5_000, b"older") };
        let other = StoredEntry { key: "other".into(), record: record(now, b"v") };
        let answer = store(shared, vec![codec::entry_to_wire(older), codec::entry_to_wire(other)]).await;
        let held = shared.storage.get("k").await.unwrap().unwrap();
        let stored_other = shared.storage.get("other").await.unwrap();
        node.stop().await.unwrap();
        let error = answer.expect("the older write was acknowledged as stored");
        assert!(error.contains(&format!("newer version {}", held.version)), "{error}");
        assert_eq!(held.value.as_deref(), Some(&b"newer"[..]));
        assert!(stored_other.is_some(), "the batch's other entry is stored");
    }
}
