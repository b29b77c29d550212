//! Id allocation for `rollgate tv generate` and `rollgate tv resolve-conflict`.
//!
//! The generator is a pure function of the **base** state (the state folder
//! at the merge-base with `main`), the working state, the references found in
//! the sources and the options. Every id it allocates is computed from the
//! base's upper bounds, never from the working tree's, so:
//!
//! - running it twice changes nothing (the second run recomputes the same
//!   ids);
//! - removing the last reference to a definition created in this change and
//!   rerunning deletes that definition and restores the upper bounds it had
//!   moved;
//! - after `git merge` brings in someone else's new id (a conflict in
//!   `upper_bounds/`), rerunning against the new base moves this change's ids
//!   above it ([`resolve_conflict`]).
//!
//! What one change may do, relative to its base (as in Elasticsearch):
//! create at most **one** new transport version (a primary id on the current
//! branch, `upper bound + increment`, plus backport ids), and add backport ids
//! (`release branch upper bound + 1`) to definitions that exist at the base.
//! Ids that exist at the base are never changed or removed.

use std::collections::{BTreeMap, BTreeSet};

use crate::TransportVersion;
use crate::scan::References;
use crate::state::{Branch, Definition, StateError, StateFiles, TransportState, UPPER_BOUNDS_DIR, UpperBound};
use crate::validate::MAX_INCREMENT;

/// The default step from the current upper bound to a new primary id.
pub const DEFAULT_INCREMENT: u32 = 1000;

/// What to generate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The transport version to create or backport (`--name`); by default the
    /// one referenced name without a definition at the base.
    pub name: Option<String>,
    /// The branch whose upper bound the new primary id follows (`--branch`);
    /// by default the highest `upper_bounds/` file.
    pub branch: Option<Branch>,
    /// Exactly the release branches that get backport ids
    /// (`--backport-branches`); `None` keeps the ones this change already has.
    pub backport_branches: Option<Vec<Branch>>,
    /// The step from the current upper bound to the new primary id
    /// (`--increment`, a multiple of 100 up to 1000). `None` keeps a primary
    /// id this change already has when it is still valid, else uses
    /// [`DEFAULT_INCREMENT`].
    pub increment: Option<u64>,
}

/// The result of a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The new state of the folder.
    pub state: TransportState,
    /// The branch that was treated as current.
    pub branch: Branch,
    /// The new transport version of this change, if any.
    pub created: Option<String>,
    /// Definitions created since the base that are no longer referenced and
    /// were removed.
    pub removed: Vec<String>,
}

