//! Filesystem I/O for `rollgate tv`: walking `--src` folders for references
//! (bounded) and writing a state folder all-or-nothing.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rollgate_version::generate::Changes;
use rollgate_version::scan::{
    MAX_SOURCE_ENTRIES, MAX_SOURCE_FILE_BYTES, MAX_SOURCE_FILES, References, ScanError, ScanErrorKind, scan_source,
};
use rollgate_version::state::read_bounded;

/// Bounds on one source scan.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most `.rs` files.
    pub files: usize,
    /// Most directory entries visited.
    pub entries: usize,
    /// Largest `.rs` file, in bytes.
    pub file_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { files: MAX_SOURCE_FILES, entries: MAX_SOURCE_ENTRIES, file_bytes: MAX_SOURCE_FILE_BYTES }
    }
}

/// What a scan found: references, and problems with individual references.
#[derive(Debug, Default)]
pub struct Scanned {
    /// Every literal reference.
    pub refs: References,
    /// Non-literal calls and bad names, with file and line.
    pub errors: Vec<ScanError>,
    /// How many `.rs` files were read.
    pub files: usize,
}

/// Scans every `.rs` file under `roots` (recursively, in name order; hidden
/// entries, `target` folders and symlinks are skipped). Problems with the
/// tree itself (a missing root, a limit exceeded, an unreadable file) are
/// returned as the error.
pub fn scan_sources(roots: &[PathBuf], limits: Limits) -> Result<Scanned, ScanError> {
    let mut out = Scanned::default();
    let mut entries = 0usize;
    let fail = |file: &Path, kind| ScanError { file: file.to_path_buf(), line: None, kind };
    for root in roots {
        std::fs::symlink_metadata(root).map_err(|_| fail(root, ScanErrorKind::MissingSource))?;
        // Depth-first in path order, so "the first reference" of a name is stable.
        let mut stack = vec![root.clone()];
        while let Some(path) = stack.pop() {
            if !path.is_dir() {
                scan_file(&path, limits, &mut out)?;
                continue;
            }
            let mut children: Vec<(String, PathBuf)> = Vec::new();
            let listing = std::fs::read_dir(&path).map_err(|e| fail(&path, ScanErrorKind::Io(e.to_string())))?;
            for entry in listing {
                let entry = entry.map_err(|e| fail(&path, ScanErrorKind::Io(e.to_string())))?;
                entries += 1;
                if entries > limits.entries {
                    return Err(fail(root, ScanErrorKind::TooManyFiles));
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let ft = entry.file_type().map_err(|e| fail(&entry.path(), ScanErrorKind::Io(e.to_string())))?;
                let wanted = if ft.is_dir() { name != "target" } else { ft.is_file() && name.ends_with(".rs") };
                if wanted && !name.starts_with('.') {
                    children.push((name, entry.path()));
                }
            }
            children.sort_by(|a, b| b.0.cmp(&a.0));
            stack.extend(children.into_iter().map(|(_, p)| p));
        }
    }
    Ok(out)
}

fn scan_file(path: &Path, limits: Limits, out: &mut Scanned) -> Result<(), ScanError> {
    let fail = |kind| ScanError { file: path.to_path_buf(), line: None, kind };
    out.files += 1;
    if out.files > limits.files {
        return Err(fail(ScanErrorKind::TooManyFiles));
    }
    let bytes = read_bounded(path, limits.file_bytes)
        .map_err(|e| fail(ScanErrorKind::Io(e.to_string())))?
        .map_err(|_| fail(ScanErrorKind::TooLarge))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| fail(ScanErrorKind::NotUtf8))?;
    scan_source(path, text, &mut out.refs, &mut out.errors);
    Ok(())
}

