//! The writer thread: group commits, last writer wins per key, the expiry
//! index kept with every commit.

use std::path::Path;

use redb::{Database, ReadableTable, TableHandle};
use tokio::sync::{mpsc, oneshot};

use super::open::encode_version;
use super::{Applied, EXPIRY, META, RECORDS, StorageError, StorageOptions, StoredEntry, backend, expiry_key};
use crate::hlc::Version;
use crate::record::{self, Record, RecordError};

pub(super) enum Job {
    Apply { entries: Vec<StoredEntry>, reply: oneshot::Sender<Result<Vec<Applied>, StorageError>> },
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
}

pub(super) fn writer_loop(
    db: &Database,
    path: &Path,
    mut rx: mpsc::Receiver<Job>,
    mut max: Option<Version>,
    options: &StorageOptions,
    commits: &tokio::sync::watch::Sender<u64>,
) {
    while let Some(first) = rx.blocking_recv() {
        let (mut entries, mut bytes) = first.size();
        let mut jobs = vec![first];
        while entries < options.max_batch_entries && bytes < options.max_batch_bytes {
            match rx.try_recv() {
                Ok(job) => {
                    let (e, b) = job.size();
                    entries += e;
                    bytes += b;
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let shutdown = jobs.iter().any(|j| matches!(j, Job::Shutdown));
        commit(db, path, jobs, &mut max);
        // Readers waiting for a version (session reads) look again.
        commits.send_modify(|n| *n = n.wrapping_add(1));
        if shutdown {
            break;
        }
    }
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

/// One group commit: every job's entries in one durable transaction.
fn commit(db: &Database, path: &Path, jobs: Vec<Job>, max: &mut Option<Version>) {
    let err = backend(path, "a commit");
    let mut results: Vec<Result<Vec<Applied>, StorageError>> = Vec::with_capacity(jobs.len());
    let mut new_max = max.clone();
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
                results.push(Ok(apply(&mut kv, index.as_mut(), entries, &mut new_max, &err)?));
            }
            if new_max != *max
                && let Some(v) = &new_max
            {
                let mut meta = wtx.open_table(META).map_err(|e| err(&e))?;
                meta.insert("max_version", encode_version(v).as_slice()).map_err(|e| err(&e))?;
            }
        }
        wtx.commit().map_err(|e| err(&e))
    })();
    match outcome {
        Ok(()) => {
            *max = new_max;
            answer(jobs, results);
        }
        Err(e) => fail(jobs, path, &e),
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
