//! The writer thread: group commits, last writer wins per key, the expiry
//! index kept with every commit.

use std::collections::VecDeque;
use std::path::Path;

use redb::{Database, ReadableTable, TableHandle};
use tokio::sync::{mpsc, oneshot};

use super::open::encode_version;
use super::{Applied, EXPIRY, META, RECORDS, StorageError, StorageOptions, StoredEntry, backend, expiry_key};
use crate::hlc::Version;
use crate::record::{self, Record, RecordError};

/// How a job is queued: a client's (or a replica's) write, or an entry
/// pulled from a peer, which may wait behind them (see [`writer_loop`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Priority {
    /// Goes into the next group commit.
    Write,
    /// Goes into a group commit after every write queued before it, at most
    /// `background_per_commit` entries per commit that carries writes.
    Background,
}

pub(super) enum Job {
    Apply { entries: Vec<StoredEntry>, priority: Priority, reply: oneshot::Sender<Result<Vec<Applied>, StorageError>> },
    Barrier(oneshot::Sender<()>),
    Shutdown,
}

impl Job {
    fn size(&self) -> (usize, usize) {
        match self {
            Job::Apply { entries, .. } => {
                (entries.len(), entries.iter().map(|e| e.key.len() + e.record.value.as_ref().map_or(0, Vec::len)).sum())
            }
            _ => (1, 0),
        }
    }

    fn is_background(&self) -> bool {
        matches!(self, Job::Apply { priority: Priority::Background, .. })
    }
}

/// The writer thread's loop. Every group commit takes what is queued, up to
/// `max_batch_entries` and `max_batch_bytes`; pulled entries
/// ([`Priority::Background`]) wait aside, and a commit that carries writes
/// takes at most `background_per_commit` of them (in whole jobs, at least
/// one), so a client write never waits for a large catch-up commit. A
/// commit without writes takes pulled entries up to the full limits, so a
/// node catching up with nothing else to do stores them in large commits. A
/// barrier or a shutdown takes every pulled entry queued before it.
pub(super) fn writer_loop(
    db: &Database,
    path: &Path,
    mut rx: mpsc::Receiver<Job>,
    mut max: Option<Version>,
    options: &StorageOptions,
    commits: &tokio::sync::watch::Sender<u64>,
) {
    let mut aside = VecDeque::new();
    while let Some(jobs) = gather(&mut rx, &mut aside, options) {
        let shutdown = jobs.iter().any(|j| matches!(j, Job::Shutdown));
        if commit(db, path, jobs, &mut max) {
            // Readers waiting for a version (session reads) look again; a
            // dropped commit stored nothing new.
            commits.send_modify(|n| *n = n.wrapping_add(1));
        }
        if shutdown {
            break;
        }
    }
}

/// The jobs of the next group commit (see [`writer_loop`]): waits for one
/// when nothing is queued or aside; `None` once the queue is closed and
/// nothing is left.
fn gather(rx: &mut mpsc::Receiver<Job>, aside: &mut VecDeque<Job>, options: &StorageOptions) -> Option<Vec<Job>> {
    let mut next = if aside.is_empty() { Some(rx.blocking_recv()?) } else { rx.try_recv().ok() };
    let (mut jobs, mut entries, mut bytes, mut flush) = (Vec::new(), 0, 0, false);
    while let Some(job) = next {
        flush = matches!(job, Job::Barrier(_) | Job::Shutdown);
        if job.is_background() {
            aside.push_back(job);
        } else {
            let (e, b) = job.size();
            entries += e;
            bytes += b;
            jobs.push(job);
        }
        if flush || entries >= options.max_batch_entries || bytes >= options.max_batch_bytes {
            break;
        }
        next = rx.try_recv().ok();
    }
    let budget = if flush {
        usize::MAX
    } else if jobs.is_empty() {
        options.max_batch_entries
    } else {
        options.background_per_commit
    };
    let mut taken = 0;
    while let Some(job) = aside.front() {
        let (e, _) = job.size();
        if taken > 0 && taken + e > budget {
            break;
        }
        taken += e;
        jobs.extend(aside.pop_front());
    }
    Some(jobs)
}

/// What storing `new` over `old` does: a higher version wins. The same
/// version is the same write; a copy that lost its expiry on the way (sent
/// over a transport version without `expires_at_ms`) gives way to one that
/// has it, so the copies converge whatever order they arrive in.
fn outcome(new: &Record, old: &Record) -> Applied {
    match new.version.cmp(&old.version) {
        std::cmp::Ordering::Greater => Applied::Stored,
        std::cmp::Ordering::Equal if old.expires_at_ms == 0 && new.expires_at_ms != 0 => Applied::Stored,
        std::cmp::Ordering::Equal => Applied::Unchanged,
        std::cmp::Ordering::Less => Applied::Superseded,
    }
}

