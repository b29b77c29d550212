//! One conformance suite, written once, run against every metadata store:
//! `mem:`, `redb:` (a real file) and `etcd:` (a real etcd process on a free
//! loopback port). What passes here behaves the same on all three.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rollgate::store::{
    self, Compare, CompareOp, CompareTarget, EventKind, MetaStore, MetaStoreJson, OpResponse, StoreError, StoreOptions,
    Txn, TxnOp, WatchBatch, WatchStream,
};

/// Upper bound for anything a test waits for (a bound, not a pace).
const WAIT: Duration = Duration::from_secs(20);

async fn next_batch(stream: &mut WatchStream) -> WatchBatch {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(batch))) => batch,
        other => panic!("expected a watch batch, got {other:?}"),
    }
}

fn events(batch: &WatchBatch) -> Vec<(EventKind, String, Vec<u8>)> {
    batch.events.iter().map(|e| (e.kind, e.key.clone(), e.value.clone())).collect()
}

/// The suite. Every key lives under `root` so a store may be shared.
async fn conformance(store: Arc<dyn MetaStore>, root: &str) {
    kv_basics(&*store, &format!("{root}kv/")).await;
    listing(&*store, &format!("{root}list/")).await;
    transactions(&*store, &format!("{root}txn/")).await;
    limits(&*store, &format!("{root}limits/")).await;
    watches(&*store, &format!("{root}watch/")).await;
    compaction(&*store, &format!("{root}compact/")).await;
    leases(&*store, &format!("{root}lease/")).await;
    lease_expiry(&*store, &format!("{root}expiry/")).await;
    json(&*store, &format!("{root}json/")).await;
}

async fn kv_basics(store: &dyn MetaStore, p: &str) {
    let k = format!("{p}a");
    assert_eq!(store.get(&k).await.unwrap(), None);
    let r1 = store.put(&k, b"one".to_vec()).await.unwrap();
    let kv = store.get(&k).await.unwrap().expect("written");
    assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version), (&b"one"[..], r1, r1, 1));
    assert_eq!(kv.lease, None);
    let r2 = store.put(&k, b"two".to_vec()).await.unwrap();
    assert!(r2 > r1, "revisions grow: {r1} then {r2}");
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version), (&b"two"[..], r1, r2, 2));
    assert!(store.delete(&k).await.unwrap());
    assert!(!store.delete(&k).await.unwrap(), "second delete finds nothing");
    assert_eq!(store.get(&k).await.unwrap(), None);
    // Re-created: a new create revision and version 1.
    let r3 = store.put(&k, Vec::new()).await.unwrap();
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version, kv.value.len()), (r3, 1, 0));
}

async fn listing(store: &dyn MetaStore, p: &str) {
    let empty = store.list(p).await.unwrap();
    assert!(empty.kvs.is_empty());
    for k in ["b", "a/2", "a/1", "a0"] {
        store.put(&format!("{p}{k}"), k.as_bytes().to_vec()).await.unwrap();
    }
    let last = store.put(&format!("{p}c"), b"c".to_vec()).await.unwrap();
    let listing = store.list(&format!("{p}a/")).await.unwrap();
    let keys: Vec<&str> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, [format!("{p}a/1"), format!("{p}a/2")]);
    assert!(listing.revision >= last, "listing read at {} after write at {last}", listing.revision);
    let all = store.list(p).await.unwrap();
    assert_eq!(all.kvs.len(), 5);
    assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key), "key order");
}

