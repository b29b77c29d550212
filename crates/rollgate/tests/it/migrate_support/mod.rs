//! Helpers shared by the migration tests: a real redb metadata store in a
//! temp dir, and what a data file holds.

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rollgate::format;
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
