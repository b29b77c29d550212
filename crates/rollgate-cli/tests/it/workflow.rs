//! End-to-end developer workflows with the real `rollgate` binary in
//! temporary git repositories: generate, backports, merge conflicts, reverts.

use crate::common::{Repo, initial_folder};

const UB: &str = "transport/upper_bounds/1.0.csv";

fn def(name: &str) -> String {
    format!("transport/definitions/referable/{name}.csv")
}

/// The file at the commit `rev`.
fn at(repo: &Repo, rev: &str, path: &str) -> String {
    repo.git(&["show", &format!("{rev}:{path}")]).stdout
}

/// A service with three branches: 1.0 and 1.1 are release branches, 2.0 is
/// the current (main) branch.
fn release_folder(repo: &Repo) {
    repo.write("transport/definitions/unreferable/initial_1_0.csv", "1000000\n");
    repo.write("transport/definitions/unreferable/initial_1_1.csv", "1100000\n");
    repo.write("transport/definitions/unreferable/initial_2_0.csv", "# The first id of 2.0.\n2000000\n");
    repo.write("transport/upper_bounds/1.0.csv", "initial_1_0,1000000\n");
    repo.write("transport/upper_bounds/1.1.csv", "initial_1_1,1100000\n");
    repo.write("transport/upper_bounds/2.0.csv", "initial_2_0,2000000\n");
    repo.write("transport/constants/minimum_compatible.csv", "1000000\n");
    repo.write("src/lib.rs", "pub fn serve() {}\n");
}

#[test]
fn generate_twice_is_byte_identical_and_removing_the_reference_restores_the_base() {
    let repo = Repo::init();
    initial_folder(&repo);
    repo.commit("initial");
    let base = repo.snapshot("transport");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("src/search.rs", "fn f(v: V) -> bool { v.supports(transport_version!(\"search_timeout_ms\")) }\n");

    let out = repo.rollgate(&["tv", "generate"]).expect(0);
    assert!(out.stdout.contains("created transport/definitions/referable/search_timeout_ms.csv: 1001000"), "{out:?}");
    assert_eq!(repo.read(&def("search_timeout_ms")), "1001000\n");
    assert_eq!(repo.read(UB), "search_timeout_ms,1001000\n");
    let once = repo.snapshot("transport");

    let out = repo.rollgate(&["tv", "generate"]).expect(0);
    assert!(out.stdout.contains("is up to date: `search_timeout_ms` is 1001000"), "{out:?}");
    assert_eq!(repo.snapshot("transport"), once, "a second run changes nothing");
    repo.rollgate(&["tv", "validate"]).expect(0);

    // Revert on the branch: drop the only reference and rerun.
    repo.remove("src/search.rs");
    let out = repo.rollgate(&["tv", "generate"]).expect(0);
    assert!(out.stdout.contains("removed `search_timeout_ms`"), "{out:?}");
    assert!(!repo.exists(&def("search_timeout_ms")));
    assert_eq!(repo.read(UB), at(&repo, "main", UB), "upper bound restored");
    assert_eq!(repo.snapshot("transport"), base, "the folder is back to the base, byte for byte");
}

#[test]
fn a_second_new_version_in_the_same_change_is_refused() {
    let repo = Repo::init();
    initial_folder(&repo);
    repo.commit("initial");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("src/a.rs", "const A: &N = transport_version!(\"first_change\");\n");
    repo.rollgate(&["tv", "generate"]).expect(0);
    repo.write("src/b.rs", "const B: &N = transport_version!(\"second_change\");\n");
    let before = repo.snapshot("transport");
    let out = repo.rollgate(&["tv", "generate"]).expect(2);
    assert!(
        out.stderr.contains("only one new transport version per change, but `first_change` and `second_change`"),
        "{out:?}"
    );
    assert_eq!(repo.snapshot("transport"), before);
    let out = repo.rollgate(&["tv", "generate", "--name", "second_change"]).expect(2);
    assert!(out.stderr.contains("only one new transport version per change"), "{out:?}");
}

