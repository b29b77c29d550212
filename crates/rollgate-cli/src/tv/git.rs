//! The base revision: which commit's transport versions are already merged,
//! and the state folder as it is there (read with `git ls-tree` and
//! `git cat-file`, parsed by the same strict parser as the working folder).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rollgate_version::state::{MAX_FILE_BYTES, MAX_FILES, StateFiles, TransportState};

/// The branch changes are merged into; the default base is the merge-base with it.
pub const MAIN: &str = "main";

/// Git, run from the repository holding the state folder.
pub struct Git {
    toplevel: PathBuf,
    /// The folder relative to the repository root, `/`-separated, with a
    /// trailing `/` (empty at the root).
    prefix: String,
}

/// The base state and how it was found.
pub struct Base {
    /// What the user would recognise: `main` or the `--base` value.
    pub label: String,
    /// The commit.
    pub commit: String,
    /// The folder at that commit; an empty state when it did not exist there.
    pub state: TransportState,
    /// Whether the folder existed at the base.
    pub existed: bool,
}

impl Git {
    /// Finds the repository holding `dir`.
    pub fn for_dir(dir: &Path) -> Result<Git, String> {
        let out = run(Command::new("git").arg("-C").arg(dir).args(["rev-parse", "--show-toplevel", "--show-prefix"]))?;
        let mut lines = out.lines();
        let toplevel = lines.next().filter(|l| !l.is_empty()).ok_or("git printed no repository root")?;
        let prefix = lines.next().unwrap_or("").to_string();
        Ok(Git { toplevel: PathBuf::from(toplevel), prefix })
    }

    fn git(&self) -> Command {
        let mut c = Command::new("git");
        c.arg("-C").arg(&self.toplevel);
        c
    }

