//! The sans-IO planner, exercised over random cluster views (proptest,
//! seeds reported by proptest on failure): whatever the members, their
//! releases and states, and the flags' states, a plan without blockers
//! only enables flags every member supports, dependencies first; the
//! recovery rule always leaves the in-progress state; the join check
//! refuses exactly the nodes lacking a present flag or a cluster feature.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rollgate::cluster::{ClusterView, EnableAttempt, FlagRecord, FlagState, LiveRecord, Member, NodeRecord, NodeState};
use rollgate::flags::plan::{self, Blocker, Me, Recovery, Rules};
use rollgate::flags::{EnableRequest, FlagDecl, FlagRegistry, Stability};

const FLAGS: [&str; 5] = ["a", "b", "c", "x", "s"];

/// `a` <- `b` <- `c` (dependencies), `x` experimental, `s` with a per-node step.
fn registry() -> FlagRegistry {
    FlagRegistry::builder("9.9")
        .with(FlagDecl::new("c", "c").introduced_in("1.2").depends_on(["b"]))
        .with(FlagDecl::new("a", "a").introduced_in("1.0"))
        .with(FlagDecl::new("b", "b").introduced_in("1.1").depends_on(["a"]))
        .with(FlagDecl::new("x", "x").introduced_in("1.1").experimental())
        .with(FlagDecl::new("s", "s").introduced_in("1.1").on_enable_node(|_| async { Ok(()) }))
        .build()
        .unwrap()
}

fn member(id: usize, supported: &BTreeSet<String>, running: bool, features: &BTreeSet<String>) -> Member {
    let record = NodeRecord {
        supported_flags: supported.clone(),
        cluster_features: features.clone(),
        flag_node_steps: if supported.contains("s") { ["s".to_string()].into() } else { BTreeSet::new() },
        state: if running { NodeState::Running } else { NodeState::Stopped },
        ..NodeRecord::new(&format!("n{id}"), "1.0")
    };
    Member {
        record,
        live: running.then_some(LiveRecord { lease: 1, heartbeat_ms: 0 }),
        effective: if running { NodeState::Running } else { NodeState::Stopped },
    }
}

fn flag_state(kind: u8, owner: usize) -> Option<FlagRecord> {
    let state = match kind {
        0 => return None,
        1 => FlagState::Disabled,
        2 => FlagState::Enabled { since_ms: 1 },
        3 => FlagState::Enabling { owner: format!("n{owner}"), started_ms: 1, step: None },
        _ => FlagState::Disabling { owner: format!("n{owner}"), started_ms: 1 },
    };
    let attempt = matches!(state, FlagState::Enabling { .. }).then(|| EnableAttempt {
        id: "att".into(),
        node_steps: BTreeSet::new(),
        owner_incarnation: 0,
    });
    Some(FlagRecord { state, updated_ms: 1_000, info: None, attempt, note: None })
}

prop_compose! {
    fn arb_view()(
        members in prop::collection::vec((prop::collection::btree_set(prop::sample::select(FLAGS.to_vec()), 0..=5), any::<bool>(), prop::collection::btree_set(prop::sample::select(vec!["f1", "f2"]), 0..=2)), 0..5),
        flags in prop::collection::vec((0u8..5, 0usize..6), 5),
    ) -> ClusterView {
        let members: BTreeMap<String, Member> = members
            .iter()
            .enumerate()
            .map(|(i, (s, running, f))| {
                let s: BTreeSet<String> = s.iter().map(|x| x.to_string()).collect();
                let f: BTreeSet<String> = f.iter().map(|x| x.to_string()).collect();
                (format!("n{i}"), member(i, &s, *running, &f))
            })
            .collect();
        let flags = FLAGS
            .iter()
            .zip(flags)
            .filter_map(|(name, (kind, owner))| flag_state(kind, owner).map(|r| (name.to_string(), r)))
            .collect();
        ClusterView {
            cluster_id: "c".into(),
            epoch: 1,
            revision: 1,
            epoch_revision: 1,
            members,
            flags,
            flag_acks: BTreeMap::new(),
            flag_revisions: BTreeMap::new(),
            floor: None,
        }
    }
}

