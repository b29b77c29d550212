//! The read path, at three levels (see [`crate::consistency`]):
//!
//! - **local** ([`read`], [`scan_prefix`]): what this node holds, as every
//!   release answers;
//! - **session** ([`session_read`], release 2.0): the client says which
//!   version of the key it has seen (`x-kv-after`, from its own writes and
//!   reads); a node holding an older one waits (bounded by
//!   `Tuning::session_read_wait`) for replication or catch-up to bring it,
//!   re-reading after each group commit, else answers 503 `behind` so that
//!   the client asks another node, which holds it (the write was stored by a
//!   majority);
//! - **linearizable** ([`linearizable_read`], [`linearizable_scan`], release
//!   2.0): the node asks its peers over protocol v4 for their records of the
//!   key (or prefix) and answers from itself and a majority of the
//!   registered members: every write acknowledged before the read started
//!   was stored by a majority, and two majorities meet, so the highest
//!   version among them is at least that write's. Before answering, the
//!   node makes sure that version is held by a majority (writing it back
//!   to the members that lack it, as the write path replicates): a value one
//!   linearizable read returned is never older than what a later one returns.
//!   Without a majority (a partition, too few members on protocol v4) the
//!   read fails with 503 `no_quorum`, never with stale data.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::shared::Shared;
use super::write::{Members, NoReadQuorum, WriteError, check_key, judge_expiry, require_ready};
use crate::hlc::Version;
use crate::peer::codec::{self, Request, Response};
use crate::quorum::v1 as quorum;
use crate::record::{MAX_KEY_BYTES, Record};
use crate::storage::StoredEntry;

/// Most records a prefix scan looks at (tombstones and expired values
/// included) before it answers with what it found.
pub const MAX_SCANNED: usize = 10_000;
/// Most records one prefix scan returns.
pub const MAX_SCAN_LIMIT: usize = 1000;

/// What a read found: the live record (`None`: not found or expired), and
/// the version this node holds of the key, live or not (a tombstone's, an
/// expired value's), which a client compares with what it has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadAnswer {
    /// The live record.
    pub record: Option<Record>,
    /// The version held, when any.
    pub held: Option<Version>,
}

/// The live part of `record` at the cluster's time (see `node::clock`),
/// checked against its checksum.
fn live(shared: &Shared, key: &str, record: Option<Record>) -> Result<ReadAnswer, WriteError> {
    let Some(record) = record else { return Ok(ReadAnswer::default()) };
    let held = Some(record.version.clone());
    if record.expires_at_ms != 0 && record.value.is_some() {
        judge_expiry(shared, &format!("the value of {key:?}"))?;
    }
    if record.live_value(shared.clock.cluster_now_ms()).is_none() {
        return Ok(ReadAnswer { record: None, held });
    }
    record.verify_checksum(key)?;
    Ok(ReadAnswer { record: Some(record), held })
}

/// Reads `key` from the local data: the record when its value is live at
/// the cluster's time (see `node::clock`).
pub(super) async fn read(shared: &Shared, key: &str) -> Result<ReadAnswer, WriteError> {
    require_ready(shared)?;
    check_key(key)?;
    let record = shared.storage.get(key).await?;
    live(shared, key, record)
}

/// Reads `key` once this node holds `after` or a newer version of it; see
/// the module docs.
pub(super) async fn session_read(shared: &Shared, key: &str, after: &Version) -> Result<ReadAnswer, WriteError> {
    require_ready(shared)?;
    check_key(key)?;
    shared
        .clock
        .check_version(after)
        .map_err(|e| WriteError::InvalidAfter { reason: format!("{after} is no version this cluster made: {e}") })?;
    // Subscribed before the first read: a commit between the read and the wait is not missed.
    let mut commits = shared.storage.commits();
    let wait = shared.tuning.session_read_wait;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let record = shared.storage.get(key).await?;
        if record.as_ref().is_some_and(|r| r.version >= *after) {
            return live(shared, key, record);
        }
        let changed = tokio::time::timeout_at(deadline, commits.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            return Err(WriteError::Behind {
                node: shared.node_id.clone(),
                key: rollgate::util::shorten_to(key, 96),
                after: after.to_string(),
                holds: record.map(|r| r.version.to_string()),
                waited_ms: wait.as_millis() as u64,
            });
        }
    }
}

