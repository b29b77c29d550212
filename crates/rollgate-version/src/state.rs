//! The `transport/` state folder: model, strict parser and canonical writer.
//!
//! Layout (relative to the folder):
//!
//! | path | content |
//! |---|---|
//! | `definitions/referable/<name>.csv` | one line: ids, strictly descending; the first is the primary (`PP == 00`), the rest are backports (`PP != 00`) |
//! | `definitions/unreferable/<name>.csv` | one id |
//! | `upper_bounds/<M.m>.csv` | one line `name,id`: the highest id on branch `M.m` |
//! | `constants/minimum_compatible.csv` | one id |
//! | `constants/<name>.csv` (optional) | one id: another constant, such as Elasticsearch's `minimum_ccs_version` |
//! | `releases.csv` (optional) | `release,id` lines, in any order, each release once |
//!
//! Referable names (the ones code references) are `[a-z0-9_]+`. Unreferable
//! names follow Elasticsearch, which only asks for a file name
//! (`initial_9.2.0`, `initial_elasticsearch_8_16_5`): letters, digits and
//! `_ . + -`, not starting with `.` or `-` ([`is_valid_unreferable_name`]);
//! an upper bound may name either kind.
//!
//! Lines starting with `#` are comments; blank lines are ignored; surrounding
//! whitespace and a trailing `\r` are tolerated. Everything else is an error
//! that names the file, the line and what is wrong. Hidden files (`.gitkeep`)
//! are ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::TransportVersion;
use crate::lines::{DataLine, conflict_marker_line, data_lines, own_side_of_conflict, parse_decimal};

/// Largest state file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most files accepted in one folder.
pub const MAX_FILES: usize = 100_000;
/// Longest transport version name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Most ids in one referable definition (a primary and its backports).
pub const MAX_IDS_PER_DEFINITION: usize = 64;

/// Relative path of the referable definitions directory.
pub const REFERABLE_DIR: &str = "definitions/referable";
/// Relative path of the unreferable definitions directory.
pub const UNREFERABLE_DIR: &str = "definitions/unreferable";
/// Relative path of the upper bounds directory.
pub const UPPER_BOUNDS_DIR: &str = "upper_bounds";
/// Relative path of the minimum compatible constant.
pub const MINIMUM_COMPATIBLE_FILE: &str = "constants/minimum_compatible.csv";
/// Relative path of the optional release mapping.
pub const RELEASES_FILE: &str = "releases.csv";

/// A release branch `M.m`, as named by an `upper_bounds/<M.m>.csv` file.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Branch {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Error parsing a branch name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a branch name: expected MAJOR.MINOR such as 9.1")]
pub struct BadBranch(pub String);

impl FromStr for Branch {
    type Err = BadBranch;
    fn from_str(s: &str) -> Result<Self, BadBranch> {
        let bad = || BadBranch(s.to_string());
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        Ok(Branch { major: parse_decimal(a).ok_or_else(bad)?, minor: parse_decimal(b).ok_or_else(bad)? })
    }
}

/// A transport version definition: a name and its ids (primary first, then
/// backports descending for referable definitions; one id for unreferable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    /// The name (`[a-z0-9_]+`).
    pub name: String,
    /// The ids, strictly descending.
    pub ids: Vec<TransportVersion>,
}

impl Definition {
    /// The first (highest) id: the primary of a referable definition.
    pub fn primary(&self) -> TransportVersion {
        self.ids.first().copied().unwrap_or_default()
    }

    /// The backport ids.
    pub fn backports(&self) -> &[TransportVersion] {
        self.ids.get(1..).unwrap_or(&[])
    }
}

/// The content of an `upper_bounds/<M.m>.csv` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpperBound {
    /// The definition holding the branch's highest id.
    pub name: String,
    /// That id.
    pub id: TransportVersion,
}

/// A whole `transport/` folder, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TransportState {
    /// `definitions/referable/*.csv`, by name.
    pub referable: BTreeMap<String, Definition>,
    /// `definitions/unreferable/*.csv`, by name.
    pub unreferable: BTreeMap<String, Definition>,
    /// `upper_bounds/*.csv`, by branch.
    pub upper_bounds: BTreeMap<Branch, UpperBound>,
    /// `constants/minimum_compatible.csv`.
    pub minimum_compatible: TransportVersion,
    /// The other `constants/<name>.csv` files (Elasticsearch's
    /// `minimum_ccs_version`), by name: parsed and kept, not interpreted.
    pub constants: BTreeMap<String, TransportVersion>,
    /// `releases.csv`, sorted by id (lines with the same id keep their file
    /// order); empty when the file is absent. The file itself may list them
    /// in any order, as Elasticsearch appends each release as it ships.
    pub releases: Vec<(String, TransportVersion)>,
}