#[test]
fn backports_are_created_removed_and_a_missing_branch_is_named() {
    let repo = Repo::init();
    release_folder(&repo);
    repo.commit("releases");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("src/lib.rs", "pub fn serve(v: V) -> bool { v.supports(transport_version!(\"compression\")) }\n");

    repo.rollgate(&["tv", "generate", "--backport-branches", "1.1,1.0"]).expect(0);
    assert_eq!(repo.read(&def("compression")), "2001000,1100001,1000001\n");
    assert_eq!(repo.read("transport/upper_bounds/2.0.csv"), "compression,2001000\n");
    assert_eq!(repo.read("transport/upper_bounds/1.1.csv"), "compression,1100001\n");
    assert_eq!(repo.read("transport/upper_bounds/1.0.csv"), "compression,1000001\n");
    repo.rollgate(&["tv", "validate"]).expect(0);
    let with_both = repo.snapshot("transport");
    repo.rollgate(&["tv", "generate"]).expect(0);
    assert_eq!(repo.snapshot("transport"), with_both, "a plain rerun keeps the backports");

    // Without 1.0: its backport goes and its upper bound is restored.
    repo.rollgate(&["tv", "generate", "--name", "compression", "--backport-branches", "1.1"]).expect(0);
    assert_eq!(repo.read(&def("compression")), "2001000,1100001\n");
    assert_eq!(repo.read("transport/upper_bounds/1.0.csv"), at(&repo, "main", "transport/upper_bounds/1.0.csv"));
    repo.rollgate(&["tv", "validate"]).expect(0);

    // A branch without an upper bound file is named, and nothing is written.
    let before = repo.snapshot("transport");
    let out = repo.rollgate(&["tv", "generate", "--backport-branches", "1.1,0.9"]).expect(2);
    assert!(out.stderr.contains("--backport-branches 0.9: there is no upper_bounds/0.9.csv"), "{out:?}");
    assert_eq!(repo.snapshot("transport"), before);

    // An empty list removes every backport.
    repo.rollgate(&["tv", "generate", "--backport-branches", ""]).expect(0);
    assert_eq!(repo.read(&def("compression")), "2001000\n");
}

#[test]
fn an_existing_version_can_be_backported_and_unbackported() {
    let repo = Repo::init();
    release_folder(&repo);
    repo.write("src/lib.rs", "pub fn serve(v: V) -> bool { v.supports(transport_version!(\"compression\")) }\n");
    repo.write(&def("compression"), "2001000\n");
    repo.write("transport/upper_bounds/2.0.csv", "compression,2001000\n");
    repo.rollgate(&["tv", "validate"]).expect(0);
    repo.commit("compression on main");
    let base = repo.snapshot("transport");

    repo.git(&["checkout", "-q", "-b", "backport"]);
    repo.rollgate(&["tv", "generate", "--name", "compression", "--backport-branches", "1.1"]).expect(0);
    assert_eq!(repo.read(&def("compression")), "2001000,1100001\n");
    assert_eq!(repo.read("transport/upper_bounds/1.1.csv"), "compression,1100001\n");
    assert_eq!(repo.read("transport/upper_bounds/2.0.csv"), "compression,2001000\n", "the primary is untouched");
    repo.rollgate(&["tv", "validate"]).expect(0);

    repo.rollgate(&["tv", "generate", "--name", "compression", "--backport-branches", ""]).expect(0);
    assert_eq!(repo.snapshot("transport"), base);
}

