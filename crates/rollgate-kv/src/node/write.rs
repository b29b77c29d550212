//! The coordinator's write path (reads are in `read`).
//!
//! A write (put or delete) on node N:
//!
//! 1. is checked by [`crate::policy::check_write`] (a TTL needs flag `ttl`:
//!    one atomic load), the key and value limits, and N's state (503 while
//!    catching up);
//! 2. is refused up front, with nothing stored, when N and its connected
//!    peers cannot make a majority of the registered members;
//! 3. gets a version from N's clock and a feature map (`meta@1`; `meta@2`
//!    and `checksum@1` only once their flags are enabled, through the gated
//!    setter: I1), and is queued for N's next group commit
//!    **before** the set of peers to replicate to is taken (so a peer whose
//!    link comes up later and pulls from N finds it; see `serve`);
//! 4. is sent to every connected member (batched per peer);
//! 5. is acknowledged once N stored it durably and enough peers did for a
//!    majority of the registered members (running or stopped), or fails with
//!    a 503 naming how many stored it, after `write_timeout` at most.
//!
//! A write that fails after step 3 may still be stored on some nodes (as
//! with any replicated store without transactions); a retry writes it again
//! with a newer version.
//!
//! The version comes from N's hybrid logical clock ([`crate::hlc`]: wall ms,
//! logical counter, node id), first moved above the client's `x-kv-seen`
//! (the highest version that client saw), so one client's consecutive writes
//! to a key keep their order whichever nodes take them. Replicas store with
//! last-writer-wins by version, so order and repetition do not matter; the
//! same version with and without an expiry keeps the expiry, and a copy of
//! the same version never replaces the stored one otherwise (so a
//! migration's `meta@2`, or its removal, is not undone by a peer's older
//! copy). Per peer, writes queue and the batcher sends what accumulated while
//! at most 4 requests were in flight: one `ReplicateBatch` on v2 and v3; on
//! v1, one `Replicate` per write, as many in flight as 4 batches would carry.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use super::clock::{self, ClockStatus};
use super::shared::{ServingState, Shared};
use crate::hlc::Version;
use crate::peer::codec;
use crate::policy::{self, PolicyError, WriteRequest};
use crate::record::{self, MAX_VALUE_BYTES, Record, RecordError, WriteContext};
use crate::storage::{Applied, PendingApply, StorageError, StoredEntry};

/// An acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WriteOutcome {
    /// The key.
    pub key: String,
    /// The write's version.
    pub version: String,
    /// Members that stored it durably when it was acknowledged (this node included).
    pub acks: usize,
    /// Registered members (running or stopped).
    pub members: usize,
    /// The majority needed.
    pub quorum: usize,
}