/// Where and why a state folder failed to parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {kind}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct StateError {
    /// The file, prefixed with the folder when loaded from disk.
    pub file: PathBuf,
    /// The 1-based line, when the problem is on a line.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: StateErrorKind,
}

/// What is wrong with a state file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateErrorKind {
    /// Reading failed.
    #[error("cannot read: {0}")]
    Io(String),
    /// The folder does not exist.
    #[error("no transport state folder here (create it, or pass --dir)")]
    MissingFolder,
    /// A required file is missing.
    #[error("missing required file")]
    MissingFile,
    /// Too many files.
    #[error("more than {MAX_FILES} files in the folder")]
    TooManyFiles,
    /// A file over [`MAX_FILE_BYTES`].
    #[error("file is {0} bytes, over the limit of {MAX_FILE_BYTES}")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A file that does not belong in the folder.
    #[error(
        "unexpected file: expected {REFERABLE_DIR}/<name>.csv, {UNREFERABLE_DIR}/<name>.csv, {UPPER_BOUNDS_DIR}/<M.m>.csv, {MINIMUM_COMPATIBLE_FILE}, constants/<name>.csv or {RELEASES_FILE}"
    )]
    UnexpectedFile,
    /// A file with no data line.
    #[error("no data line (expected {0})")]
    Empty(&'static str),
    /// A second data line where one is expected.
    #[error("unexpected second data line (the file holds exactly one line: {0})")]
    ExtraLine(&'static str),
    /// Wrong number of comma-separated fields.
    #[error("expected {expected}, found `{found}`")]
    BadLine {
        /// What the line should look like.
        expected: &'static str,
        /// The line.
        found: String,
    },
    /// An id that is not a decimal u32.
    #[error("`{0}` is not a transport version id (a decimal number such as 9396000)")]
    BadId(String),
    /// A name outside `[a-z0-9_]+`.
    #[error("`{0}` is not a valid transport version name: use only a-z, 0-9 and _ (at most {MAX_NAME_LEN} characters)")]
    BadName(String),
    /// An unreferable or upper bound name outside [`is_valid_unreferable_name`].
    #[error(
        "`{0}` is not a valid definition name: use letters, digits and _ . + - (not first: . or -), at most {MAX_NAME_LEN} characters"
    )]
    BadUnreferableName(String),
    /// A file name that is not a branch.
    #[error("`{0}` is not a branch name: upper bound files are named MAJOR.MINOR.csv, e.g. 9.1.csv")]
    BadBranchFile(String),
    /// Ids not strictly descending.
    #[error("ids must be strictly descending (primary first, then backports): {0} is not below {1}")]
    NotDescending(TransportVersion, TransportVersion),
    /// A primary id with a non-zero patch.
    #[error("the primary id {0} must have patch 00 (ids are M_NNN_S_PP)")]
    PrimaryHasPatch(TransportVersion),
    /// A backport id with a zero patch.
    #[error("the backport id {0} must have a non-zero patch (PP); patch 00 is reserved for primary ids")]
    BackportWithoutPatch(TransportVersion),
    /// Too many ids in one definition.
    #[error("more than {MAX_IDS_PER_DEFINITION} ids in one definition")]
    TooManyIds,
    /// A name defined both referable and unreferable.
    #[error("`{0}` is defined both as referable and unreferable")]
    DuplicateName(String),
    /// A release string with unexpected characters.
    #[error("`{0}` is not a release: use letters, digits, . _ + -")]
    BadRelease(String),
    /// A git conflict marker left by an unfinished merge.
    #[error("{}", if *resolvable {
        "unresolved merge conflict: run `rollgate tv resolve-conflict` to recompute the upper bounds"
    } else {
        "unresolved merge conflict: only upper_bounds/ files are resolved automatically; resolve this file by hand, then run `rollgate tv resolve-conflict`"
    })]
    ConflictMarker {
        /// Whether `rollgate tv resolve-conflict` can resolve it.
        resolvable: bool,
    },
    /// A release listed twice in releases.csv.
    #[error("release `{release}` is already listed on line {first}: each release maps to one id")]
    DuplicateRelease {
        /// The release.
        release: String,
        /// The line of its first entry.
        first: usize,
    },
}

