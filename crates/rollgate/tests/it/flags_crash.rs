//! Crash tests of the enable and disable protocols (I4): a child process
//! (this test binary, re-executed) drives the protocol on a redb store file
//! and blocks at a fail point; the parent reads the line the child prints
//! there and kills it with SIGKILL, reopens the store file and starts the
//! node again. Afterwards every flag is enabled or disabled, never in
//! between; the steps ran at least once, and their effect happened once
//! (they are idempotent). Steps are counted in a file.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::flags_support::{redb, tmp, until};
use rollgate::api::audit::AuditAction;
use rollgate::cluster::FlagState;
use rollgate::flags::failpoint::{DISABLE_POINTS, ENABLE_POINTS, FAILPOINT_ENV};
use rollgate::flags::{EnableRequest, FlagDecl, FlagRegistry};
use rollgate::node::{Node, NodeConfig};
use rollgate::store::{Compare, MetaStore, Txn, TxnOp};

const CHILD_ENV: &str = "ROLLGATE_FLAGS_CRASH_CHILD";
const DIR_ENV: &str = "ROLLGATE_FLAGS_CRASH_DIR";
/// How long the parent waits for the child's fail point line.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

fn log(dir: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("steps.log")).unwrap();
    // One write per line: steps run concurrently, and `writeln!` may write a
    // line and its newline apart, interleaving with another step's line.
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
    f.sync_all().unwrap();
}

fn count(dir: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(dir.join("steps.log")).unwrap_or_default().lines().filter(|l| l.starts_with(prefix)).count()
}

/// `base` (1.0); from 1.1 `ttl` (a cluster step whose effect is a store key
/// written once, and a per-node step) and `compact` (reversible, with a hook).
fn registry(release: &str, dir: &Path) -> FlagRegistry {
    let mut b = FlagRegistry::builder(release);
    b.declare(FlagDecl::new("base", "the base format").introduced_in("1.0"));
    if release != "1.0" {
        let (d1, d2, d3) = (dir.to_path_buf(), dir.to_path_buf(), dir.to_path_buf());
        b.declare(
            FlagDecl::new("ttl", "values may expire")
                .introduced_in("1.1")
                .on_enable_cluster(move |ctx| {
                    let d = d1.clone();
                    async move {
                        log(&d, "cluster");
                        // The effect: created once, however often the step runs.
                        let key = format!("{}effects/ttl", ctx.cluster.keys().root());
                        let txn =
                            Txn::new().when([Compare::absent(&key)]).and_then([TxnOp::put(&key, b"ready".to_vec())]);
                        ctx.cluster.store().txn(txn).await.map_err(|e| e.to_string())?;
                        Ok(())
                    }
                })
                .on_enable_node(move |ctx| {
                    let d = d2.clone();
                    async move {
                        log(&d, &format!("node {}", ctx.node_id));
                        Ok(())
                    }
                }),
        );
        b.declare(FlagDecl::new("compact", "compact records").introduced_in("1.1").reversible().before_disable(
            move |_| {
                let d = d3.clone();
                async move {
                    log(&d, "hook");
                    Ok(())
                }
            },
        ));
    }
    b.build().unwrap()
}

