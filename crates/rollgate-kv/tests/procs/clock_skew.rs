//! I10 across processes: one node's clock a day ahead.
//!
//! No acknowledged write is lost or overwritten by an older one, whatever a
//! node's clock says. Separate `rollgate-kv serve` processes on a real etcd,
//! run through the testkit's fault harness (`ChildProcess`, `ClockOffset`);
//! the skew comes either from rollgate-kv's test-only hook
//! (`hlc::TEST_CLOCK_OFFSET_ENV`, read only by the HLC's wall-clock source)
//! or from `faketime` (the whole process). The test checks that the skew
//! took effect (the skewed node's versions are a day ahead) before it
//! relies on it.

#![cfg(feature = "etcd")]

use std::time::Duration;

use rollgate_kv::hlc::Version;
use rollgate_testkit::{ChildProcess, ClockHook, ClockOffset, EtcdServer, ProcessSpec};

use crate::process::{LINE_TIMEOUT, binary, serve_args};
use crate::single;

const DAY_MS: u64 = 86_400_000;

/// How long a key may take to reach every node once a majority acknowledged it.
const CONVERGE: Duration = Duration::from_secs(10);

/// Starts node `node` (its clock shifted by `clock` through `hook`) and
/// returns the process and its HTTP address (from its `ready` line).
fn start(
    dir: &std::path::Path,
    meta: &str,
    node: &str,
    clock: Option<(ClockOffset, ClockHook)>,
) -> (ChildProcess, String) {
    let args = serve_args("1.2", node, dir, meta, &[]);
    let mut spec = ProcessSpec::new(binary(), dir.join(format!("{node}.log"))).args(&args).env("RUST_LOG", "info");
    if let Some((offset, hook)) = clock {
        spec = spec.clock(offset, hook);
    }
    let mut p = ChildProcess::spawn(spec).unwrap();
    let ready = p.wait_line("ready", LINE_TIMEOUT, |l| l.starts_with("rollgate-kv: ready ")).unwrap();
    let admin = ready.split_whitespace().find_map(|w| w.strip_prefix("admin=")).unwrap().to_string();
    (p, admin)
}

/// Node `a` runs with its clock a day ahead; `b` and `c` are right. Keys
/// are written through `a` (acknowledged), then the same keys are written
/// again through `b` with new values: each is refused or acknowledged, and
/// every acknowledged one must then be what every node answers.
async fn later_writes_through_another_node_are_visible_with_one_clock_a_day_ahead(hook: ClockHook) {
    let etcd = EtcdServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let meta = etcd.url();
    let (a, a_admin) = start(tmp.path(), &meta, "a", Some((ClockOffset::ahead(ClockOffset::DAY), hook)));
    let (_b, b_admin) = start(tmp.path(), &meta, "b", None);
    let (_c, c_admin) = start(tmp.path(), &meta, "c", None);
    let through_a = single(&a_admin);
    let through_b = single(&b_admin);

    let keys: Vec<String> = (0..10).map(|i| format!("skewed-{i:02}")).collect();
    for k in &keys {
        // The precondition, that the skew took effect: a write through `a`
        // is either stamped a day ahead, or refused for a's clock.
        match through_a.put(k, format!("{k} from a"), None).await {
            Ok(o) => {
                let v: Version = o.version.parse().unwrap();
                let now = rollgate::cluster::now_ms();
                assert!(v.wall_ms > now + DAY_MS - 60_000, "a's clock is not a day ahead: version {v}, now {now}");
            }
            Err(e) => assert!(e.to_string().contains("clock"), "a refused {k}, but not for its clock: {e}"),
        }
    }
    let mut acknowledged = Vec::new();
    for k in &keys {
        match through_b.put(k, format!("{k} from b"), None).await {
            Ok(o) => acknowledged.push((k.clone(), format!("{k} from b"), o.version)),
            // Refusing the write is allowed; acknowledging it and losing it is not.
            Err(e) => eprintln!("b refused {k}: {e}"),
        }
    }

    // Every acknowledged write must become visible on every node (bounded
    // polling: replication to the third node has no event to wait on).
    let mut wrong = Vec::new();
    for (node, admin) in [("a", &a_admin), ("b", &b_admin), ("c", &c_admin)] {
        let client = single(admin);
        let deadline = tokio::time::Instant::now() + CONVERGE;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let mut now_wrong = Vec::new();
            for (k, v, version) in &acknowledged {
                let got = client.get(k).await.map(|g| g.map(|b| String::from_utf8_lossy(&b).into_owned()));
                if got.as_ref().ok().and_then(|g| g.as_deref()) != Some(v.as_str()) {
                    now_wrong.push(format!("node {node}: {k} acknowledged as {v:?} (version {version}), read {got:?}"));
                }
            }
            if now_wrong.is_empty() || tokio::time::Instant::now() >= deadline {
                wrong.extend(now_wrong);
                break;
            }
        }
    }
    assert!(!acknowledged.is_empty(), "b, whose clock is right, acknowledged none of its writes");
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged writes through b are not visible after {} s; first ones:\n{}\n--- a's log:\n{}",
        wrong.len(),
        acknowledged.len() * 3,
        CONVERGE.as_secs(),
        wrong.iter().take(6).cloned().collect::<Vec<_>>().join("\n"),
        a.log_tail(12)
    );
}

