//! Declarations, the release-table rules and the upgrade plan: pure, no store.

use std::collections::BTreeSet;

use rollgate::flags::{
    FlagDecl, FlagRegistry, Provider, RegistryProblem, ReleaseFlags, ReleaseTable, ReleaseTableProblem, Stability,
    check_release_table,
};

fn problems(b: rollgate::flags::RegistryBuilder) -> Vec<RegistryProblem> {
    b.build().unwrap_err().problems
}

#[test]
fn declarations_get_dense_ids_and_a_dependency_order() {
    let mut b = FlagRegistry::builder("1.2");
    let c = b.declare(FlagDecl::new("c", "c").introduced_in("1.2").depends_on(["b"]));
    let a = b.declare(FlagDecl::new("a", "a").introduced_in("1.0"));
    let bb = b.declare(FlagDecl::new("b", "b").introduced_in("1.1").depends_on(["a"]));
    let p = b.declare(FlagDecl::new("shovel_v2", "shovel").introduced_in("1.2").plugin("shovel").experimental());
    let r = b.build().unwrap();
    assert_eq!((c.index(), a.index(), bb.index(), p.index()), (0, 1, 2, 3), "ids in declaration order");
    assert_eq!(r.id("b"), Some(bb));
    assert_eq!(r.topological().map(|d| d.name()).collect::<Vec<_>>(), ["a", "b", "c", "shovel_v2"]);
    assert_eq!(r.with_dependencies("c"), ["a", "b", "c"]);
    assert_eq!(r.get("shovel_v2").unwrap().provider(), &Provider::Plugin("shovel".into()));
    assert_eq!(r.get("shovel_v2").unwrap().info().provider, "plugin:shovel");
    assert_eq!(r.get("a").unwrap().get_stability(), Stability::Stable);
}

#[test]
fn bad_declarations_are_typed_errors_listing_every_problem() {
    let got = problems(
        FlagRegistry::builder("1.0")
            .with(FlagDecl::new("Bad-Name", "x").introduced_in("1.0"))
            .with(FlagDecl::new("dup", "x").introduced_in("1.0"))
            .with(FlagDecl::new("dup", "x").introduced_in("1.0"))
            .with(FlagDecl::new("orphan", "x").introduced_in("1.0").depends_on(["ghost"]))
            .with(FlagDecl::new("norelease", "x"))
            .with(FlagDecl::new("hook", "x").introduced_in("1.0").before_disable(|_| async { Ok(()) })),
    );
    assert_eq!(
        got,
        [
            RegistryProblem::BadName { name: "Bad-Name".into() },
            RegistryProblem::Duplicate { name: "dup".into() },
            RegistryProblem::MissingRelease { flag: "norelease".into() },
            RegistryProblem::HookWithoutReversible { flag: "hook".into() },
            RegistryProblem::UnknownDependency { flag: "orphan".into(), dependency: "ghost".into() },
        ]
    );
    let cycle = problems(
        FlagRegistry::builder("1.0")
            .with(FlagDecl::new("a", "x").introduced_in("1.0").depends_on(["c"]))
            .with(FlagDecl::new("b", "x").introduced_in("1.0").depends_on(["a"]))
            .with(FlagDecl::new("c", "x").introduced_in("1.0").depends_on(["b"])),
    );
    assert_eq!(cycle, [RegistryProblem::Cycle { cycle: vec!["a".into(), "c".into(), "b".into(), "a".into()] }]);
    let err = FlagRegistry::builder("1.0")
        .with(FlagDecl::new("a", "x").introduced_in("1.0").depends_on(["a"]))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid feature flag declarations for release 1.0: flags depend on each other in a cycle: a -> a"
    );
    let less = problems(
        FlagRegistry::builder("1.0")
            .with(FlagDecl::new("exp", "x").introduced_in("1.0").experimental())
            .with(FlagDecl::new("req", "x").introduced_in("1.0").required().depends_on(["exp"])),
    );
    assert_eq!(
        less[0].to_string(),
        "required flag `req` depends on experimental flag `exp`: a flag may only depend on flags at least as stable"
    );
    let many = (0..101)
        .fold(FlagRegistry::builder("1.0"), |b, i| b.with(FlagDecl::new(&format!("f{i}"), "x").introduced_in("1.0")));
    assert!(matches!(problems(many)[0], RegistryProblem::TooMany { count: 101 }));
    let long = problems(FlagRegistry::builder("1.0").with(FlagDecl::new("a", &"d".repeat(2000)).introduced_in("1.0")));
    assert!(matches!(long[0], RegistryProblem::TooLong { what: "description", .. }));
}

