//! Catch-up: pulling a peer's entries into this node.
//!
//! - With a peer that speaks protocol v3, by **digest ranges**: this node
//!   splits its keys into ranges of `digest_range_keys`, asks the peer for
//!   the count and hash of each range, and copies only the ranges that
//!   differ (each run of adjacent ones as one range).
//! - Otherwise, by a **full sync**: every entry, in key order, in chunks.
//!
//! Entries are stored with last-writer-wins, so pulling is idempotent and
//! order-free, and replication arriving at the same time is never undone.
//!
//! At start ([`initial`]) a node waits (bounded) until every running peer
//! connected to it, then pulls from all of them at once and only then
//! serves. Later, every time a peer connects to a ready node, the node pulls
//! from it in the background ([`trigger_resync`]), once that peer serves (a
//! restarted peer connects before it caught up). Pulled entries are queued
//! behind client writes (see `storage::writer`).
//!
//! A peer serving a pull first waits until its own link to the puller is up
//! and every write queued before is durable (the pull barrier in
//! `node::serve`), so a write either is in what the puller reads or is sent
//! to it. Known limit: a write still in flight between two other nodes while
//! a third catches up, followed by the crash of its coordinator, reaches the
//! third only at its next pull.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::shared::{ServingState, Shared, SyncStats};
use crate::digest::v1 as digest;
use crate::peer::codec::{self, Request, Response};
use crate::peer::link::{LinkError, Session};
use crate::replication::{self, v1 as repl1};
use crate::storage::{KeyRange, StorageError};

/// Pulled entries per job queued in the data file: a group commit that
/// carries client writes takes at most this many pulled entries along (see
/// `storage::writer`); one without takes as many as a commit may hold.
pub const SYNC_APPLY_ENTRIES: usize = 64;

/// A digest comparison (see [`crate::node::NodeHandle::compare_with`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// Ranges compared.
    pub ranges: usize,
    /// The ranges whose count or hash differ, as `(after, through]`.
    pub differing: Vec<(Option<String>, Option<String>)>,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatchUpError {
    /// The link to the peer.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// This node's data file.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The peer answered with an error or nonsense.
    #[error("node {node}: {reason}")]
    Peer {
        /// The peer.
        node: String,
        /// What it said or did.
        reason: String,
    },
    /// Digest comparison needs protocol v3.
    #[error("node {node} speaks protocol v{protocol} with this node; digest ranges need v3")]
    NoDigests {
        /// The peer.
        node: String,
        /// The connection's protocol.
        protocol: u16,
    },
    /// The pull took too long.
    #[error("pulling from node {node} took longer than {after_ms} ms")]
    Timeout {
        /// The peer.
        node: String,
        /// The limit.
        after_ms: u64,
    },
}

/// The start-up catch-up; marks the node ready at the end.
pub(super) async fn initial(shared: Arc<Shared>) {
    let view = shared.view();
    let peers: Vec<String> =
        view.running().map(|m| m.record.node_id.clone()).filter(|id| *id != shared.node_id).collect();
    if peers.is_empty() {
        tracing::info!(node = %shared.node_id, "no running peers: nothing to catch up from");
    } else {
        tracing::info!(node = %shared.node_id, peers = ?peers, "catching up");
    }
    let pulls = peers.iter().map(|peer| {
        let shared = shared.clone();
        async move {
            wait_inbound(&shared, peer, shared.tuning.inbound_wait).await;
            for attempt in 1..=3 {
                match pull(&shared, peer).await {
                    Ok(stats) => {
                        tracing::info!(node = %shared.node_id, ?stats, "caught up from peer");
                        return;
                    }
                    Err(CatchUpError::Link(
                        e @ (LinkError::Refused { .. } | LinkError::Unreachable { .. } | LinkError::NoLink { .. }),
                    )) => {
                        tracing::warn!(node = %shared.node_id, %peer, error = %e, "not catching up from this peer");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(node = %shared.node_id, %peer, attempt, error = %e, "catch-up from peer failed")
                    }
                }
            }
        }
    });
    futures::future::join_all(pulls).await;
    // The peers' clocks before the first client write: a node whose clock
    // is off must not stamp one (see `node::clock`).
    super::clock_task::read_once(&shared).await;
    if shared.state() == ServingState::CatchingUp {
        shared.set_state(ServingState::Ready);
    }
}