/// Why a read or write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The node does not serve yet (or any more).
    #[error("node {node} is {}: {}", state.as_str(), match state {
        ServingState::CatchingUp => "it is catching up from its peers after a start; retry shortly or use another node",
        _ => "it is stopping; use another node",
    })]
    NotReady {
        /// The node.
        node: String,
        /// Its state.
        state: ServingState,
    },
    /// The node may not serve (fail closed: it cannot confirm its
    /// membership or its flag view).
    #[error("node {node} does not serve now: {reason}; retry shortly or use another node")]
    NotServing {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// Refused by the write policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The key is not acceptable.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why.
        reason: String,
        /// Whether it is refused for its size (413) rather than its content (400).
        too_long: bool,
    },
    /// The value is too large.
    #[error("the value is {len} bytes, over the limit of {max}")]
    ValueTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A majority of the members could not be reached or did not store it in time.
    #[error(
        "no majority: {stored} of {members} members stored the write, {quorum} are needed{}{}",
        if unreachable.is_empty() { String::new() } else { format!("; not connected: {}", unreachable.join(", ")) },
        if errors.is_empty() { String::new() } else { format!("; failed: {}", errors.join("; ")) }
    )]
    NoQuorum {
        /// Members that stored it (0 when refused up front: nothing was written).
        stored: usize,
        /// Registered members.
        members: usize,
        /// The majority needed.
        quorum: usize,
        /// Members this node has no connection to.
        unreachable: Vec<String>,
        /// What went wrong with the connected ones.
        errors: Vec<String>,
    },
    /// The local data file failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored value fails its checksum (`checksum@1`).
    #[error(transparent)]
    Corrupt(#[from] RecordError),
    /// This node's clock is off (see `node::clock`): it does not coordinate
    /// the write (or judge the expiry of a value), another node may.
    #[error("node {node} refuses: {reason}; use another node")]
    ClockSkew {
        /// The node.
        node: String,
        /// What is off, by how much, and the fix.
        reason: String,
    },
    /// This node holds an older version of the key than the client has
    /// seen (`x-kv-after`), and it did not arrive in time: another node
    /// holds it (see `node::read`).
    #[error(
        "node {node} holds {} of {key:?}, older than version {after} the client has seen, and it did not arrive within \
         {waited_ms} ms; read through another node (a majority holds it)",
        holds.as_deref().map(|h| format!("version {h}")).unwrap_or_else(|| "no version".into())
    )]
    Behind {
        /// The node.
        node: String,
        /// The key.
        key: String,
        /// The version the client has seen.
        after: String,
        /// The version this node holds.
        holds: Option<String>,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The version a client says it has seen (`x-kv-after`) is not one this cluster made.
    #[error("header x-kv-after: {reason}")]
    InvalidAfter {
        /// Why.
        reason: String,
    },
    /// A linearizable read could not hear from a majority of the members
    /// (on protocol v4), or could not write the newest record back to one.
    #[error(transparent)]
    NoReadQuorum(Box<NoReadQuorum>),
    /// The key already holds a newer version than the write's (a concurrent
    /// write, or one from a node whose clock is ahead): the write is not
    /// acknowledged. A retry gets a version above the newer one.
    #[error(
        "the write to {key:?} (version {version}) was superseded{}: not stored as the key's value; retry it",
        newer.as_deref().map(|n| format!(" by version {n} held by a member")).unwrap_or_default()
    )]
    Superseded {
        /// The key.
        key: String,
        /// The write's version.
        version: String,
        /// The newer version, when known.
        newer: Option<String>,
    },
}

/// Why a linearizable read found no majority (see `node::read`).
#[derive(Debug, thiserror::Error)]
#[error(
    "no majority for a linearizable read on node {node}: {answered} of {members} members answered, {quorum} are \
     needed ({on_v4} connected peer(s) speak protocol v4){}{}{}",
    if older.is_empty() { String::new() } else {
        format!("; on an older protocol, which has no quorum reads (upgrade them to release 2.0 or later): {}", older.join(", "))
    },
    if unreachable.is_empty() { String::new() } else { format!("; not connected: {}", unreachable.join(", ")) },
    if errors.is_empty() { String::new() } else { format!("; failed: {}", errors.join("; ")) }
)]
pub struct NoReadQuorum {
    /// The node.
    pub node: String,
    /// Members that answered (this node included).
    pub answered: usize,
    /// Registered members.
    pub members: usize,
    /// The majority needed.
    pub quorum: usize,
    /// Connected peers on protocol v4.
    pub on_v4: usize,
    /// Connected peers on an older protocol.
    pub older: Vec<String>,
    /// Members this node has no connection to.
    pub unreachable: Vec<String>,
    /// What went wrong with the others.
    pub errors: Vec<String>,
}

/// What a replica answers (in its error) for an entry it holds a newer
/// version of: `... holds newer version VERSION ...`; the coordinator reads
/// the version back to move its clock above it.
pub(super) const NEWER_VERSION: &str = "holds newer version ";

/// The versions named after [`NEWER_VERSION`] in replicas' errors.
fn newer_versions(errors: &[String]) -> Vec<Version> {
    errors
        .iter()
        .flat_map(|e| e.split(NEWER_VERSION).skip(1))
        .filter_map(|rest| rest.split(|c: char| c.is_whitespace() || c == ';' || c == ',').next()?.parse().ok())
        .collect()
}

pub(super) fn require_ready(shared: &Shared) -> Result<(), WriteError> {
    match shared.state() {
        ServingState::Ready => {}
        state => return Err(WriteError::NotReady { node: shared.node_id.clone(), state }),
    }
    // I11: a node that cannot confirm its membership and flag view refuses requests.
    match shared.runtime() {
        Some(node) if !*node.serving().borrow() => Err(WriteError::NotServing {
            node: shared.node_id.clone(),
            reason: node.fence_reason().map_or_else(|| "it is starting".to_string(), |r| r.to_string()),
        }),
        _ => Ok(()),
    }
}

