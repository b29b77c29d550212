//! Tests as data: every folder under `tests/validate/` is one case, run
//! through the real `rollgate` binary by [`check`]. See
//! `tests/validate/README.md` for the format.
//!
//! Every case also checks that the command left every file as it was (bytes
//! and file list): validation, listing and failed generations never write.
//!
//! `UPDATE_EXPECT=1 cargo test -p rollgate-cli --test validate` rewrites the
//! `expected.txt` files from the actual output (review the diff!).

use std::path::{Path, PathBuf};

use crate::common::{copy_tree, git, rollgate, snapshot};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/validate");

#[test]
fn cases() {
    let only = std::env::var("CASE").ok();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(CASES)
        .expect("tests/validate")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .filter(|p| only.as_deref().is_none_or(|o| p.ends_with(o)))
        .collect();
    dirs.sort();
    assert!(only.is_some() || dirs.len() >= 40, "expected the whole case list, found {}", dirs.len());
    // A few workers: each case spends most of its time waiting for git and rollgate.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while let Some(d) = dirs.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                    if let Err(e) = check(d) {
                        failures.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort();
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), dirs.len(), failures.join("\n\n"));
}

/// The expected outcome of a case.
struct Expected {
    exit: i32,
    stderr: Vec<String>,
    stdout: Option<Vec<String>>,
}

fn parse_expected(text: &str) -> Result<Expected, String> {
    let mut lines = text.lines();
    let exit = lines
        .next()
        .and_then(|l| l.strip_prefix("exit "))
        .and_then(|c| c.trim().parse().ok())
        .ok_or("expected.txt must start with `exit N`")?;
    let mut stderr = Vec::new();
    let mut stdout = None;
    for line in lines {
        if line == "--- stdout" {
            stdout = Some(Vec::new());
        } else if let Some(out) = stdout.as_mut() {
            out.push(line.to_string());
        } else {
            stderr.push(line.to_string());
        }
    }
    Ok(Expected { exit, stderr, stdout })
}

/// An expected line matches exactly, or by prefix when it ends in `...`.
fn lines_match(expected: &[String], actual: &str) -> bool {
    let actual: Vec<&str> = actual.lines().collect();
    expected.len() == actual.len()
        && expected.iter().zip(&actual).all(|(e, a)| match e.strip_suffix("...") {
            Some(prefix) => a.starts_with(prefix),
            None => e == a,
        })
}

fn check(case: &Path) -> Result<(), String> {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let fail = |msg: String| format!("case {name}: {msg}");
    let work = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let root = work.path();
    let fixture = !case.join("no-fixture").exists();
    let base_fixture = fixture && !case.join("base-without-fixture").exists();
    if case.join("git").exists() || case.join("base").is_dir() {
        if base_fixture {
            copy_tree(&Path::new(CASES).join("_fixture"), root);
        }
        copy_tree(&case.join("base"), root);
        crate::common::write(&root.join("README"), "a service\n");
        let branch = std::fs::read_to_string(case.join("git")).unwrap_or_default();
        let branch = if branch.trim().is_empty() { "main" } else { branch.trim() };
        for args in [
            &["init", "-q", "-b", branch][..],
            &["config", "user.name", "rollgate test"],
            &["config", "user.email", "test@rollgate.invalid"],
            &["add", "-A"],
            &["commit", "-q", "-m", "base"],
        ] {
            let r = git(root, args);
            if r.code != 0 {
                return Err(fail(format!("git {args:?}: {}", r.stderr)));
            }
        }
        // The working tree starts from the fixture again, not from base/.
        for dir in ["transport", "src"] {
            let _ = std::fs::remove_dir_all(root.join(dir));
        }
    }
    if fixture {
        copy_tree(&Path::new(CASES).join("_fixture"), root);
    }
    for dir in ["transport", "src"] {
        std::fs::create_dir_all(root.join(dir)).map_err(|e| fail(e.to_string()))?;
        copy_tree(&case.join(dir), &root.join(dir));
    }
    if let Ok(list) = std::fs::read_to_string(case.join("remove")) {
        for rel in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            std::fs::remove_file(root.join(rel)).map_err(|e| fail(format!("remove {rel}: {e}")))?;
        }
    }
    let args_text = std::fs::read_to_string(case.join("args")).unwrap_or_else(|_| "tv validate".into());
    let args: Vec<String> = shell_words(args_text.trim());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let before = snapshot(root);
    let run = rollgate(root, &args);
    let after = snapshot(root);

    let expected_path = case.join("expected.txt");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        let mut text = format!("exit {}\n{}", run.code, run.stderr);
        if !run.stdout.is_empty() && run.code == 0 {
            text.push_str(&format!("--- stdout\n{}", run.stdout));
        }
        std::fs::write(&expected_path, text).map_err(|e| fail(e.to_string()))?;
    }
    let expected = std::fs::read_to_string(&expected_path).map_err(|e| fail(format!("expected.txt: {e}")))?;
    let expected = parse_expected(&expected).map_err(fail)?;

    let mut problems = Vec::new();
    if run.code != expected.exit {
        problems.push(format!("exit code {} (expected {})", run.code, expected.exit));
    }
    if !lines_match(&expected.stderr, &run.stderr) {
        problems.push(format!("stderr was:\n{}expected:\n{}", run.stderr, expected.stderr.join("\n")));
    }
    if let Some(out) = &expected.stdout
        && !lines_match(out, &run.stdout)
    {
        problems.push(format!("stdout was:\n{}expected:\n{}", run.stdout, out.join("\n")));
    }
    if before != after {
        let changed: Vec<String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .map(|k| k.display().to_string())
            .collect();
        problems.push(format!("`rollgate {}` changed files: {changed:?}", args.join(" ")));
    }
    if problems.is_empty() { Ok(()) } else { Err(fail(problems.join("\n"))) }
}

/// Splits an `args` line on spaces; `"..."` groups words (and `""` is an empty argument).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

#[test]
fn args_lines_split_like_a_shell() {
    assert_eq!(
        shell_words("tv generate --backport-branches \"\" --name x"),
        ["tv", "generate", "--backport-branches", "", "--name", "x"]
    );
}
