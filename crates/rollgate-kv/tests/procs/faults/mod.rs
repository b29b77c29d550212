//! rollgate-kv under real faults: a rolling upgrade 1.0 -> 1.2 with every
//! stable flag enabled and the records migrated, then 1.2 -> 2.0 (read
//! levels), under a client load of writes, session reads and linearizable
//! reads, while one fault hits the cluster; then the load's history is checked
//! against the consistency model (`rollgate_kv::consistency`) by the
//! testkit's history checker. Zero violations, every flag enabled and every
//! node's migrations done at the end.
//!
//! | scenario | the fault |
//! |---|---|
//! | [`a_partitioned_node`] | one node cut off its peers and the store, both ways, for 2.5 leases |
//! | [`a_node_paused_longer_than_its_lease`] | one node SIGSTOPped for 2.5 leases; requests queued meanwhile must not be served on a stale view when it resumes (I11) |
//! | [`a_node_a_day_ahead`] | one node's whole process a day ahead (faketime) from start to end |
//! | [`a_node_a_day_behind`] | the same, a day behind |
//! | [`an_etcd_member_killed_and_restarted`] | the etcd leader (or another member) SIGKILLed, restarted a few seconds later |
//!
//! The fault's node and the step it starts at (while a node is upgraded to
//! 1.2 or to 2.0, or while the flags are enabled) come from the
//! seed, printed at the start (`ROLLGATE_KV_FAULT_SEED=N` repeats a run);
//! the whole scenario is bounded ([`BOUND`]), the load in count and pace.
//! Each scenario prints its schedule and the checker's report.

mod cluster;
mod load;
mod verify;

use std::time::{Duration, Instant};

use rollgate_kv::demo::load::Rng;
use rollgate_testkit::ClockOffset;
use rollgate_testkit::history::{OpKind, Outcome};
use serde_json::json;

use crate::admin::{Admin, health};
use cluster::{FaultCluster, LIVENESS_TTL_S, Target};
use load::{Load, LoadOptions};

/// The longest a scenario may take.
const BOUND: Duration = Duration::from_secs(90);

/// How long a partition or a pause lasts: 2.5 liveness leases.
const HOLD: Duration = Duration::from_millis(LIVENESS_TTL_S * 2_500);

/// Operations the load ends after each step before the next begins.
const STEP_OPS: usize = 60;

/// The fault of a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Partition,
    Pause,
    ClockAhead,
    ClockBehind,
    EtcdMember,
}

/// The steps of the upgrade, in order.
const STEPS: [&str; 7] = [
    "upgrade n1 to 1.2",
    "upgrade n2 to 1.2",
    "upgrade n3 to 1.2",
    "enable every stable flag",
    "upgrade n1 to 2.0",
    "upgrade n2 to 2.0",
    "upgrade n3 to 2.0",
];

/// The node step `i` restarts, and as which release.
fn upgraded(i: usize) -> Option<(usize, &'static str)> {
    match i {
        0..=2 => Some((i, "1.2")),
        4..=6 => Some((i - 4, "2.0")),
        _ => None,
    }
}

/// A scenario's timeline, printed at the end (and with a violation).
struct Schedule {
    started: Instant,
    lines: Vec<String>,
}

