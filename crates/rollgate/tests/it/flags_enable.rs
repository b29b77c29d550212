//! Enabling and disabling flags on in-process nodes sharing a real redb
//! store: dependencies first, every step run, the hot path following the
//! store (I1), and every refusal with its operator message (I3).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::flags_support::*;
use rollgate::cluster::{FlagState, LocalCopy};
use rollgate::flags::plan::Blocker;
use rollgate::flags::{EnableRequest, FlagDecl, FlagError, FlagRegistry, PluginSpec};
use rollgate::node::NodeError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_runs_dependencies_first_every_step_and_flips_bits_after_the_local_copy() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let nodes = rolled_cluster(&store, dir.path(), &["n1", "n2", "n3"], "1.1", &counters).await;
    let view = nodes[0].view();
    assert!(view.is_enabled("base"), "a fresh 1.0 cluster enabled its stable flag");
    assert!(!view.flags.contains_key("ttl"), "upgrading does not enable anything");
    let batch = nodes[0].flag_id("batch").unwrap();
    let ttl = nodes[0].flag_id("ttl").unwrap();
    assert!(nodes.iter().all(|n| !n.is_enabled(ttl) && !n.is_enabled(batch)));

    // Waiters on every node: when the bit flips, the local copy says enabled.
    let waiters: Vec<_> = nodes
        .iter()
        .map(|n| {
            let n = n.clone();
            let data = n.config().data_dir.clone();
            tokio::spawn(async move {
                n.wait_enabled(batch).await;
                let copy = LocalCopy::load(&data).unwrap().expect("a local copy");
                assert!(
                    copy.enabled().any(|f| f == "batch"),
                    "{}: bit flipped before the local copy: {copy:?}",
                    n.id()
                );
                assert!(n.is_enabled(ttl), "{}: the dependency is enabled first", n.id());
            })
        })
        .collect();

    let report = nodes[1].enable(EnableRequest::flags(["batch"])).await.unwrap();
    assert_eq!(report.order, ["ttl", "batch"], "dependencies first");
    assert_eq!(report.enabled, ["ttl", "batch"]);
    for w in waiters {
        tokio::time::timeout(WAIT, w).await.expect("every node sees the flag").unwrap();
    }
    assert_eq!(counters.cluster_ttl.load(Ordering::SeqCst), 1, "the cluster-wide step ran once");
    for n in ["n1", "n2", "n3"] {
        assert_eq!(counters.node_runs(n), 1, "the per-node step ran once on {n}");
    }
    let view = until(&nodes[0], "ttl enabled", |v| v.is_enabled("ttl") && v.is_enabled("batch")).await;
    let rec = &view.flags["ttl"];
    let info = rec.info.as_ref().expect("enabled records carry the flag's info");
    assert_eq!((info.introduced_in.as_str(), info.description.as_str()), ("1.1", "values may expire (PUT ?ttl_s=N)"));
    assert!(rec.attempt.is_none());
    assert!(!view.flag_acks.contains_key("ttl"), "acknowledgements are cleaned up");

    // Enabling again changes nothing.
    let epoch = view.epoch;
    let again = nodes[2].enable(EnableRequest::flags(["batch", "ttl"])).await.unwrap();
    assert!(again.enabled.is_empty());
    assert_eq!(again.already_enabled, ["ttl", "batch"]);
    assert_eq!(nodes[2].cluster().view().await.unwrap().epoch, epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_is_not_enabled_and_a_node_lacking_the_flag_cannot_join_meanwhile() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, config("n1", "1.0", dir.path(), &counters)).await;
    n1.stop().await.unwrap();
    drop(n1);
    // A release whose cluster step waits for the test's signal.
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let entered = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
    let go = Arc::new(tokio::sync::Mutex::new(Some(go_rx)));
    let registry = FlagRegistry::builder("1.1")
        .with(FlagDecl::new("base", "the 1.0 format").introduced_in("1.0"))
        .with(FlagDecl::new("ttl", "values may expire").introduced_in("1.1").on_enable_cluster(move |_| {
            let (entered, go) = (entered.clone(), go.clone());
            async move {
                if let Some(tx) = entered.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                if let Some(rx) = go.lock().await.take() {
                    let _ = rx.await;
                }
                Ok(())
            }
        }))
        .build()
        .unwrap();
    let mut cfg = config("n1", "1.1", dir.path(), &counters);
    cfg.flags = registry;
    let n1 = start(&store, cfg).await;
    let ttl = n1.flag_id("ttl").unwrap();
    let enabling = {
        let n1 = n1.clone();
        tokio::spawn(async move { n1.enable(EnableRequest::flags(["ttl"])).await })
    };
    entered_rx.await.unwrap();
    let view = n1.cluster().view().await.unwrap();
    assert!(matches!(view.flags["ttl"].state, FlagState::Enabling { ref owner, .. } if owner == "n1"));
    assert!(!n1.is_enabled(ttl), "I1: an enabling flag does not set the bit");

    // I5: a 1.0 node cannot join while ttl is being enabled.
    let err =
        rollgate::node::Node::start(config("old", "1.0", dir.path(), &counters), store.clone()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NodeError::Flag(FlagError::UnknownFlagsAtBoot { .. })), "{msg}");
    assert!(
        msg.contains("`ttl`") && msg.contains("being enabled") && msg.contains("run release 1.1 or later"),
        "{msg}"
    );
    // The same refusal at the fenced join (the boot check saw no flag yet).
    let view = n1.cluster().view().await.unwrap();
    let old = rollgate::cluster::NodeRecord {
        node_id: "old".into(),
        supported_flags: ["base".to_string()].into(),
        ..n1.record().clone()
    };
    let refusal = rollgate::flags::plan::join_check(&view, &old).unwrap_err().to_string();
    assert!(refusal.starts_with("node old (release 1.1) cannot join"), "{refusal}");
    assert!(refusal.contains("`ttl` (\"values may expire\", being enabled, introduced in release 1.1)"), "{refusal}");

    go_tx.send(()).unwrap();
    let report = enabling.await.unwrap().unwrap();
    assert_eq!(report.enabled, ["ttl"]);
    assert!(n1.is_enabled(ttl), "enabled once the store says so");
    let err =
        rollgate::node::Node::start(config("old", "1.0", dir.path(), &counters), store.clone()).await.unwrap_err();
    assert!(err.to_string().contains("`ttl` (\"values may expire\", enabled, introduced in release 1.1)"), "{err}");
    assert!(n1.view().member("old").is_none(), "never joined");
}