fn row(release: &str, supported: &[&str], required: &[&str], introduced: &[(&str, &str)]) -> ReleaseFlags {
    ReleaseFlags {
        release: release.into(),
        supported: supported.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        required: required.iter().map(|s| s.to_string()).collect(),
        introduced_in: introduced.iter().map(|(f, r)| (f.to_string(), r.to_string())).collect(),
        removed: BTreeSet::new(),
        upgrades_from: None,
    }
}

#[test]
fn a_release_table_never_drops_a_flag_and_always_leaves_a_rolling_path() {
    let good = ReleaseTable {
        releases: vec![
            row("1.0", &["a"], &[], &[("a", "1.0")]),
            row("1.1", &["a", "b"], &[], &[("a", "1.0"), ("b", "1.1")]),
            row("2.0", &["a", "b"], &["b"], &[("a", "1.0"), ("b", "1.1")]),
        ],
    };
    check_release_table(&good).unwrap();
    let bad = ReleaseTable {
        releases: vec![
            row("1.0", &["a", "old"], &[], &[("a", "1.0"), ("old", "1.0")]),
            row("1.1", &["a", "b"], &["c"], &[("a", "1.0"), ("b", "1.0")]),
            row("1.1", &["a", "b"], &[], &[]),
        ],
    };
    let err = check_release_table(&bad).unwrap_err();
    assert_eq!(
        err.problems,
        [
            ReleaseTableProblem::Duplicate { release: "1.1".into() },
            ReleaseTableProblem::Dropped { flag: "old".into(), older: "1.0".into(), newer: "1.1".into() },
            ReleaseTableProblem::RequiredWithoutPredecessor {
                flag: "c".into(),
                release: "1.1".into(),
                previous: "1.0".into()
            },
            ReleaseTableProblem::IntroducedMismatch {
                flag: "b".into(),
                says: "1.0".into(),
                reason: "release 1.0 does not support it".into()
            },
        ]
    );
    assert!(err.to_string().contains("release 1.1 drops flag `old` that release 1.0 knows"), "{err}");
}

/// What a service writes in its own tests, over its real registries.
#[test]
fn the_rules_run_over_registries() {
    let regs: Vec<FlagRegistry> = ["1.0", "1.1"]
        .iter()
        .map(|r| {
            let mut b = FlagRegistry::builder(r).with(FlagDecl::new("a", "a").introduced_in("1.0"));
            if *r == "1.1" {
                b = b.with(FlagDecl::new("b", "b").introduced_in("1.1"));
            }
            b.build().unwrap()
        })
        .collect();
    check_release_table(&ReleaseTable::from_registries(regs.iter())).unwrap();
    let dropped = ReleaseTable::from_registries([&regs[1], &regs[0]]);
    assert!(check_release_table(&dropped).is_err(), "1.0 after 1.1 drops b");
}