/// Waits (at most `timeout`) until `peer` has connected to this node.
async fn wait_inbound(shared: &Shared, peer: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = shared.inbound_notify.notified();
        if shared.has_inbound(peer) {
            return;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            tracing::info!(node = %shared.node_id, %peer, "the peer has not connected to this node yet; pulling anyway");
            return;
        }
    }
}

/// Pulls from `peer` in the background (once at a time per peer; a trigger
/// while one runs runs it again after).
pub(super) fn trigger_resync(shared: &Arc<Shared>, peer: String) {
    {
        let mut running = shared.resyncs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(again) = running.get_mut(&peer) {
            *again = true;
            return;
        }
        running.insert(peer.clone(), false);
    }
    let s = shared.clone();
    shared.spawn_background(async move {
        loop {
            until_serving(&s, &peer).await;
            match pull(&s, &peer).await {
                Ok(stats) => tracing::debug!(node = %s.node_id, ?stats, "background pull done"),
                Err(e) => tracing::info!(node = %s.node_id, %peer, error = %e, "background pull failed"),
            }
            let mut running = s.resyncs.lock().unwrap_or_else(|p| p.into_inner());
            match running.get_mut(&peer) {
                Some(again) if *again => *again = false,
                _ => {
                    running.remove(&peer);
                    return;
                }
            }
        }
    });
}

/// Longest wait for a peer's `/health`, and most bytes read of it.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEALTH_BYTES: usize = 64 << 10;

/// Waits (at most `catch_up_timeout`) until `peer` serves, asking its
/// `/health` at a growing interval. A peer that restarted and is catching
/// up holds less than this node: pulling from it then copies back the
/// stale entries it is replacing, and loads both while this node carries
/// client load. Once it serves it holds what this node holds and what only
/// it had, which is what the pull is for. A peer that does not say (no
/// answer, another release's health) is pulled from at once.
async fn until_serving(shared: &Shared, peer: &str) {
    let deadline = tokio::time::Instant::now() + shared.tuning.catch_up_timeout;
    let mut every = Duration::from_millis(20);
    while peer_state(shared, peer).await.as_deref() == Some(ServingState::CatchingUp.as_str()) {
        if tokio::time::Instant::now() + every > deadline {
            tracing::info!(node = %shared.node_id, %peer, "the peer is still catching up; pulling from it anyway");
            return;
        }
        tokio::time::sleep(every).await;
        every = (every * 2).min(Duration::from_millis(250));
    }
}

