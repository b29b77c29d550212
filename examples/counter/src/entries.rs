//! What a node stores: one entry per accepted `Add`, as an extensible record
//! ([`rollgate::record::Record`]): the fields every release knows
//! ([`Entry`]) and a feature map whose keys carry a version.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `from@1` | the sending node's id | every release |
//! | `from@2` | [`Sender`]: node and release | 1.1, once flag `entry_from_v2` is enabled |
//!
//! Readers prefer `from@2` and fall back to `from@1` ([`sender`]). Code that
//! does not know a key keeps it byte for byte; the flag makes sure no node
//! that lacks `from@2` runs once entries carry it (a 1.0 node is refused at
//! boot from then on). Entries live in a redb table in the node's data dir,
//! encoded at transport version zero: stored data evolves through feature
//! keys (and, for rewrites, `rollgate::migrate`), not transport versions.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rollgate::record::{FeatureKey, Record, RecordError, VALUE_TRANSPORT_VERSION};
use rollgate::wire::{self, Decode, Encode, Limits};

use crate::Error;
use crate::releases::ENTRY_FROM_V2;

/// The sending node's id.
pub const FROM_V1: FeatureKey<String> = FeatureKey::new("from", 1);
/// The sending node and its release; written only once `entry_from_v2` is enabled.
pub const FROM_V2: FeatureKey<Sender> = FeatureKey::new("from", 2).gated_by(ENTRY_FROM_V2);

/// The fields of an entry every release knows.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Entry {
    /// The amount added.
    pub by: u64,
}

/// `from@2`: who sent an entry.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Sender {
    /// The sending node.
    pub node: String,
    /// Its release (empty when read from `from@1`).
    pub release: String,
}

/// A stored entry.
pub type StoredEntry = Record<Entry>;

/// Who sent `entry`: from `from@2` when present, else from `from@1`.
pub fn sender(entry: &StoredEntry) -> Result<Option<Sender>, RecordError> {
    entry.features.lookup(&FROM_V2).or(&FROM_V1, |node| Sender { node, release: String::new() }).get()
}

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const LIMITS: Limits = Limits { max_frame_bytes: 64 * 1024, max_collection_len: 4096, max_depth: 8 };

/// A node's entries: `DIR/entries.redb`.
#[derive(Debug)]
pub struct Entries {
    path: PathBuf,
    db: Database,
}

impl Entries {
    /// Opens (or creates) the entries of the data dir `dir`.
    pub fn open(dir: &Path) -> Result<Entries, Error> {
        let path = dir.join("entries.redb");
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::Io { what: format!("creating the data dir {}", dir.display()), source })?;
        let create = || -> Result<Database, redb::Error> {
            let db = Database::create(&path)?;
            let tx = db.begin_write()?;
            tx.open_table(TABLE)?;
            tx.commit()?;
            Ok(db)
        };
        let db = create().map_err(|source| Error::Storage { path: path.clone(), source })?;
        Ok(Entries { path, db })
    }

    /// Appends `entry`; returns its sequence number.
    pub fn append(&self, entry: &StoredEntry) -> Result<u64, Error> {
        let bytes = wire::encode_to_vec(entry, VALUE_TRANSPORT_VERSION, LIMITS)
            .map_err(|e| Error::Failed(format!("an entry cannot be stored: {e}")))?;
        let append = || -> Result<u64, redb::Error> {
            let tx = self.db.begin_write()?;
            let seq = {
                let mut table = tx.open_table(TABLE)?;
                let seq = table.last()?.map_or(1, |(k, _)| k.value() + 1);
                table.insert(seq, bytes.as_slice())?;
                seq
            };
            tx.commit()?;
            Ok(seq)
        };
        append().map_err(|source| Error::Storage { path: self.path.clone(), source })
    }

    /// Every entry with its sequence number, oldest first.
    pub fn list(&self) -> Result<Vec<(u64, StoredEntry)>, Error> {
        let read = || -> Result<Vec<(u64, Vec<u8>)>, redb::Error> {
            let table = self.db.begin_read()?.open_table(TABLE)?;
            table.iter()?.map(|kv| kv.map(|(k, v)| (k.value(), v.value().to_vec())).map_err(Into::into)).collect()
        };
        let raw = read().map_err(|source| Error::Storage { path: self.path.clone(), source })?;
        let decode = |(seq, bytes): (u64, Vec<u8>)| {
            let entry = wire::decode_frame(&bytes, VALUE_TRANSPORT_VERSION, LIMITS).map_err(|e| {
                Error::Failed(format!("entries file {}: entry {seq} does not decode: {e}", self.path.display()))
            })?;
            Ok((seq, entry))
        };
        raw.into_iter().map(decode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_entry_is_an_error_naming_it_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let entries = Entries::open(dir.path()).unwrap();
        let tx = entries.db.begin_write().unwrap();
        tx.open_table(TABLE).unwrap().insert(7, [0xff_u8; 40].as_slice()).unwrap();
        tx.commit().unwrap();
        let e = entries.list().unwrap_err().to_string();
        assert!(e.contains("entry 7 does not decode"), "{e}");
    }
}