/// One group commit: every job's entries in one durable transaction. When
/// none of them changes a record, the transaction is dropped instead (no
/// fsync: what was stored already is durable). True when it committed.
fn commit(db: &Database, path: &Path, jobs: Vec<Job>, max: &mut Option<Version>) -> bool {
    let err = backend(path, "a commit");
    let mut results: Vec<Result<Vec<Applied>, StorageError>> = Vec::with_capacity(jobs.len());
    let mut new_max = max.clone();
    let mut changed = false;
    let outcome = (|| -> Result<(), StorageError> {
        let wtx = db.begin_write().map_err(|e| err(&e))?;
        // The expiry index exists once the format 2 -> 3 migration started;
        // from then on every commit keeps it up to date.
        let indexed = wtx.list_tables().map_err(|e| err(&e))?.any(|t| t.name() == EXPIRY.name());
        {
            let mut kv = wtx.open_table(RECORDS).map_err(|e| err(&e))?;
            let mut index = if indexed { Some(wtx.open_table(EXPIRY).map_err(|e| err(&e))?) } else { None };
            for job in &jobs {
                let Job::Apply { entries, .. } = job else {
                    results.push(Ok(Vec::new()));
                    continue;
                };
                // Every stored record this job replaces must decode first: a
                // job is all or nothing.
                if let Some(r) = undecodable(&kv, entries, &err)? {
                    results.push(Err(StorageError::Record(r)));
                    continue;
                }
                let applied = apply(&mut kv, index.as_mut(), entries, &mut new_max, &err)?;
                changed |= applied.contains(&Applied::Stored);
                results.push(Ok(applied));
            }
            if new_max != *max
                && let Some(v) = &new_max
            {
                let mut meta = wtx.open_table(META).map_err(|e| err(&e))?;
                meta.insert("max_version", encode_version(v).as_slice()).map_err(|e| err(&e))?;
            }
        }
        if changed { wtx.commit().map_err(|e| err(&e)) } else { wtx.abort().map_err(|e| err(&e)) }
    })();
    match outcome {
        Ok(()) => {
            *max = new_max;
            answer(jobs, results);
            changed
        }
        Err(e) => {
            fail(jobs, path, &e);
            false
        }
    }
}

/// A table of the data file in a write transaction.
type WriteTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;
/// How a commit turns a backend error into a [`StorageError`].
type BackendError<'a> = dyn Fn(&dyn std::fmt::Display) -> StorageError + 'a;