/// The serving state `peer` reports on its `/health`, if it says.
async fn peer_state(shared: &Shared, peer: &str) -> Option<String> {
    let addr = shared.view().member(peer)?.record.admin_addr.clone();
    let http = &shared.clock_http;
    let url = reqwest::Url::parse(&format!("{}://{addr}/health", http.scheme())).ok()?;
    let read = async {
        let mut resp = http.client().get(url).send().await.ok()?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.ok()? {
            if body.len() + chunk.len() > MAX_HEALTH_BYTES {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        Some(body)
    };
    let body = tokio::time::timeout(HEALTH_TIMEOUT, read).await.ok()??;
    let health: serde_json::Value = serde_json::from_slice(&body).ok()?;
    health.get("state")?.as_str().map(str::to_string)
}

/// One pull from `peer`, bounded by `catch_up_timeout`.
pub(super) async fn pull(shared: &Shared, peer: &str) -> Result<SyncStats, CatchUpError> {
    let limit = shared.tuning.catch_up_timeout;
    let work = async {
        let session = shared.links.wait_up(peer, shared.tuning.connect_wait).await?;
        let mut stats = SyncStats { peer: peer.to_string(), protocol: session.protocol().0, ..SyncStats::default() };
        if codec::has_digests(session.protocol()) {
            digest_sync(shared, &session, &mut stats).await?;
        } else {
            stats.ranges = 1;
            range_sync(shared, &session, &KeyRange::default(), &mut stats).await?;
        }
        shared.sync_stats.send_modify(|all| {
            stats.pulls = all.get(peer).map_or(0, |s| s.pulls) + 1;
            all.insert(peer.to_string(), stats.clone());
        });
        Ok(stats)
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => Err(CatchUpError::Timeout { node: peer.to_string(), after_ms: limit.as_millis() as u64 }),
    }
}

/// The digests of `ranges` on the peer.
async fn peer_digests(
    shared: &Shared,
    session: &Session,
    ranges: Vec<KeyRange>,
) -> Result<Vec<crate::storage::RangeDigest>, CatchUpError> {
    let node = session.negotiated().peer_node_id.clone();
    let n = ranges.len();
    let ranges = ranges.into_iter().map(codec::range_to_wire).collect();
    let resp = session
        .call(|req_id| Request::Digest(digest::DigestRequest { req_id, ranges }), shared.tuning.request_timeout)
        .await?;
    let Response::Digest(reply) = resp else {
        return Err(LinkError::Unexpected { node, expected: "DigestRequest" }.into());
    };
    if let Some(reason) = reply.error {
        return Err(CatchUpError::Peer { node, reason });
    }
    if reply.digests.len() != n {
        return Err(CatchUpError::Peer {
            node,
            reason: format!("answered {} digests for {n} ranges", reply.digests.len()),
        });
    }
    Ok(reply.digests.into_iter().map(codec::digest_from_wire).collect())
}

async fn digest_sync(shared: &Shared, session: &Session, stats: &mut SyncStats) -> Result<(), CatchUpError> {
    stats.digests = true;
    let local = shared.storage.local_ranges(shared.tuning.digest_range_keys).await?;
    stats.ranges = local.len();
    // A run of adjacent differing ranges is copied as one range (the local
    // ranges are contiguous, in key order): in chunks of `sync_chunk_entries`
    // rather than one round trip per range.
    let mut run: Option<KeyRange> = None;
    for group in local.chunks(digest::MAX_RANGES) {
        let theirs = peer_digests(shared, session, group.iter().map(|(r, _)| r.clone()).collect()).await?;
        for ((range, mine), theirs) in group.iter().zip(theirs) {
            if *mine == theirs {
                stats.ranges_skipped += 1;
                if let Some(differing) = run.take() {
                    range_sync(shared, session, &differing, stats).await?;
                }
            } else {
                run = Some(match run.take() {
                    Some(r) => KeyRange { after: r.after, through: range.through.clone() },
                    None => range.clone(),
                });
            }
        }
    }
    if let Some(differing) = run {
        range_sync(shared, session, &differing, stats).await?;
    }
    Ok(())
}

/// Copies the peer's entries of `range` (in key order, chunk by chunk). A
/// chunk's entries are queued in the data file as pulled entries (behind
/// client writes, see `storage::writer`) while the next chunk is asked for.
async fn range_sync(
    shared: &Shared,
    session: &Session,
    range: &KeyRange,
    stats: &mut SyncStats,
) -> Result<(), CatchUpError> {
    let node = session.negotiated().peer_node_id.clone();
    if range.through.is_some() && !replication::carries_sync_end(session.negotiated().transport) {
        tracing::debug!(peer = %node, "the peer's transport version does not carry the range end: dropping entries past it");
    }
    let mut after = range.after.clone();
    let mut queued: Option<Queued> = None;
    loop {
        let request = repl1::SyncRequest {
            req_id: 0,
            after_key: after.clone(),
            limit: shared.tuning.sync_chunk_entries,
            end_key: range.through.clone(),
            max_bytes: shared.tuning.sync_chunk_bytes,
        };
        let resp = session
            .call(|req_id| Request::Sync(repl1::SyncRequest { req_id, ..request }), shared.tuning.request_timeout)
            .await?;
        let Response::SyncChunk(chunk) = resp else {
            return Err(LinkError::Unexpected { node, expected: "SyncRequest" }.into());
        };
        if let Some(reason) = chunk.error {
            return Err(CatchUpError::Peer { node, reason });
        }
        stats.sync_requests += 1;
        let received = chunk.entries.len();
        let (entries, passed_end) = within_range(&node, range, after.as_deref(), chunk.entries)?;
        stats.entries_received += received as u64;
        let last = entries.last().map(|e| e.key.clone());
        let entries = within_drift_bound(shared, &node, entries, stats);
        let next = queue(shared, entries).await?;
        if let Some(previous) = queued.replace(next) {
            previous.settle(shared, stats).await?;
        }
        if chunk.done || passed_end || received == 0 {
            if let Some(last) = queued.take() {
                last.settle(shared, stats).await?;
            }
            return Ok(());
        }
        after = last;
    }
}

/// A chunk's entries up to the end of `range`, checked to ascend strictly
/// past `after` (or a broken peer could loop us forever); true when the
/// chunk went past the end (a peer below `sync_range_end` does not see it).
fn within_range(
    node: &str,
    range: &KeyRange,
    after: Option<&str>,
    chunk: Vec<repl1::Entry>,
) -> Result<(Vec<crate::storage::StoredEntry>, bool), CatchUpError> {
    let mut entries = Vec::with_capacity(chunk.len());
    for e in chunk {
        let prev = entries.last().map(|p: &crate::storage::StoredEntry| p.key.as_str()).or(after);
        if prev.is_some_and(|p| e.key.as_str() <= p) {
            let reason = "sync entries are not in ascending key order".to_string();
            return Err(CatchUpError::Peer { node: node.to_string(), reason });
        }
        if !range.contains(&e.key) {
            return Ok((entries, true));
        }
        entries.push(codec::entry_from_wire(e));
    }
    Ok((entries, false))
}

/// Pulled entries queued in the data file, not yet known to be stored.
struct Queued {
    parts: Vec<crate::storage::PendingApply>,
    versions: Vec<crate::hlc::Version>,
}

/// Queues `entries` as pulled entries, in parts of [`SYNC_APPLY_ENTRIES`]
/// (the most a client write's group commit takes along).
async fn queue(shared: &Shared, entries: Vec<crate::storage::StoredEntry>) -> Result<Queued, CatchUpError> {
    let versions = entries.iter().map(|e| e.record.version.clone()).collect();
    let mut parts = Vec::new();
    let mut rest = entries;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(SYNC_APPLY_ENTRIES));
        parts.push(shared.storage.submit_pulled(rest).await?);
        rest = tail;
    }
    Ok(Queued { parts, versions })
}

