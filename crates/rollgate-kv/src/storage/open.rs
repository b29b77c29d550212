//! Opening the data file: the ownership lock, and the read-only check of
//! the `records` unit's format stamp before anything is written.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableHandle};
use rollgate::format::{self, FormatError, FormatPolicy};
use rollgate::store::lock::{LockError, OwnerLock};

use super::{META, RECORDS, StorageError, backend, corrupt, io};
use crate::hlc::Version;
use crate::record::{self, Record};

/// Takes the ownership lock `PATH.lock`, or says who holds it.
pub(super) fn take_lock(dir: &Path, path: &Path) -> Result<OwnerLock, StorageError> {
    OwnerLock::acquire(path).map_err(|e| match e {
        LockError::Held { pid, .. } => StorageError::AlreadyOpen { dir: dir.to_path_buf(), pid },
        LockError::Io { lock, what, source } => StorageError::Io { path: lock, what, source },
        other => {
            StorageError::Io { path: path.to_path_buf(), what: "taking the lock", source: std::io::Error::other(other) }
        }
    })
}

pub(super) fn encode_version(v: &Version) -> Vec<u8> {
    record::encode(&Record { version: v.clone(), value: None, expires_at_ms: 0, features: Default::default() })
}

fn decode_version(path: &Path, bytes: &[u8]) -> Result<Version, StorageError> {
    record::decode("meta:max_version", bytes).map(|r| r.version).map_err(|e| corrupt(path, e))
}

pub(super) fn format_err(path: &Path) -> impl FnOnce(FormatError) -> StorageError + '_ {
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
pub(super) fn open_db(
    path: &Path,
    dir: &Path,
    policy: &FormatPolicy,
) -> Result<(Database, Option<Version>), StorageError> {
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
