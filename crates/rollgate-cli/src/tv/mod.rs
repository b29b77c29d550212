//! `rollgate tv`: developer tooling for transport versions (Elasticsearch
//! style): create ids for new `transport_version!("name")` references,
//! backport them, resolve merge conflicts, validate and inspect the
//! `transport/` state folder.
//!
//! The rules and the id allocation live in `rollgate_version::{scan,
//! validate, generate}`; this module only does the I/O: reading the folder,
//! walking `--src`, asking git for the base revision, and writing the folder
//! all-or-nothing.
//!
//! `git.rs` finds the base (`--base`, else `git merge-base HEAD main`; during
//! a merge the newer merge-base of both sides) and reads the folder there
//! with `git ls-tree` + `git cat-file --batch`, parsed by the same strict
//! parser; `files.rs` walks `--src` (bounded: files, entries, bytes; hidden,
//! `target` and symlinks skipped) and writes a folder all-or-nothing (new
//! files staged under hidden names and renamed into place, a failure undoes
//! what was done). Without a base, `generate` and `resolve-conflict` refuse
//! (nothing is guessed deletable); `validate` warns and skips the base
//! checks.

mod cut;
mod files;
mod git;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rollgate_version::generate::{self, Changes, Options};
use rollgate_version::state::{Branch, StateFiles, TransportState};
use rollgate_version::validate::validate_branch;
use rollgate_version::{TransportVersion, release_of};

use crate::failure::{Failure, Outcome};
use files::{Limits, Scanned};
use git::{Base, Git};