impl Queued {
    /// Waits until the entries are stored, and counts them.
    async fn settle(self, shared: &Shared, stats: &mut SyncStats) -> Result<(), CatchUpError> {
        for part in self.parts {
            let applied = part.wait().await?;
            stats.entries_stored += applied.iter().filter(|a| **a == crate::storage::Applied::Stored).count() as u64;
        }
        for v in &self.versions {
            shared.hlc.observe(v);
        }
        Ok(())
    }
}

/// The entries whose versions this node may store (see `node::clock`);
/// the others are counted, and the first of a pull is logged.
fn within_drift_bound(
    shared: &Shared,
    peer: &str,
    entries: Vec<crate::storage::StoredEntry>,
    stats: &mut SyncStats,
) -> Vec<crate::storage::StoredEntry> {
    entries
        .into_iter()
        .filter(|e| match shared.clock.check_version(&e.record.version) {
            Ok(()) => true,
            Err(refused) => {
                if stats.entries_refused == 0 {
                    tracing::warn!(
                        node = %shared.node_id, %peer, key = %e.key, error = %refused,
                        "not pulling entries beyond the drift bound (more may follow; SyncStats counts them)"
                    );
                }
                stats.entries_refused += 1;
                false
            }
        })
        .collect()
}

/// Compares this node's ranges with `peer`'s digests (protocol v3).
pub(super) async fn compare(shared: &Shared, peer: &str) -> Result<Comparison, CatchUpError> {
    let session = shared.links.wait_up(peer, shared.tuning.connect_wait).await?;
    if !codec::has_digests(session.protocol()) {
        return Err(CatchUpError::NoDigests { node: peer.to_string(), protocol: session.protocol().0 });
    }
    let local = shared.storage.local_ranges(shared.tuning.digest_range_keys).await?;
    let mut out = Comparison { ranges: local.len(), differing: Vec::new() };
    for group in local.chunks(digest::MAX_RANGES) {
        let theirs = peer_digests(shared, &session, group.iter().map(|(r, _)| r.clone()).collect()).await?;
        for ((range, mine), theirs) in group.iter().zip(theirs) {
            if *mine != theirs {
                out.differing.push((range.after.clone(), range.through.clone()));
            }
        }
    }
    Ok(out)
}
