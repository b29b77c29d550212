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

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use rollgate::format::{self, FormatError, FormatPolicy, FormatStamp};
use rollgate::store::lock::{LockError, OwnerLock};
use sha2::{Digest as _, Sha256};
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
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

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
    /// Reads running at once.
    pub max_readers: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions { queue_len: 4096, max_batch_entries: 2048, max_batch_bytes: 16 << 20, max_readers: 64 }
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
    /// A record with the same or a higher version was already stored; it stays.
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

enum Job {
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

struct Inner {
    dir: PathBuf,
    path: PathBuf,
    db: Mutex<Option<Arc<Database>>>,
    lock: Mutex<Option<OwnerLock>>,
    jobs: mpsc::Sender<Job>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Semaphore>,
    max_readers: u32,
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

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io { path: path.to_path_buf(), what, source }
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() }
}

fn backend<'a>(path: &'a Path, what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StorageError + 'a {
    move |e| StorageError::Backend { path: path.to_path_buf(), what, reason: e.to_string() }
}

/// Takes the ownership lock `PATH.lock`, or says who holds it.
fn take_lock(dir: &Path, path: &Path) -> Result<OwnerLock, StorageError> {
    OwnerLock::acquire(path).map_err(|e| match e {
        LockError::Held { pid, .. } => StorageError::AlreadyOpen { dir: dir.to_path_buf(), pid },
        LockError::Io { lock, what, source } => StorageError::Io { path: lock, what, source },
        other => {
            StorageError::Io { path: path.to_path_buf(), what: "taking the lock", source: std::io::Error::other(other) }
        }
    })
}

fn encode_version(v: &Version) -> Vec<u8> {
    record::encode(&Record { version: v.clone(), value: None, expires_at_ms: 0, features: Default::default() })
}

fn decode_version(path: &Path, bytes: &[u8]) -> Result<Version, StorageError> {
    record::decode("meta:max_version", bytes).map(|r| r.version).map_err(|e| corrupt(path, e))
}

fn format_err(path: &Path) -> impl FnOnce(FormatError) -> StorageError + '_ {
    move |source| match source {
        FormatError::Redb { .. } | FormatError::CorruptStamp { .. } => corrupt(path, source),
        source => StorageError::Format { path: path.to_path_buf(), source },
    }
}

/// The policy a new unit is created with: format 1, whatever the release
/// reads; its migrations bring it up to what the enabled flags allow.
fn creation_policy(release: &str) -> Result<FormatPolicy, FormatError> {
    FormatPolicy::new(1, 1, release)
}

/// Opens an existing data file read-only first, so a foreign or damaged file,
/// or a `records` unit this release does not read, is refused without a byte
/// written; then writable.
fn open_db(path: &Path, dir: &Path, policy: &FormatPolicy) -> Result<(Database, Option<Version>), StorageError> {
    let existing = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(corrupt(path, "it is a directory")),
        Ok(m) => m.len() > 0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(path, "reading the file's metadata")(e)),
    };
    let map_open = |e: redb::DatabaseError| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StorageError::AlreadyOpen { dir: dir.to_path_buf(), pid: None },
        redb::DatabaseError::Storage(redb::StorageError::Io(e)) if e.kind() != std::io::ErrorKind::InvalidData => {
            io(path, "opening the data file")(e)
        }
        other => corrupt(path, other),
    };
    if !existing {
        let db = Database::builder().create(path).map_err(|e| corrupt(path, e))?;
        let init = backend(path, "initialising");
        let wtx = db.begin_write().map_err(|e| init(&e))?;
        {
            wtx.open_table(META).map_err(|e| init(&e))?;
            wtx.open_table(RECORDS).map_err(|e| init(&e))?;
            let creation = creation_policy(policy.release()).map_err(format_err(path))?;
            format::stamp_unit(&wtx, RECORDS.name(), &creation).map_err(format_err(path))?;
        }
        wtx.commit().map_err(|e| init(&e))?;
        return Ok((db, None));
    }
    // redb's checks may assert on a file it did not write: that must not
    // take the node down, nor touch the file.
    match std::panic::catch_unwind(|| redb::Builder::new().open_read_only(path)) {
        Ok(Ok(ro)) => {
            check_meta(path, &ro, policy)?;
        }
        // A file left by a crash needs redb's repair, which only a writable open does.
        Ok(Err(redb::DatabaseError::RepairAborted)) => {}
        Ok(Err(e)) => return Err(map_open(e)),
        Err(_) => return Err(corrupt(path, "the file failed redb's consistency checks")),
    };
    let db = match std::panic::catch_unwind(|| Database::builder().open(path)) {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => return Err(map_open(e)),
        Err(_) => return Err(corrupt(path, "the file failed redb's consistency checks")),
    };
    let max = check_meta(path, &db, policy)?;
    Ok((db, max))
}

