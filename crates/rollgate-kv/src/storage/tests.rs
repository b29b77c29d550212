//! The storage's unit tests.

use redb::{ReadableDatabase, ReadableTable};
use rollgate::format;

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
    assert_eq!(s.apply(vec![plain]).await.unwrap(), [Applied::Unchanged], "the same write, without its expiry");
    assert_eq!(s.apply(vec![with_ttl]).await.unwrap(), [Applied::Unchanged], "the same write again");
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