const STATE_LAYOUT: &str = "\
The state folder (--dir, default `transport`):
  definitions/referable/<name>.csv    primary id (ends in 00), then backport ids, descending
  definitions/unreferable/<name>.csv  one id that code never references (a release's first id);
                                      Elasticsearch names such as initial_9.2.0 are accepted
  upper_bounds/<M.m>.csv              `name,id`: the highest id on branch M.m
  constants/minimum_compatible.csv    the oldest id this build accepts from a peer
  constants/<name>.csv (optional)     another one-id constant (Elasticsearch's minimum_ccs_version)
  releases.csv (optional)             `release,id` lines in any order (as Elasticsearch appends them),
                                      each release once, for list and release-of
Ids are M_NNN_S_PP: 9_396_0_00 is 9396000. Lines starting with # are comments.";

/// Transport versions: generate, validate and inspect the transport/ state folder.
#[derive(Subcommand, Debug)]
#[command(
    long_about = "Transport versions gate the fields a message's encoding carries. Declare one in code with \
transport_version!(\"name\"), run `rollgate tv generate` to give it an id, then gate serialization with \
`version.supports(transport_version!(\"name\"))`.",
    after_help = STATE_LAYOUT
)]
pub enum TvCommand {
    /// Create (or update) transport version ids for this change.
    #[command(
        long_about = "Create the state files for this change's new transport version: the first name referenced \
by transport_version!(\"name\") under --src that has no definition (or --name). It gets the next primary id \
(the current branch's upper bound at the base + --increment) and, for each --backport-branches branch, a backport \
id (that branch's upper bound + 1); the upper bounds are rewritten to match.\n\n\
Ids are always computed from the base revision's state (--base, default: the merge-base of HEAD with main), so \
running generate again changes nothing, a definition created in this change that is no longer referenced is \
deleted (and the upper bounds it moved are restored), and definitions that exist at the base are never changed. \
Only one new transport version per change. All files are written, or none.",
        after_help = "Examples:
  # after adding transport_version!(\"search_timeout_ms\") to the code:
  rollgate tv generate --src crates/my-service/src
  # also backport it to the 9.1 and 9.0 release branches:
  rollgate tv generate --name search_timeout_ms --backport-branches 9.1,9.0
  # drop the 9.0 backport again (not yet merged):
  rollgate tv generate --name search_timeout_ms --backport-branches 9.1
  # after removing the last reference: delete the definition
  rollgate tv generate"
    )]
    Generate(GenerateArgs),
    /// Check the state folder and the references against every rule.
    #[command(
        long_about = "Check the state folder and the transport_version! references under --src against every \
rule, and report all violations (each with its file, line and fix): names are [a-z0-9_]+; every referable \
definition is referenced and every reference has a definition; primary ids end in 00 and backport ids do not; \
ids are unique; definitions that exist at --base are unchanged; every upper bound names a definition holding its \
id, the highest of its base; the highest primary id is in an upper bound; a new primary id is at most 1000 above \
the previous highest id; the ids of one base are consecutive; the minimum compatible id is a defined id.\n\n\
Without --base, the merge-base of HEAD with main is used; when there is none, the checks against the base are \
skipped with a warning. With --branch M.m below the highest upper_bounds file (a release branch, as after \
`rollgate tv cut-release`), only upper_bounds/M.m.csv is checked and the highest-id and increment rules are skipped: \
the other upper bounds and the primary ids of backported definitions are main's. Exits 2 when anything is wrong.",
        after_help = "Examples:
  rollgate tv validate --src crates/my-service/src
  rollgate tv validate --base origin/main      # in CI
  rollgate tv validate --branch 2.0 --base origin/release-2.0   # on release branch 2.0"
    )]
    Validate(ValidateArgs),
    /// Recompute the upper bounds after a merge conflict in upper_bounds/.
    #[command(
        name = "resolve-conflict",
        long_about = "After `git merge main` (or a rebase) stops on a conflict in upper_bounds/*.csv because \
another change took the same id first, recompute this change's ids on top of the merged upstream state: \
definitions that exist at the base (the newer merge-base of both sides with main) keep their ids, this \
change's new ids move above them, and the upper bounds are rewritten without conflict markers. Conflicts in \
other state files are left to you.",
        after_help = "Example:
  git merge main          # CONFLICT (content): Merge conflict in transport/upper_bounds/9.2.csv
  rollgate tv resolve-conflict
  rollgate tv validate && git add transport && git commit"
    )]
    ResolveConflict(ResolveArgs),
    /// Cut a release branch: its upper bound, main's next branch, releases.csv, the minimum.
    #[command(
        name = "cut-release",
        long_about = "Run on main when release branch M.m is cut from it. In one change, all or nothing: \
definitions/unreferable/initial_M.m.0.csv gets a new id (main's upper bound + 1000, a base that only this release \
branch uses); upper_bounds/M.m.csv names it (the release branch's upper bound, which backports to M.m build on); \
upper_bounds/<next>.csv names it too (main's new current branch, default the next minor, which new transport \
versions follow); `<release-name>,<id>` is appended to releases.csv; and with --minimum-compatible the oldest id \
this build accepts is raised.\n\n\
The folder is validated first (as `rollgate tv validate` without a base) and the result again, against the folder \
before the cut: nothing that exists changes. It refuses a release that was already cut (its upper bound file exists \
and main has moved past it, or initial_M.m.0 exists), one releases.csv already lists (M.m or M.m.x), one older than \
main's current branch, a --next that is not above M.m, and a --minimum-compatible that does not rise or \
is not a defined id. Nothing is written when anything is refused.",
        after_help = "Examples:
  # main develops 2.0 (upper_bounds/2.0.csv is the highest); branch 2.0 off and move main to 2.1:
  rollgate tv cut-release 2.0 --dry-run
  rollgate tv cut-release 2.0
  git add transport && git commit -m 'Cut release 2.0' && git branch release-2.0
  # Elasticsearch-style release names, main moving to a new major, and a raised floor:
  rollgate tv cut-release 9.2 --release-name 9.2.0 --next 10.0 --minimum-compatible 9000000 --json
  # then, on main, backport a new transport version to the release branch:
  rollgate tv generate --name my_field --backport-branches 2.0
  # and on the release branch, once the backport is there, check it as a release branch:
  rollgate tv validate --branch 2.0"
    )]
    CutRelease(cut::CutArgs),
    /// List the transport version definitions.
    #[command(
        long_about = "List every definition, newest first: name, kind (referable: code references it; \
unreferable: e.g. a release's initial id), primary id, backport ids, and the release it maps to in releases.csv.",
        after_help = "Examples:
  rollgate tv list
  rollgate tv list --json | jq '.[0]'"
    )]
    List(ListArgs),
    /// Map a transport version id to a release.
    #[command(
        name = "release-of",
        long_about = "Map a transport version id to a release with releases.csv: an exact match, `lo-hi` when \
several releases share the id, or for an unlisted id the best guess, from the release after the preceding entry \
to the release of the next entry (snapshot[ID] when there is no entry on one side).",
        after_help = "Examples:
  rollgate tv release-of 9396000
  rollgate tv release-of 9_396_0_00"
    )]
    ReleaseOf(ReleaseOfArgs),
}

