//! The durable half of the embedded store: a redb file holding the revisioned
//! key table, the bounded change log, the leases and the store counters.
//!
//! Tables (format 1):
//!
//! | table | key | value |
//! |---|---|---|
//! | `kv` | key (`&str`) | create rev, mod rev, version, lease (4 x i64 LE, lease 0 = none), then the value bytes |
//! | `log` | revision (`i64`) | the revision's events (see [`encode_batch`]) |
//! | `leases` | lease id (`i64`) | TTL in seconds |
//! | `meta` | name (`&str`) | `format`, `revision`, `compacted`, `next_lease` |
//!
//! One process owns the file: `PATH.lock` is held with an exclusive file lock
//! (and names the owner's pid) for as long as the store is open.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::lock::{LockError, OwnerLock};
use super::state::{Change, LoadedState};
use super::{EventKind, KeyValue, StoreError, WatchBatch, WatchEvent};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// The on-disk format this code writes and reads.
const FORMAT: i64 = 1;

/// An open store file and its lock.
pub(crate) struct RedbFile {
    path: PathBuf,
    db: Database,
    // Held for the life of the store: the exclusive lock is the ownership.
    _lock: OwnerLock,
}

impl std::fmt::Debug for RedbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbFile").field("path", &self.path).finish()
    }
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { path: path.to_path_buf(), what, source }
}

/// Takes the ownership lock `PATH.lock`, or says who holds it.
fn take_lock(path: &Path) -> Result<OwnerLock, StoreError> {
    OwnerLock::acquire(path).map_err(|e| match e {
        LockError::Held { pid, .. } => StoreError::AlreadyOpen { path: path.to_path_buf(), pid },
        LockError::Io { lock, what, source } => StoreError::Io { path: lock, what, source },
    })
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { path: path.to_path_buf(), reason: reason.to_string() }
}