prop_compose! {
    fn arb_request()(flags in prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "x", "s", "zz"]), 0..4), all in any::<bool>(), experimental in any::<bool>()) -> EnableRequest {
        EnableRequest { flags: flags.into_iter().map(String::from).collect(), all, experimental, dry_run: false }
    }
}

fn ctx<'a>(me: &'a str, driving: &'a BTreeSet<String>) -> Me<'a> {
    Me { id: me, incarnation: 0, driving, bits_revision: 0, wall_ms: 2_000, rules: Rules::strict() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn a_plan_without_blockers_is_safe(view in arb_view(), request in arb_request()) {
        let registry = registry();
        let none = BTreeSet::new();
        let plan = plan::plan_enable(&view, &registry, &request, &ctx("n0", &none));
        if plan.blockers.is_empty() {
            let mut done: BTreeSet<String> = view.enabled_flags();
            for flag in &plan.order {
                let decl = registry.get(flag).expect("only known flags");
                // Every member, running or stopped, supports it (I3).
                for m in view.members.values() {
                    prop_assert!(m.record.supported_flags.contains(flag), "{} lacks {flag}", m.record.node_id);
                    if m.record.flag_node_steps.contains(flag) {
                        prop_assert!(m.is_running(), "{} must run the step of {flag}", m.record.node_id);
                    }
                }
                // Dependencies first.
                for dep in decl.get_depends_on() {
                    prop_assert!(done.contains(dep), "{flag} before its dependency {dep}");
                }
                if decl.get_stability() == Stability::Experimental {
                    prop_assert!(request.experimental);
                }
                prop_assert!(!view.is_enabled(flag));
                done.insert(flag.clone());
            }
        }
        // Whatever is requested and lacked by a member is blocked.
        for name in &request.flags {
            let lacking = view.members.values().any(|m| !m.record.supported_flags.contains(name));
            if lacking && !view.is_enabled(name) && registry.supports(name) && plan.order.contains(name) {
                let blocked = plan.blockers.iter().any(|b| matches!(b, Blocker::NotSupported { flag, .. } if flag == name));
                prop_assert!(blocked, "{} is lacked but not blocked", name);
            }
        }
    }

    #[test]
    fn recovery_always_leaves_the_in_progress_state(view in arb_view()) {
        let registry = registry();
        let none = BTreeSet::new();
        for flag in FLAGS {
            let Some(rec) = view.flags.get(flag) else { continue };
            let r = plan::recovery_for(&view, &registry, flag, &ctx("n0", &none));
            match &rec.state {
                FlagState::Enabling { owner, .. } => {
                    let orphan = owner == "n0" || !view.member(owner).is_some_and(|m| m.is_running());
                    prop_assert_eq!(r == Recovery::Nothing, !orphan, "{} {:?}", flag, r);
                    if r == Recovery::ResumeEnable {
                        prop_assert!(view.members.values().all(|m| m.record.supported_flags.contains(flag)));
                    }
                }
                FlagState::Disabling { owner, .. } => {
                    let orphan = owner == "n0" || !view.member(owner).is_some_and(|m| m.is_running());
                    prop_assert_eq!(r == Recovery::FinishDisable, orphan);
                }
                _ => prop_assert_eq!(r, Recovery::Nothing),
            }
        }
    }

    #[test]
    fn the_join_check_refuses_exactly_what_it_must(view in arb_view(), supported in prop::collection::btree_set(prop::sample::select(FLAGS.to_vec()), 0..=5), features in prop::collection::btree_set(prop::sample::select(vec!["f1", "f2"]), 0..=2)) {
        let s: BTreeSet<String> = supported.iter().map(|x| x.to_string()).collect();
        let f: BTreeSet<String> = features.iter().map(|x| x.to_string()).collect();
        let joiner = member(9, &s, true, &f).record;
        let unknown_present = view.flags.iter().any(|(n, r)| r.is_present() && !s.contains(n));
        let missing = !rollgate::features::missing_features(&view, &joiner).is_empty();
        prop_assert_eq!(plan::join_check(&view, &joiner).is_err(), unknown_present || missing);
    }
}