/// `--dir`.
#[derive(Args, Debug)]
pub struct DirArg {
    /// The transport version state folder.
    #[arg(long, value_name = "DIR", default_value = "transport")]
    dir: PathBuf,
}

/// `--src`.
#[derive(Args, Debug)]
pub struct SrcArg {
    /// A folder (or .rs file) of code calling transport_version!, scanned recursively; repeatable. Default: the
    /// `src` folder next to --dir.
    #[arg(long = "src", value_name = "DIR")]
    src: Vec<PathBuf>,
}

/// `rollgate tv generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    src: SrcArg,
    /// The transport version to create or backport (default: the one referenced name without a definition).
    #[arg(long, value_name = "N", value_parser = parse_name)]
    name: Option<String>,
    /// The branch whose upper bound the new primary id follows (default: the highest upper_bounds file).
    #[arg(long, value_name = "M.m", value_parser = parse_branch)]
    branch: Option<Branch>,
    /// Exactly the release branches that get a backport id, comma-separated (`""` for none); default: keep the
    /// ones this change already has.
    #[arg(long, value_name = "M.m,...", value_parser = parse_branches)]
    backport_branches: Option<BranchList>,
    /// The step from the current upper bound to the new primary id: a multiple of 100, at most 1000.
    #[arg(long, value_name = "N")]
    increment: Option<u64>,
    /// The revision whose transport versions are already merged (default: `git merge-base HEAD main`).
    #[arg(long, value_name = "GITREF", value_parser = parse_gitref)]
    base: Option<String>,
}

/// `rollgate tv validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    src: SrcArg,
    /// The branch this checkout builds: on a release branch (below the highest upper_bounds file) only its own
    /// upper bound is checked, as Elasticsearch does (default: main, the highest).
    #[arg(long, value_name = "M.m", value_parser = parse_branch)]
    branch: Option<Branch>,
    /// The revision whose transport versions are already merged (default: `git merge-base HEAD main`).
    #[arg(long, value_name = "GITREF", value_parser = parse_gitref)]
    base: Option<String>,
}

/// `rollgate tv resolve-conflict`.
#[derive(Args, Debug)]
pub struct ResolveArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    src: SrcArg,
    /// The merged upstream revision (default: the newer merge-base of HEAD and MERGE_HEAD with main).
    #[arg(long, value_name = "GITREF", value_parser = parse_gitref)]
    base: Option<String>,
}

/// `rollgate tv list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// `rollgate tv release-of`.
#[derive(Args, Debug)]
pub struct ReleaseOfArgs {
    /// The transport version id, e.g. 9396000 or 9_396_0_00.
    #[arg(value_name = "ID", value_parser = parse_id_arg)]
    id: TransportVersion,
    #[command(flatten)]
    dir: DirArg,
}

/// A parsed `--backport-branches` value.
#[derive(Clone, Debug)]
pub struct BranchList(Vec<Branch>);

