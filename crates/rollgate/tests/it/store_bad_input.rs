//! Bad input to the metadata store: malformed URLs, a corrupt or foreign
//! redb file, a second opener of the same file. Each gets a clear error and
//! changes nothing. Also: what the embedded store keeps across a reopen.

use std::path::Path;

use futures::StreamExt;
use rollgate::store::{self, MetaStore, StoreError, StoreOptions, StoreUrl};

#[test]
fn malformed_urls_are_refused_with_a_reason() {
    // (url, a fragment the error must contain)
    let cases: &[(&str, &str)] = &[
        ("", "missing the scheme"),
        ("meta.redb", "missing the scheme"),
        (":x", "missing the scheme"),
        ("redis:127.0.0.1:6379", "unknown scheme \"redis\""),
        ("REDB:x", "unknown scheme"),
        ("mem:x", "takes nothing after the colon"),
        ("redb:", "needs a file path"),
        ("redb://tmp/x", "not `redb://PATH`"),
        ("redb:/tmp/dir/", "names a directory"),
        ("etcd:", "at least one HOST:PORT"),
        ("etcd://127.0.0.1:2379", "not `etcd://HOST:PORT`"),
        ("etcd:127.0.0.1", "has no port"),
        ("etcd:127.0.0.1:", "is not a number"),
        ("etcd:127.0.0.1:0", "out of range"),
        ("etcd:127.0.0.1:65536", "out of range"),
        ("etcd:127.0.0.1:99999999", "is not a number"),
        ("etcd:127.0.0.1:23x9", "is not a number"),
        ("etcd::2379", "has no host"),
        ("etcd:127.0.0.1:2379,", "empty endpoint"),
        ("etcd:,127.0.0.1:2379", "empty endpoint"),
        ("etcd:user@host:2379", "without scheme, path or user"),
        ("etcd:host:2379/path", "without scheme, path or user"),
        ("etcd:ho st:2379", "without scheme, path or user"),
        ("etcd:::1:2379", "[ADDR]:PORT"),
        ("etcd:[::1]2379", "[ADDR]:PORT"),
        ("etcd:[nothex]:2379", "not an IPv6 address"),
        ("etcd:h*st:2379", "not a host name or address"),
        ("redb:/tmp/a\nb", "control characters"),
    ];
    for (url, fragment) in cases {
        let err = url.parse::<StoreUrl>().expect_err(url);
        assert!(matches!(err, StoreError::InvalidUrl { .. }), "{url:?}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(fragment), "{url:?}: {msg:?} lacks {fragment:?}");
        assert!(msg.contains("expected `mem:`, `redb:PATH` or `etcd:HOST:PORT"), "{msg}");
    }
    let many = format!("etcd:{}", vec!["h:1"; store::MAX_ETCD_ENDPOINTS + 1].join(","));
    assert!(many.parse::<StoreUrl>().unwrap_err().to_string().contains("more than"));
    let long = format!("redb:/{}", "x".repeat(5000));
    assert!(long.parse::<StoreUrl>().unwrap_err().to_string().contains("longer than"));
}

#[test]
fn well_formed_urls_parse() {
    assert_eq!("mem:".parse::<StoreUrl>().unwrap(), StoreUrl::Mem);
    assert_eq!("redb:meta.redb".parse::<StoreUrl>().unwrap(), StoreUrl::Redb("meta.redb".into()));
    assert_eq!(
        "etcd:127.0.0.1:2379,etcd-2.local:2380,[::1]:2381".parse::<StoreUrl>().unwrap(),
        StoreUrl::Etcd(vec!["127.0.0.1:2379".into(), "etcd-2.local:2380".into(), "[::1]:2381".into()])
    );
    let url = "etcd:a:1,b:2";
    assert_eq!(url.parse::<StoreUrl>().unwrap().to_string(), url);
}

#[cfg(not(feature = "etcd"))]
#[tokio::test]
async fn etcd_url_without_the_feature_says_how_to_build() {
    let err = store::open("etcd:127.0.0.1:2379", StoreOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("--features etcd"), "{err}");
}

async fn open_redb(path: &Path) -> Result<std::sync::Arc<dyn MetaStore>, StoreError> {
    store::open(&format!("redb:{}", path.display()), StoreOptions::default()).await
}

#[tokio::test]
async fn corrupt_redb_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    // Garbage of several shapes: short, long, and a plausible-looking prefix.
    let mut long = vec![0u8; 64 * 1024];
    for (i, b) in long.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    let mut redb_magic = b"redb\x1A\x0A\xA9\x0D\x0A".to_vec();
    redb_magic.extend_from_slice(&[0xff; 4096]);
    for garbage in [b"not a database".to_vec(), long, redb_magic] {
        std::fs::write(&path, &garbage).unwrap();
        let err = open_redb(&path).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "names the path: {msg}");
        assert!(msg.contains("left untouched"), "{msg}");
        assert!(std::fs::read(&path).unwrap() == garbage, "not a byte changed");
    }
    // The lock was released: a valid store opens after the garbage is gone.
    std::fs::remove_file(&path).unwrap();
    open_redb(&path).await.unwrap();
}