/// Applies `changes` to the folder `dir` all-or-nothing: every new file is
/// first written next to its target under a hidden temporary name and synced;
/// only then are they renamed into place and deleted files removed. If any
/// step fails, what was already done is undone from the original bytes and
/// the staged files are removed, so the folder is left as it was.
pub fn apply(dir: &Path, changes: &Changes) -> anyhow::Result<()> {
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut created_dirs: Vec<PathBuf> = Vec::new();
    let result = stage(dir, changes, &mut staged, &mut created_dirs).and_then(|()| commit(dir, changes, &staged));
    if result.is_err() {
        for (tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
        for d in created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
    result
}

fn stage(
    dir: &Path,
    changes: &Changes,
    staged: &mut Vec<(PathBuf, PathBuf)>,
    created_dirs: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    for (rel, bytes) in &changes.writes {
        let target = dir.join(rel);
        let parent = target.parent().context("state file without a parent folder")?.to_path_buf();
        let mut missing = Vec::new();
        let mut p = parent.as_path();
        while !p.exists() {
            missing.push(p.to_path_buf());
            p = p.parent().context("no existing parent folder")?;
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
            created_dirs.push(d);
        }
        let name = target.file_name().context("state file without a name")?.to_string_lossy().into_owned();
        let tmp = parent.join(format!(".{name}.rollgate-tmp"));
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        staged.push((tmp.clone(), target));
        f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    }
    Ok(())
}

fn commit(dir: &Path, changes: &Changes, staged: &[(PathBuf, PathBuf)]) -> anyhow::Result<()> {
    // The original bytes of everything we are about to replace or delete.
    let mut originals: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
    for (_, target) in staged {
        originals.push((target.clone(), std::fs::read(target).ok()));
    }
    for rel in &changes.deletes {
        let target = dir.join(rel);
        let bytes = std::fs::read(&target).with_context(|| format!("reading {}", target.display()))?;
        originals.push((target, Some(bytes)));
    }
    let mut done = 0usize;
    let mut step = || -> anyhow::Result<()> {
        for (tmp, target) in staged {
            std::fs::rename(tmp, target).with_context(|| format!("replacing {}", target.display()))?;
            done += 1;
        }
        for rel in &changes.deletes {
            let target = dir.join(rel);
            std::fs::remove_file(&target).with_context(|| format!("deleting {}", target.display()))?;
            done += 1;
        }
        Ok(())
    };
    let result = step();
    if result.is_err() {
        for (target, original) in originals.iter().take(done) {
            let _ = match original {
                Some(bytes) => std::fs::write(target, bytes),
                None => std::fs::remove_file(target),
            };
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Every file under `root` with its bytes (hidden files included).
    fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    out.push((e.path(), Vec::new()));
                    stack.push(e.path());
                } else {
                    out.push((e.path(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn scans_in_name_order_and_skips_hidden_target_and_other_files() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "src/b.rs", "transport_version!(\"two\");");
        write(t.path(), "src/a/z.rs", "transport_version!(\"one\");\ntransport_version!(\"two\");");
        write(t.path(), "src/.hidden/x.rs", "transport_version!(\"hidden\");");
        write(t.path(), "src/target/x.rs", "transport_version!(\"built\");");
        write(t.path(), "src/notes.txt", "transport_version!(\"text\");");
        write(t.path(), "src/c.rs", "transport_version!(NOPE);");
        let s = scan_sources(&[t.path().join("src")], Limits::default()).unwrap();
        assert_eq!(s.refs.names().collect::<Vec<_>>(), vec!["one", "two"]);
        assert_eq!(s.refs.first("two").unwrap().file, t.path().join("src/a/z.rs"));
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].file, t.path().join("src/c.rs"));
        assert_eq!(s.files, 3);
    }

    #[test]
    fn scan_limits_are_enforced_with_clear_errors() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..5 {
            write(t.path(), &format!("src/f{i}.rs"), "fn main() {}");
        }
        let src = [t.path().join("src")];
        let few = Limits { files: 4, ..Limits::default() };
        assert_eq!(scan_sources(&src, few).unwrap_err().kind, ScanErrorKind::TooManyFiles);
        let few = Limits { entries: 3, ..Limits::default() };
        assert_eq!(scan_sources(&src, few).unwrap_err().kind, ScanErrorKind::TooManyFiles);
        let small = Limits { file_bytes: 5, ..Limits::default() };
        let e = scan_sources(&src, small).unwrap_err();
        assert_eq!(e.kind, ScanErrorKind::TooLarge);
        assert!(e.to_string().contains("f0.rs: source file is over the limit"), "{e}");
        std::fs::write(t.path().join("src/f0.rs"), [0xff, 0xfe]).unwrap();
        assert_eq!(scan_sources(&src, Limits::default()).unwrap_err().kind, ScanErrorKind::NotUtf8);
        let e = scan_sources(&[t.path().join("nope")], Limits::default()).unwrap_err();
        assert_eq!(e.kind, ScanErrorKind::MissingSource);
    }

    #[test]
    fn apply_writes_and_deletes() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "upper_bounds/1.0.csv", "a,1000000\n");
        write(t.path(), "definitions/referable/old.csv", "1000000\n");
        let mut c = Changes::default();
        c.writes.insert("upper_bounds/1.0.csv".into(), b"b,1001000\n".to_vec());
        c.writes.insert("definitions/referable/b.csv".into(), b"1001000\n".to_vec());
        c.writes.insert("definitions/new/deep.csv".into(), b"1\n".to_vec());
        c.deletes.insert("definitions/referable/old.csv".into());
        apply(t.path(), &c).unwrap();
        assert_eq!(std::fs::read_to_string(t.path().join("upper_bounds/1.0.csv")).unwrap(), "b,1001000\n");
        assert!(t.path().join("definitions/referable/b.csv").exists());
        assert!(t.path().join("definitions/new/deep.csv").exists());
        assert!(!t.path().join("definitions/referable/old.csv").exists());
        assert!(snapshot(t.path()).iter().all(|(p, _)| !p.to_string_lossy().contains("rollgate-tmp")));
    }

    #[test]
    fn a_failed_apply_leaves_the_folder_as_it_was() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "upper_bounds/1.0.csv", "a,1000000\n");
        write(t.path(), "definitions/referable/old.csv", "1000000\n");
        // A folder where a file should go: renaming over it fails after the
        // other files were already renamed into place.
        std::fs::create_dir_all(t.path().join("definitions/referable/zz.csv")).unwrap();
        write(t.path(), "definitions/referable/zz.csv/keep", "x");
        let before = snapshot(t.path());
        let mut c = Changes::default();
        c.writes.insert("upper_bounds/1.0.csv".into(), b"b,1001000\n".to_vec());
        c.writes.insert("definitions/referable/b.csv".into(), b"1001000\n".to_vec());
        c.writes.insert("definitions/referable/zz.csv".into(), b"1\n".to_vec());
        c.writes.insert("definitions/fresh/x.csv".into(), b"1\n".to_vec());
        c.deletes.insert("definitions/referable/old.csv".into());
        let e = apply(t.path(), &c).unwrap_err();
        assert!(format!("{e:#}").contains("zz.csv"), "{e:#}");
        assert_eq!(snapshot(t.path()), before);
    }
}