/// The skew through rollgate-kv's test-only hook (`hlc::TEST_CLOCK_OFFSET_ENV`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_clock_a_day_ahead_later_acknowledged_writes_through_another_node_are_visible_on_every_node() {
    let hook = ClockHook::Env(rollgate_kv::hlc::TEST_CLOCK_OFFSET_ENV.into());
    later_writes_through_another_node_are_visible_with_one_clock_a_day_ahead(hook).await;
}

/// The same with node `a`'s whole process under `faketime` (every
/// wall-clock read a day ahead: versions, leases' heartbeat times, TTLs),
/// as a wrong system clock would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_node_under_faketime_a_day_ahead_later_acknowledged_writes_through_another_node_are_visible_on_every_node()
 {
    later_writes_through_another_node_are_visible_with_one_clock_a_day_ahead(ClockHook::Faketime).await;
}

/// A node whose clock is a day off says so: in its log, in its `/health`,
/// and in `GET /admin/nodes` (what `rollgate nodes list` shows) asked of
/// another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_is_a_day_ahead_says_so_in_its_log_its_health_and_the_node_list() {
    let etcd = EtcdServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let meta = etcd.url();
    let skew = Some((ClockOffset::ahead(ClockOffset::DAY), ClockHook::Faketime));
    let (_b, b_admin) = start(tmp.path(), &meta, "b", None);
    let (_c, _) = start(tmp.path(), &meta, "c", None);
    // It reads its peers' clocks before it serves (its first write must not be a day ahead).
    let (a, a_admin) = start(tmp.path(), &meta, "a", skew);
    assert!(a.logged("beyond the drift bound"), "{}", a.log_tail(20));
    let health = crate::admin::health(&a_admin).await;
    assert_eq!(health["clock"]["status"], "skewed", "{health}");
    let offset = health["clock"]["offset_ms"].as_i64().unwrap();
    assert!((offset - DAY_MS as i64).abs() < 60_000, "{health}");
    let (status, nodes) = crate::admin::Admin::new(&b_admin).get("/admin/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    let by_id = |id: &str| nodes["nodes"].as_array().unwrap().iter().find(|n| n["node_id"] == id).unwrap().clone();
    let a_offset = by_id("a")["clock_offset_ms"].as_i64().unwrap_or_else(|| panic!("no clock for a: {nodes}"));
    assert!((a_offset - DAY_MS as i64).abs() < 60_000, "{nodes}");
    assert!(by_id("b")["clock_offset_ms"].as_i64().unwrap().abs() < 2_000, "{nodes}");
}

/// TTLs with one node's clock a day behind (the whole process under
/// `faketime`): a value written with a TTL through any node is visible on
/// every node until it expires and on none after, and the node a day
/// behind neither acknowledges a TTL write that every other node sees as
/// expired nor serves a value that expired by the cluster's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_clock_a_day_behind_ttls_are_honoured_on_every_node() {
    let etcd = EtcdServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let meta = etcd.url();
    let (_a, a_admin) = start(tmp.path(), &meta, "a", None);
    let (_b, b_admin) = start(tmp.path(), &meta, "b", None);
    let skew = Some((ClockOffset::behind(ClockOffset::DAY), ClockHook::Faketime));
    let (_c, c_admin) = start(tmp.path(), &meta, "c", skew);
    let (status, body) =
        crate::admin::Admin::new(&a_admin).post("/admin/flags/enable", serde_json::json!({"all": true})).await;
    assert_eq!(status, 200, "{body}");
    let nodes = [("a", &a_admin), ("b", &b_admin), ("c", &c_admin)];

    // A TTL write through the node a day behind: refused, or visible everywhere.
    match single(&c_admin).put("long", "an hour", Some(3600)).await {
        Ok(o) => {
            for (node, admin) in nodes {
                let got = single(admin).get("long").await;
                assert!(
                    matches!(&got, Ok(Some(v)) if v == b"an hour"),
                    "acknowledged through c ({o:?}), node {node} reads {got:?}"
                );
            }
        }
        Err(e) => assert!(e.to_string().contains("clock"), "c refused, but not for its clock: {e}"),
    }

    // A short TTL written through a node whose clock is right: once it has
    // expired by the cluster's clock, no node serves it.
    let o = single(&a_admin).put("short", "two seconds", Some(2)).await.unwrap();
    assert!(o.acks >= 2, "{o:?}");
    // Waiting for the expiry is the property under test, not a synchronisation.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    for (node, admin) in nodes {
        match single(admin).get("short").await {
            Ok(None) => {}
            Err(e) if e.to_string().contains("clock") => {}
            other => panic!("node {node} serves a value 1.5 s past its expiry: {other:?}"),
        }
    }
}