/// The raw files of a state folder: relative path -> bytes. Used to parse a
/// folder on disk or at a git revision the same way, and to write back.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StateFiles {
    /// Relative path (with `/` separators) -> content.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl StateFiles {
    /// Files from `(relative path, text)` pairs (unit tests).
    #[cfg(test)]
    pub(crate) fn from_pairs(entries: &[(&str, &str)]) -> StateFiles {
        StateFiles { files: entries.iter().map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())).collect() }
    }

    /// Reads every file under `dir` (hidden files are skipped), enforcing
    /// [`MAX_FILES`] and [`MAX_FILE_BYTES`].
    pub fn read_dir(dir: &Path) -> Result<StateFiles, StateError> {
        let err = |file: PathBuf, kind| StateError { file, line: None, kind };
        if !dir.is_dir() {
            return Err(err(dir.to_path_buf(), StateErrorKind::MissingFolder));
        }
        let mut out = StateFiles::default();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let abs = dir.join(&rel);
            let entries = std::fs::read_dir(&abs).map_err(|e| err(abs.clone(), StateErrorKind::Io(e.to_string())))?;
            for entry in entries {
                let entry = entry.map_err(|e| err(abs.clone(), StateErrorKind::Io(e.to_string())))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    return Err(err(entry.path(), StateErrorKind::UnexpectedFile));
                };
                if name.starts_with('.') {
                    continue;
                }
                let child = rel.join(name);
                let ft = entry.file_type().map_err(|e| err(entry.path(), StateErrorKind::Io(e.to_string())))?;
                if ft.is_dir() {
                    stack.push(child);
                    continue;
                }
                if out.files.len() >= MAX_FILES {
                    return Err(err(dir.to_path_buf(), StateErrorKind::TooManyFiles));
                }
                let bytes = read_bounded(&entry.path(), MAX_FILE_BYTES)
                    .map_err(|e| err(entry.path(), StateErrorKind::Io(e.to_string())))?
                    .map_err(|len| err(entry.path(), StateErrorKind::TooLarge(len)))?;
                let key = child.to_string_lossy().replace('\\', "/");
                out.files.insert(key, bytes);
            }
        }
        Ok(out)
    }
}

/// Reads at most `max_bytes` of a file: `Ok(Err(len))` when it is larger
/// (`len` is a lower bound of its size), so a huge or endless file is never
/// read whole.
pub fn read_bounded(path: &Path, max_bytes: usize) -> std::io::Result<Result<Vec<u8>, usize>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(max_bytes as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max_bytes { Ok(Err(bytes.len())) } else { Ok(Ok(bytes)) }
}

impl TransportState {
    /// Reads and parses the folder `dir`. Errors name `dir/<file>`.
    pub fn load(dir: &Path) -> Result<TransportState, StateError> {
        let files = StateFiles::read_dir(dir)?;
        TransportState::parse(&files).map_err(|mut e| {
            e.file = dir.join(&e.file);
            e
        })
    }