/// Why generation was refused. Messages name the flag, branch or name and
/// say how to fix it; paths are relative to the state folder.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// `--increment` out of range.
    #[error(
        "--increment {0}: use a multiple of 100 from 100 to {MAX_INCREMENT} (a new primary id ends in 00 and is at most {MAX_INCREMENT} above the current upper bound)"
    )]
    BadIncrement(u64),
    /// `--name` is not a valid name.
    #[error("--name `{0}`: not a valid transport version name; use only a-z, 0-9 and _ (at most 128 characters)")]
    BadName(String),
    /// No upper bound file at all.
    #[error(
        "there is no upper_bounds/<M.m>.csv file, so there is no current branch; create one, e.g. upper_bounds/1.0.csv containing `initial_1_0,1000000`"
    )]
    NoUpperBounds,
    /// `--branch` names a branch without an upper bound file.
    #[error("--branch {branch}: there is no {UPPER_BOUNDS_DIR}/{branch}.csv (known branches: {known})")]
    UnknownBranch {
        /// The branch.
        branch: Branch,
        /// The branches that have a file.
        known: String,
    },
    /// `--backport-branches` names a branch without an upper bound file.
    #[error(
        "--backport-branches {branch}: there is no {UPPER_BOUNDS_DIR}/{branch}.csv (known branches: {known}); remove {branch} from the list or create its upper bound file"
    )]
    MissingBackportBranch {
        /// The branch.
        branch: Branch,
        /// The branches that have a file.
        known: String,
    },
    /// The branch has no upper bound at the base.
    #[error(
        "{UPPER_BOUNDS_DIR}/{0}.csv does not exist at the base revision, and ids are allocated from the base's upper bounds; commit that file to main first, or pass a --base that has it"
    )]
    BranchNotAtBase(Branch),
    /// The current branch's upper bound is a backport id.
    #[error(
        "the upper bound of branch {branch} at the base is the backport id {id}; new primary ids follow a branch whose upper bound is a primary id (pass --branch)"
    )]
    CurrentIsBackport {
        /// The branch.
        branch: Branch,
        /// Its upper bound id.
        id: TransportVersion,
    },
    /// A backport to the current branch.
    #[error(
        "--backport-branches {0}: that is the current branch, which gets the primary id; list only older release branches"
    )]
    BackportToCurrent(Branch),
    /// A backport to a branch above the current one.
    #[error(
        "--backport-branches {branch}: that branch is newer than the current branch {current}; list only older release branches, or pass --branch {branch}"
    )]
    BackportAboveCurrent {
        /// The backport branch.
        branch: Branch,
        /// The current branch.
        current: Branch,
    },
    /// `--backport-branches` without a transport version to apply it to.
    #[error(
        "--backport-branches needs a transport version, and none is new in this change: pass --name NAME to backport an existing one"
    )]
    BackportsNeedName,
    /// More than one new transport version.
    #[error(
        "only one new transport version per change, but {} are all new since the base. Keep one: remove the other names' transport_version! references (rerunning `rollgate tv generate` then deletes their definitions), and add them in a later change",
        quote_list(.0)
    )]
    TooManyNew(Vec<String>),
    /// `--name` for a name that is neither referenced nor at the base.
    #[error(
        "--name {0}: there is no transport_version!(\"{0}\") under --src and no definition at the base; reference it in the code first, then run generate"
    )]
    NameNotReferenced(String),
    /// A reference to an unreferable definition.
    #[error(
        "transport_version!(\"{0}\") names an unreferable definition (definitions/unreferable/{0}.csv), which code cannot reference; use another name"
    )]
    UnreferableReferenced(String),
    /// The next id does not fit in a `u32`.
    #[error(
        "branch {branch}: the next id after {from} (+{increment}) overflows the id layout (at most {max}); the id space of this folder is exhausted",
        max = u32::MAX
    )]
    IdOverflow {
        /// The branch.
        branch: Branch,
        /// Its upper bound at the base.
        from: TransportVersion,
        /// The step.
        increment: u64,
    },
    /// No patch number left on a release branch.
    #[error("branch {branch}: no backport ids left after {from} (the patch part PP stops at 99)")]
    PatchesExhausted {
        /// The branch.
        branch: Branch,
        /// Its upper bound at the base.
        from: TransportVersion,
    },
    /// An allocated id is already taken.
    #[error(
        "the id {id} allocated for `{name}` is already used by `{owner}`; the upper bounds at the base are behind the definitions, fix them on main first"
    )]
    IdCollision {
        /// The id.
        id: TransportVersion,
        /// The definition it was allocated for.
        name: String,
        /// The definition already holding it.
        owner: String,
    },
    /// A conflicted upper bound file whose branch is not at the base.
    #[error(
        "{0}: has conflict markers, but its branch has no upper bound at the base, so it cannot be recomputed; resolve it by hand"
    )]
    ConflictNotAtBase(String),
    /// The working folder did not parse.
    #[error(transparent)]
    State(#[from] StateError),
    /// The computed state is not valid (a bug: nothing was written).
    #[error("internal error, nothing was written: the computed state is invalid: {0}")]
    Internal(StateError),
}

fn quote_list(names: &[String]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match q.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => q.join(""),
    }
}

fn known_branches(state: &TransportState) -> String {
    let k: Vec<String> = state.upper_bounds.keys().map(|b| b.to_string()).collect();
    if k.is_empty() { "none".into() } else { k.join(", ") }
}

/// Checks an increment: a multiple of 100 from 100 to [`MAX_INCREMENT`].
pub fn check_increment(increment: u64) -> Result<u32, GenerateError> {
    if increment == 0 || increment > u64::from(MAX_INCREMENT) || !increment.is_multiple_of(100) {
        return Err(GenerateError::BadIncrement(increment));
    }
    Ok(increment as u32)
}

