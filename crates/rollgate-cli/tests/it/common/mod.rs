//! Test support: run the real `rollgate` binary and real `git` in temporary
//! folders, isolated from the user's git configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with everything the command printed unless it exited with `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// Environment that keeps git (and rollgate's logging) deterministic.
fn isolate(cmd: &mut Command, cwd: &Path) {
    cmd.current_dir(cwd)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CEILING_DIRECTORIES", cwd.parent().unwrap_or(cwd))
        .env("LC_ALL", "C")
        .env_remove("RUST_LOG")
        .env_remove("ROLLGATE_CA_FILE")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
}

/// Runs `rollgate` with `args` in `cwd`.
pub fn rollgate(cwd: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollgate"));
    isolate(&mut cmd, cwd);
    let out = cmd.args(args).output().expect("run rollgate");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `git` with `args` in `cwd`.
pub fn git(cwd: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new("git");
    isolate(&mut cmd, cwd);
    let out = cmd.args(args).output().expect("run git (is it installed?)");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temporary git repository whose default branch is `main`.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// An empty repository on `branch`, with a local identity.
    pub fn init_on(branch: &str) -> Repo {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = Repo { dir };
        repo.git(&["init", "-q", "-b", branch]);
        repo.git(&["config", "user.name", "rollgate test"]);
        repo.git(&["config", "user.email", "test@rollgate.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo.git(&["config", "merge.conflictStyle", "merge"]);
        repo
    }

    /// An empty repository on `main`.
    pub fn init() -> Repo {
        Repo::init_on("main")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git and requires success.
    #[track_caller]
    pub fn git(&self, args: &[&str]) -> Run {
        git(self.path(), args).expect(0)
    }

    /// Runs git, whatever it returns.
    pub fn git_any(&self, args: &[&str]) -> Run {
        git(self.path(), args)
    }

    /// Runs rollgate in the repository.
    pub fn rollgate(&self, args: &[&str]) -> Run {
        rollgate(self.path(), args)
    }

    pub fn write(&self, rel: &str, text: &str) {
        write(&self.path().join(rel), text);
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path().join(rel).exists()
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path().join(rel)).unwrap_or_else(|e| panic!("remove {rel}: {e}"));
    }

    /// Stages everything and commits.
    pub fn commit(&self, msg: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
    }

    /// Every file under `rel` (bytes), for before/after comparisons.
    pub fn snapshot(&self, rel: &str) -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(&self.path().join(rel))
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
    std::fs::write(path, text).expect("write");
}

/// Every file and folder under `root` (relative path -> bytes; folders map to
/// an empty vector and are marked with a trailing `/`), `.git` excluded.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let e = e.expect("dir entry");
            let rel = e.path().strip_prefix(root).expect("under root").to_path_buf();
            if rel.starts_with(".git") {
                continue;
            }
            if e.file_type().expect("file type").is_dir() {
                out.insert(rel.join(""), Vec::new());
                stack.push(e.path());
            } else {
                out.insert(rel, std::fs::read(e.path()).expect("read"));
            }
        }
    }
    out
}

/// Copies the tree `from` over `to` (files replace files).
pub fn copy_tree(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else { return };
    for e in entries {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("create dir");
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The initial state of a service on release 1.0: one unreferable id.
pub fn initial_folder(repo: &Repo) {
    repo.write("transport/definitions/unreferable/initial_1_0.csv", "# The first id of release 1.0.\n1000000\n");
    repo.write("transport/upper_bounds/1.0.csv", "initial_1_0,1000000\n");
    repo.write("transport/constants/minimum_compatible.csv", "1000000\n");
    repo.write("transport/definitions/referable/.gitkeep", "");
    repo.write("src/lib.rs", "//! A service.\npub fn serve() {}\n");
}
