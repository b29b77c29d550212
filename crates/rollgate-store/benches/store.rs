//! Metadata store latency against same-run baselines:
//!
//! - `txn/*`: one guarded transaction (compare the key's mod revision, put)
//!   through `MetaStore`, against a plain redb insert + commit with the same
//!   durability (`raw_redb_write`) and a plain `etcd-client` put (`raw_etcd_put`);
//! - `watch/*`: a put through `MetaStore` until a watcher on the prefix
//!   received it, against the same baselines.
//!
//! `cargo bench -p rollgate-store --features etcd --bench store` (etcd must be on
//! PATH; without the feature only the redb and mem rows run).

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use rollgate_store::{self as store, Compare, MetaStore, StoreOptions, Txn, TxnOp};

const VALUE: &[u8] = &[7u8; 128];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// A guarded write through the store: read-free, as the epoch protocol does
/// it (the mod revision is tracked from the previous response).
async fn guarded_put(store: &dyn MetaStore, key: &str, last: &mut i64) {
    let txn = Txn::new().when([Compare::mod_revision(key, *last)]).and_then([TxnOp::put(key, VALUE.to_vec())]);
    let resp = store.txn(txn).await.expect("txn");
    assert!(resp.succeeded, "guard held");
    *last = resp.revision;
}

fn bench_store(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, store: Arc<dyn MetaStore>) {
    let mut group = c.benchmark_group("store");
    let key = "bench/txn/k";
    let mut last = rt.block_on(store.put(key, VALUE.to_vec())).expect("put");
    group.bench_function(format!("txn/{name}"), |b| {
        b.iter(|| rt.block_on(guarded_put(&*store, key, &mut last)));
    });
    let mut watch = rt.block_on(store.watch("bench/watch/", None)).expect("watch");
    group.bench_function(format!("watch/{name}"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let rev = store.put("bench/watch/k", VALUE.to_vec()).await.expect("put");
                let batch = watch.next().await.expect("open").expect("batch");
                assert_eq!(batch.revision, rev);
            })
        });
    });
    group.finish();
}

fn bench_raw_redb(c: &mut Criterion, dir: &std::path::Path) {
    let db = redb::Database::create(dir.join("raw.redb")).expect("create");
    let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("t");
    let mut group = c.benchmark_group("store");
    group.bench_function("raw_redb_write", |b| {
        b.iter(|| {
            // Default durability: Immediate, as the store's commits.
            let tx = db.begin_write().expect("begin");
            tx.open_table(table).expect("table").insert("k", VALUE).expect("insert");
            tx.commit().expect("commit");
        });
    });
    group.finish();
}

#[cfg(feature = "etcd")]
fn bench_etcd(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let etcd = rollgate_testkit::EtcdServer::start().expect("start etcd (scripts/test installs it)");
    let client = rt.block_on(etcd_client::Client::connect([etcd.endpoint()], None)).expect("connect");
    let mut group = c.benchmark_group("store");
    group.bench_function("raw_etcd_put", |b| {
        b.iter(|| {
            let mut kv = client.kv_client();
            rt.block_on(kv.put("raw/k", VALUE, None)).expect("put");
        });
    });
    group.finish();
    let store = rt.block_on(store::open(&etcd.url(), StoreOptions::default())).expect("open");
    bench_store(c, rt, "etcd", store);
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    bench_raw_redb(c, dir.path());
    let url = format!("redb:{}", dir.path().join("store.redb").display());
    let redb = rt.block_on(store::open(&url, StoreOptions::default())).expect("open redb");
    bench_store(c, &rt, "redb", redb);
    let mem = rt.block_on(store::open("mem:", StoreOptions::default())).expect("open mem");
    bench_store(c, &rt, "mem", mem);
    #[cfg(feature = "etcd")]
    bench_etcd(c, &rt);
}

criterion_group! {
    name = store_benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(store_benches);