/// The live records under `prefix` on this node (at most `limit`, checked).
pub(super) async fn scan_prefix(
    shared: &Shared,
    prefix: &str,
    limit: usize,
) -> Result<(Vec<StoredEntry>, bool), WriteError> {
    require_ready(shared)?;
    judge_expiry(shared, "the values under the prefix")?;
    let now = shared.clock.cluster_now_ms();
    let (entries, more) = shared.storage.scan_prefix(prefix, limit.clamp(1, MAX_SCAN_LIMIT), MAX_SCANNED, now).await?;
    for e in &entries {
        e.record.verify_checksum(&e.key)?;
    }
    Ok((entries, more))
}

/// Reads `key` confirmed by a majority; see the module docs.
pub(super) async fn linearizable_read(shared: &Shared, key: &str) -> Result<ReadAnswer, WriteError> {
    require_ready(shared)?;
    check_key(key)?;
    let mut found = gather(shared, key, false, 1).await?;
    let record = found.entries.remove(key);
    live(shared, key, record)
}

/// The live records under `prefix` confirmed by a majority (at most
/// `limit`); the flag says whether more may follow.
pub(super) async fn linearizable_scan(
    shared: &Shared,
    prefix: &str,
    limit: usize,
) -> Result<(Vec<StoredEntry>, bool), WriteError> {
    require_ready(shared)?;
    judge_expiry(shared, "the values under the prefix")?;
    let limit = limit.clamp(1, MAX_SCAN_LIMIT);
    let found = gather(shared, prefix, true, limit as u32).await?;
    let now = shared.clock.cluster_now_ms();
    let mut out = Vec::new();
    let mut more = found.truncated;
    for (key, record) in found.entries {
        if record.live_value(now).is_none() {
            continue;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        record.verify_checksum(&key)?;
        out.push(StoredEntry { key, record });
    }
    Ok((out, more))
}

/// The newest record of each key a majority holds (see the module docs).
struct Gathered {
    entries: BTreeMap<String, Record>,
    truncated: bool,
}

/// One member's answer: its records, and the last key it sent when more follow.
struct Answer {
    member: String,
    entries: Vec<StoredEntry>,
    cut: Option<String>,
}

/// Asks this node and its peers on protocol v4 for `key` (or the keys under
/// it, with `prefix`), merges what a majority answered (the highest version
/// of each key), and writes back each chosen record to the members of that
/// majority that lack it until a majority holds it.
async fn gather(shared: &Shared, key: &str, prefix: bool, limit: u32) -> Result<Gathered, WriteError> {
    let members = Members::of(shared);
    let (sessions, older) = quorum_peers(shared, &members);
    if 1 + sessions.len() < members.quorum {
        return Err(no_read_quorum(shared, &members, 0, &sessions, older, Vec::new()));
    }
    let timeout = shared.tuning.write_timeout;
    let remote: FuturesUnordered<_> = sessions
        .iter()
        .map(|s| {
            let request =
                move |req_id| Request::Read(quorum::ReadRequest { req_id, key: key.to_string(), prefix, limit });
            async move { (s.negotiated().peer_node_id.clone(), s.call(request, timeout).await) }
        })
        .collect();
    let (local, (mut answers, errors)) =
        tokio::join!(local_answer(shared, key, prefix, limit), collect(remote, members.quorum - 1));
    answers.push(local?);
    if answers.len() < members.quorum {
        return Err(no_read_quorum(shared, &members, answers.len(), &sessions, older, errors));
    }
    let merged = merge(answers);
    write_back(shared, &members, &merged).await?;
    Ok(Gathered { entries: merged.chosen.into_iter().map(|(k, (r, _))| (k, r)).collect(), truncated: merged.truncated })
}

/// The first `need` answers of peers (and what went wrong with the others).
async fn collect(
    mut remote: FuturesUnordered<impl Future<Output = (String, Result<Response, crate::peer::link::LinkError>)>>,
    need: usize,
) -> (Vec<Answer>, Vec<String>) {
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    while answers.len() < need {
        let Some((peer, result)) = remote.next().await else { break };
        match result {
            Ok(Response::Read(reply)) => match reply.error {
                None => answers.push(remote_answer(peer, reply)),
                Some(e) => errors.push(format!("{peer}: {e}")),
            },
            Ok(_) => errors.push(format!("{peer}: answered something else than a ReadReply")),
            Err(e) => errors.push(format!("{peer}: {e}")),
        }
    }
    (answers, errors)
}

/// The connected members on protocol v4 (the quorum read engine), and those
/// on an older protocol (named in the error when they are needed).
fn quorum_peers(
    shared: &Shared,
    members: &Members<'_>,
) -> (Vec<std::sync::Arc<crate::peer::link::Session>>, Vec<String>) {
    let mut v4 = Vec::new();
    let mut older = Vec::new();
    for s in shared.links.up() {
        let peer = s.negotiated().peer_node_id.clone();
        if !members.is_peer(&peer) {
            continue;
        }
        if codec::has_quorum_reads(s.protocol()) {
            v4.push(s);
        } else {
            older.push(format!("{peer} (protocol v{})", s.protocol().0));
        }
    }
    (v4, older)
}

fn no_read_quorum(
    shared: &Shared,
    members: &Members<'_>,
    answered: usize,
    sessions: &[std::sync::Arc<crate::peer::link::Session>],
    older: Vec<String>,
    errors: Vec<String>,
) -> WriteError {
    let connected = members.connected();
    WriteError::NoReadQuorum(Box::new(NoReadQuorum {
        node: shared.node_id.clone(),
        answered,
        members: members.all.len(),
        quorum: members.quorum,
        on_v4: sessions.len(),
        older,
        unreachable: members.all.iter().filter(|m| **m != shared.node_id && !connected.contains(*m)).cloned().collect(),
        errors,
    }))
}

async fn local_answer(shared: &Shared, key: &str, prefix: bool, limit: u32) -> Result<Answer, WriteError> {
    let (entries, more) = if prefix {
        shared.storage.scan_prefix_all(key, limit.clamp(1, quorum::MAX_READ_ENTRIES) as usize).await?
    } else {
        let found = shared.storage.get(key).await?;
        (found.map(|record| StoredEntry { key: key.to_string(), record }).into_iter().collect(), false)
    };
    let cut = more.then(|| entries.last().map(|e| e.key.clone())).flatten();
    Ok(Answer { member: shared.node_id.clone(), entries, cut })
}

fn remote_answer(peer: String, reply: quorum::ReadReply) -> Answer {
    let entries: Vec<StoredEntry> = reply.entries.into_iter().map(codec::entry_from_wire).collect();
    let cut = reply.truncated.then(|| entries.last().map(|e| e.key.clone())).flatten();
    Answer { member: peer, entries, cut }
}

/// The highest version of each key among the answers, with the members
/// that hold it; keys past the first cut of a truncated answer are dropped
/// (that member did not say what it holds there).
struct Merged {
    chosen: BTreeMap<String, (Record, BTreeSet<String>)>,
    members: Vec<String>,
    truncated: bool,
}

fn merge(answers: Vec<Answer>) -> Merged {
    let cut = answers.iter().filter_map(|a| a.cut.clone()).min();
    let members = answers.iter().map(|a| a.member.clone()).collect();
    let truncated = answers.iter().any(|a| a.cut.is_some());
    let mut chosen: BTreeMap<String, (Record, BTreeSet<String>)> = BTreeMap::new();
    for a in answers {
        for e in a.entries {
            if cut.as_ref().is_some_and(|c| e.key > *c) {
                continue;
            }
            match chosen.get_mut(&e.key) {
                Some((r, holders)) if e.record.version == r.version => {
                    holders.insert(a.member.clone());
                }
                Some((r, _)) if e.record.version < r.version => {}
                _ => {
                    chosen.insert(e.key, (e.record, BTreeSet::from([a.member.clone()])));
                }
            }
        }
    }
    Merged { chosen, members, truncated }
}

/// Makes each chosen record held by a majority: stores it here and sends it
/// to the answering peers that lack it, as the write path does (a member
/// holding a newer version counts: a later read sees at least that).
async fn write_back(shared: &Shared, members: &Members<'_>, merged: &Merged) -> Result<(), WriteError> {
    let mut pending = FuturesUnordered::new();
    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    let mut local = Vec::new();
    let up = shared.links.up();
    for (key, (record, holders)) in &merged.chosen {
        held.insert(key.as_str(), holders.len());
        if holders.len() >= members.quorum {
            continue;
        }
        let entry = StoredEntry { key: key.clone(), record: record.clone() };
        for m in merged.members.iter().filter(|m| !holders.contains(*m)) {
            if *m == shared.node_id {
                local.push(entry.clone());
                continue;
            }
            let Some(s) = up.iter().find(|s| s.negotiated().peer_node_id == *m) else { continue };
            if let Ok(rx) = s.replicate(codec::entry_to_wire(entry.clone())) {
                let key = key.as_str();
                pending.push(async move {
                    let ok = match rx.await {
                        Ok(Ok(())) => true,
                        // It holds a newer version: a later read sees at least that.
                        Ok(Err(e)) => e.contains(super::write::NEWER_VERSION),
                        Err(_) => false,
                    };
                    (key, ok)
                });
            }
        }
    }
    if !local.is_empty() {
        // Stored, unchanged or superseded by a newer one: this node holds at least the chosen version.
        let keys: Vec<String> = local.iter().map(|e| e.key.clone()).collect();
        if shared.storage.apply(local).await.is_ok() {
            for k in &keys {
                if let Some(n) = held.get_mut(k.as_str()) {
                    *n += 1;
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + shared.tuning.write_timeout;
    while held.values().any(|n| *n < members.quorum) {
        match tokio::time::timeout_at(deadline, pending.next()).await {
            Ok(Some((key, true))) => *held.entry(key).or_default() += 1,
            Ok(Some((_, false))) => {}
            Ok(None) | Err(_) => {
                let short: Vec<String> = held
                    .iter()
                    .filter(|(_, n)| **n < members.quorum)
                    .map(|(k, n)| format!("{k:?} ({n})"))
                    .take(4)
                    .collect();
                return Err(WriteError::NoReadQuorum(Box::new(NoReadQuorum {
                    node: shared.node_id.clone(),
                    answered: merged.members.len(),
                    members: members.all.len(),
                    quorum: members.quorum,
                    on_v4: merged.members.len().saturating_sub(1),
                    older: Vec::new(),
                    unreachable: Vec::new(),
                    errors: vec![format!(
                        "the newest record of {} is held by fewer than a majority (holders in brackets) and could not \
                         be written back within {} ms",
                        short.join(", "),
                        shared.tuning.write_timeout.as_millis()
                    )],
                })));
            }
        }
    }
    Ok(())
}

/// Answers a peer's [`quorum::ReadRequest`]: what this node holds, whatever
/// its serving state (it answers for what it stored, which is what the
/// reader's majority needs).
pub(super) async fn serve_read(shared: &Shared, m: quorum::ReadRequest) -> quorum::ReadReply {
    let fail = |error: String| quorum::ReadReply {
        req_id: m.req_id,
        entries: Vec::new(),
        truncated: false,
        error: Some(error),
    };
    if m.key.len() > MAX_KEY_BYTES {
        return fail(format!("the key is {} bytes, longer than any key ({MAX_KEY_BYTES})", m.key.len()));
    }
    let limit = m.limit.clamp(1, quorum::MAX_READ_ENTRIES);
    let answer = local_answer(shared, &m.key, m.prefix, limit).await;
    match answer {
        Ok(a) => quorum::ReadReply {
            req_id: m.req_id,
            truncated: a.cut.is_some(),
            entries: a.entries.into_iter().map(codec::entry_to_wire).collect(),
            error: None,
        },
        Err(e) => fail(e.to_string()),
    }
}