async fn transactions(store: &dyn MetaStore, p: &str) {
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    // Create-if-absent succeeds once.
    let create = || Txn::new().when([Compare::absent(&a)]).and_then([TxnOp::put(&a, "1"), TxnOp::put(&b, "1")]);
    let first = store.txn(create()).await.unwrap();
    assert!(first.succeeded);
    assert_eq!(first.responses, vec![OpResponse::Put, OpResponse::Put]);
    let kva = store.get(&a).await.unwrap().unwrap();
    let kvb = store.get(&b).await.unwrap().unwrap();
    assert_eq!((kva.mod_revision, kvb.mod_revision), (first.revision, first.revision), "one revision per txn");

    let second = store.txn(create().or_else([TxnOp::get(&a)])).await.unwrap();
    assert!(!second.succeeded);
    assert_eq!(second.revision, first.revision, "a read-only branch does not bump the revision");
    match &second.responses[..] {
        [OpResponse::Get(Some(kv))] => assert_eq!(kv.value, b"1"),
        other => panic!("{other:?}"),
    }

    // Mod-revision guard: a stale revision fails, the current one passes.
    let stale = Txn::new().when([Compare::mod_revision(&a, first.revision - 1)]).and_then([TxnOp::put(&a, "x")]);
    assert!(!store.txn(stale).await.unwrap().succeeded);
    let fresh = Txn::new().when([Compare::mod_revision(&a, first.revision)]).and_then([TxnOp::put(&a, "2")]);
    let fresh = store.txn(fresh).await.unwrap();
    assert!(fresh.succeeded && fresh.revision > first.revision);

    // Value guards: equal / not equal; always false on an absent key.
    assert!(store.txn(Txn::new().when([Compare::value_equals(&a, "2")])).await.unwrap().succeeded);
    let ne = Compare { key: a.clone(), op: CompareOp::NotEqual, target: CompareTarget::Value(b"2".to_vec()) };
    assert!(!store.txn(Txn::new().when([ne])).await.unwrap().succeeded);
    let missing = format!("{p}missing");
    let ne_missing = Compare { key: missing.clone(), op: CompareOp::NotEqual, target: CompareTarget::Value(vec![]) };
    assert!(!store.txn(Txn::new().when([ne_missing])).await.unwrap().succeeded);
    // Create revision and version guards; greater / less.
    let created = Compare { key: a.clone(), op: CompareOp::Greater, target: CompareTarget::CreateRevision(0) };
    let version = Compare { key: a.clone(), op: CompareOp::Less, target: CompareTarget::Version(3) };
    assert!(
        store
            .txn(Txn::new().when([created, version, Compare::exists(&a), Compare::absent(&missing)]))
            .await
            .unwrap()
            .succeeded
    );

    // Several guards: one false guard runs the failure branch, which deletes.
    let mixed = Txn::new()
        .when([Compare::exists(&a), Compare::exists(&missing)])
        .and_then([TxnOp::put(&a, "never")])
        .or_else([TxnOp::delete(&b), TxnOp::delete(&missing)]);
    let resp = store.txn(mixed).await.unwrap();
    assert!(!resp.succeeded);
    assert_eq!(resp.responses, vec![OpResponse::Delete { deleted: 1 }, OpResponse::Delete { deleted: 0 }]);
    assert_eq!(store.get(&a).await.unwrap().unwrap().value, b"2");
    assert_eq!(store.get(&b).await.unwrap(), None);

    // A branch writing one key twice is refused and changes nothing.
    let before = store.list(p).await.unwrap();
    let dup = Txn::new().and_then([TxnOp::put(&a, "x"), TxnOp::delete(&a)]);
    assert!(matches!(store.txn(dup).await, Err(StoreError::DuplicateKey { key }) if key == a));
    assert_eq!(store.list(p).await.unwrap().kvs, before.kvs);
}

async fn limits(store: &dyn MetaStore, p: &str) {
    let limits = store.limits().clone();
    let before = store.put(&format!("{p}anchor"), b"x".to_vec()).await.unwrap();
    let long = format!("{p}{}", "k".repeat(limits.max_key_bytes));
    assert!(matches!(store.put(&long, vec![]).await, Err(StoreError::KeyTooLong { .. })));
    assert!(matches!(store.get(&long).await, Err(StoreError::KeyTooLong { .. })));
    let big = vec![7u8; limits.max_value_bytes + 1];
    let err = store.put(&format!("{p}big"), big).await.unwrap_err();
    assert!(matches!(err, StoreError::ValueTooLarge { .. }), "{err}");
    assert!(err.to_string().contains(&format!("{p}big")), "the error names the key: {err}");
    assert!(matches!(store.put("", vec![]).await, Err(StoreError::InvalidKey { .. })));
    assert!(matches!(store.put(&format!("{p}nul\0"), vec![]).await, Err(StoreError::InvalidKey { .. })));
    let ops: Vec<TxnOp> = (0..=limits.max_txn_ops).map(|i| TxnOp::put(format!("{p}op{i}"), "v")).collect();
    assert!(matches!(store.txn(Txn::new().and_then(ops)).await, Err(StoreError::TooManyOps { .. })));
    let listing = store.list(p).await.unwrap();
    assert_eq!(listing.kvs.len(), 1, "nothing written by refused requests");
    assert_eq!(listing.kvs[0].mod_revision, before);
}