/// The first stored record that `entries` would replace and that does not
/// decode, if any.
fn undecodable(
    kv: &WriteTable<'_>,
    entries: &[StoredEntry],
    err: &BackendError<'_>,
) -> Result<Option<RecordError>, StorageError> {
    for e in entries {
        if let Some(bytes) = kv.get(e.key.as_bytes()).map_err(|e| err(&e))?
            && let Err(r) = record::decode(&e.key, bytes.value())
        {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Stores each of `entries` that supersedes the stored record of its key
/// (keeping the expiry index, when there is one, up to date) and raises
/// `new_max` to the highest version stored.
fn apply(
    kv: &mut WriteTable<'_>,
    mut index: Option<&mut WriteTable<'_>>,
    entries: &[StoredEntry],
    new_max: &mut Option<Version>,
    err: &BackendError<'_>,
) -> Result<Vec<Applied>, StorageError> {
    let mut applied = Vec::with_capacity(entries.len());
    for e in entries {
        let old = match kv.get(e.key.as_bytes()).map_err(|e| err(&e))? {
            Some(bytes) => Some(record::decode(&e.key, bytes.value())?),
            None => None,
        };
        let result = old.as_ref().map_or(Applied::Stored, |old| outcome(&e.record, old));
        if result == Applied::Stored {
            kv.insert(e.key.as_bytes(), record::encode(&e.record).as_slice()).map_err(|e| err(&e))?;
            if let Some(index) = &mut index {
                if let Some(old) = old.as_ref().filter(|o| o.expires_at_ms != 0) {
                    index.remove(expiry_key(old.expires_at_ms, e.key.as_bytes()).as_slice()).map_err(|e| err(&e))?;
                }
                if e.record.expires_at_ms != 0 {
                    let k = expiry_key(e.record.expires_at_ms, e.key.as_bytes());
                    index.insert(k.as_slice(), [].as_slice()).map_err(|e| err(&e))?;
                }
            }
            if new_max.as_ref().is_none_or(|m| *m < e.record.version) {
                *new_max = Some(e.record.version.clone());
            }
        }
        applied.push(result);
    }
    Ok(applied)
}

/// A commit is durable: each job gets its result.
fn answer(jobs: Vec<Job>, results: Vec<Result<Vec<Applied>, StorageError>>) {
    for (job, result) in jobs.into_iter().zip(results) {
        match job {
            Job::Apply { reply, .. } => {
                let _ = reply.send(result);
            }
            Job::Barrier(reply) => {
                let _ = reply.send(());
            }
            Job::Shutdown => {}
        }
    }
}

/// A commit failed: none of its writes was stored, and each job hears so.
fn fail(jobs: Vec<Job>, path: &Path, e: &StorageError) {
    tracing::error!(error = %e, "group commit failed; its writes were not stored");
    let reason = e.to_string();
    for job in jobs {
        match job {
            Job::Apply { reply, .. } => {
                let _ = reply.send(Err(StorageError::Backend {
                    path: path.to_path_buf(),
                    what: "a commit",
                    reason: reason.clone(),
                }));
            }
            // A barrier after a failed commit: nothing queued before it is pending any more.
            Job::Barrier(reply) => {
                let _ = reply.send(());
            }
            Job::Shutdown => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Version;

    fn job(priority: Priority, n: usize) -> Job {
        let entries = (0..n)
            .map(|i| StoredEntry {
                key: format!("k{i}"),
                record: Record {
                    version: Version { wall_ms: 1, logical: 0, node: "n".into() },
                    value: Some(b"v".to_vec()),
                    expires_at_ms: 0,
                    features: Default::default(),
                },
            })
            .collect();
        Job::Apply { entries, priority, reply: oneshot::channel().0 }
    }

    /// (pulled entries, write entries, barriers) of a commit's jobs.
    fn shape(jobs: &[Job]) -> (usize, usize, usize) {
        let mut out = (0, 0, 0);
        for j in jobs {
            match j {
                Job::Apply { entries, priority: Priority::Background, .. } => out.0 += entries.len(),
                Job::Apply { entries, .. } => out.1 += entries.len(),
                _ => out.2 += 1,
            }
        }
        out
    }

    /// A client write queued behind a catch-up's pulled entries goes into
    /// the next commit with at most `background_per_commit` of them; the
    /// rest follow in a commit of their own, as large as a commit may be.
    #[test]
    fn a_write_queued_behind_pulled_entries_commits_with_few_of_them() {
        let options = StorageOptions::default();
        let (tx, mut rx) = mpsc::channel(64);
        for _ in 0..8 {
            tx.try_send(job(Priority::Background, 64)).ok().unwrap();
        }
        tx.try_send(job(Priority::Write, 1)).ok().unwrap();
        let mut aside = VecDeque::new();
        let first = gather(&mut rx, &mut aside, &options).unwrap();
        assert_eq!(shape(&first), (options.background_per_commit, 1, 0));
        let second = gather(&mut rx, &mut aside, &options).unwrap();
        assert_eq!(shape(&second), (7 * 64, 0, 0), "the rest in one commit: nothing else is queued");
        assert!(aside.is_empty());
    }

    /// A barrier answers once everything queued before it is durable,
    /// pulled entries set aside included.
    #[test]
    fn a_barrier_takes_every_pulled_entry_queued_before_it() {
        let options = StorageOptions::default();
        let (tx, mut rx) = mpsc::channel(64);
        for _ in 0..4 {
            tx.try_send(job(Priority::Background, 64)).ok().unwrap();
        }
        tx.try_send(job(Priority::Write, 1)).ok().unwrap();
        tx.try_send(Job::Barrier(oneshot::channel().0)).ok().unwrap();
        tx.try_send(job(Priority::Background, 64)).ok().unwrap();
        let mut aside = VecDeque::new();
        let first = gather(&mut rx, &mut aside, &options).unwrap();
        assert_eq!(shape(&first), (4 * 64, 1, 1));
        let second = gather(&mut rx, &mut aside, &options).unwrap();
        assert_eq!(shape(&second), (64, 0, 0), "queued after the barrier: the next commit");
        drop(tx);
        assert!(gather(&mut rx, &mut aside, &options).is_none(), "closed and nothing left");
    }
}