#[tokio::test]
async fn a_redb_file_of_another_program_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("theirs");
            tx.open_table(def).unwrap().insert("k", 1).unwrap();
        }
        tx.commit().unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = open_redb(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("not a rollgate store"), "{err}");
    assert!(std::fs::read(&path).unwrap() == before, "not a byte changed");
}

#[tokio::test]
async fn a_second_opener_of_the_same_file_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let first = open_redb(&path).await.unwrap();
    first.put("k", b"v".to_vec()).await.unwrap();
    let err = open_redb(&path).await.unwrap_err();
    match &err {
        StoreError::AlreadyOpen { path: p, pid } => {
            assert_eq!(p, &path);
            assert_eq!(*pid, Some(std::process::id()), "the lock file names the owner");
        }
        other => panic!("expected AlreadyOpen, got {other}"),
    }
    let msg = err.to_string();
    for fragment in ["already open by another process", "only one process can own an embedded store", "use etcd"] {
        assert!(msg.contains(fragment), "{msg}");
    }
    // The first owner is unaffected; after it closes, the file opens again.
    assert_eq!(first.get("k").await.unwrap().unwrap().value, b"v");
    drop(first);
    let again = open_redb(&path).await.unwrap();
    assert_eq!(again.get("k").await.unwrap().unwrap().value, b"v");
}

#[tokio::test]
async fn a_second_process_gets_a_clear_error() {
    // The test binary re-runs itself as a child that tries to open the file.
    if let Ok(path) = std::env::var("ROLLGATE_TEST_SECOND_OPENER") {
        let err = open_redb(Path::new(&path)).await.unwrap_err();
        println!("CHILD-ERROR: {err}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let _owner = open_redb(&path).await.unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &crate::test_name(module_path!(), "a_second_process_gets_a_clear_error"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ROLLGATE_TEST_SECOND_OPENER", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD-ERROR: ").map(|(_, e)| e))
        .unwrap_or_else(|| panic!("no error line in {stdout}"));
    assert!(line.contains("is already open by another process"), "{line}");
    assert!(line.contains(&format!("(pid {})", std::process::id())), "{line}");
}

#[tokio::test]
async fn redb_keeps_data_revisions_and_history_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let (r1, r2) = {
        let s = open_redb(&path).await.unwrap();
        let r1 = s.put("a/1", b"x".to_vec()).await.unwrap();
        let (lease, _) = s.lease_grant(60).await.unwrap();
        let r2 = s.put_with_lease("a/2", b"y".to_vec(), lease).await.unwrap();
        (r1, r2)
    };
    let s = open_redb(&path).await.unwrap();
    let listing = s.list("a/").await.unwrap();
    assert_eq!(listing.revision, r2);
    assert_eq!(listing.kvs.len(), 2);
    let lease = listing.kvs[1].lease.expect("lease kept");
    s.lease_keep_alive(lease).await.expect("the lease survived the reopen");
    let mut w = s.watch("a/", Some(r1)).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision, r1, "history survives the reopen");
    assert_eq!(w.next().await.unwrap().unwrap().revision, r2);
    assert!(s.put("a/3", vec![]).await.unwrap() > r2, "revisions keep growing");
}

#[tokio::test]
async fn the_embedded_change_log_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redb:{}", dir.path().join("meta.redb").display());
    let options = StoreOptions { event_log_revisions: 3, ..StoreOptions::default() };
    let s = store::open(&url, options.clone()).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..6 {
        revs.push(s.put("k", vec![i]).await.unwrap());
    }
    assert!(matches!(s.watch("", Some(revs[2])).await, Err(StoreError::Compacted { .. })));
    let mut w = s.watch("", Some(revs[3])).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision, revs[3]);
    drop((w, s));
    let s = store::open(&url, options).await.unwrap();
    assert!(matches!(s.watch("", Some(revs[2])).await, Err(StoreError::Compacted { .. })), "bound kept on disk");
}

#[tokio::test]
async fn a_slow_watcher_is_cut_off_with_a_typed_error() {
    let options = StoreOptions {
        limits: store::Limits { max_watch_queue: 4, ..store::Limits::default() },
        ..StoreOptions::default()
    };
    let s = store::open("mem:", options).await.unwrap();
    let mut w = s.watch("", None).await.unwrap();
    for i in 0..10u8 {
        s.put("k", vec![i]).await.unwrap();
    }
    let mut delivered = 0;
    loop {
        match w.next().await {
            Some(Ok(_)) => delivered += 1,
            Some(Err(StoreError::WatchLagged { depth, .. })) => {
                assert_eq!(depth, 4);
                break;
            }
            other => panic!("expected WatchLagged, got {other:?}"),
        }
    }
    assert_eq!(delivered, 4, "the queued batches are delivered before the error");
    assert!(w.next().await.is_none(), "the stream ends after the error");
}