async fn watches(store: &dyn MetaStore, p: &str) {
    let (a, b, other) = (format!("{p}in/a"), format!("{p}in/b"), format!("{p}out/x"));
    let start = store.put(&other, b"before".to_vec()).await.unwrap();
    let mut live = store.watch(&format!("{p}in/"), None).await.unwrap();
    let r1 = store.put(&a, b"1".to_vec()).await.unwrap();
    store.put(&other, b"ignored".to_vec()).await.unwrap();
    let r2 = store.txn(Txn::new().and_then([TxnOp::put(&b, "2"), TxnOp::delete(&a)])).await.unwrap().revision;
    let r3 = store.put(&b, b"3".to_vec()).await.unwrap();

    let batch = next_batch(&mut live).await;
    assert_eq!(batch.revision, r1);
    assert_eq!(events(&batch), vec![(EventKind::Put, a.clone(), b"1".to_vec())]);
    assert_eq!(batch.events[0].revision, r1);
    assert_eq!(batch.events[0].create_revision, r1);
    let batch = next_batch(&mut live).await;
    assert_eq!(batch.revision, r2, "one batch per revision; the out-of-prefix write is not seen");
    assert_eq!(
        events(&batch),
        vec![(EventKind::Put, b.clone(), b"2".to_vec()), (EventKind::Delete, a.clone(), Vec::new())]
    );
    let batch = next_batch(&mut live).await;
    assert_eq!((batch.revision, events(&batch)), (r3, vec![(EventKind::Put, b.clone(), b"3".to_vec())]));

    // A watch from a past revision replays the history, then goes live.
    let mut replay = store.watch(&format!("{p}in/"), Some(start)).await.unwrap();
    let revisions: Vec<i64> = [
        next_batch(&mut replay).await.revision,
        next_batch(&mut replay).await.revision,
        next_batch(&mut replay).await.revision,
    ]
    .into();
    assert_eq!(revisions, vec![r1, r2, r3]);
    assert!(store.delete(&b).await.unwrap());
    let batch = next_batch(&mut replay).await;
    assert_eq!(events(&batch), vec![(EventKind::Delete, b.clone(), Vec::new())]);
    let seen = next_batch(&mut live).await;
    assert_eq!(seen.revision, batch.revision, "both watchers see the same revision");

    // A watch from the current revision + 1 sees only later changes.
    let now = store.list(p).await.unwrap().revision;
    let mut later = store.watch(&format!("{p}in/"), Some(now + 1)).await.unwrap();
    let r5 = store.put(&a, b"5".to_vec()).await.unwrap();
    assert_eq!(next_batch(&mut later).await.revision, r5);

    // A watch from a future revision starts there.
    let mut future = store.watch(&format!("{p}in/"), Some(r5 + 2)).await.unwrap();
    store.put(&a, b"6".to_vec()).await.unwrap();
    let r7 = store.put(&a, b"7".to_vec()).await.unwrap();
    assert_eq!(r7, r5 + 2);
    let batch = next_batch(&mut future).await;
    assert_eq!((batch.revision, events(&batch)), (r7, vec![(EventKind::Put, a.clone(), b"7".to_vec())]));
}

async fn compaction(store: &dyn MetaStore, p: &str) {
    let k = format!("{p}k");
    let r1 = store.put(&k, b"1".to_vec()).await.unwrap();
    let _r2 = store.put(&k, b"2".to_vec()).await.unwrap();
    let r3 = store.put(&k, b"3".to_vec()).await.unwrap();
    store.compact(r3).await.unwrap();
    match store.watch(p, Some(r1)).await {
        Err(StoreError::Compacted { requested, compacted }) => {
            assert_eq!(requested, r1);
            assert!(compacted >= r3, "compacted at {compacted}");
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a stream"),
    }
    // The compaction revision itself is still watchable.
    let mut from_r3 = store.watch(p, Some(r3)).await.unwrap();
    let batch = next_batch(&mut from_r3).await;
    assert_eq!((batch.revision, events(&batch)), (r3, vec![(EventKind::Put, k.clone(), b"3".to_vec())]));
    // The data itself survives compaction.
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"3");
}

