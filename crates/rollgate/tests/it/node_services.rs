//! Service formats run by the node runtime (Ceph's `format_version`):
//! through real node runtimes on the embedded store, a fresh cluster starts
//! at the latest format its gates allow without running a step, an
//! upgraded cluster runs each step once as its gate opens (one owner at a
//! time), and the upgrade status shows the format, the target and what the
//! next step waits for.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rollgate::migrate::{Gate, Migrations, ServiceStep, StepContext, StepError};
use rollgate::node::{Node, NodeConfig};

use crate::flags_support::*;

/// `settings`: 0 -> 1 once every member publishes `kv_ttl` (1.1 and later),
/// 1 -> 2 once flag `compact` (1.2, stable) is enabled. Counts the runs.
fn services(runs: &Arc<[AtomicUsize; 2]>) -> Arc<Migrations> {
    let mut m = Migrations::new();
    for (from, name, gate) in
        [(0u32, "create", Gate::feature("kv_ttl")), (1, "compact_settings", Gate::flag("compact"))]
    {
        let runs = runs.clone();
        let step = ServiceStep::new("settings", from, name, gate, move |ctx: StepContext| {
            let runs = runs.clone();
            async move {
                runs[ctx.from as usize].fetch_add(1, Ordering::SeqCst);
                let key = format!("rollgate/test_settings/v{}", ctx.to);
                ctx.store.put(&key, b"x".to_vec()).await.map_err(StepError::from)?;
                Ok(())
            }
        })
        .unwrap();
        m.add_step(step).unwrap();
    }
    Arc::new(m)
}

fn config_with(node: &str, release: &str, dir: &std::path::Path, runs: &Arc<[AtomicUsize; 2]>) -> NodeConfig {
    let mut c = config(node, release, dir, &Counters::default());
    c.services = Some(services(runs));
    c
}

/// The `settings` format once it reaches `want` (or what it is after 20 s),
/// following the store's changes to the format record.
async fn format_of(node: &Node, want: u32) -> u32 {
    use futures::StreamExt;
    use rollgate::store::MetaStoreJson;
    let store = node.cluster().store().clone();
    let key = rollgate::migrate::MigrateKeys::new(node.cluster().keys().root()).format("settings");
    let read = || async {
        let got = store.get_json::<rollgate::migrate::ServiceFormat>(&key).await.unwrap();
        (got.as_ref().map_or(0, |(f, _)| f.version), got.map_or(0, |(_, kv)| kv.mod_revision))
    };
    let (version, revision) = read().await;
    if version == want {
        return version;
    }
    let mut changes = store.watch(&key, Some(revision + 1)).await.unwrap();
    let follow = async {
        while changes.next().await.is_some() {
            if read().await.0 == want {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), follow).await;
    read().await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cluster_starts_at_the_latest_format_without_running_a_step() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let runs: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let n1 = start(&store, config_with("n1", "1.2", dir.path(), &runs)).await;
    // kv_ttl is published by the only member, and compact is enabled by the fresh cluster.
    assert_eq!(format_of(&n1, 2).await, 2);
    assert_eq!((runs[0].load(Ordering::SeqCst), runs[1].load(Ordering::SeqCst)), (0, 0), "no step ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_cluster_runs_each_step_once_as_its_gate_opens_and_the_status_shows_it() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let runs: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    // A 1.0 cluster of two, without the service.
    let mut nodes = rolled_cluster(&store, dir.path(), &["n1", "n2"], "1.0", &counters).await;
    let n2 = nodes.pop().unwrap();
    let n1 = nodes.pop().unwrap();
    // n1 upgraded to 1.2 (knows the service): n2 (1.0) lacks kv_ttl, nothing runs.
    n1.stop().await.unwrap();
    drop(n1);
    let n1 = start(&store, config_with("n1", "1.2", dir.path(), &runs)).await;
    let mut status = rollgate::migrate::cluster_status(store.as_ref(), n1.cluster().keys().root()).await.unwrap();
    n1.complete_service_status(&mut status);
    let settings = status.services.iter().find(|s| s.service == "settings").unwrap();
    assert_eq!((settings.version, settings.target), (0, Some(2)));
    assert_eq!(settings.blocked_by, Some(Gate::feature("kv_ttl")), "waiting for n2's upgrade");
    // n2 upgraded: the feature holds, step 0 -> 1 runs once; compact is not enabled yet.
    n2.stop().await.unwrap();
    drop(n2);
    let n2 = start(&store, config_with("n2", "1.2", dir.path(), &runs)).await;
    assert_eq!(format_of(&n1, 1).await, 1);
    n1.enable(rollgate::flags::EnableRequest::flags(["compact"])).await.unwrap();
    assert_eq!(format_of(&n2, 2).await, 2);
    assert_eq!((runs[0].load(Ordering::SeqCst), runs[1].load(Ordering::SeqCst)), (1, 1), "each step ran once");
    let admin_status =
        rollgate::admin::view::upgrade_status(&n2, &rollgate::admin::fanout::MemberClient::plain()).await;
    let rollgate::api::upgrade::MigrationsSection::Status(m) = admin_status.migrations else { panic!("unreadable") };
    let settings = m.services.iter().find(|s| s.service == "settings").unwrap();
    assert_eq!((settings.version, settings.target, settings.blocked_by.clone()), (2, Some(2), None));
    assert_eq!(settings.history.iter().map(|h| (h.from, h.to)).collect::<Vec<_>>(), [(0, 1), (1, 2)]);
}
