//! Helpers shared by the migration tests: a real redb metadata store in a
//! temp dir, what a data file holds, and the `records` table whose values
//! go from `v1:...` to `v2:...` and back.

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rollgate::format;
use rollgate::migrate::Rewrite;
use rollgate::store::{self, MetaStore, StoreOptions};

/// Every `(key, value)` of `table`, in key order.
pub fn dump(db: &Database, table: TableDefinition<&[u8], &[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(table).unwrap();
    t.iter().unwrap().map(|e| e.unwrap()).map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).collect()
}

/// The format stamped on `unit`.
pub fn unit_format(db: &Database, unit: &str) -> u32 {
    format::read_stamp_ro(&db.begin_read().unwrap(), unit).unwrap().unwrap().format
}

/// A real redb metadata store at `DIR/meta.redb`.
pub async fn meta_store(dir: &tempfile::TempDir) -> Arc<dyn MetaStore> {
    store::open(&format!("redb:{}", dir.path().join("meta.redb").display()), StoreOptions::default()).await.unwrap()
}

/// The table the `records_v2` migrations rewrite.
pub const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

/// `records_v2` forward: `v1:X` becomes `v2:X`; `v2:` values are kept.
pub fn forward(_key: &[u8], value: &[u8]) -> Result<Rewrite, String> {
    match value.strip_prefix(b"v1:") {
        Some(rest) => Ok(Rewrite::Put([b"v2:".as_slice(), rest].concat())),
        None if value.starts_with(b"v2:") => Ok(Rewrite::Keep),
        None => Err("neither v1 nor v2".into()),
    }
}

/// `records_v2` reverse: `v2:X` becomes `v1:X`; `v1:` values are kept.
pub fn reverse(_key: &[u8], value: &[u8]) -> Result<Rewrite, String> {
    match value.strip_prefix(b"v2:") {
        Some(rest) => Ok(Rewrite::Put([b"v1:".as_slice(), rest].concat())),
        None if value.starts_with(b"v1:") => Ok(Rewrite::Keep),
        None => Err("neither v1 nor v2".into()),
    }
}