/// Checks that the file is a rollgate-kv data file whose `records` unit this
/// release reads. A unit below the readable formats that holds no record is
/// accepted: there is no layout to misread, and the migrations bring it up.
fn check_meta(path: &Path, db: &impl ReadableDatabase, policy: &FormatPolicy) -> Result<Option<Version>, StorageError> {
    let rtx = db.begin_read().map_err(|e| corrupt(path, e))?;
    let meta = rtx.open_table(META).map_err(|_| corrupt(path, "a redb file without rollgate-kv's meta table"))?;
    let records = rtx.open_table(RECORDS).map_err(|_| corrupt(path, "no records table"))?;
    let stamp = format::read_stamp_ro(&rtx, RECORDS.name()).map_err(format_err(path))?;
    let Some(stamp) = stamp else {
        return Err(format_err(path)(FormatError::Missing { unit: RECORDS.name().to_string() }));
    };
    match policy.check(RECORDS.name(), &stamp) {
        Ok(()) => {}
        Err(FormatError::TooOld { .. }) if records.is_empty().map_err(|e| corrupt(path, e))? => {}
        Err(e) => return Err(format_err(path)(e)),
    }
    match meta.get("max_version").map_err(|e| corrupt(path, e))? {
        Some(v) => Ok(Some(decode_version(path, v.value())?)),
        None => Ok(None),
    }
}