fn config(node: &str, release: &str, dir: &Path, ttl_s: i64) -> NodeConfig {
    let mut c = NodeConfig::new(node, release, dir.join(node), registry(release, dir));
    c.liveness_ttl_s = ttl_s;
    c.timeouts.node_steps_ms = 10_000;
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The child: `enable` (n1 enables ttl), `enable2` (n1 enables ttl with n2
/// running too), `disable` (n1 enables then disables compact). It blocks at
/// the fail point named by the environment.
#[test]
fn crash_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    runtime().block_on(async move {
        let store = redb(&dir).await;
        let n1 =
            Node::start(config("n1", "1.1", &dir, if mode == "enable2" { 1 } else { 2 }), store.clone()).await.unwrap();
        let _n2 = if mode == "enable2" {
            Some(Node::start(config("n2", "1.1", &dir, 2), store.clone()).await.unwrap())
        } else {
            None
        };
        match mode.as_str() {
            "enable" | "enable2" => {
                n1.enable(EnableRequest::flags(["ttl"])).await.unwrap();
            }
            "disable" => {
                n1.enable(EnableRequest::flags(["compact"])).await.unwrap();
                n1.disable("compact").await.unwrap();
            }
            other => panic!("unknown child mode {other}"),
        }
        println!("child finished without reaching the fail point");
    });
}

/// Prepares a cluster whose node(s) ran 1.0 (fresh: `base` enabled), in its
/// own runtime so that the store file is closed afterwards.
fn prepare(dir: &Path, nodes: &[&str]) {
    runtime().block_on(async {
        let store = redb(dir).await;
        for n in nodes {
            let node = Node::start(config(n, "1.0", dir, 2), store.clone()).await.unwrap();
            node.stop().await.unwrap();
        }
    });
}

/// Runs the child until it reaches `point`, then kills it with SIGKILL.
fn crash_at(dir: &Path, mode: &str, point: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &crate::test_name(module_path!(), "crash_child"), "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, mode)
        .env(DIR_ENV, dir)
        .env(FAILPOINT_ENV, point)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wanted = format!("rollgate failpoint reached: {point}");
    loop {
        match rx.recv_timeout(CHILD_TIMEOUT) {
            // libtest prints "test crash_child ... " before the test's own output.
            Ok(line) if line.ends_with(&wanted) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("the child never reached {point} ({e:?}); it exited: {:?}", child.try_wait());
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed at {point}");
}

fn state(
    store: &std::sync::Arc<dyn MetaStore>,
    root: &str,
    flag: &str,
) -> impl std::future::Future<Output = Option<FlagState>> {
    let store = store.clone();
    let key = format!("{root}flags/{flag}");
    async move {
        store
            .get(&key)
            .await
            .unwrap()
            .map(|kv| serde_json::from_slice::<rollgate::cluster::FlagRecord>(&kv.value).unwrap().state)
    }
}

#[test]
fn a_crash_at_any_step_of_enabling_is_resumed_by_the_restarted_node() {
    for point in ENABLE_POINTS {
        eprintln!("--- crash at {point}");
        let dir = tmp();
        prepare(dir.path(), &["n1"]);
        crash_at(dir.path(), "enable", point);
        let before = runtime().block_on(async {
            let store = redb(dir.path()).await;
            state(&store, "rollgate/", "ttl").await
        });
        match point {
            "enable.before_enabling_commit" => assert_eq!(before, None, "{point}: nothing written yet"),
            "enable.after_enabled_committed" => assert!(matches!(before, Some(FlagState::Enabled { .. }))),
            _ => assert!(
                matches!(before, Some(FlagState::Enabling { ref owner, .. }) if owner == "n1"),
                "{point}: {before:?}"
            ),
        }
        runtime().block_on(async {
            let store = redb(dir.path()).await;
            let n1 = Node::start(config("n1", "1.1", dir.path(), 2), store.clone()).await.unwrap();
            let after = state(&store, "rollgate/", "ttl").await;
            match point {
                "enable.before_enabling_commit" => {
                    assert_eq!(after, None, "{point}: never started, stays disabled");
                    n1.enable(EnableRequest::flags(["ttl"])).await.unwrap();
                }
                "enable.after_enabled_committed" => assert!(matches!(after, Some(FlagState::Enabled { .. }))),
                _ => {
                    assert!(matches!(after, Some(FlagState::Enabled { .. })), "{point}: resumed to enabled: {after:?}");
                    // The takeover is in the audit log, as done by the node itself.
                    let log = n1.audit_log(10).await.unwrap();
                    let takeover = log.iter().find(|e| e.action == AuditAction::Takeover).expect("a takeover entry");
                    assert_eq!((takeover.node.as_str(), takeover.caller.via.as_str()), ("n1", "node"), "{point}");
                    assert!(
                        takeover.message.contains("resumed the enabling of `ttl`"),
                        "{point}: {}",
                        takeover.message
                    );
                }
            }
            assert!(n1.flag_enabled("ttl"));
            let (cluster, node) = (count(dir.path(), "cluster"), count(dir.path(), "node n1"));
            eprintln!("{point}: cluster step ran {cluster} times, node step {node} times");
            assert!(cluster >= 1 && node >= 1, "{point}: every step ran");
            let effect = store.get("rollgate/effects/ttl").await.unwrap().expect("the step's effect");
            assert_eq!(
                (effect.value.as_slice(), effect.version),
                (&b"ready"[..], 1),
                "{point}: the effect happened once"
            );
        });
    }
}

#[test]
fn a_crash_while_disabling_is_finished_by_the_restarted_node() {
    for point in DISABLE_POINTS {
        eprintln!("--- crash at {point}");
        let dir = tmp();
        prepare(dir.path(), &["n1"]);
        crash_at(dir.path(), "disable", point);
        runtime().block_on(async {
            let store = redb(dir.path()).await;
            assert!(matches!(state(&store, "rollgate/", "compact").await, Some(FlagState::Disabling { .. })));
            let n1 = Node::start(config("n1", "1.1", dir.path(), 2), store.clone()).await.unwrap();
            let after = state(&store, "rollgate/", "compact").await;
            assert_eq!(after, Some(FlagState::Disabled), "{point}: finished");
            let log = n1.audit_log(10).await.unwrap();
            assert!(
                log.iter()
                    .any(|e| e.action == AuditAction::Takeover
                        && e.message.contains("finished the disabling of `compact`")),
                "{point}: {log:?}"
            );
            assert!(!n1.flag_enabled("compact"));
            assert!(count(dir.path(), "hook") >= 1, "{point}: the hook ran");
        });
    }
}

/// The owner crashes after committing `enabling`; another member, whose
/// node is restarted alone, sees the owner's lease expire and rolls the
/// enabling back (the owner, which must run a per-node step, is down);
/// once the owner is back, enabling succeeds.
#[test]
fn another_node_rolls_back_an_enabling_whose_owner_died() {
    let dir = tmp();
    prepare(dir.path(), &["n1", "n2"]);
    crash_at(dir.path(), "enable2", "enable.after_enabling_committed");
    runtime().block_on(async {
        let store = redb(dir.path()).await;
        let n2 = Node::start(config("n2", "1.1", dir.path(), 2), store.clone()).await.unwrap();
        let view = until(&n2, "the enabling resolved", |v| {
            !matches!(v.flags.get("ttl").map(|r| &r.state), Some(FlagState::Enabling { .. }))
        })
        .await;
        let rec = &view.flags["ttl"];
        assert_eq!(rec.state, FlagState::Disabled, "rolled back, not stuck");
        let note = rec.note.as_deref().unwrap();
        assert!(note.contains("node n1 (release 1.1, stopped) cannot run it"), "{note}");
        let n1 = Node::start(config("n1", "1.1", dir.path(), 2), store.clone()).await.unwrap();
        n2.enable(EnableRequest::flags(["ttl"])).await.unwrap();
        crate::flags_support::bit(&n1, "ttl", true).await;
    });
}