#[test]
fn merge_conflict_in_upper_bounds_is_resolved_by_regenerating() {
    let repo = Repo::init();
    initial_folder(&repo);
    repo.commit("initial");

    // Two changes from the same base each take the next id.
    repo.git(&["checkout", "-q", "-b", "change-a"]);
    repo.write("src/a.rs", "fn a(v: V) -> bool { v.supports(transport_version!(\"a_field\")) }\n");
    repo.rollgate(&["tv", "generate"]).expect(0);
    repo.commit("add a_field");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["checkout", "-q", "-b", "change-b"]);
    repo.write("src/b.rs", "fn b(v: V) -> bool { v.supports(transport_version!(\"b_field\")) }\n");
    repo.rollgate(&["tv", "generate"]).expect(0);
    assert_eq!(repo.read(&def("b_field")), "1001000\n");
    repo.commit("add b_field");

    // change-a lands first.
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--no-ff", "change-a", "-m", "merge change-a"]);
    repo.rollgate(&["tv", "validate"]).expect(0);

    // Bringing main into change-b conflicts in the upper bound, by design.
    repo.git(&["checkout", "-q", "change-b"]);
    let merge = repo.git_any(&["merge", "main", "-m", "merge main"]);
    assert_ne!(merge.code, 0, "{merge:?}");
    assert!(repo.read(UB).contains("<<<<<<<"), "{}", repo.read(UB));
    let out = repo.rollgate(&["tv", "validate"]).expect(2);
    assert!(
        out.stderr.contains(
            "transport/upper_bounds/1.0.csv:1: unresolved merge conflict: run `rollgate tv resolve-conflict`"
        ),
        "{out:?}"
    );
    let before = repo.snapshot("transport");
    let out = repo.rollgate(&["tv", "generate"]).expect(2);
    assert!(out.stderr.contains("resolve-conflict"), "{out:?}");
    assert_eq!(repo.snapshot("transport"), before, "generate refuses a conflicted folder and writes nothing");

    let out = repo.rollgate(&["tv", "resolve-conflict"]).expect(0);
    assert!(out.stdout.contains("b_field.csv: 1002000"), "{out:?}");
    assert_eq!(repo.read(&def("a_field")), "1001000\n", "the merged id is untouched");
    assert_eq!(repo.read(&def("b_field")), "1002000\n", "ours moved above it");
    assert_eq!(repo.read(UB), "b_field,1002000\n");
    repo.rollgate(&["tv", "validate"]).expect(0);
    repo.commit("merge main");
    repo.rollgate(&["tv", "validate"]).expect(0);
    let resolved = repo.snapshot("transport");
    repo.rollgate(&["tv", "generate"]).expect(0);
    assert_eq!(repo.snapshot("transport"), resolved, "generate agrees with the resolution");

    // And change-b lands on main cleanly.
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--no-ff", "change-b", "-m", "merge change-b"]);
    repo.rollgate(&["tv", "validate"]).expect(0);
    let list = repo.rollgate(&["tv", "list", "--json"]).expect(0);
    let items: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).expect("json");
    let id = |n: &str| items.iter().find(|i| i["name"] == n).map(|i| i["primary"].as_u64());
    assert_eq!(id("a_field"), Some(Some(1001000)));
    assert_eq!(id("b_field"), Some(Some(1002000)));
}

#[test]
fn merging_a_change_into_main_with_a_conflict_resolves_on_main_too() {
    let repo = Repo::init();
    initial_folder(&repo);
    repo.commit("initial");
    repo.git(&["checkout", "-q", "-b", "change-b"]);
    repo.write("src/b.rs", "fn b(v: V) -> bool { v.supports(transport_version!(\"b_field\")) }\n");
    repo.rollgate(&["tv", "generate"]).expect(0);
    repo.commit("add b_field");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("src/a.rs", "fn a(v: V) -> bool { v.supports(transport_version!(\"a_field\")) }\n");
    repo.rollgate(&["tv", "generate"]).expect(0);
    repo.commit("add a_field on main");

    // HEAD is main, MERGE_HEAD the change: main's ids stay, the change's move.
    assert_ne!(repo.git_any(&["merge", "change-b", "-m", "merge change-b"]).code, 0);
    repo.rollgate(&["tv", "resolve-conflict"]).expect(0);
    assert_eq!(repo.read(&def("a_field")), "1001000\n");
    assert_eq!(repo.read(&def("b_field")), "1002000\n");
    repo.rollgate(&["tv", "validate"]).expect(0);
}

