//! Cutting a release with the real `rollgate` binary in a temporary git
//! repository: the cut on main, new transport versions on main after it, and
//! a backport that reaches the release branch.

use crate::common::{Repo, initial_folder};

fn def(name: &str) -> String {
    format!("transport/definitions/referable/{name}.csv")
}

/// main on 1.0 with one transport version, `compression`.
fn main_with_one_version(repo: &Repo) {
    initial_folder(repo);
    repo.write("src/codec.rs", "fn enc(v: V) -> bool { v.supports(transport_version!(\"compression\")) }\n");
    repo.commit("initial");
    repo.rollgate(&["tv", "generate"]).expect(0);
    repo.rollgate(&["tv", "validate"]).expect(0);
    repo.commit("compression");
}

#[test]
fn a_cut_release_gets_backports_while_main_moves_on() {
    let repo = Repo::init();
    main_with_one_version(&repo);
    assert_eq!(repo.read(&def("compression")), "1001000\n");

    // Cut 1.0 on main: the release branch and main's next branch both start at a fresh id.
    let out = repo.rollgate(&["tv", "cut-release", "1.0", "--minimum-compatible", "1001000"]).expect(0);
    assert!(out.stdout.contains("main is now at branch 1.1: new transport versions follow 1002000"), "{out:?}");
    assert_eq!(repo.read("transport/definitions/unreferable/initial_1.0.0.csv"), "1002000\n");
    assert_eq!(repo.read("transport/upper_bounds/1.0.csv"), "initial_1.0.0,1002000\n");
    assert_eq!(repo.read("transport/upper_bounds/1.1.csv"), "initial_1.0.0,1002000\n");
    assert_eq!(repo.read("transport/releases.csv"), "1.0,1002000\n");
    assert_eq!(repo.read("transport/constants/minimum_compatible.csv"), "1001000\n");
    repo.rollgate(&["tv", "validate"]).expect(0);
    repo.commit("Cut release 1.0");
    repo.git(&["branch", "release-1.0"]);

    // Cutting it again is refused, and changes nothing.
    let before = repo.snapshot("transport");
    let out = repo.rollgate(&["tv", "cut-release", "1.0"]).expect(2);
    assert!(out.stderr.contains("release 1.0 was already cut: upper_bounds/1.0.csv exists"), "{out:?}");
    assert_eq!(repo.snapshot("transport"), before);

    // Two new versions on main follow main's new branch, 1.1.
    repo.git(&["checkout", "-q", "-b", "zstd"]);
    repo.write("src/zstd.rs", "fn z(v: V) -> bool { v.supports(transport_version!(\"zstd_frames\")) }\n");
    repo.rollgate(&["tv", "generate"]).expect(0);
    assert_eq!(repo.read(&def("zstd_frames")), "1003000\n");
    assert_eq!(repo.read("transport/upper_bounds/1.1.csv"), "zstd_frames,1003000\n");
    assert_eq!(repo.read("transport/upper_bounds/1.0.csv"), "initial_1.0.0,1002000\n", "the release's is untouched");
    repo.rollgate(&["tv", "validate"]).expect(0);
    repo.commit("zstd frames");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--ff-only", "zstd"]);
    repo.write("src/bulk.rs", "fn b(v: V) -> bool { v.supports(transport_version!(\"bulk_limits\")) }\n");
    repo.rollgate(&["tv", "generate"]).expect(0);
    assert_eq!(repo.read(&def("bulk_limits")), "1004000\n");
    repo.rollgate(&["tv", "validate"]).expect(0);
    repo.commit("bulk limits");

    // Backport zstd_frames to 1.0, on main: a patch id on the release's own base.
    repo.git(&["checkout", "-q", "-b", "backport-zstd"]);
    repo.rollgate(&["tv", "generate", "--name", "zstd_frames", "--backport-branches", "1.0"]).expect(0);
    assert_eq!(repo.read(&def("zstd_frames")), "1003000,1002001\n");
    assert_eq!(repo.read("transport/upper_bounds/1.0.csv"), "zstd_frames,1002001\n");
    assert_eq!(repo.read("transport/upper_bounds/1.1.csv"), "bulk_limits,1004000\n");
    repo.rollgate(&["tv", "validate"]).expect(0);
    repo.commit("Backport zstd frames to 1.0");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--ff-only", "backport-zstd"]);
    repo.rollgate(&["tv", "validate"]).expect(0);

    // The backport reaches the release branch: the code and the same definition and upper bound.
    repo.git(&["checkout", "-q", "release-1.0"]);
    let files = [&def("zstd_frames"), "transport/upper_bounds/1.0.csv", "src/zstd.rs"];
    repo.git(&[&["checkout", "main", "--"][..], &files[..]].concat());
    repo.commit("Backport zstd frames");
    assert!(!repo.exists(&def("bulk_limits")), "main's other version stays on main");
    assert_eq!(repo.read("transport/upper_bounds/1.1.csv"), "initial_1.0.0,1002000\n", "main's bound as at the cut");
    // Checked as a release branch, against its own history and against main.
    let out = repo.rollgate(&["tv", "validate", "--branch", "1.0", "--base", "release-1.0~1"]).expect(0);
    assert!(out.stdout.contains("transport is valid"), "{out:?}");
    repo.rollgate(&["tv", "validate", "--branch", "1.0"]).expect(0);
    // As main it is not: 1.1 is main's, and main's zstd_frames is ahead of it here.
    let out = repo.rollgate(&["tv", "validate"]).expect(2);
    assert!(out.stderr.contains("upper_bounds/1.1.csv"), "{out:?}");

    // main validates too, and the next cut starts above everything main has.
    repo.git(&["checkout", "-q", "main"]);
    repo.rollgate(&["tv", "validate"]).expect(0);
    let out = repo.rollgate(&["tv", "cut-release", "1.1", "--dry-run", "--json"]).expect(0);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(plan["initial"]["id"], 1005000);
    assert_eq!(plan["next"], "1.2");
}