/// The longest command-line value accepted for a list or an id.
const MAX_ARG_LEN: usize = 1024;

fn parse_branch(s: &str) -> Result<Branch, String> {
    s.parse().map_err(|e: rollgate_version::state::BadBranch| e.to_string())
}

fn parse_branches(s: &str) -> Result<BranchList, String> {
    if s.len() > MAX_ARG_LEN {
        return Err(format!("the list is longer than {MAX_ARG_LEN} characters"));
    }
    let mut seen = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        seen.insert(parse_branch(part)?);
    }
    Ok(BranchList(seen.into_iter().collect()))
}

fn parse_name(s: &str) -> Result<String, String> {
    if rollgate_version::state::is_valid_name(s) {
        return Ok(s.to_string());
    }
    let shown: String = s.chars().take(60).collect();
    let more = if s.chars().count() > 60 { "…" } else { "" };
    Err(format!(
        "`{shown}{more}` is not a transport version name: use only a-z, 0-9 and _ (at most {} characters)",
        rollgate_version::state::MAX_NAME_LEN
    ))
}

fn parse_gitref(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_ARG_LEN || s.starts_with('-') || s.chars().any(char::is_control) {
        return Err(format!(
            "not a git revision: use a branch, tag or commit such as main, origin/main or HEAD (at most {MAX_ARG_LEN} characters, not starting with -)"
        ));
    }
    Ok(s.to_string())
}

fn parse_id_arg(s: &str) -> Result<TransportVersion, String> {
    let bad =
        || format!("`{s}` is not a transport version id: expected a decimal number such as 9396000 or 9_396_0_00");
    if s.len() > 32 || s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return Err(bad());
    }
    let digits: String = s.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits.parse::<u32>().map(TransportVersion::from_id).map_err(|_| {
        format!("`{s}` is not a transport version id: ids are at most {} (M_NNN_S_PP fits in 32 bits)", u32::MAX)
    })
}

/// Runs one `rollgate tv` command.
pub fn run(cmd: TvCommand) -> Outcome {
    match cmd {
        TvCommand::Generate(a) => cmd_generate(a),
        TvCommand::Validate(a) => cmd_validate(a),
        TvCommand::ResolveConflict(a) => cmd_resolve(a),
        TvCommand::CutRelease(a) => cut::cmd_cut_release(a),
        TvCommand::List(a) => cmd_list(a),
        TvCommand::ReleaseOf(a) => cmd_release_of(a),
    }
}

/// Reads the folder's raw files (bounded), errors naming the folder.
fn read_files(dir: &Path) -> Result<StateFiles, Failure> {
    StateFiles::read_dir(dir).map_err(Failure::refused)
}

/// Parses strictly, errors naming `dir/file:line`.
fn parse(dir: &Path, files: &StateFiles) -> Result<TransportState, Failure> {
    TransportState::parse(files).map_err(|mut e| {
        e.file = dir.join(&e.file);
        Failure::refused(e)
    })
}

fn load(dir: &Path) -> Result<TransportState, Failure> {
    let files = read_files(dir)?;
    parse(dir, &files)
}

/// The `--src` folders, or the `src` folder next to `dir`.
fn source_roots(dir: &Path, src: &SrcArg) -> Vec<PathBuf> {
    if !src.src.is_empty() {
        return src.src.clone();
    }
    let parent = match dir.file_name() {
        Some(_) => dir.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => std::fs::canonicalize(dir).ok().and_then(|d| d.parent().map(Path::to_path_buf)).unwrap_or_default(),
    };
    vec![parent.join("src")]
}

fn scan(dir: &Path, src: &SrcArg) -> Result<Scanned, Failure> {
    let roots = source_roots(dir, src);
    let scanned = files::scan_sources(&roots, Limits::default()).map_err(Failure::refused)?;
    tracing::debug!(files = scanned.files, names = scanned.refs.by_name.len(), "scanned sources");
    Ok(scanned)
}