impl RedbFile {
    /// Opens (or creates) the file and loads its state.
    pub(crate) fn open(path: &Path) -> Result<(RedbFile, LoadedState), StoreError> {
        let lock = take_lock(path)?;
        let existing = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(corrupt(path, "it is a directory")),
            Ok(m) => m.len() > 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(path, "reading the file's metadata")(e)),
        };
        if existing {
            check_ours(path)?;
        }
        let db = if existing {
            // redb's own checks may assert on a file it did not write; a panic
            // there must not take the caller down, and must not touch the file.
            let opened = std::panic::catch_unwind(|| Database::builder().open(path));
            match opened {
                Ok(Ok(db)) => db,
                Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                    return Err(StoreError::AlreadyOpen { path: path.to_path_buf(), pid: None });
                }
                Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
                    if e.kind() != std::io::ErrorKind::InvalidData =>
                {
                    return Err(io(path, "opening the store")(e));
                }
                Ok(Err(e)) => return Err(corrupt(path, e)),
                Err(_) => return Err(corrupt(path, "the file failed redb's consistency checks")),
            }
        } else {
            let db = Database::builder().create(path).map_err(|e| corrupt(path, e))?;
            init(&db).map_err(|e| corrupt(path, e))?;
            db
        };
        let file = RedbFile { path: path.to_path_buf(), db, _lock: lock };
        let state = file.load()?;
        Ok((file, state))
    }

    fn load(&self) -> Result<LoadedState, StoreError> {
        let path = &self.path;
        let rtx = self.db.begin_read().map_err(|e| corrupt(path, e))?;
        let meta = rtx.open_table(META).map_err(|e| corrupt(path, format!("no rollgate metadata ({e})")))?;
        let get = |name: &str| -> Result<i64, StoreError> {
            meta.get(name)
                .map_err(|e| corrupt(path, e))?
                .map(|v| v.value())
                .ok_or_else(|| corrupt(path, format!("metadata entry {name:?} is missing")))
        };
        let format = get("format")?;
        if format != FORMAT {
            return Err(corrupt(path, format!("store format {format}, this build reads format {FORMAT}")));
        }
        let mut state = LoadedState {
            revision: get("revision")?,
            compacted: get("compacted")?,
            next_lease: get("next_lease")?,
            kvs: BTreeMap::new(),
            log: VecDeque::new(),
            leases: BTreeMap::new(),
        };
        let kv = rtx.open_table(KV).map_err(|e| corrupt(path, e))?;
        for item in kv.iter().map_err(|e| corrupt(path, e))? {
            let (k, v) = item.map_err(|e| corrupt(path, e))?;
            let key = k.value().to_string();
            let entry = decode_entry(&key, v.value()).map_err(|r| corrupt(path, format!("key {key:?}: {r}")))?;
            state.kvs.insert(key, entry);
        }
        let log = rtx.open_table(LOG).map_err(|e| corrupt(path, e))?;
        for item in log.iter().map_err(|e| corrupt(path, e))? {
            let (k, v) = item.map_err(|e| corrupt(path, e))?;
            let revision = k.value();
            let batch = decode_batch(revision, v.value())
                .map_err(|r| corrupt(path, format!("log revision {revision}: {r}")))?;
            state.log.push_back(batch);
        }
        let leases = rtx.open_table(LEASES).map_err(|e| corrupt(path, e))?;
        for item in leases.iter().map_err(|e| corrupt(path, e))? {
            let (k, v) = item.map_err(|e| corrupt(path, e))?;
            state.leases.insert(k.value(), v.value());
        }
        if state.kvs.values().any(|kv| kv.mod_revision > state.revision) {
            return Err(corrupt(path, "a key is newer than the store revision"));
        }
        Ok(state)
    }

    /// Commits one change durably.
    pub(crate) fn persist(&self, change: &Change) -> Result<(), StoreError> {
        let backend = |e: &dyn std::fmt::Display| StoreError::Backend {
            endpoint: format!("redb:{}", self.path.display()),
            reason: format!("commit failed: {e}"),
        };
        let wtx = self.db.begin_write().map_err(|e| backend(&e))?;
        {
            let mut kv = wtx.open_table(KV).map_err(|e| backend(&e))?;
            for (key, entry) in &change.writes {
                match entry {
                    Some(entry) => {
                        kv.insert(key.as_str(), encode_entry(entry).as_slice()).map_err(|e| backend(&e))?;
                    }
                    None => {
                        kv.remove(key.as_str()).map_err(|e| backend(&e))?;
                    }
                }
            }
            let mut log = wtx.open_table(LOG).map_err(|e| backend(&e))?;
            if let Some(batch) = &change.batch {
                log.insert(batch.revision, encode_batch(batch).as_slice()).map_err(|e| backend(&e))?;
            }
            if change.prune_log {
                let below = change.compacted;
                log.retain_in(..below, |_, _| false).map_err(|e| backend(&e))?;
            }
            let mut leases = wtx.open_table(LEASES).map_err(|e| backend(&e))?;
            for (id, ttl) in &change.leases {
                match ttl {
                    Some(ttl) => {
                        leases.insert(*id, *ttl).map_err(|e| backend(&e))?;
                    }
                    None => {
                        leases.remove(*id).map_err(|e| backend(&e))?;
                    }
                }
            }
            let mut meta = wtx.open_table(META).map_err(|e| backend(&e))?;
            meta.insert("revision", change.revision).map_err(|e| backend(&e))?;
            if change.prune_log {
                meta.insert("compacted", change.compacted).map_err(|e| backend(&e))?;
            }
            if !change.leases.is_empty() {
                meta.insert("next_lease", change.next_lease).map_err(|e| backend(&e))?;
            }
        }
        wtx.commit().map_err(|e| backend(&e))
    }
}

/// Reads an existing file without writing to it (a writable open of a
/// redb file updates its header) and refuses one that is not a store of ours.
fn check_ours(path: &Path) -> Result<(), StoreError> {
    let opened = std::panic::catch_unwind(|| redb::Builder::new().open_read_only(path));
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(StoreError::AlreadyOpen { path: path.to_path_buf(), pid: None });
        }
        // A file left by a crash needs redb's repair, which only a writable
        // open does; the writable open below checks the rest.
        Ok(Err(redb::DatabaseError::RepairAborted)) => return Ok(()),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.kind() != std::io::ErrorKind::InvalidData =>
        {
            return Err(io(path, "opening the store")(e));
        }
        Ok(Err(e)) => return Err(corrupt(path, e)),
        Err(_) => return Err(corrupt(path, "the file failed redb's consistency checks")),
    };
    let rtx = db.begin_read().map_err(|e| corrupt(path, e))?;
    let meta = rtx.open_table(META).map_err(|_| corrupt(path, "a redb file without rollgate's metadata table"))?;
    match meta.get("format").map_err(|e| corrupt(path, e))? {
        Some(_) => Ok(()),
        None => Err(corrupt(path, "a redb file without a rollgate format entry")),
    }
}