impl Schedule {
    fn note(&mut self, what: impl Into<String>) {
        let line = format!("{:7.3}s {}", self.started.elapsed().as_secs_f64(), what.into());
        eprintln!("[fault scenario] {line}");
        self.lines.push(line);
    }
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Runs `fault`'s scenario, bounded by [`BOUND`].
async fn scenario(fault: Fault) {
    let seed = rollgate_testkit::seed("ROLLGATE_KV_FAULT_SEED");
    // Kept when the scenario fails (a panic skips the removal): the nodes' logs.
    let dir = tempfile::tempdir().unwrap().keep();
    eprintln!("[fault scenario] node logs under {}", dir.display());
    let started = Instant::now();
    let result = tokio::time::timeout(BOUND, run(fault, seed, dir.clone())).await;
    match result {
        Ok(()) => {
            eprintln!("[fault scenario] {fault:?} passed in {:.1} s (seed {seed})", started.elapsed().as_secs_f64());
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => panic!(
            "the {fault:?} scenario took longer than {} s (seed {seed}; re-run with ROLLGATE_KV_FAULT_SEED={seed}); \
             node logs under {}",
            BOUND.as_secs(),
            dir.display()
        ),
    }
}

async fn run(fault: Fault, seed: u64, dir: std::path::PathBuf) {
    let dir = dir.as_path();
    let mut rng = Rng::new(seed);
    let at = rng.below(STEPS.len() as u64) as usize;
    // The faulted node is not the one upgraded at that step.
    let x = (upgraded(at).map_or(at % 3, |(n, _)| n) + 1 + rng.below(2) as usize) % 3;
    let mut s = Schedule { started: Instant::now(), lines: Vec::new() };
    s.note(format!("seed {seed}: {fault:?} on n{} during step {at} ({})", x + 1, STEPS[at]));
    let skew = match fault {
        Fault::ClockAhead => Some((x, ClockOffset::ahead(ClockOffset::DAY))),
        Fault::ClockBehind => Some((x, ClockOffset::behind(ClockOffset::DAY))),
        _ => None,
    };
    let mut c = blocking(|| FaultCluster::start(dir, "1.0", skew));
    s.note("three nodes of 1.0 ready on a three-member etcd");
    let options = LoadOptions { clients: 4, keys: 8, pace: Duration::from_millis(30), max_ops: 5_000, seed };
    let load = Load::start(&c.admins(), &options);
    let mut counts = vec![load.ops()];
    for (i, step) in STEPS.iter().enumerate() {
        let fault_thread = (i == at).then(|| begin_fault(fault, &mut c, x, &mut s));
        s.note(format!("step {i}: {step}"));
        match upgraded(i) {
            Some((n, release)) => blocking(|| c.restart_as(n, release)),
            None => enable_all(&c.nodes[(x + 1) % 3].admin).await,
        }
        if i == 2 {
            load.with_ttls();
        }
        if let Some(t) = fault_thread {
            end_fault(fault, &mut c, t, &mut s).await;
        }
        load.progress(STEP_OPS, Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("after step {i}: {e}"));
        counts.push(load.ops());
    }
    let admin = Admin::new(&c.nodes[(x + 1) % 3].admin);
    let status = admin.wait_migrations_done(&["n1", "n2", "n3"]).await;
    s.note("every node's migrations done");
    assert_eq!(status["flags"]["enabled"], json!(["record_meta_v2", "ttl"]), "{status}");
    let recorder = load.stop().await;
    s.note(format!("load stopped: {} operations; after each step {counts:?}", recorder.len()));
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "the load ran through every step: {counts:?}");
    if matches!(fault, Fault::ClockAhead | Fault::ClockBehind) {
        let h = health(&c.nodes[x].admin).await;
        assert_eq!(h["clock"]["status"], "skewed", "n{} reports its clock: {h}", x + 1);
    }
    let history = recorder.history();
    let acked_reads =
        |kind: OpKind| history.iter().filter(|o| o.kind == kind && matches!(o.outcome, Outcome::Ok { .. })).count();
    let (session, linearizable) = (acked_reads(OpKind::Get), acked_reads(OpKind::LinearizableGet));
    s.note(format!("reads answered: {session} session, {linearizable} linearizable"));
    assert!(
        session > 20 && linearizable > 0,
        "too few reads were answered to check anything: {session} session, {linearizable} linearizable"
    );
    let nodes: Vec<(String, String)> = c.nodes.iter().map(|n| (n.id.clone(), n.admin.clone())).collect();
    let final_state = verify::final_state(&nodes, &history, &recorder).await;
    let context =
        format!("seed {seed} (re-run with ROLLGATE_KV_FAULT_SEED={seed}); schedule:\n  {}", s.lines.join("\n  "));
    let report = verify::check_history(&history, &final_state, context);
    println!("{fault:?}: {report}");
    assert!(report.passed(), "{report}\n{}", c.logs());
    assert!(report.acked > 50, "too little was acknowledged to check anything: {report}");
}

/// What a fault thread hands back when the fault ends.
struct Running {
    heal: std::thread::JoinHandle<Vec<String>>,
    killed: Option<usize>,
}

/// Starts the fault on node `x` (or on the etcd leader, member `x` when
/// none leads at that moment): a thread holds it for [`HOLD`] and ends it, so the step runs
/// meanwhile.
fn begin_fault(fault: Fault, c: &mut FaultCluster, x: usize, s: &mut Schedule) -> Running {
    let target = c.target(x);
    match fault {
        Fault::Partition => {
            s.note(format!("partition {} from its peers and etcd", target.id));
            target.partition();
            let heal = std::thread::spawn(move || {
                std::thread::sleep(HOLD);
                target.heal();
                vec![format!("healed the partition of {}", target.id)]
            });
            Running { heal, killed: None }
        }
        Fault::Pause => {
            s.note(format!("pause {} (SIGSTOP) for {} ms", target.id, HOLD.as_millis()));
            target.pause();
            let heal = std::thread::spawn(move || pause_then_resume(&target));
            Running { heal, killed: None }
        }
        Fault::EtcdMember => {
            // The leader (an election follows); another member when none
            // leads at this moment.
            let current = blocking(|| c.etcd.leader());
            let m = current.unwrap_or(x);
            s.note(format!("kill etcd member {m} (SIGKILL){}", if Some(m) == current { ", the leader" } else { "" }));
            c.etcd.kill(m);
            let heal = std::thread::spawn(|| {
                std::thread::sleep(HOLD);
                Vec::new()
            });
            Running { heal, killed: Some(m) }
        }
        Fault::ClockAhead | Fault::ClockBehind => {
            let heal = std::thread::spawn(Vec::new);
            Running { heal, killed: None }
        }
    }
}

/// Ends a fault begun by [`begin_fault`] (waiting out its hold).
async fn end_fault(fault: Fault, c: &mut FaultCluster, running: Running, s: &mut Schedule) {
    let notes = blocking(|| running.heal.join()).expect("the fault thread");
    for n in notes {
        s.note(n);
    }
    if let Some(m) = running.killed {
        blocking(|| c.etcd.restart(m)).expect("restart the etcd member");
        s.note(format!("etcd member {m} restarted"));
    }
    let _ = fault;
}

/// Pauses `target` for [`HOLD`] with two requests queued in its socket
/// meanwhile (a read and a write, sent while it cannot answer), resumes it,
/// and checks what it answered them: a node whose lease expired while it
/// was paused must not serve on its stale view of the cluster until it has
/// confirmed its membership and flags again (I11, fail closed): 503.
fn pause_then_resume(target: &Target) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin = target.admin.clone();
    let queued = rt.block_on(async {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(rollgate::tls::plain_client())
            .no_proxy()
            .timeout(HOLD * 3)
            .build()
            .unwrap();
        let read = tokio::spawn(http.get(format!("http://{admin}/kv/k00")).send());
        let write = tokio::spawn(http.put(format!("http://{admin}/kv/paused-probe")).body("queued").send());
        tokio::time::sleep(HOLD).await;
        target.resume();
        let mut answers = Vec::new();
        for (what, r) in [("read", read.await), ("write", write.await)] {
            let status = match r.expect("the request task") {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    (code, resp.text().await.unwrap_or_default())
                }
                Err(e) => (0, e.to_string()),
            };
            answers.push((what, status));
        }
        answers
    });
    let mut notes = vec![format!("resumed {}", target.id)];
    for (what, (status, body)) in queued {
        notes.push(format!("the {what} queued during the pause was answered {status}: {body:.160}"));
        assert!(
            status != 200,
            "I11: {} served a {what} queued while it was paused, on the view it had before its lease expired \
             ({status}: {body:.200}); it must answer 503 until it has confirmed its membership and flags",
            target.id
        );
    }
    notes
}

/// `POST /admin/flags/enable {"all": true}` through `admin`, retried
/// (paced, bounded) while the cluster cannot take it yet.
async fn enable_all(admin: &str) {
    let admin = Admin::new(admin);
    let mut last = json!(null);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    for _ in 0..60 {
        tick.tick().await;
        let (status, body) = admin.post("/admin/flags/enable", json!({"all": true})).await;
        if status == 200 {
            return;
        }
        last = json!({"status": status, "body": body});
    }
    panic!("enabling every stable flag did not succeed within 30 s: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node() {
    scenario(Fault::Partition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_longer_than_its_lease() {
    scenario(Fault::Pause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_day_ahead() {
    scenario(Fault::ClockAhead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_a_day_behind() {
    scenario(Fault::ClockBehind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_member_killed_and_restarted() {
    scenario(Fault::EtcdMember).await;
}