    /// Parses raw files strictly. Errors name the relative file; the first
    /// problem (in path order) is returned. See [`TransportState::parse_all`]
    /// for every problem at once.
    pub fn parse(files: &StateFiles) -> Result<TransportState, StateError> {
        let parsed = parse_files(files, ConflictMode::Refuse);
        match parsed.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(parsed.state),
        }
    }

    /// Parses raw files strictly and reports every problem, not only the
    /// first (at most one per file, plus the folder-wide checks). The state is
    /// only returned when there is no problem.
    pub fn parse_all(files: &StateFiles) -> Result<TransportState, Vec<StateError>> {
        let parsed = parse_files(files, ConflictMode::Refuse);
        if parsed.errors.is_empty() { Ok(parsed.state) } else { Err(parsed.errors) }
    }

    /// Parses a folder left by an unfinished `git merge`: an
    /// `upper_bounds/<M.m>.csv` file with conflict markers is read from its
    /// own side (`<<<<<<<` to `=======`), and its path is returned so the
    /// caller recomputes it. Conflict markers anywhere else are an error, as
    /// is everything [`TransportState::parse`] refuses.
    pub fn parse_merging(files: &StateFiles) -> Result<(TransportState, Vec<String>), StateError> {
        let parsed = parse_files(files, ConflictMode::UpperBoundsOwnSide);
        match parsed.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok((parsed.state, parsed.conflicted)),
        }
    }

    /// The canonical files for this state (one line per file, `\n` ended).
    /// A writer compares these with the files on disk and rewrites only the
    /// ones whose content differs.
    pub fn to_files(&self) -> StateFiles {
        let mut files = BTreeMap::new();
        let ids = |d: &Definition| d.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        for d in self.referable.values() {
            files.insert(format!("{REFERABLE_DIR}/{}.csv", d.name), format!("{}\n", ids(d)).into_bytes());
        }
        for d in self.unreferable.values() {
            files.insert(format!("{UNREFERABLE_DIR}/{}.csv", d.name), format!("{}\n", ids(d)).into_bytes());
        }
        for (b, u) in &self.upper_bounds {
            files.insert(format!("{UPPER_BOUNDS_DIR}/{b}.csv"), format!("{},{}\n", u.name, u.id).into_bytes());
        }
        files.insert(MINIMUM_COMPATIBLE_FILE.to_string(), format!("{}\n", self.minimum_compatible).into_bytes());
        for (name, id) in &self.constants {
            files.insert(format!("constants/{name}.csv"), format!("{id}\n").into_bytes());
        }
        if !self.releases.is_empty() {
            let mut s = String::new();
            for (r, id) in &self.releases {
                s.push_str(&format!("{r},{id}\n"));
            }
            files.insert(RELEASES_FILE.to_string(), s.into_bytes());
        }
        StateFiles { files }
    }

    /// The branch whose upper bound is highest (the current branch by default).
    pub fn latest_branch(&self) -> Option<Branch> {
        self.upper_bounds.keys().next_back().copied()
    }

    /// Looks up a definition by name, referable first.
    pub fn definition(&self, name: &str) -> Option<&Definition> {
        self.referable.get(name).or_else(|| self.unreferable.get(name))
    }

    /// Every id of every definition, ascending.
    pub fn all_ids(&self) -> Vec<TransportVersion> {
        let mut ids: Vec<_> =
            self.referable.values().chain(self.unreferable.values()).flat_map(|d| d.ids.iter().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// How the parser treats git conflict markers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ConflictMode {
    /// Any marker is an error.
    Refuse,
    /// Markers in upper bound files are tolerated (their own side is read).
    UpperBoundsOwnSide,
}

struct Parsed {
    state: TransportState,
    errors: Vec<StateError>,
    conflicted: Vec<String>,
}

fn parse_files(files: &StateFiles, mode: ConflictMode) -> Parsed {
    let mut out = Parsed { state: TransportState::default(), errors: Vec::new(), conflicted: Vec::new() };
    if files.files.len() > MAX_FILES {
        out.errors.push(StateError { file: PathBuf::new(), line: None, kind: StateErrorKind::TooManyFiles });
        return out;
    }
    let mut saw_minimum = false;
    for (path, bytes) in &files.files {
        match parse_file(&mut out.state, path, bytes, mode) {
            Ok(FileOutcome { minimum, conflicted }) => {
                saw_minimum |= minimum;
                if conflicted {
                    out.conflicted.push(path.clone());
                }
            }
            Err(e) => out.errors.push(e),
        }
    }
    let minimum_failed = out.errors.iter().any(|e| e.file == Path::new(MINIMUM_COMPATIBLE_FILE));
    if !saw_minimum && !minimum_failed {
        out.errors.push(StateError {
            file: PathBuf::from(MINIMUM_COMPATIBLE_FILE),
            line: None,
            kind: StateErrorKind::MissingFile,
        });
    }
    for name in out.state.referable.keys().filter(|n| out.state.unreferable.contains_key(*n)) {
        out.errors.push(StateError {
            file: PathBuf::from(format!("{UNREFERABLE_DIR}/{name}.csv")),
            line: None,
            kind: StateErrorKind::DuplicateName(name.clone()),
        });
    }
    out
}

struct FileOutcome {
    minimum: bool,
    conflicted: bool,
}

fn parse_file(
    state: &mut TransportState,
    path: &str,
    bytes: &[u8],
    mode: ConflictMode,
) -> Result<FileOutcome, StateError> {
    let file = PathBuf::from(path);
    let fail = |line, kind| StateError { file: file.clone(), line, kind };
    let mut outcome = FileOutcome { minimum: false, conflicted: false };
    if bytes.len() > MAX_FILE_BYTES {
        return Err(fail(None, StateErrorKind::TooLarge(bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| fail(None, StateErrorKind::NotUtf8))?;
    let (dir, base) = match path.rsplit_once('/') {
        Some((d, b)) => (d, b),
        None => ("", path),
    };
    let stem = base.strip_suffix(".csv");
    let own_side;
    let text = match conflict_marker_line(text) {
        None => text,
        Some(_) if mode == ConflictMode::UpperBoundsOwnSide && dir == UPPER_BOUNDS_DIR => {
            own_side = own_side_of_conflict(text).map_err(|line| fail(Some(line), conflict_kind(dir, mode)))?;
            outcome.conflicted = true;
            own_side.as_str()
        }
        Some(line) => return Err(fail(Some(line), conflict_kind(dir, mode))),
    };
    match (dir, stem) {
        (REFERABLE_DIR, Some(name)) => {
            check_name(name).map_err(|k| fail(None, k))?;
            let (line, fields) = single_line(text, "a comma-separated list of ids").map_err(|(l, k)| fail(l, k))?;
            let ids = parse_referable_ids(&fields).map_err(|k| fail(Some(line), k))?;
            state.referable.insert(name.to_string(), Definition { name: name.to_string(), ids });
        }
        (UNREFERABLE_DIR, Some(name)) => {
            check_unreferable_name(name).map_err(|k| fail(None, k))?;
            let (line, fields) = single_line(text, "one id").map_err(|(l, k)| fail(l, k))?;
            let [id] = fields.as_slice() else {
                return Err(fail(Some(line), StateErrorKind::BadLine { expected: "one id", found: fields.join(",") }));
            };
            let id = parse_id(id).map_err(|k| fail(Some(line), k))?;
            state.unreferable.insert(name.to_string(), Definition { name: name.to_string(), ids: vec![id] });
        }
        (UPPER_BOUNDS_DIR, Some(branch)) => {
            let branch: Branch =
                branch.parse().map_err(|_| fail(None, StateErrorKind::BadBranchFile(branch.to_string())))?;
            let (line, fields) = single_line(text, "`name,id`").map_err(|(l, k)| fail(l, k))?;
            let [name, id] = fields.as_slice() else {
                return Err(fail(
                    Some(line),
                    StateErrorKind::BadLine { expected: "`name,id`", found: fields.join(",") },
                ));
            };
            check_unreferable_name(name).map_err(|k| fail(Some(line), k))?;
            let id = parse_id(id).map_err(|k| fail(Some(line), k))?;
            state.upper_bounds.insert(branch, UpperBound { name: name.to_string(), id });
        }
        ("constants", Some(name)) => {
            check_name(name).map_err(|k| fail(None, k))?;
            let (line, fields) = single_line(text, "one id").map_err(|(l, k)| fail(l, k))?;
            let [id] = fields.as_slice() else {
                return Err(fail(Some(line), StateErrorKind::BadLine { expected: "one id", found: fields.join(",") }));
            };
            let id = parse_id(id).map_err(|k| fail(Some(line), k))?;
            if name == "minimum_compatible" {
                state.minimum_compatible = id;
                outcome.minimum = true;
            } else {
                state.constants.insert(name.to_string(), id);
            }
        }
        ("", Some("releases")) => {
            let mut releases = Vec::new();
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for (line, fields) in data_lines(text) {
                let [release, id] = fields.as_slice() else {
                    return Err(fail(
                        Some(line),
                        StateErrorKind::BadLine { expected: "`release,id`", found: fields.join(",") },
                    ));
                };
                check_release(release).map_err(|k| fail(Some(line), k))?;
                let id = parse_id(id).map_err(|k| fail(Some(line), k))?;
                if let Some(first) = seen.insert(release, line) {
                    let kind = StateErrorKind::DuplicateRelease { release: release.to_string(), first };
                    return Err(fail(Some(line), kind));
                }
                releases.push((release.to_string(), id));
            }
            // Elasticsearch appends releases as they ship, so a patch of an older branch may follow a newer minor.
            releases.sort_by_key(|(_, id)| *id);
            state.releases = releases;
        }
        _ => return Err(fail(None, StateErrorKind::UnexpectedFile)),
    }
    Ok(outcome)
}

fn conflict_kind(dir: &str, mode: ConflictMode) -> StateErrorKind {
    let resolvable = dir == UPPER_BOUNDS_DIR && mode == ConflictMode::Refuse;
    StateErrorKind::ConflictMarker { resolvable }
}

/// The 1-based number of the first data line of `path` in `files` (the line
/// a one-line state file's content is on), if the file exists and has one.
pub fn first_data_line(files: &StateFiles, path: &str) -> Option<usize> {
    let text = std::str::from_utf8(files.files.get(path)?).ok()?;
    data_lines(text).next().map(|(line, _)| line)
}

/// Whether `name` is a valid transport version name (`[a-z0-9_]+`, bounded).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `name` is a valid unreferable definition (or upper bound) name:
/// Elasticsearch only asks for a file name (`initial_9.2.0`), we ask for a
/// portable one: ASCII letters, digits and `_ . + -`, not starting with `.`
/// (a hidden file) or `-`, bounded.
pub fn is_valid_unreferable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'))
}

fn check_unreferable_name(name: &str) -> Result<(), StateErrorKind> {
    if is_valid_unreferable_name(name) { Ok(()) } else { Err(StateErrorKind::BadUnreferableName(name.to_string())) }
}

fn check_name(name: &str) -> Result<(), StateErrorKind> {
    if is_valid_name(name) { Ok(()) } else { Err(StateErrorKind::BadName(name.to_string())) }
}

/// Checks a release name (`releases.csv`): letters, digits and `. _ + -`,
/// at most 64 characters.
pub fn check_release(r: &str) -> Result<(), StateErrorKind> {
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok { Ok(()) } else { Err(StateErrorKind::BadRelease(r.to_string())) }
}

/// Parses a decimal transport version id.
pub fn parse_id(s: &str) -> Result<TransportVersion, StateErrorKind> {
    parse_decimal(s).map(TransportVersion::from_id).ok_or_else(|| StateErrorKind::BadId(s.to_string()))
}

fn parse_referable_ids(fields: &[&str]) -> Result<Vec<TransportVersion>, StateErrorKind> {
    if fields.len() > MAX_IDS_PER_DEFINITION {
        return Err(StateErrorKind::TooManyIds);
    }
    let ids = fields.iter().map(|f| parse_id(f)).collect::<Result<Vec<_>, _>>()?;
    for w in ids.windows(2) {
        if w[1] >= w[0] {
            return Err(StateErrorKind::NotDescending(w[1], w[0]));
        }
    }
    if let Some((primary, backports)) = ids.split_first() {
        if primary.is_patch() {
            return Err(StateErrorKind::PrimaryHasPatch(*primary));
        }
        if let Some(b) = backports.iter().find(|b| !b.is_patch()) {
            return Err(StateErrorKind::BackportWithoutPatch(*b));
        }
    }
    Ok(ids)
}

fn single_line<'a>(text: &'a str, what: &'static str) -> Result<DataLine<'a>, (Option<usize>, StateErrorKind)> {
    let mut lines = data_lines(text);
    let first = lines.next().ok_or((None, StateErrorKind::Empty(what)))?;
    if let Some((n, _)) = lines.next() {
        return Err((Some(n), StateErrorKind::ExtraLine(what)));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("definitions/referable/new_field.csv", "9396000,9348005\n"),
            ("definitions/unreferable/initial_9_0_0.csv", "# the first 9.0 id\n9000000\n"),
            ("upper_bounds/9.3.csv", "new_field,9396000\n"),
            ("upper_bounds/9.2.csv", "new_field,9348005\n"),
            ("constants/minimum_compatible.csv", "9000000\n"),
            ("releases.csv", "9.0.0,9000000\n9.0.1,9000000\n"),
        ]
    }

    #[test]
    fn parses_a_good_folder_and_round_trips() {
        let state = TransportState::parse(&StateFiles::from_pairs(&good())).unwrap();
        assert_eq!(state.referable["new_field"].ids, vec![9396000.into(), 9348005.into()]);
        assert_eq!(state.latest_branch(), Some(Branch { major: 9, minor: 3 }));
        assert_eq!(state.minimum_compatible, 9000000.into());
        assert_eq!(state.releases.len(), 2);
        let again = TransportState::parse(&state.to_files()).unwrap();
        assert_eq!(state, again);
    }

    fn err_of(replace: (&'static str, &'static str)) -> StateError {
        let mut entries = good();
        entries.retain(|(p, _)| *p != replace.0);
        entries.push(replace);
        TransportState::parse(&StateFiles::from_pairs(&entries)).unwrap_err()
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let e = err_of(("definitions/referable/new_field.csv", "# c\n9396000,9348x05\n"));
        assert_eq!(
            e.to_string(),
            "definitions/referable/new_field.csv:2: `9348x05` is not a transport version id (a decimal number such as 9396000)"
        );
        let e = err_of(("definitions/referable/new_field.csv", "9348005,9396000\n"));
        assert!(matches!(e.kind, StateErrorKind::NotDescending(..)), "{e}");
        let e = err_of(("definitions/referable/new_field.csv", "9396001\n"));
        assert_eq!(e.kind, StateErrorKind::PrimaryHasPatch(9396001.into()));
        let e = err_of(("definitions/referable/new_field.csv", "9396000,9348000\n"));
        assert_eq!(e.kind, StateErrorKind::BackportWithoutPatch(9348000.into()));
        let e = err_of(("definitions/referable/new_field.csv", "9396000\n9396000\n"));
        assert_eq!((e.line, e.kind), (Some(2), StateErrorKind::ExtraLine("a comma-separated list of ids")));
        let e = err_of(("definitions/referable/new_field.csv", "# only a comment\n"));
        assert!(matches!(e.kind, StateErrorKind::Empty(_)));
        let e = err_of(("definitions/referable/Bad-Name.csv", "9396000\n"));
        assert_eq!(e.kind, StateErrorKind::BadName("Bad-Name".into()));
        let e = err_of(("upper_bounds/9.x.csv", "new_field,9396000\n"));
        assert_eq!(e.kind, StateErrorKind::BadBranchFile("9.x".into()));
        let e = err_of(("upper_bounds/9.3.csv", "new_field\n"));
        assert!(matches!(e.kind, StateErrorKind::BadLine { .. }));
        let e = err_of(("releases.csv", "9.1.0,9100000\n# again\n9.1.0,9100001\n"));
        assert_eq!((e.line, e.kind), (Some(3), StateErrorKind::DuplicateRelease { release: "9.1.0".into(), first: 1 }));
        let e = err_of(("definitions/unreferable/initial 9.csv", "9000000\n"));
        assert_eq!(e.kind, StateErrorKind::BadUnreferableName("initial 9".into()));
        let e = err_of(("upper_bounds/9.3.csv", "-x,9396000\n"));
        assert_eq!(e.kind, StateErrorKind::BadUnreferableName("-x".into()));
        let e = err_of(("constants/Other.csv", "1\n"));
        assert_eq!(e.kind, StateErrorKind::BadName("Other".into()));
        let e = err_of(("constants/minimum_ccs_version.csv", "1,2\n"));
        assert!(matches!(e.kind, StateErrorKind::BadLine { .. }), "{e}");
        let e = err_of(("notes.txt", "hello"));
        assert_eq!(e.kind, StateErrorKind::UnexpectedFile);
        let e = err_of(("definitions/unreferable/new_field.csv", "1\n"));
        assert_eq!(e.kind, StateErrorKind::DuplicateName("new_field".into()));
        let e = err_of(("definitions/referable/new_field.csv", "99999999999\n"));
        assert!(matches!(e.kind, StateErrorKind::BadId(_)));
        let mut entries = good();
        entries.retain(|(p, _)| !p.starts_with("constants"));
        let e = TransportState::parse(&StateFiles::from_pairs(&entries)).unwrap_err();
        assert_eq!(e.to_string(), "constants/minimum_compatible.csv: missing required file");
    }

    #[test]
    fn accepts_elasticsearch_naming_constants_and_release_order() {
        let mut entries = good();
        entries.retain(|(p, _)| !p.starts_with("releases") && !p.starts_with("upper_bounds/9.2"));
        entries.extend([
            ("definitions/unreferable/initial_9.2.0.csv", "9185000\n"),
            ("definitions/unreferable/initial_elasticsearch_8_16_5.csv", "8772005\n"),
            ("upper_bounds/9.2.csv", "initial_9.2.0,9185000\n"),
            ("constants/minimum_ccs_version.csv", "8825000\n"),
            // As Elasticsearch appends them: a patch of an older minor after a newer minor.
            ("releases.csv", "9.0.0,9000000\n9.2.0,9185000\n9.1.5,9112008\n"),
        ]);
        let state = TransportState::parse(&StateFiles::from_pairs(&entries)).unwrap();
        assert_eq!(state.unreferable["initial_9.2.0"].ids, vec![9185000.into()]);
        assert_eq!(state.upper_bounds[&"9.2".parse().unwrap()].name, "initial_9.2.0");
        assert_eq!(state.constants["minimum_ccs_version"], 8825000.into());
        let releases: Vec<&str> = state.releases.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(releases, ["9.0.0", "9.1.5", "9.2.0"], "kept sorted by id");
        assert_eq!(TransportState::parse(&state.to_files()).unwrap(), state);
        for ok in ["initial_9.2.0", "A-b+c_1", "x"] {
            assert!(is_valid_unreferable_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "-flag", "a/b", "a b", "é", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert!(!is_valid_unreferable_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn rejects_binary_and_huge_files() {
        let mut f = StateFiles::from_pairs(&good());
        f.files.insert("definitions/referable/new_field.csv".into(), vec![0xff, 0xfe, 0x00]);
        assert_eq!(TransportState::parse(&f).unwrap_err().kind, StateErrorKind::NotUtf8);
        f.files.insert("definitions/referable/new_field.csv".into(), vec![b'#'; MAX_FILE_BYTES + 1]);
        assert!(matches!(TransportState::parse(&f).unwrap_err().kind, StateErrorKind::TooLarge(_)));
    }

    #[test]
    fn tolerates_crlf_and_whitespace() {
        let mut entries = good();
        entries.retain(|(p, _)| *p != "upper_bounds/9.3.csv");
        entries.push(("upper_bounds/9.3.csv", "  new_field , 9396000 \r\n"));
        let state = TransportState::parse(&StateFiles::from_pairs(&entries)).unwrap();
        assert_eq!(state.upper_bounds[&"9.3".parse().unwrap()].id, 9396000.into());
    }

    #[test]
    fn load_from_disk_prefixes_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in good() {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        std::fs::write(dir.path().join("definitions/referable/.gitkeep"), "").unwrap();
        let state = TransportState::load(dir.path()).unwrap();
        assert_eq!(state.referable.len(), 1);
        std::fs::write(dir.path().join("upper_bounds/9.3.csv"), "new_field,x\n").unwrap();
        let e = TransportState::load(dir.path()).unwrap_err();
        assert_eq!(e.file, dir.path().join("upper_bounds/9.3.csv"));
        assert_eq!(e.line, Some(1));
        let e = TransportState::load(&dir.path().join("nope")).unwrap_err();
        assert_eq!(e.kind, StateErrorKind::MissingFolder);
    }

    #[test]
    fn parse_all_reports_every_file() {
        let mut entries = good();
        entries.retain(|(p, _)| !p.starts_with("constants") && !p.starts_with("upper_bounds/9.3"));
        entries.push(("upper_bounds/9.3.csv", "new_field,x\n"));
        entries.push(("definitions/referable/Bad.csv", "1\n"));
        let errors = TransportState::parse_all(&StateFiles::from_pairs(&entries)).unwrap_err();
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(shown[0].starts_with("definitions/referable/Bad.csv: `Bad` is not a valid"));
        assert!(shown[1].starts_with("upper_bounds/9.3.csv:1: `x` is not a transport version id"));
        assert_eq!(shown[2], "constants/minimum_compatible.csv: missing required file");
        assert_eq!(TransportState::parse(&StateFiles::from_pairs(&entries)).unwrap_err(), errors[0]);
    }

    #[test]
    fn conflict_markers_are_refused_or_read_from_our_side() {
        let conflicted =
            "<<<<<<< HEAD\nnew_field,9396000\n||||||| base\nold,9395000\n=======\nother,9396000\n>>>>>>> main\n";
        let mut entries = good();
        entries.retain(|(p, _)| *p != "upper_bounds/9.3.csv");
        entries.push(("upper_bounds/9.3.csv", conflicted));
        let e = TransportState::parse(&StateFiles::from_pairs(&entries)).unwrap_err();
        assert_eq!((e.line, &e.kind), (Some(1), &StateErrorKind::ConflictMarker { resolvable: true }));
        assert!(e.to_string().contains("run `rollgate tv resolve-conflict`"), "{e}");
        let (state, paths) = TransportState::parse_merging(&StateFiles::from_pairs(&entries)).unwrap();
        assert_eq!(paths, vec!["upper_bounds/9.3.csv".to_string()]);
        assert_eq!(state.upper_bounds[&"9.3".parse().unwrap()].name, "new_field");
        // Unbalanced markers and markers outside upper_bounds/ are errors, with lines.
        entries.retain(|(p, _)| *p != "upper_bounds/9.3.csv");
        entries.push(("upper_bounds/9.3.csv", "new_field,9396000\n=======\n"));
        let e = TransportState::parse_merging(&StateFiles::from_pairs(&entries)).unwrap_err();
        assert_eq!(e.line, Some(2));
        entries.retain(|(p, _)| *p != "upper_bounds/9.3.csv");
        entries.push(("upper_bounds/9.3.csv", "new_field,9396000\n"));
        entries.retain(|(p, _)| *p != "definitions/referable/new_field.csv");
        entries
            .push(("definitions/referable/new_field.csv", "# x\n<<<<<<< HEAD\n9396000\n=======\n9397000\n>>>>>>> b\n"));
        let e = TransportState::parse_merging(&StateFiles::from_pairs(&entries)).unwrap_err();
        assert_eq!((e.line, &e.kind), (Some(2), &StateErrorKind::ConflictMarker { resolvable: false }));
    }

    #[test]
    fn first_data_line_skips_comments() {
        let f = StateFiles::from_pairs(&[("a.csv", "# one\n\n  # two\n9\n")]);
        assert_eq!(first_data_line(&f, "a.csv"), Some(4));
        assert_eq!(first_data_line(&f, "b.csv"), None);
    }

    #[test]
    fn branches_order_numerically() {
        let a: Branch = "9.10".parse().unwrap();
        let b: Branch = "9.9".parse().unwrap();
        assert!(a > b);
        assert!("9".parse::<Branch>().is_err());
        assert!("9.1.2".parse::<Branch>().is_err());
        assert!("-1.2".parse::<Branch>().is_err());
    }
}