fn init(db: &Database) -> Result<(), redb::Error> {
    let wtx = db.begin_write()?;
    {
        wtx.open_table(KV)?;
        wtx.open_table(LOG)?;
        wtx.open_table(LEASES)?;
        let mut meta = wtx.open_table(META)?;
        meta.insert("format", FORMAT)?;
        meta.insert("revision", 1)?;
        meta.insert("compacted", 0)?;
        meta.insert("next_lease", 1)?;
    }
    wtx.commit()?;
    Ok(())
}

const ENTRY_HEADER: usize = 32;

fn encode_entry(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    bytes.get(at..at + 8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

fn decode_entry(key: &str, bytes: &[u8]) -> Result<KeyValue, String> {
    if bytes.len() < ENTRY_HEADER {
        return Err(format!("entry is {} bytes, shorter than its {ENTRY_HEADER}-byte header", bytes.len()));
    }
    let field = |i: usize| read_i64(bytes, i * 8).unwrap_or(0);
    let (create_revision, mod_revision, version, lease) = (field(0), field(1), field(2), field(3));
    if create_revision < 1 || mod_revision < create_revision || version < 1 {
        return Err("entry has impossible revisions".into());
    }
    Ok(KeyValue {
        key: key.to_string(),
        value: bytes[ENTRY_HEADER..].to_vec(),
        create_revision,
        mod_revision,
        version,
        lease: (lease != 0).then_some(lease),
    })
}

/// Encodes a batch: per event, kind (u8: 0 put, 1 delete), create revision
/// (i64), key length (u32) and key, value length (u32) and value; all LE.
fn encode_batch(batch: &WatchBatch) -> Vec<u8> {
    let mut out = Vec::new();
    for ev in &batch.events {
        out.push(match ev.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        out.extend_from_slice(&ev.create_revision.to_le_bytes());
        out.extend_from_slice(&(ev.key.len() as u32).to_le_bytes());
        out.extend_from_slice(ev.key.as_bytes());
        out.extend_from_slice(&(ev.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&ev.value);
    }
    out
}

fn decode_batch(revision: i64, mut bytes: &[u8]) -> Result<WatchBatch, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err("truncated event".into());
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    let mut events = Vec::new();
    while !bytes.is_empty() {
        let kind = match take(&mut bytes, 1)?[0] {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            other => return Err(format!("unknown event kind {other}")),
        };
        let create_revision = i64::from_le_bytes(take(&mut bytes, 8)?.try_into().map_err(|_| "bad revision")?);
        let klen = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().map_err(|_| "bad length")?) as usize;
        let key = std::str::from_utf8(take(&mut bytes, klen)?).map_err(|_| "key is not UTF-8")?.to_string();
        let vlen = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().map_err(|_| "bad length")?) as usize;
        let value = take(&mut bytes, vlen)?.to_vec();
        events.push(WatchEvent { kind, key, value, revision, create_revision });
    }
    Ok(WatchBatch { revision, events })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_codec_round_trips_and_rejects_garbage() {
        let batch = WatchBatch {
            revision: 7,
            events: vec![
                WatchEvent {
                    kind: EventKind::Put,
                    key: "a/b".into(),
                    value: b"v".to_vec(),
                    revision: 7,
                    create_revision: 3,
                },
                WatchEvent { kind: EventKind::Delete, key: "c".into(), value: vec![], revision: 7, create_revision: 0 },
            ],
        };
        assert_eq!(decode_batch(7, &encode_batch(&batch)).unwrap(), batch);
        for garbage in [&[9u8][..], &[0, 1, 2], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]] {
            assert!(decode_batch(1, garbage).is_err(), "{garbage:?}");
        }
        assert!(decode_entry("k", &[1, 2, 3]).is_err());
        assert!(decode_entry("k", &[0; 32]).is_err());
    }
}
