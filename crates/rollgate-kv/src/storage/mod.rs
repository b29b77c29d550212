//! The node's own data: `DIR/kv.redb`, one record per key (see
//! [`crate::record`] for the record format), written through one writer
//! thread that **group-commits**: every write waiting in its bounded queue
//! goes into one durable redb transaction, so concurrent writes share the
//! cost of one fsync.
//!
//! Writes are last-writer-wins by [`Version`]: an entry replaces a key's
//! record only when its version is higher, so replicas may apply writes in
//! any order, any number of times, and end up equal. Deletions are
//! tombstones (kept, so a deletion wins over older copies met during sync).
//!
//! Tables: `records` (key bytes -> record bytes: the storage unit
//! `records`, format-stamped with [`rollgate::format`] in
//! `rollgate_formats`; see [`crate::migrations`] for its formats), `meta`
//! (`max_version` -> the highest version stored, the floor of the node's
//! clock after a restart), `expiry` (from format 3: the expiry index,
//! `expires_at_ms` big endian + key -> nothing, kept up to date by every
//! commit once the table exists), and the migrations' checkpoints
//! (`rollgate_migrations`).
//!
//! Opening checks the unit's stamp against the release's readable formats
//! **read-only first** ([`Storage::open`]): a unit this release cannot read
//! is refused with a message naming the unit, both versions and the fix,
//! and the file is left byte for byte as it was. A new unit is created at
//! format 1; the release's migrations move it up as flags are enabled.
//!
//! One owner at a time: `DIR/kv.redb.lock` is held with an exclusive file
//! lock (naming the owner's pid) while the storage is open, and
//! [`Storage::close`] waits for the writer and every reader before it
//! releases the file, so a node can be restarted on the same data dir in
//! the same process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, TableDefinition};
use rollgate::format::{FormatError, FormatPolicy};
use rollgate::store::lock::OwnerLock;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::hlc::Version;
use crate::record::{self, Record, RecordError};

/// The data file in the data dir.
pub const DATA_FILE: &str = "kv.redb";
/// The table (and storage unit) holding the records.
pub const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new(crate::releases::RECORDS_UNIT);
/// The expiry index (records format 3 on): `expires_at_ms` (8 bytes, big
/// endian) followed by the key, to an empty value.
pub const EXPIRY: TableDefinition<&[u8], &[u8]> = TableDefinition::new(EXPIRY_TABLE);
/// The name of the expiry index table.
pub const EXPIRY_TABLE: &str = "expiry";
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The key of a record in the expiry index.
pub fn expiry_key(expires_at_ms: u64, key: &[u8]) -> Vec<u8> {
    [&expires_at_ms.to_be_bytes()[..], key].concat()
}

/// Limits of the storage.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Write jobs queued before submitters wait.
    pub queue_len: usize,
    /// Most entries in one group commit.
    pub max_batch_entries: usize,
    /// Most value bytes in one group commit (a job is never split).
    pub max_batch_bytes: usize,
    /// Most pulled entries ([`Storage::submit_pulled`]) a group commit that
    /// carries writes takes along (at least one job of them).
    pub background_per_commit: usize,
    /// Reads running at once.
    pub max_readers: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            queue_len: 4096,
            max_batch_entries: 2048,
            max_batch_bytes: 16 << 20,
            background_per_commit: 64,
            max_readers: 64,
        }
    }
}

/// Why a storage operation failed; each names the file or the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Another node (this process or another) has the data dir open.
    #[error(
        "data dir {} is in use by another node{}: give each node its own --data dir",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyOpen {
        /// The data dir.
        dir: PathBuf,
        /// The owner's pid, when known.
        pid: Option<u32>,
    },
    /// A file operation failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The data file is not one of ours, or is damaged.
    #[error("data file {} is corrupt or not a rollgate-kv data file: {reason}; it was left untouched", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data file's `records` unit has a format this release does not
    /// read (or no stamp); the message names both versions and the fix.
    #[error("data file {}: {source}; the file was left untouched", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What the format check said.
        source: FormatError,
    },
    /// A stored record does not decode.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// An entry that cannot be stored.
    #[error("entry for key {key:?} refused: {reason}")]
    InvalidEntry {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A commit or read failed inside redb.
    #[error("data file {}: {what} failed: {reason}", path.display())]
    Backend {
        /// The file.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// redb's error.
        reason: String,
    },
    /// The storage was closed.
    #[error("data file {} is closed (the node is stopping)", path.display())]
    Closed {
        /// The file.
        path: PathBuf,
    },
}