async fn leases(store: &dyn MetaStore, p: &str) {
    let (k, plain) = (format!("{p}leased"), format!("{p}plain"));
    let (lease, ttl) = store.lease_grant(30).await.unwrap();
    assert!(ttl >= 30);
    store.put_with_lease(&k, b"v".to_vec(), lease).await.unwrap();
    store.put(&plain, b"v".to_vec()).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap().unwrap().lease, Some(lease));
    let remaining = store.lease_keep_alive(lease).await.unwrap();
    assert!(remaining > 0 && remaining <= ttl, "remaining {remaining}");
    let mut watch = store.watch(p, None).await.unwrap();
    store.lease_revoke(lease).await.unwrap();
    let batch = next_batch(&mut watch).await;
    assert_eq!(events(&batch), vec![(EventKind::Delete, k.clone(), Vec::new())]);
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(store.get(&plain).await.unwrap().is_some(), "keys without the lease stay");
    assert!(matches!(store.lease_keep_alive(lease).await, Err(StoreError::LeaseNotFound { lease: l }) if l == lease));
    assert!(matches!(store.lease_revoke(lease).await, Err(StoreError::LeaseNotFound { .. })));
    let before = store.list(p).await.unwrap();
    let err = store.put_with_lease(&format!("{p}orphan"), b"v".to_vec(), lease).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { lease: l } if l == lease), "{err}");
    assert_eq!(store.list(p).await.unwrap().kvs, before.kvs, "nothing written");
    assert!(matches!(store.lease_grant(0).await, Err(StoreError::InvalidTtl { .. })));
}

async fn lease_expiry(store: &dyn MetaStore, p: &str) {
    let k = format!("{p}k");
    let (lease, _) = store.lease_grant(1).await.unwrap();
    let mut watch = store.watch(p, None).await.unwrap();
    store.put_with_lease(&k, b"alive".to_vec(), lease).await.unwrap();
    assert_eq!(next_batch(&mut watch).await.events[0].kind, EventKind::Put);
    // Nobody keeps the lease alive: the key disappears on its own.
    let batch = next_batch(&mut watch).await;
    assert_eq!(events(&batch), vec![(EventKind::Delete, k.clone(), Vec::new())]);
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(matches!(store.lease_keep_alive(lease).await, Err(StoreError::LeaseNotFound { .. })));
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Doc {
    name: String,
    n: u32,
}

async fn json(store: &dyn MetaStore, p: &str) {
    let k = format!("{p}doc");
    store.put_json(&k, &Doc { name: "x".into(), n: 1 }).await.unwrap();
    let (doc, kv) = store.get_json::<Doc>(&k).await.unwrap().unwrap();
    assert_eq!(doc, Doc { name: "x".into(), n: 1 });
    assert_eq!(kv.version, 1);
    let (doc, _) =
        store.update_json::<Doc, _>(&k, 5, |d| Doc { n: d.map_or(0, |d| d.n) + 1, name: "y".into() }).await.unwrap();
    assert_eq!(doc.n, 2);
    assert!(store.get_json::<Doc>(&format!("{p}absent")).await.unwrap().is_none());

    // A value that does not decode: an error naming the key; nothing overwritten.
    let bad = format!("{p}garbage");
    store.put(&bad, b"\xff{not json".to_vec()).await.unwrap();
    let err = store.get_json::<Doc>(&bad).await.unwrap_err();
    assert!(matches!(err, StoreError::Decode { .. }), "{err}");
    assert!(err.to_string().contains(&bad), "names the key: {err}");
    let err = store.update_json::<Doc, _>(&bad, 5, |_| Doc { name: "overwritten".into(), n: 0 }).await.unwrap_err();
    assert!(matches!(err, StoreError::Decode { .. }), "{err}");
    let kv = store.get(&bad).await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.version), (&b"\xff{not json"[..], 1), "left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_mem() {
    let store = store::open("mem:", StoreOptions::default()).await.unwrap();
    conformance(store, "conf/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redb() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redb:{}", dir.path().join("meta.redb").display());
    let store = store::open(&url, StoreOptions::default()).await.unwrap();
    conformance(store, "conf/").await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_etcd() {
    let etcd = rollgate_testkit::EtcdServer::start().expect("start etcd");
    let store = store::open(&etcd.url(), StoreOptions::default()).await.unwrap();
    conformance(store, "conf/").await;
}