#[test]
fn a_cut_that_fails_while_writing_leaves_every_file_as_it_was() {
    let repo = Repo::init();
    main_with_one_version(&repo);
    // The last file the cut writes cannot be created: a folder stands where it goes.
    std::fs::create_dir_all(repo.path().join("transport/upper_bounds/1.1.csv")).expect("mkdir");
    let before = repo.snapshot("transport");
    let out = repo.rollgate(&["tv", "cut-release", "1.0", "--minimum-compatible", "1001000"]).expect(1);
    assert!(out.stderr.contains("left unchanged"), "{out:?}");
    assert_eq!(repo.snapshot("transport"), before, "byte for byte, no file added or left behind");
}

/// A copy of the Elasticsearch-layout folder of `tests/validate/elasticsearch_layout`.
fn elasticsearch_folder(repo: &Repo) {
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate/elasticsearch_layout");
    for dir in ["transport", "src"] {
        std::fs::create_dir_all(repo.path().join(dir)).expect("mkdir");
        crate::common::copy_tree(&case.join(dir), &repo.path().join(dir));
    }
}

#[test]
fn elasticsearch_s_folder_takes_generate_backports_and_a_release_cut() {
    let repo = Repo::init();
    elasticsearch_folder(&repo);
    repo.commit("Elasticsearch's transport folder, as it is");
    repo.rollgate(&["tv", "validate"]).expect(0);
    let out = repo.rollgate(&["tv", "list"]).expect(0);
    assert!(out.stdout.contains("initial_9.1.1"), "{out:?}");
    assert_eq!(repo.rollgate(&["tv", "release-of", "9113001"]).expect(0).stdout, "9.1.1\n");

    // A new version on main (9.2), backported to 9.1 on the base of its patch release.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("src/knn.rs", "fn k(v: V) -> bool { v.supports(transport_version!(\"dense_vector_query\")) }\n");
    repo.rollgate(&["tv", "generate", "--backport-branches", "9.1"]).expect(0);
    assert_eq!(repo.read(&def("dense_vector_query")), "9115000,9113003\n");
    assert_eq!(repo.read("transport/upper_bounds/9.1.csv"), "dense_vector_query,9113003\n");
    assert_eq!(repo.read("transport/upper_bounds/9.2.csv"), "dense_vector_query,9115000\n");
    repo.rollgate(&["tv", "validate"]).expect(0);
    repo.commit("dense vector query");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["merge", "-q", "--ff-only", "feature"]);

    // Cut 9.2 with Elasticsearch's release name; releases.csv keeps its order and gains one line.
    let releases = repo.read("transport/releases.csv");
    repo.rollgate(&["tv", "cut-release", "9.2", "--release-name", "9.2.0"]).expect(0);
    assert_eq!(repo.read("transport/releases.csv"), format!("{releases}9.2.0,9116000\n"));
    assert_eq!(repo.read("transport/upper_bounds/9.2.csv"), "initial_9.2.0,9116000\n");
    assert_eq!(repo.read("transport/upper_bounds/9.3.csv"), "initial_9.2.0,9116000\n");
    assert_eq!(repo.read("transport/constants/minimum_ccs_version.csv"), "9000010\n", "kept as it was");
    repo.rollgate(&["tv", "validate"]).expect(0);
    let out = repo.rollgate(&["tv", "cut-release", "9.2"]).expect(2);
    assert!(out.stderr.contains("already cut"), "{out:?}");
}