/// `f` in three releases: stable in 1.0, `mid` in 1.1, removed in 1.2.
fn life(mid: &str, upgrades_from: Option<&str>) -> Vec<FlagRegistry> {
    let decl = || FlagDecl::new("f", "a flag that comes and goes").introduced_in("1.0");
    let r10 = FlagRegistry::builder("1.0").with(decl()).build().unwrap();
    let r11 = FlagRegistry::builder("1.1").with(if mid == "required" { decl().required() } else { decl() });
    let mut r12 = FlagRegistry::builder("1.2").removed("f");
    if let Some(from) = upgrades_from {
        r12 = r12.upgrades_from(from);
    }
    vec![r10, r11.build().unwrap(), r12.build().unwrap()]
}

#[test]
fn a_flag_is_removed_only_once_every_release_that_upgrades_to_the_remover_requires_it() {
    let ok = life("required", None);
    check_release_table(&ReleaseTable::from_registries(ok.iter())).unwrap();
    assert_eq!(ok[2].known(), BTreeSet::from(["f".to_string()]), "a removed flag stays known");
    assert!(ok[2].names().is_empty() && ok[2].id("f").is_none(), "but has no code, no id");

    let err = check_release_table(&ReleaseTable::from_registries(life("stable", None).iter())).unwrap_err();
    assert_eq!(
        err.problems,
        [ReleaseTableProblem::RemovedNotRequired { flag: "f".into(), release: "1.2".into(), from: "1.1".into() }]
    );
    assert!(
        err.to_string().contains(
            "release 1.2 removes flag `f`, but release 1.1, which may upgrade straight to 1.2, does not require it"
        ),
        "{err}"
    );
    // Skipping a release widens what must require it.
    let err = check_release_table(&ReleaseTable::from_registries(life("required", Some("1.0")).iter())).unwrap_err();
    assert_eq!(
        err.problems,
        [ReleaseTableProblem::RemovedNotRequired { flag: "f".into(), release: "1.2".into(), from: "1.0".into() }]
    );
    let err = check_release_table(&ReleaseTable::from_registries(life("required", Some("0.9")).iter())).unwrap_err();
    assert_eq!(err.problems, [ReleaseTableProblem::BadUpgradeSource { release: "1.2".into(), from: "0.9".into() }]);

    // A later release keeps it removed; forgetting it is a drop.
    let mut regs = life("required", None);
    regs.push(FlagRegistry::builder("1.3").build().unwrap());
    let err = check_release_table(&ReleaseTable::from_registries(regs.iter())).unwrap_err();
    assert_eq!(
        err.problems,
        [ReleaseTableProblem::Dropped { flag: "f".into(), older: "1.2".into(), newer: "1.3".into() }]
    );
    assert!(err.to_string().contains("remove it with `.removed(\"f\")`"), "{err}");
    regs[3] = FlagRegistry::builder("1.3").removed("f").build().unwrap();
    check_release_table(&ReleaseTable::from_registries(regs.iter())).unwrap();

    // Only a declared flag can be removed, and not declared and removed at once.
    let never =
        [FlagRegistry::builder("1.0").build().unwrap(), FlagRegistry::builder("1.1").removed("ghost").build().unwrap()];
    let err = check_release_table(&ReleaseTable::from_registries(never.iter())).unwrap_err();
    assert_eq!(
        err.problems,
        [ReleaseTableProblem::RemovedUnknown { flag: "ghost".into(), release: "1.1".into(), previous: "1.0".into() }]
    );
    let both = FlagRegistry::builder("1.2").with(FlagDecl::new("f", "x").introduced_in("1.0")).removed("f");
    assert_eq!(problems(both), [RegistryProblem::DeclaredAndRemoved { flag: "f".into() }]);
    assert_eq!(
        problems(FlagRegistry::builder("1.2").removed("Bad Name")),
        [RegistryProblem::BadName { name: "Bad Name".into() }]
    );
    // A declared flag may still depend on a removed one (it is enabled wherever this release runs).
    FlagRegistry::builder("1.2")
        .removed("f")
        .with(FlagDecl::new("g", "needs f").introduced_in("1.2").depends_on(["f"]))
        .build()
        .unwrap();
}