#[test]
fn a_merged_change_is_reverted_with_a_new_version_never_by_editing() {
    let repo = Repo::init();
    initial_folder(&repo);
    repo.write("src/codec.rs", "fn enc(v: V) { if v.supports(transport_version!(\"zstd_frames\")) { zstd() } }\n");
    repo.write(&def("zstd_frames"), "1001000\n");
    repo.write(UB, "zstd_frames,1001000\n");
    repo.rollgate(&["tv", "validate"]).expect(0);
    repo.commit("zstd frames (released)");

    // The right way: a new version marks the revert; the old one stays.
    repo.git(&["checkout", "-q", "-b", "revert-zstd"]);
    repo.write(
        "src/codec.rs",
        "fn enc(v: V) {\n    if v.supports(transport_version!(\"zstd_frames\")) && !v.supports(transport_version!(\"zstd_frames_reverted\")) { zstd() }\n}\n",
    );
    repo.rollgate(&["tv", "generate"]).expect(0);
    assert_eq!(repo.read(&def("zstd_frames_reverted")), "1002000\n");
    assert_eq!(repo.read(&def("zstd_frames")), at(&repo, "main", &def("zstd_frames")), "the merged id is untouched");
    repo.rollgate(&["tv", "validate"]).expect(0);

    // The wrong way: editing an id that exists at the base is refused.
    repo.write(&def("zstd_frames"), "1003000\n");
    let out = repo.rollgate(&["tv", "validate"]).expect(2);
    assert!(
        out.stderr.contains(
            "transport/definitions/referable/zstd_frames.csv:1: primary id changed from 1001000 (at the base) to 1003000"
        ),
        "{out:?}"
    );
    assert!(out.stderr.contains("add a new transport version instead"), "{out:?}");
    let out = repo.rollgate(&["tv", "validate", "--base", "main"]).expect(2);
    assert!(out.stderr.contains("primary id changed from 1001000"), "{out:?}");
    // So is removing it.
    repo.remove(&def("zstd_frames"));
    let out = repo.rollgate(&["tv", "validate"]).expect(2);
    assert!(out.stderr.contains("`zstd_frames` exists at the base (ids 1001000) but was removed"), "{out:?}");
}

#[test]
fn without_a_main_branch_generate_asks_for_a_base() {
    let repo = Repo::init_on("trunk");
    initial_folder(&repo);
    repo.commit("initial");
    repo.write("src/a.rs", "const A: &N = transport_version!(\"a_field\");\n");
    let before = repo.snapshot("transport");
    let out = repo.rollgate(&["tv", "generate"]).expect(2);
    assert!(out.stderr.contains("pass --base GITREF"), "{out:?}");
    assert_eq!(repo.snapshot("transport"), before, "nothing is treated as deletable without a base");
    let out = repo.rollgate(&["tv", "generate", "--base", "no_such_branch"]).expect(2);
    assert!(out.stderr.contains("--base no_such_branch: not a commit"), "{out:?}");
    repo.rollgate(&["tv", "generate", "--base", "trunk"]).expect(0);
    assert_eq!(repo.read(&def("a_field")), "1001000\n");
    repo.rollgate(&["tv", "validate", "--base", "trunk"]).expect(0);
}

#[test]
fn folders_and_sources_elsewhere_in_the_repository() {
    let repo = Repo::init();
    repo.write("crates/svc/transport/definitions/unreferable/initial_1_0.csv", "1000000\n");
    repo.write("crates/svc/transport/upper_bounds/1.0.csv", "initial_1_0,1000000\n");
    repo.write("crates/svc/transport/constants/minimum_compatible.csv", "1000000\n");
    repo.write("crates/svc/src/lib.rs", "pub fn serve() {}\n");
    repo.commit("initial");
    repo.write("crates/svc/src/lib.rs", "const A: &N = transport_version!(\"a_field\");\n");
    // --src defaults to the src folder next to --dir.
    repo.rollgate(&["tv", "generate", "--dir", "crates/svc/transport"]).expect(0);
    assert_eq!(repo.read("crates/svc/transport/definitions/referable/a_field.csv"), "1001000\n");
    // From another working directory, with absolute paths.
    let dir = repo.path().join("crates/svc/transport");
    let out =
        crate::common::rollgate(std::env::temp_dir().as_path(), &["tv", "validate", "--dir", dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
}