/// Computes the new state of the folder. `current` is the working state,
/// `base` the state at the base revision (an empty state when the folder did
/// not exist there), `refs` the references in the sources.
pub fn generate(
    current: &TransportState,
    base: &TransportState,
    refs: &References,
    opts: &Options,
) -> Result<Outcome, GenerateError> {
    let increment = opts.increment.map(check_increment).transpose()?;
    let (cur, base_cur) = current_branch(current, base, opts)?;
    let created = new_definition(current, base, refs, opts)?;
    let requested = requested_backports(current, base, opts, cur, created.as_deref())?;
    let plan = Plan {
        current,
        base,
        cur,
        base_cur,
        increment,
        requested,
        flag_target: opts.name.clone().or_else(|| created.clone()),
    };

    let mut next = current.clone();
    // Definitions created since the base that are not this change's new one are unreferenced: drop them.
    let removed: Vec<String> = current
        .referable
        .keys()
        .filter(|n| !base.referable.contains_key(*n) && Some(*n) != created.as_ref())
        .cloned()
        .collect();
    for n in &removed {
        next.referable.remove(n);
    }
    // Upper bounds are derived: start again from the base's.
    for (b, ub) in next.upper_bounds.iter_mut() {
        if let Some(at_base) = base.upper_bounds.get(b) {
            *ub = at_base.clone();
        }
    }

    let mut wants = plan.backports_of_existing(&mut next);
    if let Some(name) = &created {
        let wanted = plan.allocate_primary(&mut next, name)?;
        if !wanted.is_empty() {
            wants.insert(name.clone(), wanted);
        }
    }
    plan.allocate_backports(&mut next, &wants)?;
    for def in next.referable.values_mut() {
        def.ids.sort_unstable_by(|a, b| b.cmp(a));
        def.ids.dedup();
    }
    // Compute everything, then check it is a well-formed folder before anyone writes it.
    TransportState::parse(&next.to_files()).map_err(GenerateError::Internal)?;
    Ok(Outcome { state: next, branch: cur, created, removed })
}

/// The branch the change is on (`--branch`, else the latest), checked, with
/// its upper bound at the base.
fn current_branch(
    current: &TransportState,
    base: &TransportState,
    opts: &Options,
) -> Result<(Branch, TransportVersion), GenerateError> {
    if let Some(n) = &opts.name
        && !crate::state::is_valid_name(n)
    {
        return Err(GenerateError::BadName(n.clone()));
    }
    let cur = match opts.branch {
        Some(b) => b,
        None => current.latest_branch().ok_or(GenerateError::NoUpperBounds)?,
    };
    if !current.upper_bounds.contains_key(&cur) {
        return Err(GenerateError::UnknownBranch { branch: cur, known: known_branches(current) });
    }
    let base_cur = base.upper_bounds.get(&cur).ok_or(GenerateError::BranchNotAtBase(cur))?.id;
    if base_cur.is_patch() {
        return Err(GenerateError::CurrentIsBackport { branch: cur, id: base_cur });
    }
    Ok((cur, base_cur))
}

/// The one new transport version of this change: the referenced name that
/// the base does not define (at most one).
fn new_definition(
    current: &TransportState,
    base: &TransportState,
    refs: &References,
    opts: &Options,
) -> Result<Option<String>, GenerateError> {
    let is_referable = |n: &str| current.referable.contains_key(n) || base.referable.contains_key(n);
    if let Some(n) = refs
        .names()
        .find(|n| !is_referable(n) && (current.unreferable.contains_key(*n) || base.unreferable.contains_key(*n)))
    {
        return Err(GenerateError::UnreferableReferenced(n.to_string()));
    }
    if let Some(n) = &opts.name
        && !base.referable.contains_key(n)
        && !refs.contains(n)
    {
        return Err(GenerateError::NameNotReferenced(n.clone()));
    }
    let new_names: Vec<String> =
        refs.names().filter(|n| !base.referable.contains_key(*n)).map(str::to_string).collect();
    if new_names.len() > 1 {
        return Err(GenerateError::TooManyNew(new_names));
    }
    Ok(new_names.into_iter().next())
}

/// The backport branches requested on the command line, checked.
fn requested_backports(
    current: &TransportState,
    base: &TransportState,
    opts: &Options,
    cur: Branch,
    created: Option<&str>,
) -> Result<Option<BTreeSet<Branch>>, GenerateError> {
    let Some(list) = &opts.backport_branches else { return Ok(None) };
    for b in list {
        if *b == cur {
            return Err(GenerateError::BackportToCurrent(*b));
        }
        if *b > cur {
            return Err(GenerateError::BackportAboveCurrent { branch: *b, current: cur });
        }
        if !current.upper_bounds.contains_key(b) {
            return Err(GenerateError::MissingBackportBranch { branch: *b, known: known_branches(current) });
        }
        if !base.upper_bounds.contains_key(b) {
            return Err(GenerateError::BranchNotAtBase(*b));
        }
    }
    if opts.name.is_none() && created.is_none() {
        return Err(GenerateError::BackportsNeedName);
    }
    Ok(Some(list.iter().copied().collect()))
}