/// The key of a stored record, as text.
fn key_str<'a>(path: &Path, key: &'a [u8]) -> Result<&'a str, StorageError> {
    std::str::from_utf8(key).map_err(|_| corrupt(path, format!("a record key is not UTF-8 ({} bytes)", key.len())))
}

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
        let writer = {
            let (db, file, max, options) = (db.clone(), path.clone(), max.clone(), options.clone());
            std::thread::Builder::new()
                .name("kv-storage-writer".into())
                .spawn(move || writer_loop(&db, &file, rx, max, &options))
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
        };
        Ok((Storage { inner: Arc::new(inner) }, max))
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
        for e in &entries {
            record::check(&e.key, &e.record)
                .map_err(|reason| StorageError::InvalidEntry { key: rollgate::util::shorten_to(&e.key, 96), reason })?;
        }
        let (reply, rx) = oneshot::channel();
        self.inner.jobs.send(Job::Apply { entries, reply }).await.map_err(|_| self.closed())?;
        Ok(PendingApply { rx, path: self.inner.path.clone() })
    }

    /// Waits until every write queued before this call is durable.
    pub async fn barrier(&self) -> Result<(), StorageError> {
        let (reply, rx) = oneshot::channel();
        self.inner.jobs.send(Job::Barrier(reply)).await.map_err(|_| self.closed())?;
        rx.await.map_err(|_| self.closed())
    }

    async fn read<T: Send + 'static>(
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

    /// The `records` unit's format stamp.
    pub async fn unit_stamp(&self) -> Result<FormatStamp, StorageError> {
        self.read(|db, path| {
            let rtx = db.begin_read().map_err(|e| backend(path, "reading the format stamp")(&e))?;
            format::read_stamp_ro(&rtx, RECORDS.name())
                .map_err(format_err(path))?
                .ok_or_else(|| format_err(path)(FormatError::Missing { unit: RECORDS.name().to_string() }))
        })
        .await
    }

    /// Entries in the expiry index (0 before format 3).
    pub async fn expiry_index_len(&self) -> Result<u64, StorageError> {
        self.read(|db, path| {
            let rtx = db.begin_read().map_err(|e| backend(path, "reading the expiry index")(&e))?;
            match rtx.open_table(EXPIRY) {
                Ok(t) => t.len().map_err(|e| backend(path, "reading the expiry index")(&e)),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
                Err(e) => Err(backend(path, "reading the expiry index")(&e)),
            }
        })
        .await
    }

    /// The live records whose key starts with `prefix`, in key order: at most
    /// `limit`, looking at no more than `max_scanned` records (tombstones and
    /// expired values are skipped). The flag says whether more may follow.
    pub async fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
        max_scanned: usize,
        now_ms: u64,
    ) -> Result<(Vec<StoredEntry>, bool), StorageError> {
        let prefix = prefix.to_string();
        self.read(move |db, path| {
            let rtx = db.begin_read().map_err(|e| backend(path, "a prefix scan")(&e))?;
            let kv = rtx.open_table(RECORDS).map_err(|e| backend(path, "a prefix scan")(&e))?;
            let iter = kv.range::<&[u8]>(prefix.as_bytes()..).map_err(|e| backend(path, "a prefix scan")(&e))?;
            let mut out = Vec::new();
            for (scanned, item) in iter.enumerate() {
                let (k, v) = item.map_err(|e| backend(path, "a prefix scan")(&e))?;
                if !k.value().starts_with(prefix.as_bytes()) {
                    return Ok((out, false));
                }
                if out.len() >= limit.max(1) || scanned >= max_scanned {
                    return Ok((out, true));
                }
                let key = key_str(path, k.value())?;
                let record = record::decode(key, v.value())?;
                if record.live_value(now_ms).is_some() {
                    out.push(StoredEntry { key: key.to_string(), record });
                }
            }
            Ok((out, false))
        })
        .await
    }

    /// The record of `key`, if any (tombstones and expired values included).
    pub async fn get(&self, key: &str) -> Result<Option<Record>, StorageError> {
        let key = key.to_string();
        self.read(move |db, path| {
            let rtx = db.begin_read().map_err(|e| backend(path, "a read")(&e))?;
            let kv = rtx.open_table(RECORDS).map_err(|e| backend(path, "a read")(&e))?;
            match kv.get(key.as_bytes()).map_err(|e| backend(path, "a read")(&e))? {
                None => Ok(None),
                Some(bytes) => Ok(Some(record::decode(&key, bytes.value())?)),
            }
        })
        .await
    }

    /// Entries of `range` in key order: at most `max_entries`, and stopping
    /// once `max_bytes` of keys and values are collected (at least one entry).
    pub async fn scan(&self, range: KeyRange, max_entries: usize, max_bytes: usize) -> Result<Chunk, StorageError> {
        let max_entries = max_entries.max(1);
        self.read(move |db, path| {
            let rtx = db.begin_read().map_err(|e| backend(path, "a scan")(&e))?;
            let kv = rtx.open_table(RECORDS).map_err(|e| backend(path, "a scan")(&e))?;
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            let Some(iter) = range_iter(&kv, &range, path)? else { return Ok(Chunk { entries, done: true }) };
            for item in iter {
                let (k, v) = item.map_err(|e| backend(path, "a scan")(&e))?;
                if entries.len() >= max_entries || (bytes >= max_bytes && !entries.is_empty()) {
                    return Ok(Chunk { entries, done: false });
                }
                let key = key_str(path, k.value())?.to_string();
                let record = record::decode(&key, v.value())?;
                bytes += key.len() + record.value.as_ref().map_or(0, Vec::len);
                entries.push(StoredEntry { key, record });
            }
            Ok(Chunk { entries, done: true })
        })
        .await
    }

    /// Splits the whole key space into ranges of at most `keys_per_range`
    /// local entries and returns each range with its local digest. The last
    /// range is open-ended, so together they cover every possible key.
    pub async fn local_ranges(&self, keys_per_range: usize) -> Result<Vec<(KeyRange, RangeDigest)>, StorageError> {
        let per = keys_per_range.max(1);
        self.read(move |db, path| {
            let rtx = db.begin_read().map_err(|e| backend(path, "a digest")(&e))?;
            let kv = rtx.open_table(RECORDS).map_err(|e| backend(path, "a digest")(&e))?;
            let mut out = Vec::new();
            let mut after: Option<String> = None;
            let mut hasher = RangeHasher::default();
            for item in kv.iter().map_err(|e| backend(path, "a digest")(&e))? {
                let (k, v) = item.map_err(|e| backend(path, "a digest")(&e))?;
                let key = key_str(path, k.value())?;
                hasher.add(key, &record::decode(key, v.value())?);
                if hasher.count as usize == per {
                    let through = Some(key.to_string());
                    out.push((KeyRange { after: after.take(), through: through.clone() }, hasher.finish()));
                    hasher = RangeHasher::default();
                    after = through;
                }
            }
            out.push((KeyRange { after, through: None }, hasher.finish()));
            Ok(out)
        })
        .await
    }

    /// The digest of each range.
    pub async fn digests(&self, ranges: Vec<KeyRange>) -> Result<Vec<RangeDigest>, StorageError> {
        self.read(move |db, path| {
            let rtx = db.begin_read().map_err(|e| backend(path, "a digest")(&e))?;
            let kv = rtx.open_table(RECORDS).map_err(|e| backend(path, "a digest")(&e))?;
            let mut out = Vec::with_capacity(ranges.len());
            for range in &ranges {
                let mut hasher = RangeHasher::default();
                if let Some(iter) = range_iter(&kv, range, path)? {
                    for item in iter {
                        let (k, v) = item.map_err(|e| backend(path, "a digest")(&e))?;
                        let key = key_str(path, k.value())?;
                        hasher.add(key, &record::decode(key, v.value())?);
                    }
                }
                out.push(hasher.finish());
            }
            Ok(out)
        })
        .await
    }

    /// Number of records (tombstones included).
    pub async fn count(&self) -> Result<u64, StorageError> {
        self.read(|db, path| {
            let rtx = db.begin_read().map_err(|e| backend(path, "a count")(&e))?;
            let kv = rtx.open_table(RECORDS).map_err(|e| backend(path, "a count")(&e))?;
            kv.len().map_err(|e| backend(path, "a count")(&e))
        })
        .await
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

type KvTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
type KvRange = redb::Range<'static, &'static [u8], &'static [u8]>;

fn range_iter(kv: &KvTable, range: &KeyRange, path: &Path) -> Result<Option<KvRange>, StorageError> {
    if let (Some(a), Some(t)) = (&range.after, &range.through)
        && a >= t
    {
        return Ok(None);
    }
    let lower = match &range.after {
        Some(a) => Bound::Excluded(a.as_bytes()),
        None => Bound::Unbounded,
    };
    let upper = match &range.through {
        Some(t) => Bound::Included(t.as_bytes()),
        None => Bound::Unbounded,
    };
    kv.range::<&[u8]>((lower, upper)).map(Some).map_err(|e| backend(path, "a scan")(&e))
}

#[derive(Default)]
struct RangeHasher {
    count: u64,
    sha: Sha256,
}

impl RangeHasher {
    fn add(&mut self, key: &str, r: &Record) {
        self.count += 1;
        self.sha.update((key.len() as u64).to_le_bytes());
        self.sha.update(key.as_bytes());
        self.sha.update(r.version.wall_ms.to_le_bytes());
        self.sha.update(r.version.logical.to_le_bytes());
        self.sha.update((r.version.node.len() as u64).to_le_bytes());
        self.sha.update(r.version.node.as_bytes());
        self.sha.update(r.expires_at_ms.to_le_bytes());
        self.sha.update([u8::from(r.value.is_some())]);
    }

    fn finish(self) -> RangeDigest {
        let full = self.sha.finalize();
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&full[..16]);
        RangeDigest { count: self.count, hash }
    }
}

