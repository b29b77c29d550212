//! rollgate-kv's read levels against same-run baselines, one request at a
//! time through [`KvClient`] over HTTP on loopback, in a three-node
//! in-process cluster of release 2.0 (so each iteration's time is one
//! request's latency):
//!
//! - `kv/read/session`: the default read, carrying the session token of a
//!   key the client wrote (`x-kv-after`, checked by the node and the
//!   client), against `kv/read/local`: the same read without a token (a
//!   client with no session), what every read was before read levels.
//!   Target: at most 1.1x.
//! - `kv/read/linearizable`: a read confirmed by a majority (one round trip
//!   to the peers over protocol v4), against `kv/write/replicated`: a put
//!   stored and acknowledged by a majority. Target: at most 2x.
//!
//! `cargo bench -p rollgate-kv --bench read_path`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rollgate::store::StoreOptions;
use rollgate_kv::client::{ClientOptions, ReadLevel};
use rollgate_kv::{KvClient, NodeConfig, NodeHandle, node, releases};

const KEYS: usize = 256;
const VALUE: &[u8] = &[7u8; 128];

async fn cluster(dir: &std::path::Path) -> Vec<NodeHandle> {
    let url = format!("redb:{}", dir.join("meta.redb").display());
    let store = rollgate::store::open(&url, StoreOptions::default()).await.expect("meta store");
    let mut out = Vec::new();
    for i in 0..3 {
        let release = releases::find("2.0").expect("release");
        let config = NodeConfig::new(release, dir.join(format!("n{i}")), "127.0.0.1:0", "127.0.0.1:0");
        let node = node::start(config, store.clone()).await.expect("start");
        assert!(node.wait_ready(Duration::from_secs(30)).await, "ready");
        out.push(node);
    }
    out
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let nodes = rt.block_on(cluster(tmp.path()));
    let addr = nodes[0].addresses().admin.to_string();
    let with_session = KvClient::new(&[addr.as_str()], ClientOptions::default()).expect("client");
    let without =
        KvClient::new(&[addr.as_str()], ClientOptions { session_keys: 0, ..ClientOptions::default() }).expect("client");
    let keys: Vec<String> = (0..KEYS).map(|i| format!("bench/{i:03}")).collect();
    rt.block_on(async {
        for k in &keys {
            with_session.put(k, VALUE.to_vec(), None).await.expect("put");
        }
        assert!(nodes[0].flush_replication(Duration::from_secs(10)).await);
    });

    let mut group = c.benchmark_group("kv/read");
    let mut i = 0usize;
    let mut read = |name: &str, client: &KvClient, level: ReadLevel| {
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                let r = rt.block_on(client.read(&keys[i], level)).expect("read");
                assert!(r.value.is_some());
            })
        });
    };
    read("local", &without, ReadLevel::Session);
    read("session", &with_session, ReadLevel::Session);
    read("linearizable", &with_session, ReadLevel::Linearizable);
    group.finish();

    let mut group = c.benchmark_group("kv/write");
    let mut n = 0u64;
    group.bench_function("replicated", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(with_session.put(&format!("w/{}", n % 4096), VALUE.to_vec(), None)).expect("put");
        })
    });
    group.finish();
    for node in nodes {
        rt.block_on(node.stop()).expect("stop");
    }
}

criterion_group! {
    name = read_path;
    config = Criterion::default().sample_size(50).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(read_path);