/// What every allocation step of [`generate`] reads.
struct Plan<'a> {
    current: &'a TransportState,
    base: &'a TransportState,
    /// The change's branch and its upper bound at the base.
    cur: Branch,
    base_cur: TransportVersion,
    increment: Option<u32>,
    /// `--backport-branches`, for `flag_target` only.
    requested: Option<BTreeSet<Branch>>,
    /// The definition `--backport-branches` is about (`--name`, else the new one).
    flag_target: Option<String>,
}

impl Plan<'_> {
    /// The branches `name` wants backport ids on: the requested ones for the
    /// flag target, else those `recovered` from the working folder.
    fn wanted_for(&self, name: &str, recovered: BTreeSet<Branch>) -> BTreeSet<Branch> {
        match (&self.requested, &self.flag_target) {
            (Some(r), Some(t)) if t == name => r.clone(),
            _ => recovered,
        }
    }

    /// The release branches (at the base and still present) whose upper bound
    /// shares `id`'s base.
    fn branches_of(&self, id: TransportVersion) -> Vec<Branch> {
        self.base
            .upper_bounds
            .iter()
            .filter(|(b, _)| **b != self.cur && self.current.upper_bounds.contains_key(b))
            .filter(|(_, u)| u.id.base() == id.base())
            .map(|(b, _)| *b)
            .collect()
    }

    /// Which definitions of the base want new backport ids, on which
    /// branches; backport ids added since the base are dropped from `next`
    /// (they are reallocated).
    fn backports_of_existing(&self, next: &mut TransportState) -> BTreeMap<String, BTreeSet<Branch>> {
        let mut wants = BTreeMap::new();
        for (name, at_base) in &self.base.referable {
            let Some(def) = next.referable.get_mut(name) else { continue };
            let recovered: BTreeSet<Branch> = def
                .ids
                .iter()
                .filter(|id| id.is_patch() && !at_base.ids.contains(id))
                .flat_map(|id| self.branches_of(*id))
                .collect();
            def.ids.retain(|id| at_base.ids.contains(id) || !id.is_patch());
            let mut wanted = self.wanted_for(name, recovered);
            wanted.retain(|b| match self.base.upper_bounds.get(b) {
                Some(ub) => !at_base.ids.iter().any(|id| id.base() == ub.id.base()),
                None => false,
            });
            if !wanted.is_empty() {
                wants.insert(name.clone(), wanted);
            }
        }
        wants
    }

    /// Gives the new definition its primary id on the current branch (kept
    /// when it still fits, else the base's upper bound + the increment) and
    /// returns the branches it wants backports on.
    fn allocate_primary(&self, next: &mut TransportState, name: &str) -> Result<BTreeSet<Branch>, GenerateError> {
        let existing = self.current.referable.get(name);
        let recovered: BTreeSet<Branch> =
            existing.map(|d| d.backports().iter().flat_map(|id| self.branches_of(*id)).collect()).unwrap_or_default();
        let base_cur = self.base_cur;
        let keep = existing.map(Definition::primary).filter(|p| {
            self.increment.is_none()
                && *p > base_cur
                && p.id() - base_cur.id() <= MAX_INCREMENT
                && !p.is_patch()
                && owner_of(next, *p, name).is_none()
        });
        let primary = match keep {
            Some(p) => p,
            None => {
                let step = self.increment.unwrap_or(DEFAULT_INCREMENT);
                let id = base_cur.id().checked_add(step).ok_or(GenerateError::IdOverflow {
                    branch: self.cur,
                    from: base_cur,
                    increment: u64::from(step),
                })?;
                let id = TransportVersion::from_id(id);
                if let Some(owner) = owner_of(next, id, name) {
                    return Err(GenerateError::IdCollision { id, name: name.to_string(), owner });
                }
                id
            }
        };
        next.referable.insert(name.to_string(), Definition { name: name.to_string(), ids: vec![primary] });
        next.upper_bounds.insert(self.cur, UpperBound { name: name.to_string(), id: primary });
        Ok(self.wanted_for(name, recovered))
    }

    /// Allocates backport ids: per release line, upper bound + 1, + 2, ... in
    /// name order; the line's branches get the last as their upper bound.
    fn allocate_backports(
        &self,
        next: &mut TransportState,
        wants: &BTreeMap<String, BTreeSet<Branch>>,
    ) -> Result<(), GenerateError> {
        let mut lines: BTreeMap<TransportVersion, (BTreeSet<Branch>, BTreeSet<String>)> = BTreeMap::new();
        for (name, branches) in wants {
            for (b, ub) in branches.iter().filter_map(|b| self.base.upper_bounds.get(b).map(|u| (*b, u))) {
                let e = lines.entry(ub.id.base()).or_default();
                e.0.insert(b);
                e.1.insert(name.clone());
            }
        }
        for (branches, names) in lines.values() {
            let Some((top_branch, from)) = branches
                .iter()
                .filter_map(|b| self.base.upper_bounds.get(b).map(|u| (*b, u.id)))
                .max_by_key(|(_, id)| *id)
            else {
                continue;
            };
            let mut last = None;
            for (k, name) in names.iter().enumerate() {
                let id = TransportVersion::from_id(from.id().saturating_add(k as u32 + 1));
                if id.base() != from.base() {
                    return Err(GenerateError::PatchesExhausted { branch: top_branch, from });
                }
                if let Some(owner) = owner_of(next, id, name) {
                    return Err(GenerateError::IdCollision { id, name: name.clone(), owner });
                }
                if let Some(def) = next.referable.get_mut(name) {
                    def.ids.push(id);
                }
                last = Some(UpperBound { name: name.clone(), id });
            }
            if let Some(ub) = last {
                for b in branches {
                    next.upper_bounds.insert(*b, ub.clone());
                }
            }
        }
        Ok(())
    }
}

