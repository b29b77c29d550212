//! Retiring a protocol version is: delete its module and raise the floor of
//! the supported range. This test does exactly that to a copy of this crate
//! (a standalone workspace with path dependencies on the real crates and a
//! copy of the root `Cargo.lock`, checked `--offline` into a cached target
//! directory) and asserts that `cargo check` names every place that must
//! change, and nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The workspace's target directory, found from this test binary's path
/// (`<target>/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("target/<profile>/deps/<binary>").to_path_buf()
}

/// `(file, line)` of every line under `src` that names protocol v1.
fn places_naming_v1(root: &Path) -> BTreeSet<(String, usize)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(root.parent().unwrap()).unwrap().to_string_lossy().replace('\\', "/");
            let in_protocol_mod = rel.ends_with("src/protocol/mod.rs");
            for (i, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
                let names_v1 = line.contains("protocol::v1::")
                    || (in_protocol_mod && (line.trim() == "pub mod v1;" || line.contains("V1(v1::Msg)")));
                if names_v1 {
                    out.insert((rel.clone(), i + 1));
                }
            }
        }
    }
    out
}

/// A copy of this crate in a standalone workspace: `(temp dir, workspace, crate)`.
fn sample_workspace() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repo = crate_dir.join("../..").canonicalize().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().to_path_buf();
    let sample = ws.join("sample");
    for part in ["src", "transport"] {
        copy_dir(&crate_dir.join(part), &sample.join(part));
    }
    std::fs::copy(crate_dir.join("build.rs"), sample.join("build.rs")).unwrap();
    std::fs::copy(repo.join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();
    let path = |c: &str| repo.join("crates").join(c).display().to_string().replace('\\', "/");
    // The crate names rollgate by a relative path (to turn its default
    // features off); in the copy it must point back into this repository.
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("path = \"../rollgate\""), "the sample depends on rollgate by path");
    let manifest = manifest.replace("path = \"../rollgate\"", &format!("path = \"{}\"", path("rollgate")));
    std::fs::write(sample.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(
        ws.join("Cargo.toml"),
        format!(
            r#"[workspace]
resolver = "3"
members = ["sample"]

[workspace.package]
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
rust-version = "1.90"

[workspace.dependencies]
rollgate = {{ path = "{}" }}
rollgate-build = {{ path = "{}" }}
serde = {{ version = "1", features = ["derive"] }}
tempfile = "3"

[workspace.lints.rust]
unsafe_code = "forbid"
"#,
            path("rollgate"),
            path("rollgate-build")
        ),
    )
    .unwrap();

    (tmp, ws, sample)
}

/// `cargo check` of the copied crate, offline, into a cached target directory.
fn check(ws: &Path) -> std::process::Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo)
        .current_dir(ws)
        .args(["check", "--offline", "--message-format=short", "-p", "rollgate-sample"])
        .env("CARGO_TARGET_DIR", target_dir().join("rollgate-retire-check"))
        .env_remove("ROLLGATE_TRANSPORT_BRANCH")
        .output()
        .unwrap()
}

#[test]
fn retiring_protocol_v1_points_at_every_place_to_change() {
    let (_tmp, ws, sample) = sample_workspace();
    // Where v1 is named before the change: every one of these must be reported.
    let mut expected = places_naming_v1(&sample);
    assert!(expected.len() >= 6, "the sample names protocol v1 in several places: {expected:?}");

    // Retire v1: delete its module (the file and its `mod` line) and raise the floor.
    std::fs::remove_file(sample.join("src/protocol/v1.rs")).unwrap();
    let mod_rs = sample.join("src/protocol/mod.rs");
    let text = std::fs::read_to_string(&mod_rs).unwrap();
    assert!(text.contains("supported = 1..=2;") && text.contains("pub mod v1;\n"));
    let mod_line = text.lines().position(|l| l == "pub mod v1;").unwrap() + 1;
    // Keep line numbers stable: blank the `mod` line instead of removing it.
    let retired = text.replace("pub mod v1;\n", "\n").replace("supported = 1..=2;", "supported = 2..=2;");
    std::fs::write(&mod_rs, retired).unwrap();
    expected.remove(&("sample/src/protocol/mod.rs".to_string(), mod_line));
    // The floor check of `protocol_versions!` reports at the macro call: the variant must go.
    let call = text.lines().position(|l| l.starts_with("rollgate::protocol_versions!")).unwrap() + 1;
    expected.insert(("sample/src/protocol/mod.rs".to_string(), call));

    let out = check(&ws);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "cargo check succeeded after deleting v1:\n{stderr}");

    let mut reported = BTreeSet::new();
    for line in stderr.lines() {
        // sample/src/service.rs:18:23: error[E0433]: ...
        let mut parts = line.splitn(4, ':');
        let (Some(file), Some(l), Some(_col), Some(rest)) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if rest.trim_start().starts_with("error") && file.starts_with("sample/") {
            reported.insert((file.to_string(), l.parse::<usize>().unwrap()));
        }
    }
    println!("cargo check after retiring v1:\n{stderr}");
    let missing: Vec<_> = expected.difference(&reported).collect();
    let extra: Vec<_> = reported.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "places not reported: {missing:?}\nreported but not expected: {extra:?}\n{stderr}"
    );
    assert!(stderr.contains("below the `supported` floor"), "the floor check explains what to do:\n{stderr}");
}

#[test]
fn a_misspelled_transport_version_name_fails_the_build() {
    let (_tmp, ws, sample) = sample_workspace();
    let file = sample.join("src/network/v1.rs");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(r#"since = "ping_payload""#));
    std::fs::write(&file, text.replace(r#"since = "ping_payload""#, r#"since = "ping_paylod""#)).unwrap();
    let out = check(&ws);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a misspelled name compiled:\n{stderr}");
    assert!(
        stderr.contains("unknown transport version `ping_paylod`") && stderr.contains("fix the spelling"),
        "{stderr}"
    );
}
