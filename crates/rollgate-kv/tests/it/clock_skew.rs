//! I10 in-process: a version a day ahead in a peer's data, pulled by
//! catch-up, must not be stored beyond the puller's drift bound.

use rollgate_kv::hlc::{MAX_FORWARD_DRIFT_MS, Version};
use rollgate_kv::record::Record;
use rollgate_kv::storage::{Storage, StorageOptions, StoredEntry};

use crate::support;

const DAY_MS: u64 = 86_400_000;

/// Catch-up stores what it pulls as it comes, like replication: a version a
/// day ahead in a peer's data (written while that peer's clock was a day
/// ahead) must be clamped to the puller's wall clock plus the drift bound,
/// or refused. In-process nodes on a real redb metadata store, real TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_pulled_in_catch_up_beyond_the_drift_bound_is_clamped_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = support::redb_store(tmp.path()).await;
    let a_dir = support::data(tmp.path(), "a");
    let ahead = Version { wall_ms: rollgate::cluster::now_ms() + DAY_MS, logical: 0, node: "a".into() };
    {
        let policy = rollgate_kv::releases::find("1.2").unwrap().format_policy();
        let (storage, _) = Storage::open(&a_dir, StorageOptions::default(), &policy).unwrap();
        let record = Record {
            version: ahead.clone(),
            value: Some(b"from a day ahead".to_vec()),
            expires_at_ms: 0,
            features: Default::default(),
        };
        storage.apply(vec![StoredEntry { key: "k".into(), record }]).await.unwrap();
        storage.close().await;
    }
    let a = support::start(&store, "1.2", &a_dir).await;
    // b starts after a: it pulls everything from a before it serves.
    let b = support::start(&store, "1.2", &support::data(tmp.path(), "b")).await;
    let pulled = b.sync_stats().get(a.node_id()).cloned();
    let stored = b.local_record("k").await.unwrap();
    let bound = rollgate::cluster::now_ms() + MAX_FORWARD_DRIFT_MS;
    let what = format!(
        "b pulled {ahead} (a day ahead) from a ({pulled:?}) and holds {:?}; b's now + the drift bound is {bound}",
        stored.as_ref().map(|r| r.version.to_string())
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
    assert!(pulled.is_some(), "b did not pull from a: {what}");
    if let Some(r) = stored {
        assert!(r.version.wall_ms <= bound, "{what}");
    }
}