/// One key and its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// The key.
    pub key: String,
    /// Its record.
    pub record: Record,
}

/// What storing one entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The entry is now the key's record.
    Stored,
    /// The same write (same version) was already stored; it stays.
    Unchanged,
    /// A record with a higher version was already stored; it stays, and the
    /// entry is not the key's value.
    Superseded,
}

/// A key range `(after, through]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRange {
    /// Exclusive lower bound; `None`: from the first key.
    pub after: Option<String>,
    /// Inclusive upper bound; `None`: to the last key.
    pub through: Option<String>,
}

impl KeyRange {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &str) -> bool {
        self.after.as_deref().is_none_or(|a| key > a) && self.through.as_deref().is_none_or(|t| key <= t)
    }
}

/// The digest of a key range: entry count and a hash over the entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeDigest {
    /// Entries (tombstones included).
    pub count: u64,
    /// First 16 bytes of SHA-256 over (key, version, expiry, tombstone) in key order.
    pub hash: [u8; 16],
}

/// Entries of a range, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The entries.
    pub entries: Vec<StoredEntry>,
    /// No further entries in the range.
    pub done: bool,
}

struct Inner {
    dir: PathBuf,
    path: PathBuf,
    db: Mutex<Option<Arc<Database>>>,
    lock: Mutex<Option<OwnerLock>>,
    jobs: mpsc::Sender<Job>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Semaphore>,
    max_readers: u32,
    commits: tokio::sync::watch::Sender<u64>,
}

/// The node's data file: cheap to clone; see the module docs.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("path", &self.inner.path).finish()
    }
}

pub(super) fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io { path: path.to_path_buf(), what, source }
}

pub(super) fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() }
}

pub(super) fn backend<'a>(path: &'a Path, what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StorageError + 'a {
    move |e| StorageError::Backend { path: path.to_path_buf(), what, reason: e.to_string() }
}

/// The key of a stored record, as text.
pub(super) fn key_str<'a>(path: &Path, key: &'a [u8]) -> Result<&'a str, StorageError> {
    std::str::from_utf8(key).map_err(|_| corrupt(path, format!("a record key is not UTF-8 ({} bytes)", key.len())))
}

mod open;
mod read;
#[cfg(test)]
mod tests;
mod writer;

use open::{open_db, take_lock};
use writer::{Job, Priority, writer_loop};

