//! rollgate-kv's write path against same-run baselines:
//!
//! - `kv/storage/group_commit_64`: 64 concurrent one-key writes through
//!   `Storage::apply` (they share group commits), against
//!   `kv/storage/raw_redb_commit_per_write_64`: the same 64 writes as 64
//!   plain redb transactions with the same durability (`Immediate`), one
//!   after the other (what a store without group commit does).
//! - `kv/put/replicated_3_nodes_64`: 64 concurrent puts through the client
//!   API of a node in a three-node in-process cluster (stored locally,
//!   replicated over loopback TCP, acknowledged by a majority), against
//!   `kv/put/single_node_64`: the same through a node alone (its own
//!   majority): the cost of replication.
//! - `kv/put/replicated_3_nodes_tls_64`: the replicated puts with mutual TLS
//!   between the nodes (certificates of one CA), against
//!   `replicated_3_nodes_64` in the same run: the cost of TLS.
//!
//! `cargo bench -p rollgate-kv --bench write_path`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rollgate::store::StoreOptions;
use rollgate_kv::hlc::Hlc;
use rollgate_kv::record::Record;
use rollgate_kv::storage::{Storage, StorageOptions, StoredEntry};
use rollgate_kv::{NodeConfig, NodeHandle, node, releases};

const WRITES: usize = 64;
const VALUE: &[u8] = &[7u8; 128];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn entry(hlc: &Hlc, i: usize) -> StoredEntry {
    StoredEntry {
        key: format!("bench/{i:03}"),
        record: Record {
            version: hlc.now().expect("a version"),
            value: Some(VALUE.to_vec()),
            expires_at_ms: 0,
            features: Default::default(),
        },
    }
}

fn bench_storage(c: &mut Criterion, rt: &tokio::runtime::Runtime, dir: &std::path::Path) {
    let mut group = c.benchmark_group("kv/storage");
    let (storage, _) =
        Storage::open(&dir.join("group"), StorageOptions::default(), &rollgate_kv::releases::LATEST.format_policy())
            .expect("open");
    let hlc = Arc::new(Hlc::new("bench", None));
    group.bench_function("group_commit_64", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..WRITES {
                    let (s, e) = (storage.clone(), entry(&hlc, i));
                    tasks.spawn(async move { s.apply(vec![e]).await.expect("apply") });
                }
                while let Some(r) = tasks.join_next().await {
                    r.expect("task");
                }
            })
        });
    });
    rt.block_on(storage.close());

    std::fs::create_dir_all(dir.join("raw")).expect("dir");
    let db = redb::Database::create(dir.join("raw/raw.redb")).expect("create");
    let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
    group.bench_function("raw_redb_commit_per_write_64", |b| {
        b.iter(|| {
            for i in 0..WRITES {
                let e = entry(&hlc, i);
                let bytes = rollgate_kv::record::encode(&e.record);
                let wtx = db.begin_write().expect("begin");
                {
                    let mut t = wtx.open_table(table).expect("table");
                    t.insert(e.key.as_str(), bytes.as_slice()).expect("insert");
                }
                wtx.commit().expect("commit");
            }
        });
    });
    group.finish();
}

/// The certificate files of node `id` under `dir`, from `ca`.
fn tls_files(dir: &std::path::Path, ca: &rollgate_certs::Ca, id: &str) -> rollgate::tls::TlsFiles {
    let issued = ca.node(id, &["127.0.0.1".into()], rollgate_certs::Validity::days(1)).expect("certificate");
    let files = rollgate::tls::TlsFiles {
        cert: dir.join(format!("{id}.pem")),
        key: dir.join(format!("{id}.key")),
        ca: dir.join("ca.pem"),
    };
    rollgate_certs::write_public(&files.cert, &issued.cert_pem).expect("write");
    rollgate_certs::write_private(&files.key, &issued.key_pem).expect("write");
    if !files.ca.exists() {
        rollgate_certs::write_public(&files.ca, ca.cert_pem()).expect("write");
    }
    files
}

async fn cluster(dir: &std::path::Path, nodes: usize, tls: bool) -> Vec<NodeHandle> {
    std::fs::create_dir_all(dir).expect("dir");
    let url = format!("redb:{}", dir.join("meta.redb").display());
    let store = rollgate::store::open(&url, StoreOptions::default()).await.expect("meta store");
    let ca = rollgate_certs::Ca::new("bench", rollgate_certs::Validity::days(1)).expect("CA");
    let mut out = Vec::new();
    for i in 0..nodes {
        let release = releases::find("1.2").expect("release");
        let mut config = NodeConfig::new(release, dir.join(format!("n{i}")), "127.0.0.1:0", "127.0.0.1:0");
        if tls {
            config.node_id = Some(format!("n{i}"));
            config.tls = Some(tls_files(dir, &ca, &format!("n{i}")));
        }
        let node = node::start(config, store.clone()).await.expect("start");
        assert!(node.wait_ready(Duration::from_secs(30)).await, "ready");
        out.push(node);
    }
    out
}

fn bench_puts(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, node: &NodeHandle) {
    let mut group = c.benchmark_group("kv/put");
    let api = node.api();
    let mut round = 0u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            round += 1;
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..WRITES {
                    let api = api.clone();
                    let key = format!("k{round}-{i}");
                    tasks.spawn(async move { api.put(key, VALUE.to_vec(), None).await.expect("put") });
                }
                while let Some(r) = tasks.join_next().await {
                    r.expect("task");
                }
            })
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("tempdir");
    bench_storage(c, &rt, tmp.path());

    let three = rt.block_on(cluster(&tmp.path().join("three"), 3, false));
    bench_puts(c, &rt, "replicated_3_nodes_64", &three[0]);
    for n in three {
        rt.block_on(n.stop()).expect("stop");
    }
    let three = rt.block_on(cluster(&tmp.path().join("three-tls"), 3, true));
    bench_puts(c, &rt, "replicated_3_nodes_tls_64", &three[0]);
    for n in three {
        rt.block_on(n.stop()).expect("stop");
    }
    let one = rt.block_on(cluster(&tmp.path().join("one"), 1, false));
    bench_puts(c, &rt, "single_node_64", &one[0]);
    for n in one {
        rt.block_on(n.stop()).expect("stop");
    }
}

criterion_group! {
    name = write_path;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(write_path);