pub(super) fn check_key(key: &str) -> Result<(), WriteError> {
    record::check_key(key)
        .map_err(|reason| WriteError::InvalidKey { reason, too_long: key.len() > record::MAX_KEY_BYTES })
}

/// While the running clocks disagree and nothing says which is right, a
/// node cannot tell whether a value with a TTL has expired: it refuses.
pub(super) fn judge_expiry(shared: &Shared, what: &str) -> Result<(), WriteError> {
    match shared.clock.status() {
        status @ ClockStatus::Ambiguous { .. } => Err(WriteError::ClockSkew {
            node: shared.node_id.clone(),
            reason: format!(
                "it cannot tell whether {what} expired: {}",
                clock::describe(status, shared.clock.bound_ms())
            ),
        }),
        _ => Ok(()),
    }
}

/// Writes `value` (`None`: deletes) under `key`; see the module docs.
pub(super) async fn write(
    shared: &Shared,
    key: String,
    value: Option<Vec<u8>>,
    ttl_s: Option<u64>,
    seen: Option<&Version>,
) -> Result<WriteOutcome, WriteError> {
    check_write(shared, &key, value.as_deref(), ttl_s)?;
    let members = Members::of(shared);
    let up = members.connected();
    if 1 + up.len() < members.quorum {
        return Err(members.no_quorum(&up, 0, Vec::new()));
    }
    let entry = stamp(shared, key.clone(), value, ttl_s, seen)?;
    check_version(shared, &members, &up, &entry.record.version)?;
    // Queue locally first, then take the peers to send to (see the module docs).
    let local = shared.storage.submit(vec![entry.clone()]).await?;
    let mut errors = Vec::new();
    let remote = replicate(shared, &members, &entry, &mut errors);
    let acks = gather_acks(shared, members.quorum, local, remote, &mut errors).await?;
    // A newer version a replica named (one this node would store itself):
    // later writes are stamped above it.
    for newer in newer_versions(&errors) {
        if shared.clock.check_version(&newer).is_ok() {
            shared.hlc.observe(&newer);
        }
    }
    if acks.superseded {
        return Err(superseded(shared, &entry).await);
    }
    if !acks.majority {
        let up = members.connected();
        return Err(members.no_quorum(&up, acks.stored, errors));
    }
    if let Some(audit) = &shared.audit {
        audit.note(&key, &entry.record, "client");
    }
    Ok(WriteOutcome {
        key,
        version: entry.record.version.to_string(),
        acks: acks.stored,
        members: members.all.len(),
        quorum: members.quorum,
    })
}

/// The write was superseded on this node: the newer version it holds (the
/// clock moves above it, so a retry wins) and the error.
async fn superseded(shared: &Shared, entry: &StoredEntry) -> WriteError {
    let newer = shared.storage.get(&entry.key).await.ok().flatten().map(|r| r.version);
    if let Some(v) = newer.as_ref().filter(|v| shared.clock.check_version(v).is_ok()) {
        shared.hlc.observe(v);
    }
    WriteError::Superseded {
        key: entry.key.clone(),
        version: entry.record.version.to_string(),
        newer: newer.map(|v| v.to_string()),
    }
}

/// Step 1: the node serves, its clock lets it coordinate (see
/// `node::clock`), and the key, the value and the write policy accept the
/// write.
fn check_write(shared: &Shared, key: &str, value: Option<&[u8]>, ttl_s: Option<u64>) -> Result<(), WriteError> {
    require_ready(shared)?;
    match shared.clock.status() {
        status @ ClockStatus::Skewed { .. } => {
            let reason = clock::describe(status, shared.clock.bound_ms());
            return Err(WriteError::ClockSkew { node: shared.node_id.clone(), reason });
        }
        ClockStatus::Ambiguous { .. } if ttl_s.is_some() => judge_expiry(shared, "a TTL it would stamp")?,
        _ => {}
    }
    check_key(key)?;
    if let Some(v) = value
        && v.len() > MAX_VALUE_BYTES
    {
        return Err(WriteError::ValueTooLarge { len: v.len(), max: MAX_VALUE_BYTES });
    }
    policy::check_write(shared.release, &shared.flags, &WriteRequest { key, delete: value.is_none(), ttl_s })?;
    Ok(())
}