/// Refuses when a reference could not be read (a non-literal argument or a bad name).
fn require_clean_scan(scanned: &Scanned) -> Result<(), Failure> {
    if scanned.errors.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = scanned.errors.iter().map(|e| e.to_string()).collect();
    Err(Failure::refused(format!(
        "{} transport_version! reference(s) cannot be read, fix them first:\n{}",
        lines.len(),
        lines.join("\n")
    )))
}

const BASE_HINT: &str = "pass --base GITREF, the revision whose transport versions are already merged (e.g. --base main or --base origin/main)";

/// Finds the base commit: `--base`, else the default. `Err` when there is
/// none (not a repository, no `main`, a bad `--base`).
fn base_commit(dir: &Path, base: Option<&str>, during_merge: bool) -> Result<(Git, String, String), String> {
    match base {
        Some(rev) => {
            let git = Git::for_dir(dir)
                .map_err(|e| format!("--base {rev}: `{}` is not inside a git repository ({e})", dir.display()))?;
            let commit =
                git.commit(rev).map_err(|_| format!("--base {rev}: not a commit in this repository; {BASE_HINT}"))?;
            Ok((git, rev.to_string(), commit))
        }
        None => {
            let git = Git::for_dir(dir).map_err(|e| {
                format!(
                    "cannot find the base revision: `{}` is not inside a git repository; {BASE_HINT} ({e})",
                    dir.display()
                )
            })?;
            let commit = git.default_base(during_merge).map_err(|e| {
                format!(
                    "cannot find the base revision: `git merge-base HEAD {main}` failed, is there a `{main}` branch? {BASE_HINT} ({e})",
                    main = git::MAIN
                )
            })?;
            Ok((git, format!("merge-base with {}", git::MAIN), commit))
        }
    }
}

/// The base for `generate` and `resolve-conflict`: `--base`, else the
/// default; never guessed.
fn required_base(dir: &Path, base: Option<&str>, during_merge: bool) -> Result<Base, Failure> {
    let (git, label, commit) = base_commit(dir, base, during_merge).map_err(Failure::refused)?;
    git.base(label, commit, dir).map_err(Failure::refused)
}

/// Refuses a base where the folder did not exist: ids are allocated from it.
fn existing_base(dir: &Path, base: Base) -> Result<Base, Failure> {
    if base.existed {
        return Ok(base);
    }
    Err(Failure::refused(format!(
        "{} does not exist at the base ({}, {}); commit the initial folder to main first, or pass a --base that has it",
        dir.display(),
        base.label,
        git::short(&base.commit)
    )))
}

/// What `changes` will do, described before it is done.
fn describe(dir: &Path, changes: &Changes) -> Vec<String> {
    let mut lines = Vec::new();
    for (path, bytes) in &changes.writes {
        let verb = if dir.join(path).exists() { "updated" } else { "created" };
        lines.push(format!("{verb} {}: {}", dir.join(path).display(), String::from_utf8_lossy(bytes).trim_end()));
    }
    for path in &changes.deletes {
        lines.push(format!("deleted {}", dir.join(path).display()));
    }
    lines
}

fn cmd_generate(a: GenerateArgs) -> Outcome {
    let dir = &a.dir.dir;
    // Check the arguments before touching anything.
    if let Some(i) = a.increment {
        generate::check_increment(i).map_err(Failure::refused)?;
    }
    let files = read_files(dir)?;
    let current = parse(dir, &files)?;
    let scanned = scan(dir, &a.src)?;
    require_clean_scan(&scanned)?;
    let base = existing_base(dir, required_base(dir, a.base.as_deref(), false)?)?;
    let opts = Options {
        name: a.name,
        branch: a.branch,
        backport_branches: a.backport_branches.map(|b| b.0),
        increment: a.increment,
    };
    let outcome = generate::generate(&current, &base.state, &scanned.refs, &opts)
        .map_err(|e| Failure::refused(format!("{}: {e}", dir.display())))?;
    let changes = generate::changes(&current, &outcome.state, &[]);
    let described = describe(dir, &changes);
    write(dir, &changes)?;
    report(dir, &base, &outcome, &described);
    Ok(())
}