impl Storage {
    /// Opens (or creates) the data file in `dir` for a release reading the
    /// `records` formats of `policy`; returns the storage and the highest
    /// version stored (the floor of the node's clock). Blocking.
    pub fn open(
        dir: &Path,
        options: StorageOptions,
        policy: &FormatPolicy,
    ) -> Result<(Storage, Option<Version>), StorageError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "creating the data dir"))?;
        let path = dir.join(DATA_FILE);
        let lock = take_lock(dir, &path)?;
        let (db, max) = open_db(&path, dir, policy)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(options.queue_len.max(1));
        let (commits, _) = tokio::sync::watch::channel(0u64);
        let writer = {
            let (db, file, max, options, commits) =
                (db.clone(), path.clone(), max.clone(), options.clone(), commits.clone());
            std::thread::Builder::new()
                .name("kv-storage-writer".into())
                .spawn(move || writer_loop(&db, &file, rx, max, &options, &commits))
                .map_err(io(&path, "starting the writer thread"))?
        };
        let max_readers = options.max_readers.clamp(1, 4096) as u32;
        let inner = Inner {
            dir: dir.to_path_buf(),
            path,
            db: Mutex::new(Some(db)),
            lock: Mutex::new(Some(lock)),
            jobs: tx,
            writer: Mutex::new(Some(writer)),
            readers: Arc::new(Semaphore::new(max_readers as usize)),
            max_readers,
            commits,
        };
        Ok((Storage { inner: Arc::new(inner) }, max))
    }

    /// Group commits made since the storage was opened (commits that stored
    /// nothing new are not made, and not counted).
    pub fn commits_made(&self) -> u64 {
        *self.inner.commits.borrow()
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn closed(&self) -> StorageError {
        StorageError::Closed { path: self.inner.path.clone() }
    }

    /// Stores `entries` durably (last writer wins per key), in the next group
    /// commit. All or nothing: when one entry is refused, none is stored.
    pub async fn apply(&self, entries: Vec<StoredEntry>) -> Result<Vec<Applied>, StorageError> {
        self.submit(entries).await?.wait().await
    }

    /// Queues `entries` for the next group commit (waiting while the queue
    /// is full) and returns what to wait on for the outcome. Writes queued
    /// before a [`barrier`](Self::barrier) are durable when it returns.
    pub async fn submit(&self, entries: Vec<StoredEntry>) -> Result<PendingApply, StorageError> {
        self.queue(entries, Priority::Write).await
    }

    /// Queues entries pulled from a peer: like [`submit`](Self::submit), but
    /// behind the writes queued meanwhile, and at most
    /// `background_per_commit` of them in a commit that carries writes.
    pub async fn submit_pulled(&self, entries: Vec<StoredEntry>) -> Result<PendingApply, StorageError> {
        self.queue(entries, Priority::Background).await
    }

    async fn queue(&self, entries: Vec<StoredEntry>, priority: Priority) -> Result<PendingApply, StorageError> {
        for e in &entries {
            record::check(&e.key, &e.record)
                .map_err(|reason| StorageError::InvalidEntry { key: rollgate::util::shorten_to(&e.key, 96), reason })?;
        }
        let (reply, rx) = oneshot::channel();
        self.inner.jobs.send(Job::Apply { entries, priority, reply }).await.map_err(|_| self.closed())?;
        Ok(PendingApply { rx, path: self.inner.path.clone() })
    }

    /// Changes after every group commit that stored something: a reader waiting for a version
    /// subscribes, reads, and reads again when it changes.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.commits.subscribe()
    }

    /// Waits until every write queued before this call is durable.
    pub async fn barrier(&self) -> Result<(), StorageError> {
        let (reply, rx) = oneshot::channel();
        self.inner.jobs.send(Job::Barrier(reply)).await.map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())
    }

    pub(super) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, &Path) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let permit = self.inner.readers.clone().acquire_owned().await.map_err(|_| self.closed())?;
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| self.closed())?;
        let path = self.inner.path.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&db, &path)
        })
        .await
        .map_err(|e| StorageError::Backend {
            path: self.inner.path.clone(),
            what: "a read",
            reason: e.to_string(),
        })?
    }

    /// The database, for the node's table migrations (which run in their
    /// own write transactions, between the group commits). [`close`](Self::close)
    /// waits until every such handle is dropped.
    pub fn database(&self) -> Result<Arc<Database>, StorageError> {
        self.inner.db.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| self.closed())
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Closes the storage: waits for running reads, lets the writer finish
    /// what is queued, and releases the file and its lock. Later calls on any
    /// clone fail with [`StorageError::Closed`].
    pub async fn close(&self) {
        if let Ok(all) = self.inner.readers.acquire_many(self.inner.max_readers).await {
            all.forget();
        }
        self.inner.readers.close();
        let db = self.inner.db.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = self.inner.jobs.send(Job::Shutdown).await;
        let writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        // Table migrations may still hold the database for a batch that was
        // running when their task was cancelled: the file closes with the
        // last handle, so wait for it (bounded).
        if let Some(db) = &db {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
            for _ in 0..1000 {
                if Arc::strong_count(db) == 1 {
                    break;
                }
                tick.tick().await;
            }
            if Arc::strong_count(db) > 1 {
                tracing::warn!(path = %self.inner.path.display(), "the data file is still in use after 10 s; closing anyway");
            }
        }
        drop(db);
        drop(self.inner.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// A queued write (see [`Storage::submit`]).
#[derive(Debug)]
pub struct PendingApply {
    rx: oneshot::Receiver<Result<Vec<Applied>, StorageError>>,
    path: PathBuf,
}

impl PendingApply {
    /// Waits until the write is durable (or failed).
    pub async fn wait(self) -> Result<Vec<Applied>, StorageError> {
        self.rx.await.map_err(|_| StorageError::Closed { path: self.path })?
    }
}