/// The definition other than `except` holding `id`.
fn owner_of(state: &TransportState, id: TransportVersion, except: &str) -> Option<String> {
    state
        .referable
        .values()
        .chain(state.unreferable.values())
        .find(|d| d.name != except && d.ids.contains(&id))
        .map(|d| d.name.clone())
}

/// Resolves a `git merge` conflict in `upper_bounds/`: parses the working
/// files with conflicted upper bounds read from their own side, then
/// regenerates against `base` (the merged upstream) with default options, so
/// this change's ids move above everything the base already has. Returns the
/// outcome and the conflicted files (which must be rewritten even when their
/// own side already had the right content).
pub fn resolve_conflict(
    files: &StateFiles,
    base: &TransportState,
    refs: &References,
) -> Result<(Outcome, Vec<String>), GenerateError> {
    let (state, conflicted) = TransportState::parse_merging(files)?;
    for path in &conflicted {
        let branch = path
            .strip_prefix(UPPER_BOUNDS_DIR)
            .and_then(|p| p.strip_prefix('/'))
            .and_then(|p| p.strip_suffix(".csv"))
            .and_then(|b| b.parse::<Branch>().ok());
        if !branch.is_some_and(|b| base.upper_bounds.contains_key(&b)) {
            return Err(GenerateError::ConflictNotAtBase(path.clone()));
        }
    }
    let outcome = generate(&state, base, refs, &Options::default())?;
    Ok((outcome, conflicted))
}

/// The files to write and delete to turn `old` into `new`: only files whose
/// meaning changed (so comments in untouched files stay), plus `force`d ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Relative path -> new content.
    pub writes: BTreeMap<String, Vec<u8>>,
    /// Relative paths to delete.
    pub deletes: BTreeSet<String>,
}

impl Changes {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.deletes.is_empty()
    }
}