fn writer_loop(
    db: &Database,
    path: &Path,
    mut rx: mpsc::Receiver<Job>,
    mut max: Option<Version>,
    options: &StorageOptions,
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
        if shutdown {
            break;
        }
    }
}

/// Whether `new` replaces `old`: a higher version wins. The same version
/// is the same write; a copy that lost its expiry on the way (sent over a
/// transport version without `expires_at_ms`) gives way to one that has it,
/// so the copies converge whatever order they arrive in.
fn supersedes(new: &Record, old: &Record) -> bool {
    match new.version.cmp(&old.version) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => old.expires_at_ms == 0 && new.expires_at_ms != 0,
        std::cmp::Ordering::Less => false,
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
        let newer = old.as_ref().is_none_or(|old| supersedes(&e.record, old));
        if newer {
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
            applied.push(Applied::Stored);
        } else {
            applied.push(Applied::Superseded);
        }
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

    fn policy() -> FormatPolicy {
        FormatPolicy::new(1, 3, "1.2").unwrap()
    }

    fn entry(key: &str, wall_ms: u64, value: Option<&str>) -> StoredEntry {
        StoredEntry {
            key: key.into(),
            record: Record {
                version: Version { wall_ms, logical: 0, node: "n".into() },
                value: value.map(|v| v.as_bytes().to_vec()),
                expires_at_ms: 0,
                features: Default::default(),
            },
        }
    }

    #[tokio::test]
    async fn last_writer_wins_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (s, max) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        assert_eq!(max, None);
        assert_eq!(s.apply(vec![entry("a", 2, Some("new"))]).await.unwrap(), [Applied::Stored]);
        assert_eq!(s.apply(vec![entry("a", 1, Some("old"))]).await.unwrap(), [Applied::Superseded]);
        assert_eq!(s.apply(vec![entry("a", 3, None)]).await.unwrap(), [Applied::Stored]);
        assert_eq!(s.get("a").await.unwrap().unwrap().value, None, "a tombstone");
        s.close().await;
        assert!(matches!(s.get("a").await, Err(StorageError::Closed { .. })));
        let (s, max) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        assert_eq!(max.unwrap().wall_ms, 3, "the clock floor survives");
        assert_eq!(s.get("a").await.unwrap().unwrap().version.wall_ms, 3);
        s.close().await;
    }

    #[tokio::test]
    async fn a_copy_with_its_expiry_wins_over_one_that_lost_it() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        let plain = entry("k", 5, Some("v"));
        let mut with_ttl = plain.clone();
        with_ttl.record.expires_at_ms = 99;
        assert_eq!(s.apply(vec![plain.clone()]).await.unwrap(), [Applied::Stored]);
        assert_eq!(s.apply(vec![with_ttl.clone()]).await.unwrap(), [Applied::Stored]);
        assert_eq!(s.apply(vec![plain]).await.unwrap(), [Applied::Superseded]);
        assert_eq!(s.get("k").await.unwrap().unwrap().expires_at_ms, 99);
        s.close().await;
    }

    #[tokio::test]
    async fn a_second_opener_is_refused_until_close() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        let e = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap_err();
        assert!(matches!(e, StorageError::AlreadyOpen { pid: Some(_), .. }), "{e}");
        s.close().await;
        let (again, _) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        again.close().await;
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200u64 {
            let s = s.clone();
            tasks.spawn(async move { s.apply(vec![entry(&format!("k{i:03}"), i + 1, Some("v"))]).await });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().unwrap(), [Applied::Stored]);
        }
        s.barrier().await.unwrap();
        assert_eq!(s.count().await.unwrap(), 200);
        let chunk = s.scan(KeyRange { after: Some("k009".into()), through: Some("k020".into()) }, 5, 1 << 20).await;
        let chunk = chunk.unwrap();
        assert_eq!(
            chunk.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["k010", "k011", "k012", "k013", "k014"]
        );
        assert!(!chunk.done);
        let rest = s.scan(KeyRange { after: Some("k014".into()), through: Some("k020".into()) }, 100, 1 << 20).await;
        assert_eq!(rest.unwrap().entries.len(), 6);
        let empty = s.scan(KeyRange { after: Some("z".into()), through: Some("a".into()) }, 10, 10).await.unwrap();
        assert!(empty.done && empty.entries.is_empty());
        s.close().await;
    }

    #[tokio::test]
    async fn ranges_cover_everything_and_digests_agree() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        s.apply((0..10).map(|i| entry(&format!("k{i}"), 1, Some("v"))).collect()).await.unwrap();
        let ranges = s.local_ranges(4).await.unwrap();
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges.iter().map(|(_, d)| d.count).sum::<u64>(), 10);
        assert_eq!(ranges[2].0.through, None);
        let again = s.digests(ranges.iter().map(|(r, _)| r.clone()).collect()).await.unwrap();
        assert_eq!(again, ranges.iter().map(|(_, d)| *d).collect::<Vec<_>>());
        s.apply(vec![entry("k5", 2, Some("w"))]).await.unwrap();
        let changed = s.digests(ranges.iter().map(|(r, _)| r.clone()).collect()).await.unwrap();
        assert_eq!(changed[0], ranges[0].1);
        assert_ne!(changed[1], ranges[1].1, "k5 is in the second range");
        s.close().await;
    }

    #[tokio::test]
    async fn a_unit_this_release_cannot_read_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        assert_eq!(s.unit_stamp().await.unwrap().format, 1, "created at format 1");
        s.close().await;
        // A release reading only formats 2..=3 opens an empty format 1 unit
        // (nothing to misread; its migrations bring it up) ...
        let two = FormatPolicy::new(2, 3, "2.0").unwrap();
        let (s, _) = Storage::open(dir.path(), StorageOptions::default(), &two).unwrap();
        s.apply(vec![entry("k", 1, Some("v"))]).await.unwrap();
        s.close().await;
        // ... but not one with records, and not a newer one.
        let file = dir.path().join(DATA_FILE);
        let before = std::fs::read(&file).unwrap();
        let e = Storage::open(dir.path(), StorageOptions::default(), &two).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, StorageError::Format { .. }), "{msg}");
        assert!(msg.contains("unit `records` has format 1 but this release reads formats 2..=3"), "{msg}");
        assert_eq!(std::fs::read(&file).unwrap(), before, "the file is left as it was");
        let db = Database::open(&file).unwrap();
        let wtx = db.begin_write().unwrap();
        let mut stamp = format::read_stamp(&wtx, "records").unwrap().unwrap();
        stamp.format = 3;
        wtx.open_table(format::FORMAT_TABLE).unwrap().insert("records", stamp.to_bytes().as_slice()).unwrap();
        wtx.commit().unwrap();
        drop(db);
        let old = FormatPolicy::new(1, 1, "1.0").unwrap();
        let before = std::fs::read(&file).unwrap();
        let msg = Storage::open(dir.path(), StorageOptions::default(), &old).unwrap_err().to_string();
        assert!(msg.contains("has format 3 but this release reads formats 1..=1: run release 1.2 or later"), "{msg}");
        assert_eq!(std::fs::read(&file).unwrap(), before, "the file is left as it was");
    }

    #[tokio::test]
    async fn once_the_expiry_index_exists_every_commit_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        let with_ttl = |key: &str, wall_ms: u64, expires: u64| {
            let mut e = entry(key, wall_ms, Some("v"));
            e.record.expires_at_ms = expires;
            e
        };
        s.apply(vec![with_ttl("a", 1, 50)]).await.unwrap();
        assert_eq!(s.expiry_index_len().await.unwrap(), 0, "no index before format 3");
        let db = s.database().unwrap();
        let wtx = db.begin_write().unwrap();
        wtx.open_table(EXPIRY).unwrap();
        wtx.commit().unwrap();
        drop(db);
        s.apply(vec![with_ttl("b", 1, 70), with_ttl("c", 1, 0)]).await.unwrap();
        assert_eq!(s.expiry_index_len().await.unwrap(), 1);
        s.apply(vec![with_ttl("b", 2, 90)]).await.unwrap();
        s.apply(vec![entry("b", 3, None)]).await.unwrap();
        assert_eq!(s.expiry_index_len().await.unwrap(), 0, "replaced: the old entry went");
        s.apply(vec![with_ttl("d", 1, 80)]).await.unwrap();
        let db = s.database().unwrap();
        let rtx = db.begin_read().unwrap();
        let keys: Vec<Vec<u8>> =
            rtx.open_table(EXPIRY).unwrap().iter().unwrap().map(|r| r.unwrap().0.value().to_vec()).collect();
        assert_eq!(keys, [expiry_key(80, b"d")]);
        drop((rtx, db));
        s.close().await;
    }

    #[tokio::test]
    async fn a_prefix_scan_returns_live_records_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        let mut expired = entry("user/3", 1, Some("x"));
        expired.record.expires_at_ms = 5;
        s.apply(vec![
            entry("user/1", 1, Some("a")),
            entry("user/2", 1, None),
            expired,
            entry("user/4", 1, Some("d")),
            entry("users", 1, Some("e")),
            entry("v", 1, Some("f")),
        ])
        .await
        .unwrap();
        let keys = |v: &[StoredEntry]| v.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
        let (all, more) = s.scan_prefix("user/", 10, 100, 10).await.unwrap();
        assert_eq!((keys(&all), more), (vec!["user/1".to_string(), "user/4".into()], false));
        let (one, more) = s.scan_prefix("user", 1, 100, 10).await.unwrap();
        assert_eq!((keys(&one), more), (vec!["user/1".to_string()], true));
        let (_, more) = s.scan_prefix("user", 10, 2, 10).await.unwrap();
        assert!(more, "bounded by the records looked at");
        s.close().await;
    }

    #[tokio::test]
    async fn a_foreign_file_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATA_FILE);
        std::fs::write(&path, b"not a redb file at all, just text").unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap_err();
        assert!(matches!(e, StorageError::Corrupt { .. }), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[tokio::test]
    async fn an_invalid_entry_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(dir.path(), StorageOptions::default(), &policy()).unwrap();
        let e = s.apply(vec![entry("ok", 1, Some("v")), entry("", 1, Some("v"))]).await.unwrap_err();
        assert!(matches!(e, StorageError::InvalidEntry { .. }), "{e}");
        assert_eq!(s.get("ok").await.unwrap(), None);
        s.close().await;
    }
}
