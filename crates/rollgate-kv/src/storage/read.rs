//! Reading the data file: single records, ranges, prefix scans and the
//! digests of key ranges (anti-entropy).

use std::ops::Bound;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle};
use rollgate::format::{self, FormatError, FormatStamp};
use sha2::{Digest as _, Sha256};

use super::open::format_err;
use super::{Chunk, EXPIRY, KeyRange, RECORDS, RangeDigest, Storage, StorageError, StoredEntry, backend, key_str};
use crate::record::{self, Record};

impl Storage {
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
        self.scan_prefix_where(prefix, limit, max_scanned, move |r| r.live_value(now_ms).is_some()).await
    }

    /// Every record whose key starts with `prefix` (tombstones and expired
    /// values included), in key order, at most `limit`; the flag says
    /// whether more follow (a quorum read compares them across nodes).
    pub async fn scan_prefix_all(&self, prefix: &str, limit: usize) -> Result<(Vec<StoredEntry>, bool), StorageError> {
        self.scan_prefix_where(prefix, limit, usize::MAX, |_| true).await
    }

    async fn scan_prefix_where(
        &self,
        prefix: &str,
        limit: usize,
        max_scanned: usize,
        keep: impl Fn(&crate::record::Record) -> bool + Send + 'static,
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
                if keep(&record) {
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