fn write(dir: &Path, changes: &Changes) -> Outcome {
    if changes.is_empty() {
        return Ok(());
    }
    files::apply(dir, changes)
        .map_err(|e| Failure::Internal(e.context("writing the transport folder (left unchanged)")))
}

fn report(dir: &Path, base: &Base, outcome: &generate::Outcome, described: &[String]) {
    println!("base: {} ({}), branch {}", base.label, git::short(&base.commit), outcome.branch);
    for name in &outcome.removed {
        println!("removed `{name}`: created since the base and no longer referenced");
    }
    for line in described {
        println!("{line}");
    }
    if described.is_empty() {
        match &outcome.created {
            Some(n) => {
                let ids = outcome.state.referable.get(n).map(|d| join(&d.ids)).unwrap_or_default();
                println!("{} is up to date: `{n}` is {ids}", dir.display());
            }
            None => println!("{} is up to date", dir.display()),
        }
    }
}

fn join(ids: &[TransportVersion]) -> String {
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

fn cmd_validate(a: ValidateArgs) -> Outcome {
    let dir = &a.dir.dir;
    let files = read_files(dir)?;
    let scanned = scan(dir, &a.src)?;
    let base = match base_commit(dir, a.base.as_deref(), false) {
        Ok((git, label, commit)) => Some(git.base(label, commit, dir).map_err(Failure::refused)?),
        // An explicit --base must work; without one, validate what can be validated.
        Err(msg) if a.base.is_some() => return Err(Failure::refused(msg)),
        Err(msg) => {
            eprintln!("warning: the checks against the base were skipped: {msg}");
            None
        }
    };
    let violations = validate_branch(&files, &scanned.refs, &scanned.errors, base.as_ref().map(|b| &b.state), a.branch);
    if violations.is_empty() {
        let defs = TransportState::parse(&files).map(|s| s.referable.len() + s.unreferable.len()).unwrap_or(0);
        let against = match &base {
            Some(b) => format!(" (checked against {}, {})", b.label, git::short(&b.commit)),
            None => String::new(),
        };
        println!(
            "{} is valid: {defs} definitions, {} referenced names in {} source files{against}",
            dir.display(),
            scanned.refs.by_name.len(),
            scanned.files
        );
        return Ok(());
    }
    for v in &violations {
        eprintln!("{}", v.display_in(dir));
    }
    Err(Failure::refused(format!("{} problem(s) in {}", violations.len(), dir.display())))
}

fn cmd_resolve(a: ResolveArgs) -> Outcome {
    let dir = &a.dir.dir;
    let files = read_files(dir)?;
    // Check the folder's shape before asking git anything.
    let (current, _) = TransportState::parse_merging(&files).map_err(|mut e| {
        e.file = dir.join(&e.file);
        Failure::refused(e)
    })?;
    let scanned = scan(dir, &a.src)?;
    require_clean_scan(&scanned)?;
    let base = existing_base(dir, required_base(dir, a.base.as_deref(), true)?)?;
    let (outcome, conflicted) = generate::resolve_conflict(&files, &base.state, &scanned.refs)
        .map_err(|e| Failure::refused(format!("{}: {e}", dir.display())))?;
    let changes = generate::changes(&current, &outcome.state, &conflicted);
    let described = describe(dir, &changes);
    write(dir, &changes)?;
    if conflicted.is_empty() {
        println!("no conflict markers in {}; regenerated against the base", dir.display());
    }
    report(dir, &base, &outcome, &described);
    if !conflicted.is_empty() {
        println!("next: rollgate tv validate, then `git add {}` and commit", dir.display());
    }
    Ok(())
}

fn cmd_list(a: ListArgs) -> Outcome {
    let dir = &a.dir.dir;
    let state = load(dir)?;
    let release = |id: TransportVersion| release_of(state.releases.iter().map(|(r, v)| (r.as_str(), *v)), id);
    let mut rows: Vec<(&str, &rollgate_version::state::Definition)> = state
        .referable
        .values()
        .map(|d| ("referable", d))
        .chain(state.unreferable.values().map(|d| ("unreferable", d)))
        .collect();
    rows.sort_by(|a, b| b.1.primary().cmp(&a.1.primary()).then(a.1.name.cmp(&b.1.name)));
    if a.json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|(kind, d)| {
                serde_json::json!({
                    "name": d.name,
                    "kind": kind,
                    "primary": d.primary().id(),
                    "backports": d.backports().iter().map(|b| b.id()).collect::<Vec<_>>(),
                    "release": release(d.primary()),
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&items).map_err(|e| Failure::Internal(e.into()))?;
        println!("{text}");
        return Ok(());
    }
    let mut table = vec![["NAME", "KIND", "PRIMARY", "BACKPORTS", "RELEASE"].map(String::from)];
    for (kind, d) in &rows {
        let backports = if d.backports().is_empty() { "-".to_string() } else { join(d.backports()) };
        table.push([
            d.name.clone(),
            kind.to_string(),
            d.primary().to_string(),
            backports,
            release(d.primary()).unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..5).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}

fn cmd_release_of(a: ReleaseOfArgs) -> Outcome {
    let dir = &a.dir.dir;
    let state = load(dir)?;
    match release_of(state.releases.iter().map(|(r, v)| (r.as_str(), *v)), a.id) {
        Some(r) => {
            println!("{r}");
            Ok(())
        }
        None => Err(Failure::refused(format!(
            "{}: no release mapping (the file is absent or empty); add `release,id` lines, e.g. `9.1.0,9112000`",
            dir.join(rollgate_version::state::RELEASES_FILE).display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_on_the_command_line() {
        assert_eq!(parse_id_arg("9396000").unwrap(), TransportVersion::from_id(9396000));
        assert_eq!(parse_id_arg("9_396_0_00").unwrap(), TransportVersion::from_id(9396000));
        for bad in ["", "_1", "1_", "1__2", "x", "-1", "9.3", "4294967296", "99999999999999999999999999999999999"] {
            assert!(parse_id_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_revisions_on_the_command_line() {
        assert_eq!(parse_name("a_1").unwrap(), "a_1");
        let long = parse_name(&"X".repeat(10_000)).unwrap_err();
        assert!(long.len() < 200, "{long}");
        assert!(parse_gitref("origin/main").is_ok());
        for bad in ["", "-x", "--upload-pack=x", "a\nb", &"a".repeat(2000)] {
            assert!(parse_gitref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn branch_lists() {
        let l = parse_branches("9.1, 9.0,9.1").unwrap().0;
        assert_eq!(l, vec!["9.0".parse().unwrap(), "9.1".parse().unwrap()]);
        assert!(parse_branches("").unwrap().0.is_empty());
        assert_eq!(parse_branches("9.1,x").unwrap_err(), "`x` is not a branch name: expected MAJOR.MINOR such as 9.1");
        assert!(parse_branches(&"9.1,".repeat(1000)).is_err());
    }

    #[test]
    fn default_source_is_next_to_the_folder() {
        let none = SrcArg { src: vec![] };
        assert_eq!(source_roots(Path::new("transport"), &none), vec![PathBuf::from("src")]);
        assert_eq!(source_roots(Path::new("crates/a/transport"), &none), vec![PathBuf::from("crates/a/src")]);
        let given = SrcArg { src: vec![PathBuf::from("x")] };
        assert_eq!(source_roots(Path::new("transport"), &given), vec![PathBuf::from("x")]);
    }
}