    /// The commit `rev` names.
    pub fn commit(&self, rev: &str) -> Result<String, String> {
        if rev.starts_with('-') {
            return Err("a revision cannot start with `-`".into());
        }
        let out = run(self.git().args(["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")]))?;
        Ok(out.trim().to_string())
    }

    /// `git merge-base a b`.
    pub fn merge_base(&self, a: &str, b: &str) -> Result<String, String> {
        Ok(run(self.git().args(["merge-base", a, b]))?.trim().to_string())
    }

    /// Whether `a` is an ancestor of (or equal to) `b`.
    pub fn is_ancestor(&self, a: &str, b: &str) -> bool {
        self.git().args(["merge-base", "--is-ancestor", a, b]).status().is_ok_and(|s| s.success())
    }

    /// The commit being merged, when a `git merge` is in progress.
    pub fn merge_head(&self) -> Option<String> {
        self.commit("MERGE_HEAD").ok()
    }

    /// The default base: the merge-base of HEAD with `main`. During a merge,
    /// the newer of the merge-bases of both sides with `main`, so merging
    /// `main` into a branch (or a branch into `main`) takes `main`'s tip.
    pub fn default_base(&self, during_merge: bool) -> Result<String, String> {
        let head = self.merge_base("HEAD", MAIN)?;
        if !during_merge {
            return Ok(head);
        }
        let Some(merging) = self.merge_head() else { return Ok(head) };
        let other = self.merge_base(&merging, MAIN)?;
        Ok(if self.is_ancestor(&head, &other) { other } else { head })
    }

    /// Reads the state folder's files at `commit` (hidden files skipped, the
    /// same limits as on disk). `None` when the folder does not exist there.
    pub fn state_files(&self, commit: &str) -> Result<Option<StateFiles>, String> {
        let mut ls = self.git();
        ls.args(["ls-tree", "-r", "-l", "-z", "--full-tree", commit, "--"]);
        if !self.prefix.is_empty() {
            ls.arg(&self.prefix);
        }
        let listing = run(&mut ls)?;
        let mut wanted: Vec<(String, String)> = Vec::new();
        for entry in listing.split('\0').filter(|e| !e.is_empty()) {
            // <mode> <type> <object> <size>\t<path>
            let (meta, path) =
                entry.split_once('\t').ok_or_else(|| format!("unexpected git ls-tree line `{entry}`"))?;
            let fields: Vec<&str> = meta.split_whitespace().collect();
            let [mode, kind, object, size] = fields.as_slice() else {
                return Err(format!("unexpected git ls-tree line `{entry}`"));
            };
            let Some(rel) = path.strip_prefix(&self.prefix) else { continue };
            if *kind != "blob" || *mode == "120000" || rel.split('/').any(|c| c.starts_with('.')) {
                continue;
            }
            if wanted.len() >= MAX_FILES {
                return Err(format!("{path} at {commit}: more than {MAX_FILES} files in the folder"));
            }
            let size: usize = size.parse().map_err(|_| format!("unexpected size in git ls-tree line `{entry}`"))?;
            if size > MAX_FILE_BYTES {
                return Err(format!("{path} at {commit}: file is {size} bytes, over the limit of {MAX_FILE_BYTES}"));
            }
            wanted.push((rel.to_string(), object.to_string()));
        }
        if wanted.is_empty() {
            return Ok(None);
        }
        let contents = self.cat_blobs(wanted.iter().map(|(_, o)| o.as_str()).collect())?;
        let files = wanted.into_iter().map(|(p, _)| p).zip(contents).collect();
        Ok(Some(StateFiles { files }))
    }

    /// Reads blobs with one `git cat-file --batch`.
    fn cat_blobs(&self, objects: Vec<&str>) -> Result<Vec<Vec<u8>>, String> {
        let mut child = self
            .git()
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run git: {e}"))?;
        let input: String = objects.iter().map(|o| format!("{o}\n")).collect();
        let mut stdin = child.stdin.take().ok_or("git cat-file has no stdin")?;
        // Write from another thread so a full stdout pipe cannot deadlock us.
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let mut out = Vec::new();
        let limit = (objects.len() as u64 + 1) * (MAX_FILE_BYTES as u64 + 200);
        child
            .stdout
            .take()
            .ok_or("git cat-file has no stdout")?
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        let status = child.wait().map_err(|e| e.to_string())?;
        let _ = writer.join();
        if !status.success() {
            return Err(format!("git cat-file failed ({status})"));
        }
        let mut blobs = Vec::with_capacity(objects.len());
        let mut rest = out.as_slice();
        for object in objects {
            let nl = rest.iter().position(|b| *b == b'\n').ok_or("truncated git cat-file output")?;
            let header = String::from_utf8_lossy(&rest[..nl]).to_string();
            let size: usize = match header.split(' ').collect::<Vec<_>>().as_slice() {
                [o, "blob", size] if *o == object => size.parse().map_err(|_| format!("bad git header `{header}`"))?,
                _ => return Err(format!("unexpected git cat-file header `{header}` for {object}")),
            };
            let body = rest.get(nl + 1..nl + 1 + size).ok_or("truncated git cat-file output")?;
            blobs.push(body.to_vec());
            rest = rest.get(nl + 2 + size..).unwrap_or(&[]);
        }
        Ok(blobs)
    }

    /// Reads and parses the folder at `commit`.
    pub fn base(&self, label: String, commit: String, dir: &Path) -> Result<Base, String> {
        match self.state_files(&commit)? {
            None => Ok(Base { label, commit, state: TransportState::default(), existed: false }),
            Some(files) => {
                let state = TransportState::parse(&files).map_err(|mut e| {
                    e.file = dir.join(&e.file);
                    format!("the transport folder at the base {label} ({}) does not parse: {e}", short(&commit))
                })?;
                Ok(Base { label, commit, state, existed: true })
            }
        }
    }
}

/// The first 10 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

fn run(cmd: &mut Command) -> Result<String, String> {
    tracing::debug!(?cmd, "git");
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run git ({e}); is git installed?"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim();
        return Err(format!("git failed: {first}"));
    }
    String::from_utf8(out.stdout).map_err(|_| "git printed non-UTF-8 output".to_string())
}
