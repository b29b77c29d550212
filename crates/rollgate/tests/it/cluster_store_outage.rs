//! A store outage under a running node: etcd (a real process) is killed;
//! the node keeps serving its cached view, reports the outage and refuses
//! changes; etcd restarts on the same port and data dir; another client
//! changes the cluster right away; the node catches up from its watch and
//! sees every change, in order.
#![cfg(feature = "etcd")]

use std::time::Duration;

use rollgate::cluster::{
    Cluster, ClusterError, ClusterHandle, ClusterOptions, FlagRecord, HandleOptions, NodeRecord, UpdateError, ViewOp,
};
use rollgate::store::{self, StoreOptions};
use rollgate_testkit::EtcdServer;

const WAIT: Duration = Duration::from_secs(30);
const CHANGES: u64 = 5;

fn record(node: &str) -> NodeRecord {
    NodeRecord {
        data_addr: "127.0.0.1:7000".into(),
        admin_addr: "127.0.0.1:7001".into(),
        ..NodeRecord::new(node, "1.0")
    }
}

fn options() -> StoreOptions {
    StoreOptions { connect_timeout_ms: 500, request_timeout_ms: 1_000, ..StoreOptions::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rides_out_an_etcd_outage_and_catches_up() {
    let mut etcd = EtcdServer::start().expect("start etcd");
    let node_store = store::open(&etcd.url(), options()).await.unwrap();
    let cluster = Cluster::open(node_store, ClusterOptions::default()).await.unwrap();
    cluster.join(record("n1"), |_| Ok::<(), String>(())).await.unwrap();
    let handle_options = HandleOptions {
        probe_interval_ms: 200,
        probe_timeout_ms: 1_000,
        backoff_min_ms: 50,
        backoff_max_ms: 400,
        ..HandleOptions::default()
    };
    let handle = ClusterHandle::start(cluster.clone(), handle_options).await.unwrap();
    let before = handle.view();
    assert_eq!(before.epoch, 1);
    let mut changes = handle.subscribe();
    let mut status = handle.watch_status();

    // Outage.
    etcd.stop();
    let down =
        tokio::time::timeout(WAIT, status.wait_for(|s| !s.reachable)).await.expect("outage reported").unwrap().clone();
    assert!(down.last_error.is_some(), "the status says why: {down:?}");
    eprintln!("outage reported: {down:?}");
    let cached = handle.view();
    assert_eq!(*cached, *before, "the node keeps serving its cached view");
    assert!(cached.member("n1").is_some());
    let refused = handle.update(|_| Ok::<_, String>(vec![ViewOp::PutFlag("x".into(), FlagRecord::enabled())])).await;
    match refused {
        Err(UpdateError::Cluster(e @ ClusterError::StoreUnavailable { .. })) => {
            assert!(e.to_string().contains("refused until it is back"), "{e}");
        }
        other => panic!("expected StoreUnavailable, got {other:?}"),
    }
    assert!(matches!(handle.forget("n1").await, Err(ClusterError::StoreUnavailable { .. })));
    assert!(matches!(
        handle.join(record("n2"), |_| Ok::<(), String>(())).await,
        Err(UpdateError::Cluster(ClusterError::StoreUnavailable { .. }))
    ));

    // Back on the same port and data dir; another client changes the
    // cluster right away, before the node has necessarily reconnected.
    etcd.restart().expect("restart etcd");
    let other_store = store::open(&etcd.url(), options()).await.unwrap();
    let other = Cluster::open(other_store, ClusterOptions::default()).await.unwrap();
    assert_eq!(other.cluster_id(), cluster.cluster_id(), "the data survived the restart");
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    for i in 0..CHANGES {
        let name = format!("flag_{i}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            match other.update(|_| Ok::<_, String>(vec![ViewOp::PutFlag(name.clone(), FlagRecord::enabled())])).await {
                Ok(c) => {
                    assert_eq!(c.epoch, before.epoch + i + 1);
                    break;
                }
                Err(e) if attempts < 100 => {
                    eprintln!("change {i}, attempt {attempts}: {e}");
                    pace.tick().await;
                }
                Err(e) => panic!("change {i} failed after {attempts} attempts: {e}"),
            }
        }
    }

    // The node caught up: every change, in order, nothing missed.
    let mut seen = Vec::new();
    while seen.last() != Some(&(before.epoch + CHANGES)) {
        let view = tokio::time::timeout(WAIT, changes.recv()).await.expect("the node catches up").unwrap();
        if view.epoch != before.epoch {
            seen.push(view.epoch);
        }
    }
    let expected: Vec<u64> = (before.epoch + 1..=before.epoch + CHANGES).collect();
    assert_eq!(seen, expected, "every intermediate epoch observed");
    let view = handle.view();
    assert_eq!(view.enabled_flags().len(), CHANGES as usize);
    let up =
        tokio::time::timeout(WAIT, status.wait_for(|s| s.reachable)).await.expect("reachable again").unwrap().clone();
    assert!(up.since >= down.since);

    // Changes are accepted again.
    let c = handle.update(|_| Ok::<_, String>(vec![ViewOp::DeleteFlag("flag_0".into())])).await.unwrap();
    let caught = handle.wait_for_revision(c.revision, WAIT).await.expect("sees its own change");
    assert!(!caught.is_enabled("flag_0"));
}