/// Computes [`Changes`] between two states.
pub fn changes(old: &TransportState, new: &TransportState, force: &[String]) -> Changes {
    let before = old.to_files().files;
    let after = new.to_files().files;
    let writes = after
        .iter()
        .filter(|(p, c)| before.get(*p) != Some(*c) || force.contains(*p))
        .map(|(p, c)| (p.clone(), c.clone()))
        .collect();
    let deletes = before.keys().filter(|p| !after.contains_key(*p)).cloned().collect();
    Changes { writes, deletes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate;

    fn state(entries: &[(&str, &str)]) -> TransportState {
        TransportState::parse(&StateFiles::from_pairs(entries)).unwrap()
    }

    /// main: 9.2 is the current branch, 9.1 and 9.0 are release branches.
    fn base() -> TransportState {
        state(&[
            ("definitions/unreferable/initial_9_0.csv", "9000000\n"),
            // Patch releases of 9.0 took 9000001 and 9000002, as Elasticsearch's initial ids do.
            ("definitions/unreferable/initial_9.0.1.csv", "9000001\n"),
            ("definitions/unreferable/initial_9.0.2.csv", "9000002\n"),
            ("definitions/referable/old_field.csv", "9110000,9000003\n"),
            ("definitions/referable/mid_field.csv", "9111000\n"),
            ("definitions/referable/top_field.csv", "9200000\n"),
            ("upper_bounds/9.0.csv", "old_field,9000003\n"),
            ("upper_bounds/9.1.csv", "mid_field,9111000\n"),
            ("upper_bounds/9.2.csv", "top_field,9200000\n"),
            ("constants/minimum_compatible.csv", "9000000\n"),
        ])
    }

    const OLD: &[&str] = &["old_field", "mid_field", "top_field"];

    fn refs(extra: &[&str]) -> References {
        References::from_names(OLD.iter().chain(extra).copied())
    }

    fn ids(s: &TransportState, name: &str) -> Vec<u32> {
        s.referable[name].ids.iter().map(|i| i.id()).collect()
    }

    fn ub(s: &TransportState, b: &str) -> (String, u32) {
        let u = &s.upper_bounds[&b.parse().unwrap()];
        (u.name.clone(), u.id.id())
    }

    fn check_valid(s: &TransportState, r: &References, base: &TransportState) {
        let v = validate(&s.to_files(), r, &[], Some(base));
        assert!(v.is_empty(), "{v:#?}");
    }

    #[test]
    fn creates_the_new_version_and_is_idempotent() {
        let b = base();
        let r = refs(&["new_field"]);
        let out = generate(&b, &b, &r, &Options::default()).unwrap();
        assert_eq!(out.created.as_deref(), Some("new_field"));
        assert_eq!(ids(&out.state, "new_field"), vec![9201000]);
        assert_eq!(ub(&out.state, "9.2"), ("new_field".into(), 9201000));
        check_valid(&out.state, &r, &b);
        let again = generate(&out.state, &b, &r, &Options::default()).unwrap();
        assert_eq!(again.state, out.state);
        assert!(changes(&out.state, &again.state, &[]).is_empty());
    }

    #[test]
    fn backports_are_added_removed_and_kept() {
        let b = base();
        let r = refs(&["new_field"]);
        let branches = |l: &[&str]| Some(l.iter().map(|s| s.parse().unwrap()).collect());
        let opts = Options { backport_branches: branches(&["9.1", "9.0"]), ..Options::default() };
        let out = generate(&b, &b, &r, &opts).unwrap();
        assert_eq!(ids(&out.state, "new_field"), vec![9201000, 9111001, 9000004]);
        assert_eq!(ub(&out.state, "9.1"), ("new_field".into(), 9111001));
        assert_eq!(ub(&out.state, "9.0"), ("new_field".into(), 9000004));
        check_valid(&out.state, &r, &b);
        // A plain rerun keeps them.
        let kept = generate(&out.state, &b, &r, &Options::default()).unwrap();
        assert_eq!(kept.state, out.state);
        // Without 9.0: that backport goes, 9.0's upper bound is restored.
        let opts = Options { backport_branches: branches(&["9.1"]), ..Options::default() };
        let fewer = generate(&out.state, &b, &r, &opts).unwrap();
        assert_eq!(ids(&fewer.state, "new_field"), vec![9201000, 9111001]);
        assert_eq!(ub(&fewer.state, "9.0"), ("old_field".into(), 9000003));
        check_valid(&fewer.state, &r, &b);
        // A missing branch is named.
        let opts = Options { backport_branches: branches(&["8.19"]), ..Options::default() };
        let e = generate(&b, &b, &r, &opts).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--backport-branches 8.19: there is no upper_bounds/8.19.csv (known branches: 9.0, 9.1, 9.2); remove 8.19 from the list or create its upper bound file"
        );
    }

    #[test]
    fn backports_of_existing_versions() {
        let b = base();
        let r = refs(&[]);
        let opts = Options {
            name: Some("top_field".into()),
            backport_branches: Some(vec!["9.1".parse().unwrap(), "9.0".parse().unwrap()]),
            ..Options::default()
        };
        let out = generate(&b, &b, &r, &opts).unwrap();
        assert_eq!(ids(&out.state, "top_field"), vec![9200000, 9111001, 9000004]);
        assert_eq!(ub(&out.state, "9.2"), ("top_field".into(), 9200000));
        check_valid(&out.state, &r, &b);
        // old_field already has a 9.0 id at the base: nothing to add there, and nothing removed.
        let opts = Options {
            name: Some("old_field".into()),
            backport_branches: Some(vec!["9.0".parse().unwrap()]),
            ..Options::default()
        };
        let out2 = generate(&out.state, &b, &r, &opts).unwrap();
        assert_eq!(ids(&out2.state, "old_field"), vec![9110000, 9000003]);
        assert_eq!(ids(&out2.state, "top_field"), vec![9200000, 9111001, 9000004], "other backports kept");
    }

    #[test]
    fn unreferenced_local_definitions_are_removed_and_bounds_restored() {
        let b = base();
        let out = generate(&b, &b, &refs(&["new_field"]), &Options::default()).unwrap();
        let back = generate(&out.state, &b, &refs(&[]), &Options::default()).unwrap();
        assert_eq!(back.removed, vec!["new_field".to_string()]);
        assert_eq!(back.state, b);
        let c = changes(&out.state, &back.state, &[]);
        assert_eq!(c.deletes.iter().collect::<Vec<_>>(), vec!["definitions/referable/new_field.csv"]);
        assert_eq!(c.writes.keys().collect::<Vec<_>>(), vec!["upper_bounds/9.2.csv"]);
    }

    #[test]
    fn renaming_the_new_version_moves_its_id() {
        let b = base();
        let out = generate(&b, &b, &refs(&["new_field"]), &Options::default()).unwrap();
        let renamed = generate(&out.state, &b, &refs(&["better_name"]), &Options::default()).unwrap();
        assert_eq!(renamed.removed, vec!["new_field".to_string()]);
        assert_eq!(ids(&renamed.state, "better_name"), vec![9201000]);
    }

    #[test]
    fn refuses_two_new_versions() {
        let b = base();
        let e = generate(&b, &b, &refs(&["one", "two"]), &Options::default()).unwrap_err();
        assert_eq!(e, GenerateError::TooManyNew(vec!["one".into(), "two".into()]));
        assert!(e.to_string().starts_with("only one new transport version per change, but `one` and `two` are"));
        let out = generate(&b, &b, &refs(&["one"]), &Options::default()).unwrap();
        let e = generate(&out.state, &b, &refs(&["one", "two"]), &Options::default()).unwrap_err();
        assert!(matches!(e, GenerateError::TooManyNew(_)));
    }

    #[test]
    fn increments_are_checked_and_kept() {
        let b = base();
        let r = refs(&["new_field"]);
        for bad in [0, 50, 1100, u64::MAX] {
            let opts = Options { increment: Some(bad), ..Options::default() };
            assert_eq!(generate(&b, &b, &r, &opts).unwrap_err(), GenerateError::BadIncrement(bad));
        }
        let opts = Options { increment: Some(100), ..Options::default() };
        let out = generate(&b, &b, &r, &opts).unwrap();
        assert_eq!(ids(&out.state, "new_field"), vec![9200100]);
        // A rerun without --increment keeps the still-valid id.
        let again = generate(&out.state, &b, &r, &Options::default()).unwrap();
        assert_eq!(ids(&again.state, "new_field"), vec![9200100]);
    }

    #[test]
    fn id_overflow_is_refused() {
        let b = state(&[
            ("definitions/referable/last.csv", "4294967000\n"),
            ("upper_bounds/9.0.csv", "last,4294967000\n"),
            ("constants/minimum_compatible.csv", "4294967000\n"),
        ]);
        let e = generate(&b, &b, &References::from_names(["last", "more"]), &Options::default()).unwrap_err();
        assert!(matches!(e, GenerateError::IdOverflow { .. }), "{e}");
    }

    #[test]
    fn branches_must_exist_here_and_at_base() {
        let b = base();
        let r = refs(&["new_field"]);
        let opts = Options { branch: Some("9.9".parse().unwrap()), ..Options::default() };
        assert!(matches!(generate(&b, &b, &r, &opts).unwrap_err(), GenerateError::UnknownBranch { .. }));
        let mut here = b.clone();
        here.upper_bounds.insert("9.3".parse().unwrap(), UpperBound { name: "top_field".into(), id: 9200000.into() });
        assert_eq!(
            generate(&here, &b, &r, &Options::default()).unwrap_err(),
            GenerateError::BranchNotAtBase("9.3".parse().unwrap())
        );
        let opts = Options { backport_branches: Some(vec!["9.2".parse().unwrap()]), ..Options::default() };
        assert!(matches!(generate(&b, &b, &r, &opts).unwrap_err(), GenerateError::BackportToCurrent(_)));
        let opts = Options { backport_branches: Some(vec!["9.1".parse().unwrap()]), ..Options::default() };
        assert_eq!(generate(&b, &b, &refs(&[]), &opts).unwrap_err(), GenerateError::BackportsNeedName);
        let opts = Options { name: Some("nowhere".into()), ..Options::default() };
        assert_eq!(
            generate(&b, &b, &refs(&[]), &opts).unwrap_err(),
            GenerateError::NameNotReferenced("nowhere".into())
        );
        let opts = Options { name: Some("Bad".into()), ..Options::default() };
        assert!(matches!(generate(&b, &b, &refs(&[]), &opts).unwrap_err(), GenerateError::BadName(_)));
        assert_eq!(
            generate(&b, &b, &refs(&["initial_9_0"]), &Options::default()).unwrap_err(),
            GenerateError::UnreferableReferenced("initial_9_0".into())
        );
    }

    #[test]
    fn conflicts_are_resolved_against_the_merged_base() {
        // Two changes from the same base each allocated 9201000; one was merged first.
        let b = base();
        let theirs = generate(&b, &b, &refs(&["theirs"]), &Options::default()).unwrap().state;
        let ours = generate(&b, &b, &refs(&["ours"]), &Options::default()).unwrap().state;
        let mut merged = theirs.to_files();
        merged.files.insert(
            "definitions/referable/ours.csv".into(),
            ours.to_files().files["definitions/referable/ours.csv"].clone(),
        );
        merged.files.insert(
            "upper_bounds/9.2.csv".into(),
            b"<<<<<<< HEAD\nours,9201000\n=======\ntheirs,9201000\n>>>>>>> main\n".to_vec(),
        );
        assert!(TransportState::parse(&merged).is_err(), "strict parsing refuses conflict markers");
        let r = refs(&["ours", "theirs"]);
        let (out, conflicted) = resolve_conflict(&merged, &theirs, &r).unwrap();
        assert_eq!(conflicted, vec!["upper_bounds/9.2.csv".to_string()]);
        assert_eq!(ids(&out.state, "ours"), vec![9202000]);
        assert_eq!(ids(&out.state, "theirs"), vec![9201000]);
        assert_eq!(ub(&out.state, "9.2"), ("ours".into(), 9202000));
        check_valid(&out.state, &r, &theirs);
        // A conflict outside upper_bounds/ is left to a human.
        merged
            .files
            .insert("constants/minimum_compatible.csv".into(), b"<<<<<<< a\n1\n=======\n2\n>>>>>>> b\n".to_vec());
        let e = resolve_conflict(&merged, &theirs, &r).unwrap_err();
        assert!(e.to_string().contains("resolve this file by hand"), "{e}");
    }

    #[test]
    fn conflicted_backports_move_up_too() {
        let b = base();
        let on_9_1 = Options { backport_branches: Some(vec!["9.1".parse().unwrap()]), ..Options::default() };
        let theirs = generate(&b, &b, &refs(&["theirs"]), &on_9_1).unwrap().state;
        let ours = generate(&b, &b, &refs(&["ours"]), &on_9_1).unwrap().state;
        assert_eq!(ids(&ours, "ours"), vec![9201000, 9111001]);
        let mut merged = theirs.to_files();
        merged.files.insert("definitions/referable/ours.csv".into(), b"9201000,9111001\n".to_vec());
        for b in ["9.1", "9.2"] {
            merged.files.insert(
                format!("upper_bounds/{b}.csv"),
                b"<<<<<<< HEAD\nours,1\n=======\ntheirs,2\n>>>>>>> x\n".to_vec(),
            );
        }
        let r = refs(&["ours", "theirs"]);
        let (out, _) = resolve_conflict(&merged, &theirs, &r).unwrap();
        assert_eq!(ids(&out.state, "ours"), vec![9202000, 9111002]);
        assert_eq!(ub(&out.state, "9.1"), ("ours".into(), 9111002));
        check_valid(&out.state, &r, &theirs);
    }
}