/// The registered members (running or stopped, this node included) a write
/// needs a majority of.
pub(super) struct Members<'a> {
    shared: &'a Shared,
    pub(super) all: BTreeSet<String>,
    pub(super) quorum: usize,
}

impl<'a> Members<'a> {
    pub(super) fn of(shared: &'a Shared) -> Members<'a> {
        let mut all: BTreeSet<String> = shared.view().members.keys().cloned().collect();
        all.insert(shared.node_id.clone());
        let quorum = all.len() / 2 + 1;
        Members { shared, all, quorum }
    }

    /// Whether `peer` is another member (a write goes to it).
    pub(super) fn is_peer(&self, peer: &str) -> bool {
        self.all.contains(peer) && peer != self.shared.node_id
    }

    /// The other members this node has a connection to now.
    pub(super) fn connected(&self) -> BTreeSet<String> {
        self.shared.links.up().iter().map(|s| s.negotiated().peer_node_id.clone()).filter(|n| self.is_peer(n)).collect()
    }

    /// The write failed: `stored` members stored it, `up` were connected.
    fn no_quorum(&self, up: &BTreeSet<String>, stored: usize, errors: Vec<String>) -> WriteError {
        WriteError::NoQuorum {
            stored,
            members: self.all.len(),
            quorum: self.quorum,
            unreachable: self.all.iter().filter(|m| **m != self.shared.node_id && !up.contains(*m)).cloned().collect(),
            errors,
        }
    }
}

/// Step 3: the stored entry of a write, with a version from this node's
/// clock above everything the writer saw (bounded by the clock's drift
/// limit), its expiry (at the cluster's time, see `node::clock`) and its
/// feature map.
fn stamp(
    shared: &Shared,
    key: String,
    value: Option<Vec<u8>>,
    ttl_s: Option<u64>,
    seen: Option<&Version>,
) -> Result<StoredEntry, WriteError> {
    if let Some(seen) = seen {
        shared.hlc.observe(seen);
    }
    let version =
        shared.hlc.now().map_err(|e| WriteError::ClockSkew { node: shared.node_id.clone(), reason: e.to_string() })?;
    let expires_at_ms = ttl_s.map_or(0, |t| shared.clock.cluster_now_ms().saturating_add(t.saturating_mul(1000)));
    let ctx = WriteContext { node: &shared.node_id, release: shared.release.name };
    let features = record::new_features(ctx, &version, value.as_deref(), &shared.flags);
    Ok(StoredEntry { key, record: Record { version, value, expires_at_ms, features } })
}

/// Step 3, before anything is stored: the version is one this node would
/// store from a peer (within the drift bound), and, while the running
/// clocks disagree (see `node::clock`), enough connected peers going by
/// their own clocks would store it for a majority. Otherwise the write
/// is refused with nothing stored: a version no majority accepts must not
/// sit on this node alone.
fn check_version(
    shared: &Shared,
    members: &Members<'_>,
    up: &BTreeSet<String>,
    version: &Version,
) -> Result<(), WriteError> {
    let refuse = |reason: String| WriteError::ClockSkew { node: shared.node_id.clone(), reason };
    shared.clock.check_version(version).map_err(|e| refuse(e.to_string()))?;
    let status = shared.clock.status();
    if status == ClockStatus::Unknown && !up.is_empty() {
        return Err(refuse(format!(
            "its clock has not been compared with its peers' yet ({} connected: they just joined, or their HTTP \
             listeners do not answer); retry shortly",
            up.iter().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    if let ClockStatus::Ambiguous { .. } = status {
        let peers: Vec<String> = up.iter().cloned().collect();
        let refusing = shared.clock.peers_refusing(version, &peers);
        if 1 + peers.len() - refusing.len() < members.quorum {
            return Err(refuse(format!(
                "its version {version} is beyond the clocks of {} plus the drift bound (or their clocks were not read yet): {}",
                refusing.join(", "),
                clock::describe(status, shared.clock.bound_ms())
            )));
        }
    }
    Ok(())
}

/// Step 4: sends `entry` to every connected member; each future answers
/// with the peer and whether it stored the entry. A peer whose queue
/// refuses the entry goes to `errors`.
fn replicate(
    shared: &Shared,
    members: &Members<'_>,
    entry: &StoredEntry,
    errors: &mut Vec<String>,
) -> FuturesUnordered<impl Future<Output = (String, Result<(), String>)> + use<>> {
    let remote = FuturesUnordered::new();
    for s in shared.links.up() {
        let peer = s.negotiated().peer_node_id.clone();
        if !members.is_peer(&peer) {
            continue;
        }
        match s.replicate(codec::entry_to_wire(entry.clone())) {
            Ok(rx) => remote.push(async move {
                let r = rx.await.unwrap_or_else(|_| Err(format!("connection to node {peer} closed")));
                (peer, r)
            }),
            Err(e) => errors.push(e.to_string()),
        }
    }
    remote
}

/// How many members stored a write, whether they made a majority in time,
/// and whether this node's own copy was superseded (a newer version was
/// already stored: the write is not the key's value, so no success).
struct Acks {
    stored: usize,
    majority: bool,
    superseded: bool,
}

/// Step 5: counts the members that stored the write (this node once its
/// group commit is durable) until they make a majority, a majority can no
/// longer be reached, or `write_timeout` passes. What went wrong with the
/// replicas goes to `errors`; a failed local commit is the write's error.
async fn gather_acks(
    shared: &Shared,
    quorum: usize,
    local: PendingApply,
    mut remote: FuturesUnordered<impl Future<Output = (String, Result<(), String>)>>,
    errors: &mut Vec<String>,
) -> Result<Acks, WriteError> {
    let targets = remote.len();
    let deadline = tokio::time::Instant::now() + shared.tuning.write_timeout;
    let mut local = std::pin::pin!(local.wait());
    let mut local_done = false;
    let mut acks = 0usize;
    let mut answered = 0usize;
    loop {
        if local_done && acks >= quorum {
            return Ok(Acks { stored: acks, majority: true, superseded: false });
        }
        let outstanding = targets - answered + usize::from(!local_done);
        if acks + outstanding < quorum {
            return Ok(Acks { stored: acks, majority: false, superseded: false });
        }
        tokio::select! {
            r = &mut local, if !local_done => {
                if r?.first() == Some(&Applied::Superseded) {
                    return Ok(Acks { stored: acks, majority: false, superseded: true });
                }
                local_done = true;
                acks += 1;
            }
            Some((peer, r)) = remote.next(), if answered < targets => {
                answered += 1;
                match r {
                    Ok(()) => acks += 1,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "replica did not store a write");
                        errors.push(e);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                errors.push(format!(
                    "{} replica(s) did not answer within {} ms",
                    targets - answered,
                    duration_ms(shared.tuning.write_timeout)
                ));
                return Ok(Acks { stored: acks, majority: false, superseded: false });
            }
        }
    }
}

fn duration_ms(d: Duration) -> u128 {
    d.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::testing;

    /// The coordinator counts its own durable copy as an acknowledgement
    /// without looking at what storing it did. When the key already holds a
    /// higher version (here one 10 s ahead, inside the drift bound, stored
    /// by a peer's replication between this write taking its version and
    /// committing it), the write comes out `Applied::Superseded`: nothing of
    /// it is visible, yet it is answered as a success. A write that is
    /// superseded must not be acknowledged; an acknowledged write must be
    /// what the key holds.
    #[tokio::test]
    async fn a_superseded_write_is_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let node = testing::single_node(dir.path()).await;
        let shared = testing::shared(&node);
        let mine = shared.hlc.now().unwrap();
        let newer = Version { wall_ms: mine.wall_ms + 10_000, logical: 0, node: "peer".into() };
        let record = Record {
            version: newer.clone(),
            value: Some(b"peer's".to_vec()),
            expires_at_ms: 0,
            features: Default::default(),
        };
        shared.storage.apply(vec![StoredEntry { key: "k".into(), record }]).await.unwrap();

        let result = write(shared, "k".into(), Some(b"mine".to_vec()), None, None).await;
        let held = shared.storage.get("k").await.unwrap().expect("the key holds a record");
        node.stop().await.unwrap();
        if let Ok(outcome) = result {
            assert!(
                outcome.version == held.version.to_string() && held.value.as_deref() == Some(&b"mine"[..]),
                "acknowledged as {outcome:?}, but the key holds {} = {:?}: the write was superseded",
                held.version,
                held.value.as_deref().map(String::from_utf8_lossy)
            );
        }
    }
}