async fn refusal(node: &rollgate::node::Node, request: EnableRequest) -> (Vec<Blocker>, String) {
    match node.enable(request).await {
        Err(e @ FlagError::EnableRefused { .. }) => {
            let msg = e.to_string();
            let FlagError::EnableRefused { blockers, enabled } = e else { unreachable!() };
            assert!(enabled.is_empty());
            (blockers, msg)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_is_refused_while_a_member_running_or_stopped_lacks_the_flag() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    // n3 stays on 1.0 while n1 and n2 move to 1.2 (it joined before them,
    // so the cluster features do not keep it out).
    let mut nodes = rolled_cluster(&store, dir.path(), &["n1", "n2", "n3"], "1.0", &counters).await;
    let n3 = nodes.pop().unwrap();
    let n2 = upgrade(&store, dir.path(), nodes.pop().unwrap(), "1.2", &counters).await;
    let n1 = upgrade(&store, dir.path(), nodes.pop().unwrap(), "1.2", &counters).await;
    let mut nodes = vec![n1, n2];
    let before = snapshot(&store).await;

    // A running member lacks it.
    let (blockers, msg) = refusal(&nodes[0], EnableRequest::flags(["ttl"])).await;
    assert!(matches!(&blockers[..], [Blocker::NotSupported { flag, .. }] if flag == "ttl"), "{blockers:?}");
    assert_eq!(
        msg,
        "flag `ttl` cannot be enabled: node n3 (release 1.0, running) does not support it; upgrade n3 to a release \
         that supports it (1.1 or later); a node that is gone for good can be removed with `rollgate nodes forget ID` \
         once it is stopped"
    );
    // --all reports every flag n3 lacks; dependencies are named too.
    let (blockers, msg) = refusal(&nodes[0], EnableRequest::all()).await;
    let flags: Vec<&str> = blockers
        .iter()
        .map(|b| match b {
            Blocker::NotSupported { flag, .. } => flag.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(flags, ["ttl", "batch", "compact"], "{msg}");
    assert_eq!(snapshot(&store).await, before, "a refused enable changes nothing");

    // The same member, stopped: it still counts (it may come back).
    n3.stop().await.unwrap();
    drop(n3);
    let (_, msg) = refusal(&nodes[0], EnableRequest::flags(["batch"])).await;
    assert!(msg.contains("node n3 (release 1.0, stopped) does not support it"), "{msg}");
    assert!(msg.contains("if n3 is gone for good, run `rollgate nodes forget n3`"), "{msg}");

    // Forgotten: the way forward works.
    nodes[0].forget("n3").await.unwrap();
    let report = nodes[1].enable(EnableRequest::flags(["batch"])).await.unwrap();
    assert_eq!(report.enabled, ["ttl", "batch"]);
    nodes.clear();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_with_a_per_node_step_needs_every_member_running() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let nodes = rolled_cluster(&store, dir.path(), &["n1", "n2", "n3"], "1.1", &counters).await;
    let mut nodes = nodes.into_iter();
    let (n1, n2, n3) = (nodes.next().unwrap(), nodes.next().unwrap(), nodes.next().unwrap());
    n3.stop().await.unwrap();
    drop(n3);
    let before = snapshot(&store).await;
    let (blockers, msg) = refusal(&n1, EnableRequest::flags(["ttl"])).await;
    assert!(matches!(&blockers[..], [Blocker::StepNodesDown { nodes, .. }] if nodes[0].node_id == "n3"));
    assert_eq!(
        msg,
        "flag `ttl` runs a per-node enable step on every member and node n3 (release 1.1, stopped) cannot run it \
         because it is not running: start n3, or, if it is gone for good, run `rollgate nodes forget ID`"
    );
    assert_eq!(snapshot(&store).await, before);
    // A flag without a per-node step is not held back by the stopped node.
    assert!(n2.enable(EnableRequest::flags(["base"])).await.unwrap().already_enabled == ["base"]);
    // Back up: it works, and n3 ran its step.
    let n3 = start(&store, config("n3", "1.1", dir.path(), &counters)).await;
    n1.enable(EnableRequest::flags(["ttl"])).await.unwrap();
    assert_eq!(counters.node_runs("n3"), 1);
    drop((n1, n2, n3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experimental_flags_need_the_experimental_switch_and_dry_runs_change_nothing() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let nodes = rolled_cluster(&store, dir.path(), &["n1"], "1.2", &counters).await;
    let n1 = &nodes[0];
    let before = snapshot(&store).await;
    let (blockers, msg) = refusal(n1, EnableRequest::flags(["fancy"])).await;
    assert_eq!(blockers, [Blocker::Experimental { flag: "fancy".into(), needed_by: None }]);
    assert_eq!(
        msg,
        "flag `fancy` is experimental: pass --experimental to enable it (experimental flags may change or go away in a later release)"
    );
    let (_, msg) = refusal(n1, EnableRequest::flags(["no_such_flag"])).await;
    assert_eq!(
        msg,
        "unknown feature flag `no_such_flag`: this node's release 1.2 does not know it; `rollgate flags list` shows the flags it knows"
    );
    let (_, msg) = refusal(n1, EnableRequest::default()).await;
    assert_eq!(msg, "nothing to enable: name one or more flags, or use --all");

    // A dry run of --all: the order, nothing changed.
    let plan = n1.enable(EnableRequest::all().dry_run()).await.unwrap();
    assert!(plan.dry_run && plan.blockers.is_empty());
    assert_eq!(plan.order, ["ttl", "batch", "compact"], "stable flags only, dependencies first");
    assert_eq!(plan.already_enabled, ["base"]);
    let with_experimental = n1.enable(EnableRequest::all().experimental().dry_run()).await.unwrap();
    assert_eq!(with_experimental.order, ["ttl", "batch", "fancy", "compact"]);
    let blocked = n1.enable(EnableRequest::flags(["fancy"]).dry_run()).await.unwrap();
    assert_eq!(blocked.messages.len(), 1, "a dry run reports what blocks: {blocked:?}");
    assert_eq!(snapshot(&store).await, before, "dry runs change nothing");

    let report = n1.enable(EnableRequest::flags(["fancy"]).experimental()).await.unwrap();
    assert_eq!(report.enabled, ["fancy"]);
    let report = n1.enable(EnableRequest::all()).await.unwrap();
    assert_eq!(report.enabled, ["ttl", "batch", "compact"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_reversible_flags_can_be_disabled_and_the_hook_runs_first() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let nodes = rolled_cluster(&store, dir.path(), &["n1", "n2"], "1.2", &counters).await;
    nodes[0].enable(EnableRequest::all()).await.unwrap();
    let compact = nodes[1].flag_id("compact").unwrap();
    bit(&nodes[1], "compact", true).await;

    let err = nodes[0].disable("ttl").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "flag `ttl` is not reversible: once enabled it stays enabled (nodes may have written data only it can read); only flags declared reversible can be disabled"
    );
    let err = nodes[0].disable("nope").await.unwrap_err();
    assert!(err.to_string().starts_with("unknown feature flag `nope`"), "{err}");
    let before = snapshot(&store).await;
    let report = nodes[0].disable("compact").await.unwrap();
    assert!(report.changed);
    assert_eq!(counters.disable_hook.load(Ordering::SeqCst), 1);
    bit(&nodes[1], "compact", false).await;
    assert!(!nodes[0].is_enabled(compact), "the disabling node's bit is off when it returns");
    assert_ne!(snapshot(&store).await, before);
    let again = nodes[1].disable("compact").await.unwrap();
    assert!(!again.changed, "disabling a disabled flag changes nothing");
    assert_eq!(counters.disable_hook.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_cannot_be_disabled_while_an_enabled_flag_depends_on_it() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let registry = FlagRegistry::builder("1.0")
        .with(FlagDecl::new("base", "the base").introduced_in("1.0").reversible())
        .with(FlagDecl::new("more", "more").introduced_in("1.0").depends_on(["base"]).reversible())
        .build()
        .unwrap();
    let mut cfg = config("n1", "1.0", dir.path(), &counters);
    cfg.flags = registry;
    let n1 = start(&store, cfg).await;
    assert!(n1.view().is_enabled("more"), "fresh: every stable flag");
    let err = n1.disable("base").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "flag `base` cannot be disabled while flags that depend on it are enabled: disable `more` first"
    );
    n1.disable("more").await.unwrap();
    n1.disable("base").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_per_node_step_rolls_the_enabling_back_naming_the_node() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let nodes = rolled_cluster(&store, dir.path(), &["n1"], "1.0", &counters).await;
    nodes[0].stop().await.unwrap();
    let failing = |release: &str, fail: bool| {
        FlagRegistry::builder(release)
            .with(FlagDecl::new("base", "the 1.0 format").introduced_in("1.0"))
            .with(FlagDecl::new("ttl", "values may expire").introduced_in("1.1").on_enable_node(
                move |ctx| async move { if fail { Err(format!("disk full on {}", ctx.node_id)) } else { Ok(()) } },
            ))
            .build()
            .unwrap()
    };
    let mut c1 = config("n1", "1.1", dir.path(), &counters);
    c1.flags = failing("1.1", false);
    let mut c2 = config("n2", "1.1", dir.path(), &counters);
    c2.flags = failing("1.1", true);
    let n1 = start(&store, c1).await;
    let n2 = start(&store, c2).await;
    let err = n1.enable(EnableRequest::flags(["ttl"])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "enabling of flag `ttl` failed and was rolled back: the per-node enable step failed on node n2: disk full on n2"
    );
    let view = n1.cluster().view().await.unwrap();
    let rec = &view.flags["ttl"];
    assert_eq!(rec.state, FlagState::Disabled);
    assert!(rec.note.as_deref().unwrap().contains("disk full on n2"), "{rec:?}");
    let status = rollgate::admin::view::flag_status(&n1, "ttl").unwrap();
    assert_eq!((status.state.as_str(), status.note.is_some()), ("disabled", true));
    assert!(!n1.flag_enabled("ttl") && !n2.flag_enabled("ttl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_starts_only_when_its_flags_are_supported_and_enabled() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let nodes = rolled_cluster(&store, dir.path(), &["n1"], "1.1", &counters).await;
    let n1 = &nodes[0];
    let shovel = PluginSpec::new("shovel", ["ttl", "streams"]);
    let err = n1.check_plugin(&shovel).unwrap_err().to_string();
    assert_eq!(
        err,
        "plugin `shovel` cannot start: it requires feature flags that are not available: release 1.1 does not support \
         `streams` (run a release that does); `ttl` not enabled (run `rollgate flags enable ttl`)"
    );
    n1.enable(EnableRequest::flags(["ttl"])).await.unwrap();
    n1.check_plugin(&PluginSpec::new("shovel", ["ttl"])).unwrap();
}

/// A member that must run the per-node step looks alive (its lease is kept)
/// but never runs it: the enabling waits a bounded time, then rolls back
/// naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_member_with_a_per_node_step_rolls_the_enabling_back() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let nodes = rolled_cluster(&store, dir.path(), &["n1"], "1.1", &counters).await;
    let n1 = nodes[0].clone();
    // "hung": a member record of release 1.1 (it has ttl's per-node step),
    // kept alive by a lease, but no node runtime behind it.
    let cluster = rollgate::cluster::Cluster::open(store.clone(), Default::default()).await.unwrap();
    let mut hung = n1.record().clone();
    hung.node_id = "hung".into();
    cluster.join(hung, |_| Ok::<(), String>(())).await.unwrap();
    let _live = cluster.start_liveness("hung", 30).await.unwrap();
    until(&n1, "hung running", |v| v.member("hung").is_some_and(|m| m.is_running())).await;
    drop(nodes);
    n1.stop().await.unwrap();
    let mut cfg = config("n1", "1.1", dir.path(), &counters);
    cfg.timeouts.node_steps_ms = 300;
    let n1 = start(&store, cfg).await;
    let err = n1.enable(EnableRequest::flags(["ttl"])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "enabling of flag `ttl` failed and was rolled back: node hung did not run its per-node enable step within 300 ms: check that it is healthy and enable again"
    );
    let view = n1.cluster().view().await.unwrap();
    assert_eq!(view.flags["ttl"].state, FlagState::Disabled);
    assert_eq!(counters.node_runs("n1"), 1, "the healthy member ran its step");
}
